//! automerge-repo websocket protocol v1: identifiers, message types and the CBOR codec.
//!
//! Pure bytes-to-values translation (mini-redis's "frame" layer): nothing here knows
//! about sockets, documents or permissions. See `docs/protocol.md` for what we speak.

pub mod codec;
pub mod ids;
pub mod message;

pub use codec::{decode, encode, DecodeError, MAX_NESTING};
pub use ids::{decode_heads, encode_heads, DocumentId, InvalidDocumentId};
pub use message::{HeadsAtTime, Message, PeerMetadata, PROTOCOL_VERSION};
