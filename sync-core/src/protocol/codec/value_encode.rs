//! The encoder [`super::encode`] replaced, kept as the test oracle: it builds a
//! `ciborium::Value` tree and lets ciborium write it. The direct writer must give the
//! very same bytes for every message.

use ciborium::Value;

use crate::protocol::ids::encode_heads;
use crate::protocol::message::{Message, PeerMetadata, CAPABILITIES_KEY};

/// `encode` as it was until the direct writer: a `Value` tree written by ciborium.
pub fn encode_via_value(msg: &Message) -> Vec<u8> {
    let mut map: Vec<(Value, Value)> = vec![(text("type"), text(msg.type_name()))];
    let mut put = |k: &str, v: Value| map.push((text(k), v));
    match msg {
        Message::Join {
            sender_id,
            peer_metadata,
            supported_protocol_versions,
        } => {
            put("senderId", text(sender_id));
            if let Some(meta) = peer_metadata {
                put("peerMetadata", encode_metadata(meta));
            }
            put(
                "supportedProtocolVersions",
                Value::Array(supported_protocol_versions.iter().map(text).collect()),
            );
        }
        Message::Peer {
            sender_id,
            target_id,
            peer_metadata,
            selected_protocol_version,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            if let Some(meta) = peer_metadata {
                put("peerMetadata", encode_metadata(meta));
            }
            put("selectedProtocolVersion", text(selected_protocol_version));
        }
        Message::Leave { sender_id } => put("senderId", text(sender_id)),
        Message::Error {
            sender_id,
            target_id,
            message,
        } => {
            if let Some(s) = sender_id {
                put("senderId", text(s));
            }
            if let Some(t) = target_id {
                put("targetId", text(t));
            }
            put("message", text(message));
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
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            put("documentId", text(document_id.to_string()));
            put("data", Value::Bytes(data.clone()));
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            put("documentId", text(document_id.to_string()));
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            count,
            session_id,
            document_id,
            data,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            put("count", js_number(*count));
            put("sessionId", text(session_id));
            put("documentId", text(document_id.to_string()));
            put("data", Value::Bytes(data.clone()));
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            if !add.is_empty() {
                put("add", Value::Array(add.iter().map(text).collect()));
            }
            put("remove", Value::Array(remove.iter().map(text).collect()));
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            put("documentId", text(document_id.to_string()));
            let heads = new_heads
                .iter()
                .map(|(storage, at)| {
                    let entry = Value::Map(vec![
                        (
                            text("heads"),
                            Value::Array(at.heads.iter().map(text).collect()),
                        ),
                        (text("timestamp"), js_number(at.timestamp)),
                    ]);
                    (text(storage), entry)
                })
                .collect();
            put("newHeads", Value::Map(heads));
        }
        Message::Summary {
            sender_id,
            target_id,
            documents,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            let docs = documents
                .iter()
                .map(|(id, heads)| {
                    (
                        text(id.to_string()),
                        Value::Array(encode_heads(heads).iter().map(text).collect()),
                    )
                })
                .collect();
            put("documents", Value::Map(docs));
        }
        Message::SummaryAnswer {
            sender_id,
            target_id,
            in_sync,
        } => {
            put("senderId", text(sender_id));
            put("targetId", text(target_id));
            put(
                "inSync",
                Value::Array(in_sync.iter().map(|id| text(id.to_string())).collect()),
            );
        }
    }
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every Value we build is encodable.
    if ciborium::ser::into_writer(&Value::Map(map), &mut out).is_err() {
        out.clear();
    }
    out
}

pub fn text(s: impl AsRef<str>) -> Value {
    Value::Text(s.as_ref().to_owned())
}

/// A number as cbor-x writes a JS number: integers above 32 bits as float64 (cbor-x
/// would read a 64-bit CBOR integer back as a BigInt, which JS code does not expect).
fn js_number(n: u64) -> Value {
    if n <= u64::from(u32::MAX) {
        Value::Integer(n.into())
    } else {
        // Exact for every value below 2^53, which covers millisecond clocks.
        #[allow(clippy::cast_precision_loss)]
        Value::Float(n as f64)
    }
}

fn encode_metadata(meta: &PeerMetadata) -> Value {
    let mut m = Vec::new();
    if let Some(s) = &meta.storage_id {
        m.push((text("storageId"), text(s)));
    }
    if let Some(e) = meta.is_ephemeral {
        m.push((text("isEphemeral"), Value::Bool(e)));
    }
    if let Some(caps) = &meta.capabilities {
        let caps = caps
            .iter()
            .map(|(name, version)| (text(name), js_number(*version)))
            .collect();
        m.push((text(CAPABILITIES_KEY), Value::Map(caps)));
    }
    Value::Map(m)
}
