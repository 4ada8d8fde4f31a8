//! automerge-repo websocket protocol v1: identifiers, message types and the CBOR codec.
//!
//! Pure bytes-to-values translation (mini-redis's "frame" layer): nothing here knows
//! about sockets, documents or permissions. See `docs/protocol.md` for what we speak.

pub mod codec;
pub mod ids;
pub mod message;

pub use codec::{decode, encode, DecodeError, MAX_NESTING};
pub use ids::{decode_heads, encode_heads, DocumentId, InvalidDocumentId};
pub use message::{
    summary_frames, HeadsAtTime, Message, PeerMetadata, CAPABILITIES_KEY, MAX_SUMMARY_DOCUMENTS,
    MAX_SUMMARY_HEADS, PROTOCOL_VERSION, SUMMARY_CAPABILITY, SUMMARY_VERSION,
};
