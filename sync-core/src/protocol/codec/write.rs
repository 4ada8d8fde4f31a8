//! [`encode`]: messages written straight to CBOR bytes, without a `ciborium::Value` tree.
//!
//! A relayed change makes the server send a `sync` and a `remote-heads-changed` to every
//! subscriber (17 messages at a fan-out of 8); building a tree of owned keys and a copy
//! of the payload for each cost more than the writing. The bytes are the ones ciborium wrote
//! from that tree (definite lengths, the shortest integer heads, the same key order, no
//! tags), and the tests hold every message type against that encoder.

use crate::protocol::ids::{encode_heads, DocumentId};
use crate::protocol::message::{HeadsAtTime, Message, PeerMetadata, CAPABILITIES_KEY};

/// Encodes a message as one CBOR map, the way automerge-repo's JS peers do: byte fields
/// as plain byte strings, integers as integers, absent optional fields left out.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Room for the keys and ids of any message; the payload is the rest.
    let payload = match msg {
        Message::Request { data, .. }
        | Message::Sync { data, .. }
        | Message::Ephemeral { data, .. } => data.len(),
        _ => 0,
    };
    let mut w = Cbor(Vec::with_capacity(192 + payload));
    match msg {
        Message::Join {
            sender_id,
            peer_metadata,
            supported_protocol_versions,
        } => {
            w.map(3 + usize::from(peer_metadata.is_some()));
            w.kind(msg);
            w.text("senderId");
            w.text(sender_id);
            if let Some(meta) = peer_metadata {
                w.text("peerMetadata");
                w.metadata(meta);
            }
            w.text("supportedProtocolVersions");
            w.texts(supported_protocol_versions);
        }
        Message::Peer {
            sender_id,
            target_id,
            peer_metadata,
            selected_protocol_version,
        } => {
            w.map(4 + usize::from(peer_metadata.is_some()));
            w.kind(msg);
            w.ids(sender_id, target_id);
            if let Some(meta) = peer_metadata {
                w.text("peerMetadata");
                w.metadata(meta);
            }
            w.text("selectedProtocolVersion");
            w.text(selected_protocol_version);
        }
        Message::Leave { sender_id } => {
            w.map(2);
            w.kind(msg);
            w.text("senderId");
            w.text(sender_id);
        }
        Message::Error {
            sender_id,
            target_id,
            message,
        } => {
            w.map(2 + usize::from(sender_id.is_some()) + usize::from(target_id.is_some()));
            w.kind(msg);
            if let Some(s) = sender_id {
                w.text("senderId");
                w.text(s);
            }
            if let Some(t) = target_id {
                w.text("targetId");
                w.text(t);
            }
            w.text("message");
            w.text(message);
        }
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
        | Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            w.map(5);
            w.kind(msg);
            w.ids(sender_id, target_id);
            w.document_id(document_id);
            w.text("data");
            w.bytes(data);
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        } => {
            w.map(4);
            w.kind(msg);
            w.ids(sender_id, target_id);
            w.document_id(document_id);
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            count,
            session_id,
            document_id,
            data,
        } => {
            w.map(7);
            w.kind(msg);
            w.ids(sender_id, target_id);
            w.text("count");
            w.js_number(*count);
            w.text("sessionId");
            w.text(session_id);
            w.document_id(document_id);
            w.text("data");
            w.bytes(data);
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            w.map(4 + usize::from(!add.is_empty()));
            w.kind(msg);
            w.ids(sender_id, target_id);
            if !add.is_empty() {
                w.text("add");
                w.texts(add);
            }
            w.text("remove");
            w.texts(remove);
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            w.map(5);
            w.kind(msg);
            w.ids(sender_id, target_id);
            w.document_id(document_id);
            w.text("newHeads");
            w.map(new_heads.len());
            for (storage, HeadsAtTime { heads, timestamp }) in new_heads {
                w.text(storage);
                w.map(2);
                w.text("heads");
                w.texts(heads);
                w.text("timestamp");
                w.js_number(*timestamp);
            }
        }
        Message::Summary {
            sender_id,
            target_id,
            documents,
        } => {
            w.map(4);
            w.kind(msg);
            w.ids(sender_id, target_id);
            w.text("documents");
            w.map(documents.len());
            for (id, heads) in documents {
                w.text(&id.to_string());
                w.texts(&encode_heads(heads));
            }
        }
        Message::SummaryAnswer {
            sender_id,
            target_id,
            in_sync,
        } => {
            w.map(4);
            w.kind(msg);
            w.ids(sender_id, target_id);
            w.text("inSync");
            w.array(in_sync.len());
            for id in in_sync {
                w.text(&id.to_string());
            }
        }
    }
    w.0
}

