//! The messages of automerge-repo's websocket protocol v1, as typed values.
//!
//! Field names follow the wire (camelCase there, snake_case here). Peer ids are plain
//! strings: they are chosen by each side and trusted for nothing but addressing.

use std::collections::BTreeMap;

use super::ids::DocumentId;

/// The only protocol version there is; a join that offers no version means this one.
pub const PROTOCOL_VERSION: &str = "1";

/// What a peer tells about itself in `join` / `peer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// Identifies a persistent store, so sync state can be kept per store across runs.
    pub storage_id: Option<String>,
    /// An ephemeral peer keeps nothing; there is no point persisting sync state for it.
    pub is_ephemeral: Option<bool>,
}

/// The heads a storage holds of one document, with the sender's clock in ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadsAtTime {
    /// bs58check-encoded change hashes.
    pub heads: Vec<String>,
    pub timestamp: u64,
}

/// One protocol message: one websocket binary frame, one CBOR map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Join {
        sender_id: String,
        peer_metadata: Option<PeerMetadata>,
        supported_protocol_versions: Vec<String>,
    },
    Peer {
        sender_id: String,
        target_id: String,
        peer_metadata: Option<PeerMetadata>,
        selected_protocol_version: String,
    },
    Leave {
        sender_id: String,
    },
    Error {
        sender_id: Option<String>,
        target_id: Option<String>,
        message: String,
    },
    /// A sync message from a peer that does not have the document yet.
    Request {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    /// `data` is an automerge sync message.
    Sync {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    DocUnavailable {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
    },
    /// Opaque presence data, relayed but never stored.
    Ephemeral {
        sender_id: String,
        target_id: String,
        count: u64,
        session_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    RemoteSubscriptionChange {
        sender_id: String,
        target_id: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    RemoteHeadsChanged {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        new_heads: BTreeMap<String, HeadsAtTime>,
    },
}

impl Message {
    /// The wire name of this message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Leave { .. } => "leave",
            Message::Error { .. } => "error",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }

    /// The document a message is about, if any.
    pub fn document_id(&self) -> Option<DocumentId> {
        match self {
            Message::Request { document_id, .. }
            | Message::Sync { document_id, .. }
            | Message::DocUnavailable { document_id, .. }
            | Message::Ephemeral { document_id, .. }
            | Message::RemoteHeadsChanged { document_id, .. } => Some(*document_id),
            _ => None,
        }
    }
}
