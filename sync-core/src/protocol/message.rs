//! The messages of automerge-repo's websocket protocol v1, as typed values.
//!
//! Field names follow the wire (camelCase there, snake_case here). Peer ids are plain
//! strings: they are chosen by each side and trusted for nothing but addressing.

use std::collections::BTreeMap;

use automerge::ChangeHash;

use super::ids::DocumentId;

/// The only protocol version there is; a join that offers no version means this one.
pub const PROTOCOL_VERSION: &str = "1";

/// The `peerMetadata` key under which buurtsync peers announce their extensions of the
/// protocol (capability name → version). automerge-repo ignores unknown metadata keys,
/// and the server answers with this key only to a join that carried it.
pub const CAPABILITIES_KEY: &str = "buurtsync";
/// The connect-time summary extension (`buurtsync-summary` / `buurtsync-summary-answer`).
pub const SUMMARY_CAPABILITY: &str = "summary";
/// The version of the summary extension this codec speaks.
pub const SUMMARY_VERSION: u64 = 1;
/// Documents in one `buurtsync-summary` frame; a device holding more sends several.
/// Bounds the work one frame can ask of the server.
pub const MAX_SUMMARY_DOCUMENTS: usize = 1000;
/// Heads of one document in a summary; real documents have a handful.
pub const MAX_SUMMARY_HEADS: usize = 256;

/// What a peer tells about itself in `join` / `peer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// Identifies a persistent store, so sync state can be kept per store across runs.
    pub storage_id: Option<String>,
    /// An ephemeral peer keeps nothing; there is no point persisting sync state for it.
    pub is_ephemeral: Option<bool>,
    /// buurtsync extensions the peer speaks (wire key [`CAPABILITIES_KEY`]):
    /// capability name → version. `None`: the peer did not say (every third-party
    /// client), and then it is never sent an extension message.
    pub capabilities: Option<BTreeMap<String, u64>>,
}

impl PeerMetadata {
    /// Whether the peer announced `capability` at exactly `version`.
    pub fn supports(&self, capability: &str, version: u64) -> bool {
        self.capabilities
            .as_ref()
            .and_then(|c| c.get(capability))
            .is_some_and(|v| *v == version)
    }

    /// Metadata announcing the summary extension, for our own clients' `join`.
    pub fn with_summary(mut self) -> Self {
        self.capabilities
            .get_or_insert_with(BTreeMap::new)
            .insert(SUMMARY_CAPABILITY.to_owned(), SUMMARY_VERSION);
        self
    }
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
    /// buurtsync extension (only after both sides announced [`SUMMARY_CAPABILITY`]):
    /// the heads of documents the device holds, so the server syncs only those that
    /// differ. Wire type `buurtsync-summary`.
    Summary {
        sender_id: String,
        target_id: String,
        documents: BTreeMap<DocumentId, Vec<ChangeHash>>,
    },
    /// buurtsync extension: the server's answer to one `Summary` frame: the documents
    /// whose committed heads equal the device's (in sync, and watched for live
    /// changes). The others get a `sync` message or `doc-unavailable`, as a request
    /// would. Wire type `buurtsync-summary-answer`.
    SummaryAnswer {
        sender_id: String,
        target_id: String,
        in_sync: Vec<DocumentId>,
    },
}

impl Message {
    /// Every wire `type`, at the position [`Message::type_index`] gives.
    pub const TYPE_NAMES: [&'static str; 12] = [
        "join",
        "peer",
        "leave",
        "error",
        "request",
        "sync",
        "doc-unavailable",
        "ephemeral",
        "remote-subscription-change",
        "remote-heads-changed",
        "buurtsync-summary",
        "buurtsync-summary-answer",
    ];

    /// The wire name of this message's `type`.
    pub fn type_name(&self) -> &'static str {
        Self::TYPE_NAMES[self.type_index()]
    }

    /// This message's type as a position in [`Message::TYPE_NAMES`]: an index into
    /// per-type tables (the server keeps its per-type metric handles in one).
    pub fn type_index(&self) -> usize {
        match self {
            Message::Join { .. } => 0,
            Message::Peer { .. } => 1,
            Message::Leave { .. } => 2,
            Message::Error { .. } => 3,
            Message::Request { .. } => 4,
            Message::Sync { .. } => 5,
            Message::DocUnavailable { .. } => 6,
            Message::Ephemeral { .. } => 7,
            Message::RemoteSubscriptionChange { .. } => 8,
            Message::RemoteHeadsChanged { .. } => 9,
            Message::Summary { .. } => 10,
            Message::SummaryAnswer { .. } => 11,
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

/// The `buurtsync-summary` frames for `documents` (id → heads), at most
/// [`MAX_SUMMARY_DOCUMENTS`] to a frame. Empty input gives no frame.
pub fn summary_frames(
    sender_id: &str,
    target_id: &str,
    documents: impl IntoIterator<Item = (DocumentId, Vec<ChangeHash>)>,
) -> Vec<Message> {
    let mut frames = Vec::new();
    let mut current = BTreeMap::new();
    for (id, mut heads) in documents {
        heads.sort();
        heads.truncate(MAX_SUMMARY_HEADS);
        current.insert(id, heads);
        if current.len() == MAX_SUMMARY_DOCUMENTS {
            frames.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
        .into_iter()
        .map(|documents| Message::Summary {
            sender_id: sender_id.to_owned(),
            target_id: target_id.to_owned(),
            documents,
        })
        .collect()
}