/// CBOR major types (RFC 8949, section 3.1) this codec writes.
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// An output buffer that writes CBOR items. Writing into a `Vec` cannot fail.
struct Cbor(Vec<u8>);

impl Cbor {
    /// An item's head: major type and argument, in the shortest form (as ciborium).
    fn head(&mut self, major: u8, n: u64) {
        let major = major << 5;
        if n < 24 {
            // Checked: below 24.
            #[allow(clippy::cast_possible_truncation)]
            self.0.push(major | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            self.0.extend_from_slice(&[major | 24, n]);
        } else if let Ok(n) = u16::try_from(n) {
            self.0.push(major | 25);
            self.0.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            self.0.push(major | 26);
            self.0.extend_from_slice(&n.to_be_bytes());
        } else {
            self.0.push(major | 27);
            self.0.extend_from_slice(&n.to_be_bytes());
        }
    }

    fn len(&mut self, major: u8, len: usize) {
        // usize is at most 64 bits on every target Rust supports.
        self.head(major, len as u64);
    }

    fn map(&mut self, entries: usize) {
        self.len(MAP, entries);
    }

    fn array(&mut self, items: usize) {
        self.len(ARRAY, items);
    }

    fn text(&mut self, s: &str) {
        self.len(TEXT, s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.len(BYTES, b.len());
        self.0.extend_from_slice(b);
    }

    fn texts(&mut self, items: &[String]) {
        self.array(items.len());
        for item in items {
            self.text(item);
        }
    }

    /// The `type` entry, first in every message.
    fn kind(&mut self, msg: &Message) {
        self.text("type");
        self.text(msg.type_name());
    }

    /// The `senderId` and `targetId` entries.
    fn ids(&mut self, sender_id: &str, target_id: &str) {
        self.text("senderId");
        self.text(sender_id);
        self.text("targetId");
        self.text(target_id);
    }

    fn document_id(&mut self, id: &DocumentId) {
        self.text("documentId");
        self.text(&id.to_string());
    }

    fn metadata(&mut self, meta: &PeerMetadata) {
        let PeerMetadata {
            storage_id,
            is_ephemeral,
            capabilities,
        } = meta;
        self.map(
            usize::from(storage_id.is_some())
                + usize::from(is_ephemeral.is_some())
                + usize::from(capabilities.is_some()),
        );
        if let Some(s) = storage_id {
            self.text("storageId");
            self.text(s);
        }
        if let Some(e) = is_ephemeral {
            self.text("isEphemeral");
            // Simple values 20 and 21.
            self.0.push(if *e { 0xf5 } else { 0xf4 });
        }
        if let Some(caps) = capabilities {
            self.text(CAPABILITIES_KEY);
            self.map(caps.len());
            for (name, version) in caps {
                self.text(name);
                self.js_number(*version);
            }
        }
    }

    /// A number as cbor-x writes a JS number: integers above 32 bits as a float (cbor-x
    /// would read a 64-bit CBOR integer back as a BigInt, which JS code does not
    /// expect). The float is float32 when that holds it exactly, else float64, as
    /// ciborium writes it (float16 holds nothing above 2^32); float64 is exact for
    /// every value below 2^53, which covers millisecond clocks.
    fn js_number(&mut self, n: u64) {
        if n <= u64::from(u32::MAX) {
            self.head(0, n);
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let wide = n as f64;
        #[allow(clippy::cast_possible_truncation)]
        let narrow = wide as f32;
        if f64::from(narrow).to_bits() == wide.to_bits() {
            self.0.push(0xfa);
            self.0.extend_from_slice(&narrow.to_be_bytes());
        } else {
            self.0.push(0xfb);
            self.0.extend_from_slice(&wide.to_be_bytes());
        }
    }
}
