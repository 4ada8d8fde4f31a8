//! CBOR encoding and decoding of protocol messages.
//!
//! [`decode`] reads every frame through `ciborium::Value` ([`decode_general`]), so that
//! the quirks of real senders are easy to tolerate (floats for integers, `undefined` for
//! absent fields, byte-string document ids, tag 64 around byte arrays) and every
//! malformed input becomes a [`DecodeError`] — except the common `sync`/`request` frame,
//! which [`decode_fast`] reads without the tree when it has exactly the usual shape
//! (`fast.rs`); it declines anything else and never decides an error. Nesting is capped
//! at [`MAX_NESTING`] levels, so hostile input cannot exhaust the stack. [`encode`]
//! writes messages straight to bytes (`write.rs`), the very bytes ciborium wrote from a
//! `Value` tree before (`value_encode.rs`, the tests' oracle).

mod fast;
#[cfg(test)]
mod value_encode;
mod write;

pub use fast::decode_fast;
pub use write::encode;

use std::collections::BTreeMap;

use ciborium::Value;

use automerge::ChangeHash;

use super::ids::{decode_heads, DocumentId};
use super::message::{
    HeadsAtTime, Message, PeerMetadata, CAPABILITIES_KEY, MAX_SUMMARY_DOCUMENTS, MAX_SUMMARY_HEADS,
    PROTOCOL_VERSION,
};

/// No real message nests deeper than 5 levels; 16 leaves room and bounds recursion.
pub const MAX_NESTING: usize = 16;

/// Why a frame is not a protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("{0} bytes after the end of the CBOR message")]
    TrailingBytes(usize),
    #[error("message is not a CBOR map")]
    NotAMap,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("field `documentId`: {0}")]
    DocumentId(String),
    #[error("field `{field}` holds more than {max} entries")]
    TooMany { field: &'static str, max: usize },
    #[error("field `{field}` is not a peer or storage id: {reason}")]
    PeerId {
        field: &'static str,
        reason: &'static str,
    },
}

/// Longest `senderId`, `targetId` or `storageId` accepted. Real ones are short
/// (automerge-repo: `peer-` and 8 characters, or a UUID; ours: 22); a cap keeps a
/// hostile id out of everything that stores it (audit log, provenance, sync states).
pub const MAX_PEER_ID_LEN: usize = 128;

/// Checks a peer or storage id: 1 to [`MAX_PEER_ID_LEN`] bytes of ASCII letters,
/// digits and `-_.:@+/=~`. Refusing (not truncating) keeps two long ids from meeting
/// in one stored form.
pub fn check_peer_id(field: &'static str, id: &str) -> Result<(), DecodeError> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_PEER_ID_LEN {
        "longer than 128 bytes"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:@+/=~".contains(&b))
    {
        "only ASCII letters, digits and -_.:@+/=~ are allowed"
    } else {
        return Ok(());
    };
    Err(DecodeError::PeerId { field, reason })
}

/// Decodes one frame into a message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    match decode_fast(bytes) {
        Some(msg) => Ok(msg),
        None => decode_general(bytes),
    }
}

/// Decodes any frame through a `ciborium::Value` tree: the decoder that decides every
/// frame [`decode_fast`] declines and every error. Public so that the `codec` fuzz
/// target can hold the fast path against it.
pub fn decode_general(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_NESTING)
        .map_err(|e| DecodeError::Cbor(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError::TrailingBytes(reader.len()));
    }
    let Value::Map(entries) = untag(value) else {
        return Err(DecodeError::NotAMap);
    };
    let fields = Fields(entries);
    let kind = fields.text("type")?;
    let msg = match kind.as_str() {
        "join" => Message::Join {
            sender_id: fields.peer_id("senderId")?,
            peer_metadata: match fields.get("peerMetadata") {
                Some(v) => Some(peer_metadata(v)?),
                None => fields.get("metadata").map(peer_metadata).transpose()?,
            },
            supported_protocol_versions: match fields.get("supportedProtocolVersions") {
                Some(v) => text_list(v, "supportedProtocolVersions")?,
                None => vec![PROTOCOL_VERSION.to_string()],
            },
        },
        "peer" => Message::Peer {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            peer_metadata: fields.get("peerMetadata").map(peer_metadata).transpose()?,
            selected_protocol_version: fields
                .opt_text("selectedProtocolVersion")?
                .unwrap_or_else(|| PROTOCOL_VERSION.to_string()),
        },
        "leave" => Message::Leave {
            sender_id: fields.peer_id("senderId")?,
        },
        "error" => Message::Error {
            sender_id: fields.opt_peer_id("senderId")?,
            target_id: fields.opt_peer_id("targetId")?,
            message: fields.opt_text("message")?.unwrap_or_default(),
        },
        "request" => Message::Request {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            document_id: fields.document_id()?,
            data: fields.bytes("data")?,
        },
        "sync" => Message::Sync {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            document_id: fields.document_id()?,
            data: fields.bytes("data")?,
        },
        "doc-unavailable" => Message::DocUnavailable {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            document_id: fields.document_id()?,
        },
        "ephemeral" => Message::Ephemeral {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            count: fields.uint("count")?,
            session_id: fields.text("sessionId")?,
            document_id: fields.document_id()?,
            data: fields.bytes("data")?,
        },
        "remote-subscription-change" => Message::RemoteSubscriptionChange {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            add: fields
                .get("add")
                .map(|v| text_list(v, "add"))
                .transpose()?
                .unwrap_or_default(),
            remove: fields
                .get("remove")
                .map(|v| text_list(v, "remove"))
                .transpose()?
                .unwrap_or_default(),
        },
        "remote-heads-changed" => Message::RemoteHeadsChanged {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            document_id: fields.document_id()?,
            new_heads: new_heads(
                fields
                    .get("newHeads")
                    .ok_or(DecodeError::MissingField("newHeads"))?,
            )?,
        },
        "buurtsync-summary" => Message::Summary {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            documents: summary_documents(
                fields
                    .get("documents")
                    .ok_or(DecodeError::MissingField("documents"))?,
            )?,
        },
        "buurtsync-summary-answer" => Message::SummaryAnswer {
            sender_id: fields.peer_id("senderId")?,
            target_id: fields.peer_id("targetId")?,
            in_sync: match fields.get("inSync") {
                None => Vec::new(),
                Some(v) => id_list(v, "inSync")?,
            },
        },
        other => return Err(DecodeError::UnknownType(truncate(other))),
    };
    Ok(msg)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Strips CBOR tags (cbor-x may wrap typed arrays in tag 64).
fn untag(mut v: Value) -> Value {
    while let Value::Tag(_, inner) = v {
        v = *inner;
    }
    v
}

fn is_absent(v: &Value) -> bool {
    matches!(v, Value::Null)
}

struct Fields(Vec<(Value, Value)>);

impl Fields {
    /// A present field; `null` and `undefined` count as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find_map(|(k, v)| match k {
            Value::Text(t) if t == key && !is_absent(v) => Some(v),
            _ => None,
        })
    }

    fn text(&self, key: &'static str) -> Result<String, DecodeError> {
        self.opt_text(key)?.ok_or(DecodeError::MissingField(key))
    }

    /// A present peer or storage id, checked by [`check_peer_id`].
    fn peer_id(&self, key: &'static str) -> Result<String, DecodeError> {
        self.opt_peer_id(key)?.ok_or(DecodeError::MissingField(key))
    }

    fn opt_peer_id(&self, key: &'static str) -> Result<Option<String>, DecodeError> {
        let id = self.opt_text(key)?;
        if let Some(id) = &id {
            check_peer_id(key, id)?;
        }
        Ok(id)
    }

    fn opt_text(&self, key: &'static str) -> Result<Option<String>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t.clone())),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "a text string",
            }),
        }
    }

    fn bytes(&self, key: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.get(key).cloned().map(untag) {
            None => Err(DecodeError::MissingField(key)),
            Some(Value::Bytes(b)) => Ok(b),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "a byte string",
            }),
        }
    }

    fn uint(&self, key: &'static str) -> Result<u64, DecodeError> {
        as_uint(self.get(key).ok_or(DecodeError::MissingField(key))?, key)
    }

    fn document_id(&self) -> Result<DocumentId, DecodeError> {
        const KEY: &str = "documentId";
        match self.get(KEY).cloned().map(untag) {
            None => Err(DecodeError::MissingField(KEY)),
            Some(Value::Text(t)) => t
                .parse()
                .map_err(|e: super::InvalidDocumentId| DecodeError::DocumentId(e.0)),
            Some(Value::Bytes(b)) if b.len() == 16 => {
                DocumentId::from_slice(&b).map_err(|e| DecodeError::DocumentId(e.0))
            }
            Some(Value::Bytes(b)) => match std::str::from_utf8(&b) {
                Ok(s) => s
                    .parse()
                    .map_err(|e: super::InvalidDocumentId| DecodeError::DocumentId(e.0)),
                Err(_) => Err(DecodeError::DocumentId(
                    "bytes are neither 16 raw bytes nor UTF-8".into(),
                )),
            },
            Some(_) => Err(DecodeError::WrongType {
                field: KEY,
                expected: "a text or byte string",
            }),
        }
    }
}

/// Integers, or floats that hold a whole non-negative number (JS may send either).
fn as_uint(v: &Value, field: &'static str) -> Result<u64, DecodeError> {
    let wrong = DecodeError::WrongType {
        field,
        expected: "a non-negative integer",
    };
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| wrong),
        Value::Float(f) if f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19 => {
            // Checked above: finite, whole, in range.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(*f as u64)
        }
        _ => Err(wrong),
    }
}

fn text_list(v: &Value, field: &'static str) -> Result<Vec<String>, DecodeError> {
    let wrong = DecodeError::WrongType {
        field,
        expected: "an array of text strings",
    };
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Text(t) => Ok(t.clone()),
                _ => Err(wrong.clone()),
            })
            .collect(),
        _ => Err(wrong),
    }
}

fn peer_metadata(v: &Value) -> Result<PeerMetadata, DecodeError> {
    let Value::Map(entries) = v else {
        return Err(DecodeError::WrongType {
            field: "peerMetadata",
            expected: "a map",
        });
    };
    let fields = Fields(entries.clone());
    Ok(PeerMetadata {
        capabilities: fields.get(CAPABILITIES_KEY).map(capabilities).transpose()?,
        storage_id: fields.opt_peer_id("storageId")?,
        is_ephemeral: match fields.get("isEphemeral") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(DecodeError::WrongType {
                    field: "isEphemeral",
                    expected: "a boolean",
                })
            }
        },
    })
}

/// `peerMetadata.buurtsync`: a map of capability name to version number.
fn capabilities(v: &Value) -> Result<BTreeMap<String, u64>, DecodeError> {
    const FIELD: &str = "peerMetadata.buurtsync";
    let wrong = DecodeError::WrongType {
        field: FIELD,
        expected: "a map of capability name to version number",
    };
    let Value::Map(entries) = v else {
        return Err(wrong);
    };
    if entries.len() > 64 {
        return Err(DecodeError::TooMany {
            field: FIELD,
            max: 64,
        });
    }
    entries
        .iter()
        .map(|(k, v)| match k {
            Value::Text(name) => Ok((truncate(name), as_uint(v, FIELD)?)),
            _ => Err(wrong.clone()),
        })
        .collect()
}

/// `documents` of a summary: a map of documentId to an array of bs58check heads.
fn summary_documents(v: &Value) -> Result<BTreeMap<DocumentId, Vec<ChangeHash>>, DecodeError> {
    const FIELD: &str = "documents";
    let wrong = DecodeError::WrongType {
        field: FIELD,
        expected: "a map of documentId to an array of bs58check change hashes",
    };
    let Value::Map(entries) = v else {
        return Err(wrong);
    };
    if entries.len() > MAX_SUMMARY_DOCUMENTS {
        return Err(DecodeError::TooMany {
            field: FIELD,
            max: MAX_SUMMARY_DOCUMENTS,
        });
    }
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let Value::Text(id) = k else {
            return Err(wrong);
        };
        let id: DocumentId = id
            .parse()
            .map_err(|e: super::InvalidDocumentId| DecodeError::DocumentId(e.0))?;
        let heads = text_list(v, FIELD)?;
        if heads.len() > MAX_SUMMARY_HEADS {
            return Err(DecodeError::TooMany {
                field: "documents (heads of one document)",
                max: MAX_SUMMARY_HEADS,
            });
        }
        let heads = decode_heads(&heads).ok_or_else(|| wrong.clone())?;
        out.insert(id, heads);
    }
    Ok(out)
}

/// An array of documentId strings.
fn id_list(v: &Value, field: &'static str) -> Result<Vec<DocumentId>, DecodeError> {
    text_list(v, field)?
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e: super::InvalidDocumentId| DecodeError::DocumentId(e.0))
        })
        .collect()
}

fn new_heads(v: &Value) -> Result<BTreeMap<String, HeadsAtTime>, DecodeError> {
    let wrong = |expected| DecodeError::WrongType {
        field: "newHeads",
        expected,
    };
    let Value::Map(entries) = v else {
        return Err(wrong("a map of storageId to {heads, timestamp}"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let Value::Text(storage) = k else {
            return Err(wrong("a map keyed by storageId strings"));
        };
        check_peer_id("newHeads", storage)?;
        let Value::Map(inner) = v else {
            return Err(wrong("a map of storageId to {heads, timestamp}"));
        };
        let inner = Fields(inner.clone());
        let heads = text_list(
            inner
                .get("heads")
                .ok_or(DecodeError::MissingField("heads"))?,
            "heads",
        )?;
        let timestamp = as_uint(
            inner
                .get("timestamp")
                .ok_or(DecodeError::MissingField("timestamp"))?,
            "timestamp",
        )?;
        out.insert(storage.clone(), HeadsAtTime { heads, timestamp });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::ids::encode_heads;
    use super::value_encode::{encode_via_value, text};
    use super::*;

    fn doc() -> DocumentId {
        DocumentId::from_bytes([9; 16])
    }

    fn cbor(v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(&v, &mut out).expect("encodable");
        out
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
    }

    /// The value of `key` in an encoded frame.
    fn field(bytes: &[u8], key: &str) -> Option<Value> {
        let value: Value = ciborium::de::from_reader(bytes).expect("cbor");
        let Value::Map(entries) = value else {
            panic!("not a map")
        };
        entries
            .into_iter()
            .find(|(k, _)| *k == text(key))
            .map(|(_, v)| v)
    }

    fn all_messages() -> Vec<Message> {
        let s = || "alice".to_string();
        let t = || "server".to_string();
        let mut heads = BTreeMap::new();
        heads.insert(
            "storage-1".to_string(),
            HeadsAtTime {
                heads: vec!["2NEpo7TZRRrLZSi2U".into()],
                timestamp: 1_700_000_000_000,
            },
        );
        vec![
            Message::Join {
                sender_id: s(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some("st".into()),
                    is_ephemeral: Some(false),
                    capabilities: None,
                }),
                supported_protocol_versions: vec!["1".into()],
            },
            Message::Peer {
                sender_id: t(),
                target_id: s(),
                peer_metadata: Some(PeerMetadata::default()),
                selected_protocol_version: "1".into(),
            },
            Message::Leave { sender_id: s() },
            Message::Error {
                sender_id: Some(t()),
                target_id: Some(s()),
                message: "nope".into(),
            },
            Message::Request {
                sender_id: s(),
                target_id: t(),
                document_id: doc(),
                data: vec![0x42, 1, 2],
            },
            Message::Sync {
                sender_id: s(),
                target_id: t(),
                document_id: doc(),
                data: vec![0x42, 3],
            },
            Message::DocUnavailable {
                sender_id: t(),
                target_id: s(),
                document_id: doc(),
            },
            Message::Ephemeral {
                sender_id: s(),
                target_id: t(),
                count: 7,
                session_id: "sess".into(),
                document_id: doc(),
                data: vec![1],
            },
            Message::RemoteSubscriptionChange {
                sender_id: s(),
                target_id: t(),
                add: vec!["a".into()],
                remove: vec![],
            },
            Message::RemoteHeadsChanged {
                sender_id: t(),
                target_id: s(),
                document_id: doc(),
                new_heads: heads,
            },
            Message::Summary {
                sender_id: s(),
                target_id: t(),
                documents: [
                    (doc(), vec![ChangeHash([1; 32]), ChangeHash([2; 32])]),
                    (DocumentId::from_bytes([3; 16]), vec![]),
                ]
                .into_iter()
                .collect(),
            },
            Message::SummaryAnswer {
                sender_id: t(),
                target_id: s(),
                in_sync: vec![doc()],
            },
            Message::Join {
                sender_id: s(),
                peer_metadata: Some(PeerMetadata::default().with_summary()),
                supported_protocol_versions: vec!["1".into()],
            },
        ]
    }

    /// Every message type survives encode → decode unchanged.
    #[test]
    fn every_message_round_trips() {
        for msg in all_messages() {
            assert_eq!(
                decode(&encode(&msg)),
                Ok(msg.clone()),
                "{}",
                msg.type_name()
            );
        }
    }

    /// Each message type has its own `type_index`, the position of its wire name in
    /// `TYPE_NAMES`: the server keeps its per-type metric handles at that index.
    #[test]
    fn type_indexes_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for msg in all_messages() {
            assert_eq!(Message::TYPE_NAMES[msg.type_index()], msg.type_name());
            seen.insert(msg.type_index());
        }
        assert_eq!(
            seen.len(),
            Message::TYPE_NAMES.len(),
            "a type is missing or shared"
        );
    }

    /// The quirks of real senders listed in PROTOCOL.md decode to the same messages.
    #[test]
    fn tolerates_real_sender_quirks() {
        let check = |input: Value, expected: Message| {
            assert_eq!(decode(&cbor(input)), Ok(expected));
        };
        let id = doc().to_string();
        // count and timestamp as float64, optional fields as undefined (null here).
        check(
            map(vec![
                ("type", text("ephemeral")),
                ("senderId", text("a")),
                ("targetId", text("b")),
                ("count", Value::Float(3.0)),
                ("sessionId", text("s")),
                ("documentId", text(&id)),
                ("data", Value::Bytes(vec![1])),
                ("extra", Value::Null),
            ]),
            Message::Ephemeral {
                sender_id: "a".into(),
                target_id: "b".into(),
                count: 3,
                session_id: "s".into(),
                document_id: doc(),
                data: vec![1],
            },
        );
        // documentId as a byte string (UTF-8 of the id, or 16 raw bytes); data in tag 64.
        for doc_value in [
            Value::Bytes(id.clone().into_bytes()),
            Value::Bytes(vec![9; 16]),
        ] {
            check(
                map(vec![
                    ("type", text("sync")),
                    ("senderId", text("a")),
                    ("targetId", text("b")),
                    ("documentId", doc_value),
                    ("data", Value::Tag(64, Box::new(Value::Bytes(vec![0x42])))),
                ]),
                Message::Sync {
                    sender_id: "a".into(),
                    target_id: "b".into(),
                    document_id: doc(),
                    data: vec![0x42],
                },
            );
        }
        // `metadata` alias, no supportedProtocolVersions means "1".
        check(
            map(vec![
                ("type", text("join")),
                ("senderId", text("a")),
                (
                    "metadata",
                    map(vec![
                        ("storageId", text("st")),
                        ("isEphemeral", Value::Null),
                    ]),
                ),
            ]),
            Message::Join {
                sender_id: "a".into(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some("st".into()),
                    is_ephemeral: None,
                    capabilities: None,
                }),
                supported_protocol_versions: vec!["1".into()],
            },
        );
        // remote-heads-changed with a float timestamp.
        let mut heads = BTreeMap::new();
        heads.insert(
            "st".to_string(),
            HeadsAtTime {
                heads: vec![],
                timestamp: 12,
            },
        );
        check(
            map(vec![
                ("type", text("remote-heads-changed")),
                ("senderId", text("a")),
                ("targetId", text("b")),
                ("documentId", text(&id)),
                (
                    "newHeads",
                    map(vec![(
                        "st",
                        map(vec![
                            ("heads", Value::Array(vec![])),
                            ("timestamp", Value::Float(12.0)),
                        ]),
                    )]),
                ),
            ]),
            Message::RemoteHeadsChanged {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                new_heads: heads,
            },
        );
    }

    /// Malformed frames are typed errors naming the problem, never panics.
    #[test]
    fn malformed_frames_are_errors() {
        let check = |input: Vec<u8>, expected: fn(&DecodeError) -> bool| {
            let got = decode(&input);
            assert!(
                matches!(&got, Err(e) if expected(e)),
                "{input:?} gave {got:?}"
            );
        };
        check(vec![], |e| matches!(e, DecodeError::Cbor(_)));
        check(vec![0xff, 0x00, 0x13], |e| {
            matches!(e, DecodeError::Cbor(_))
        });
        // a map header promising 5 entries, then nothing
        check(vec![0xa5], |e| matches!(e, DecodeError::Cbor(_)));
        check(cbor(Value::Array(vec![])), |e| *e == DecodeError::NotAMap);
        check(cbor(map(vec![("senderId", text("a"))])), |e| {
            *e == DecodeError::MissingField("type")
        });
        check(
            cbor(map(vec![("type", text("teleport"))])),
            |e| matches!(e, DecodeError::UnknownType(t) if t == "teleport"),
        );
        check(cbor(map(vec![("type", Value::Integer(3.into()))])), |e| {
            matches!(e, DecodeError::WrongType { field: "type", .. })
        });
        check(
            cbor(map(vec![
                ("type", text("sync")),
                ("senderId", text("a")),
                ("targetId", text("b")),
                ("documentId", text("not-an-id")),
                ("data", Value::Bytes(vec![1])),
            ])),
            |e| matches!(e, DecodeError::DocumentId(_)),
        );
        check(
            cbor(map(vec![
                ("type", text("sync")),
                ("senderId", text("a")),
                ("targetId", text("b")),
                ("documentId", text(doc().to_string())),
                ("data", text("not bytes")),
            ])),
            |e| matches!(e, DecodeError::WrongType { field: "data", .. }),
        );
        check(
            cbor(map(vec![
                ("type", text("ephemeral")),
                ("senderId", text("a")),
                ("targetId", text("b")),
                ("count", Value::Float(-1.5)),
                ("sessionId", text("s")),
                ("documentId", text(doc().to_string())),
                ("data", Value::Bytes(vec![1])),
            ])),
            |e| matches!(e, DecodeError::WrongType { field: "count", .. }),
        );
        // trailing garbage after a valid message
        let mut trailing = encode(&Message::Leave {
            sender_id: "a".into(),
        });
        trailing.push(0);
        check(trailing, |e| *e == DecodeError::TrailingBytes(1));
        // 100 000 nested arrays: rejected by the nesting limit, no stack overflow
        let mut deep = vec![0x81; 100_000];
        deep.push(0x00);
        check(deep, |e| matches!(e, DecodeError::Cbor(_)));
        // a byte string claiming 2^62 bytes
        check(vec![0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0], |e| {
            matches!(e, DecodeError::Cbor(_))
        });
    }

    /// Peer and storage ids (issue 16, item 6): real spellings pass; an oversized,
    /// empty or control-character id is refused at decode, in every field that holds one.
    #[test]
    fn peer_ids_are_bounded() {
        let join = |sender: &str, storage: &str| {
            cbor(map(vec![
                ("type", text("join")),
                ("senderId", text(sender)),
                ("peerMetadata", map(vec![("storageId", text(storage))])),
            ]))
        };
        let sync = |sender: &str, target: &str| {
            cbor(map(vec![
                ("type", text("sync")),
                ("senderId", text(sender)),
                ("targetId", text(target)),
                ("documentId", text(doc().to_string())),
                ("data", Value::Bytes(vec![1])),
            ]))
        };
        let heads = |storage: &str| {
            cbor(map(vec![
                ("type", text("remote-heads-changed")),
                ("senderId", text("a")),
                ("targetId", text("b")),
                ("documentId", text(doc().to_string())),
                (
                    "newHeads",
                    map(vec![(
                        storage,
                        map(vec![
                            ("heads", Value::Array(vec![])),
                            ("timestamp", Value::Integer(1.into())),
                        ]),
                    )]),
                ),
            ]))
        };
        let long = "p".repeat(MAX_PEER_ID_LEN + 1);
        let longest = "p".repeat(MAX_PEER_ID_LEN);
        let huge = "x".repeat(1 << 20);
        let check = |frame: Vec<u8>, expected: Option<&'static str>| {
            let got = decode(&frame);
            match expected {
                None => assert!(got.is_ok(), "refused: {got:?}"),
                Some(field) => assert!(
                    matches!(&got, Err(DecodeError::PeerId { field: f, .. }) if *f == field),
                    "{field}: {got:?}"
                ),
            }
        };
        let uuid = "6c3c1a3e-0d4b-4c51-9a0e-1f2d3c4b5a69";
        check(join("peer-k3j2h1g0", uuid), None);
        check(join("buurtsync-0a1b2c3d4e5f", "st"), None);
        check(join(&longest, &longest), None);
        check(join(&long, uuid), Some("senderId"));
        check(join(&huge, uuid), Some("senderId"));
        check(join("", uuid), Some("senderId"));
        check(join("a\nb", uuid), Some("senderId"));
        check(join("naïve", uuid), Some("senderId"));
        check(join("a b", uuid), Some("senderId"));
        check(join("ok", &huge), Some("storageId"));
        check(sync("a", &long), Some("targetId"));
        check(sync(&huge, "b"), Some("senderId"));
        check(heads(uuid), None);
        check(heads(&huge), Some("newHeads"));
    }

    /// Encoded frames use plain byte strings and integer counts, as cbor-x readers expect.
    #[test]
    fn encodes_like_js_peers() {
        let bytes = encode(&Message::Sync {
            sender_id: "a".into(),
            target_id: "b".into(),
            document_id: doc(),
            data: vec![0x42],
        });
        assert_eq!(field(&bytes, "data"), Some(Value::Bytes(vec![0x42])));
        assert_eq!(field(&bytes, "documentId"), Some(text(doc().to_string())));
    }

    /// The `buurtsync` metadata key: decoded into capabilities (unknown ones kept, so
    /// the server can answer what it speaks), absent when not sent, never written for
    /// metadata without it (automerge-repo clients see the plain `peer`), and a
    /// malformed value is an error naming it.
    #[test]
    fn capabilities_in_peer_metadata() {
        let join = |meta: Value| {
            cbor(map(vec![
                ("type", text("join")),
                ("senderId", text("a")),
                ("peerMetadata", meta),
            ]))
        };
        let meta = |msg: Result<Message, DecodeError>| match msg {
            Ok(Message::Join { peer_metadata, .. }) => Ok(peer_metadata.expect("metadata")),
            Ok(other) => panic!("not a join: {other:?}"),
            Err(e) => Err(e),
        };
        let with = meta(decode(&join(map(vec![
            ("storageId", text("st")),
            (
                "buurtsync",
                map(vec![
                    ("summary", Value::Integer(1.into())),
                    ("teleport", Value::Float(3.0)),
                ]),
            ),
            ("someoneElses", text("ignored")),
        ]))))
        .expect("decodes");
        assert!(with.supports("summary", 1));
        assert!(!with.supports("summary", 2));
        assert_eq!(
            with.capabilities.as_ref().and_then(|c| c.get("teleport")),
            Some(&3)
        );
        let without = meta(decode(&join(map(vec![("storageId", text("st"))])))).expect("decodes");
        assert_eq!(without.capabilities, None);
        assert!(!without.supports("summary", 1));
        let bad = meta(decode(&join(map(vec![("buurtsync", text("summary"))]))));
        assert!(
            matches!(
                bad,
                Err(DecodeError::WrongType {
                    field: "peerMetadata.buurtsync",
                    ..
                })
            ),
            "{bad:?}"
        );
        // Encoding metadata without capabilities writes only the automerge-repo keys.
        let plain = encode(&Message::Peer {
            sender_id: "server".into(),
            target_id: "a".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("st".into()),
                is_ephemeral: Some(false),
                capabilities: None,
            }),
            selected_protocol_version: "1".into(),
        });
        assert_eq!(
            field(&plain, "peerMetadata"),
            Some(map(vec![
                ("storageId", text("st")),
                ("isEphemeral", Value::Bool(false))
            ]))
        );
    }

    /// A device's summary is split into frames of at most `MAX_SUMMARY_DOCUMENTS`,
    /// each of which decodes again; more than that in one frame is refused.
    #[test]
    fn summary_frames_split_and_round_trip() {
        use crate::protocol::{summary_frames, MAX_SUMMARY_DOCUMENTS};
        let docs: Vec<(DocumentId, Vec<ChangeHash>)> = (0..2 * MAX_SUMMARY_DOCUMENTS + 5)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                (DocumentId::from_bytes(id), vec![ChangeHash([i as u8; 32])])
            })
            .collect();
        let frames = summary_frames("dev", "server", docs.clone());
        assert_eq!(frames.len(), 3);
        let mut seen = 0;
        for frame in &frames {
            let Message::Summary { documents, .. } = decode(&encode(frame)).expect("decodes")
            else {
                panic!("not a summary")
            };
            assert!(documents.len() <= MAX_SUMMARY_DOCUMENTS);
            seen += documents.len();
        }
        assert_eq!(seen, docs.len());
        assert!(summary_frames("dev", "server", Vec::new()).is_empty());
        let too_big = Message::Summary {
            sender_id: "dev".into(),
            target_id: "server".into(),
            documents: docs.into_iter().collect(),
        };
        assert!(matches!(
            decode(&encode(&too_big)),
            Err(DecodeError::TooMany {
                field: "documents",
                ..
            })
        ));
    }

    /// Millisecond timestamps go out as float64 like cbor-x writes them (a 64-bit CBOR
    /// integer would reach JS as a BigInt); small numbers stay integers.
    #[test]
    fn large_numbers_are_js_numbers() {
        let count = |count| {
            field(
                &encode(&Message::Ephemeral {
                    sender_id: "a".into(),
                    target_id: "b".into(),
                    count,
                    session_id: "s".into(),
                    document_id: doc(),
                    data: vec![1],
                }),
                "count",
            )
        };
        assert_eq!(count(5), Some(Value::Integer(5.into())));
        assert_eq!(
            count(1_700_000_000_000),
            Some(Value::Float(1_700_000_000_000.0))
        );
    }

    /// Messages whose strings, payloads, lists and numbers sit on both sides of every
    /// CBOR head width (23/24, 255/256, 65 535/65 536 bytes or entries) and of the
    /// number forms (integer up to 2^32 - 1, then float32 when exact, else float64).
    fn generated_messages() -> Vec<Message> {
        const LENGTHS: [usize; 8] = [0, 1, 23, 24, 255, 256, 65_535, 65_536];
        const NUMBERS: [u64; 13] = [
            0,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            1 << 33,
            1_700_000_000_123,
            (1 << 53) + 1,
            u64::MAX,
        ];
        let metadata = |i: usize| PeerMetadata {
            storage_id: (i & 1 != 0).then(|| format!("st-{i}")),
            is_ephemeral: (i & 2 != 0).then_some(i & 4 != 0),
            capabilities: (i & 8 != 0).then(|| {
                (0..i % 30)
                    .map(|c| (format!("cap-{c}"), NUMBERS[c % NUMBERS.len()]))
                    .collect()
            }),
        };
        let mut out = Vec::new();
        for (i, &len) in LENGTHS.iter().enumerate() {
            let long = "p".repeat(len);
            let data: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
            let few = len.min(300);
            let doc_i = DocumentId::from_bytes([i as u8; 16]);
            out.extend([
                Message::Sync {
                    sender_id: long.clone(),
                    target_id: "server".into(),
                    document_id: doc_i,
                    data: data.clone(),
                },
                Message::Request {
                    sender_id: "alice".into(),
                    target_id: long.clone(),
                    document_id: DocumentId::random(),
                    data: data.clone(),
                },
                Message::Ephemeral {
                    sender_id: "alice".into(),
                    target_id: "server".into(),
                    count: NUMBERS[i],
                    session_id: long.clone(),
                    document_id: doc_i,
                    data,
                },
                Message::DocUnavailable {
                    sender_id: long.clone(),
                    target_id: long.clone(),
                    document_id: doc_i,
                },
                Message::Leave {
                    sender_id: long.clone(),
                },
                Message::Error {
                    sender_id: (i % 2 == 0).then(|| long.clone()),
                    target_id: (i % 4 < 2).then(|| "peer".to_string()),
                    message: long.clone(),
                },
                Message::Join {
                    sender_id: "alice".into(),
                    peer_metadata: (i > 0).then(|| PeerMetadata {
                        storage_id: Some(long.clone()),
                        is_ephemeral: Some(i % 2 == 0),
                        capabilities: Some(
                            (0..few)
                                .map(|c| (format!("c{c}"), NUMBERS[c % NUMBERS.len()]))
                                .collect(),
                        ),
                    }),
                    supported_protocol_versions: vec!["1".into(); few],
                },
                Message::Peer {
                    sender_id: "server".into(),
                    target_id: long.clone(),
                    peer_metadata: (i > 0).then(|| metadata(i * 3)),
                    selected_protocol_version: long.clone(),
                },
                Message::RemoteSubscriptionChange {
                    sender_id: "alice".into(),
                    target_id: "server".into(),
                    add: (0..few).map(|n| format!("st-{n}")).collect(),
                    remove: (0..few / 2).map(|n| format!("gone-{n}")).collect(),
                },
                Message::RemoteHeadsChanged {
                    sender_id: "server".into(),
                    target_id: long.clone(),
                    document_id: doc_i,
                    new_heads: (0..few)
                        .map(|n| {
                            let heads = encode_heads(&vec![ChangeHash([n as u8; 32]); n % 30]);
                            let timestamp = NUMBERS[n % NUMBERS.len()];
                            (format!("st-{n}"), HeadsAtTime { heads, timestamp })
                        })
                        .collect(),
                },
                Message::Summary {
                    sender_id: "alice".into(),
                    target_id: "server".into(),
                    documents: (0..few)
                        .map(|n| {
                            let mut id = [0u8; 16];
                            id[..8].copy_from_slice(&(n as u64).to_le_bytes());
                            (
                                DocumentId::from_bytes(id),
                                vec![ChangeHash([n as u8; 32]); n % 3],
                            )
                        })
                        .collect(),
                },
                Message::SummaryAnswer {
                    sender_id: "server".into(),
                    target_id: "alice".into(),
                    in_sync: (0..few)
                        .map(|n| DocumentId::from_bytes([n as u8; 16]))
                        .collect(),
                },
            ]);
        }
        for (i, &n) in NUMBERS.iter().enumerate() {
            out.push(Message::RemoteHeadsChanged {
                sender_id: "server".into(),
                target_id: "alice".into(),
                document_id: doc(),
                new_heads: [(
                    "st".to_string(),
                    HeadsAtTime {
                        heads: vec![],
                        timestamp: n,
                    },
                )]
                .into_iter()
                .collect(),
            });
            out.push(Message::Join {
                sender_id: "alice".into(),
                peer_metadata: Some(metadata(i)),
                supported_protocol_versions: vec![],
            });
        }
        for i in 0..16 {
            out.push(Message::Peer {
                sender_id: "server".into(),
                target_id: "alice".into(),
                peer_metadata: Some(metadata(i)),
                selected_protocol_version: "1".into(),
            });
        }
        out
    }

    /// The direct writer gives the bytes the `Value`-tree encoder gave (same key order,
    /// integer widths and float forms), for every message type and size.
    #[test]
    fn encoder_writes_what_the_value_encoder_wrote() {
        let messages: Vec<Message> = all_messages()
            .into_iter()
            .chain(generated_messages())
            .collect();
        assert!(messages.len() > 100);
        for (i, msg) in messages.iter().enumerate() {
            let direct = encode(msg);
            let via_value = encode_via_value(msg);
            assert!(
                direct == via_value,
                "message {i} ({}): {} bytes written, the Value encoder wrote {}; first \
                 difference at byte {:?}",
                msg.type_name(),
                direct.len(),
                via_value.len(),
                direct.iter().zip(&via_value).position(|(a, b)| a != b)
            );
        }
    }

    /// The fast path reads the usual `sync`/`request` shapes (ours, automerge-repo's key
    /// order, long-form heads) and declines everything else; what it reads is the
    /// general decoder's message, and `decode` answers every input as the general
    /// decoder does.
    #[test]
    fn fast_path_reads_the_usual_shape_and_declines_the_rest() {
        let check = |name: &str, input: &[u8], fast: bool| {
            let general = decode_general(input);
            match decode_fast(input) {
                Some(msg) => {
                    assert!(fast, "{name}: taken by the fast path");
                    assert_eq!(Ok(msg), general, "{name}: fast path differs");
                }
                None => assert!(!fast, "{name}: declined ({general:?})"),
            }
            assert_eq!(decode(input), general, "{name}: decode differs");
        };
        let id = doc().to_string();
        // automerge-repo's order: type, targetId, data, documentId, senderId.
        let js = |kind: &str, data: Value, document: Value| {
            vec![
                ("type", text(kind)),
                ("targetId", text("server")),
                ("data", data),
                ("documentId", document),
                ("senderId", text("peer-k3j2h1g0")),
            ]
        };
        let usual = || js("sync", Value::Bytes(vec![0x42, 7]), text(&id));
        let frame = |entries: Vec<(&str, Value)>| cbor(map(entries));
        let with = |key: &str, value: Value| {
            let mut entries = usual();
            for entry in &mut entries {
                if entry.0 == key {
                    entry.1 = value.clone();
                }
            }
            frame(entries)
        };

        for msg in &all_messages() {
            let sync = matches!(msg, Message::Sync { .. } | Message::Request { .. });
            check(msg.type_name(), &encode(msg), sync);
        }
        check("js order", &frame(usual()), true);
        check(
            "js request",
            &frame(js("request", Value::Bytes(vec![1]), text(&id))),
            true,
        );
        check("empty data", &with("data", Value::Bytes(vec![])), true);
        check(
            "big data",
            &with("data", Value::Bytes(vec![5; 70_000])),
            true,
        );
        check(
            "url id",
            &with("documentId", text(format!("automerge:{id}"))),
            true,
        );
        // Every head in its longest form: map, keys, values, data.
        let mut long_form = vec![0xbb, 0, 0, 0, 0, 0, 0, 0, 5];
        for (key, value) in [
            ("type", "sync"),
            ("senderId", "a"),
            ("targetId", "b"),
            ("documentId", id.as_str()),
        ] {
            for text in [key, value] {
                long_form.extend_from_slice(&[0x7b, 0, 0, 0, 0, 0, 0, 0, text.len() as u8]);
                long_form.extend_from_slice(text.as_bytes());
            }
        }
        long_form.extend_from_slice(&[0x78, 4]);
        long_form.extend_from_slice(b"data");
        long_form.extend_from_slice(&[0x5a, 0, 0, 0, 2, 0x42, 0x43]);
        check("long-form heads", &long_form, true);

        // Declined: shapes the general decoder reads (or refuses) itself.
        check(
            "other type",
            &frame(js("ephemeral", Value::Bytes(vec![1]), text(&id))),
            false,
        );
        check("unknown type", &with("type", text("teleport")), false);
        check(
            "type not text",
            &with("type", Value::Integer(1.into())),
            false,
        );
        check(
            "byte-string id",
            &with("documentId", Value::Bytes(id.clone().into_bytes())),
            false,
        );
        check(
            "raw 16-byte id",
            &with("documentId", Value::Bytes(vec![9; 16])),
            false,
        );
        check("bad id", &with("documentId", text("not-an-id")), false);
        check(
            "tagged data",
            &with("data", Value::Tag(64, Box::new(Value::Bytes(vec![1])))),
            false,
        );
        check("text data", &with("data", text("x")), false);
        check("null sender", &with("senderId", Value::Null), false);
        check("empty sender", &with("senderId", text("")), false);
        check("spaced target", &with("targetId", text("a b")), false);
        check(
            "long target",
            &with("targetId", text("p".repeat(MAX_PEER_ID_LEN + 1))),
            false,
        );
        let mut extra = usual();
        extra.push(("extra", Value::Null));
        check("extra key", &frame(extra), false);
        let mut missing = usual();
        missing.retain(|(k, _)| *k != "data");
        check("missing data", &frame(missing.clone()), false);
        let mut repeated = missing.clone();
        repeated.push(("type", text("sync")));
        check("repeated key, five entries", &frame(repeated), false);
        let mut first_wins = usual();
        first_wins.insert(0, ("type", text("request")));
        check("repeated key, six entries", &frame(first_wins), false);
        let bytes_key = Value::Map(
            usual()
                .into_iter()
                .map(|(k, v)| {
                    let key = if k == "type" {
                        Value::Bytes(k.as_bytes().to_vec())
                    } else {
                        text(k)
                    };
                    (key, v)
                })
                .collect(),
        );
        check("byte-string key", &cbor(bytes_key), false);
        check(
            "tagged map",
            &cbor(Value::Tag(55_799, Box::new(map(usual())))),
            false,
        );
        let good = frame(usual());
        let mut indefinite = vec![0xbf];
        indefinite.extend_from_slice(&good[1..]);
        indefinite.push(0xff);
        check("indefinite map", &indefinite, false);
        // senderId as an indefinite text of two chunks.
        let sender = cbor(text("peer-k3j2h1g0"));
        let at = good
            .windows(sender.len())
            .position(|w| w == sender.as_slice())
            .expect("sender in frame");
        let mut chunked = good[..at].to_vec();
        chunked.extend_from_slice(&[0x7f, 0x64]);
        chunked.extend_from_slice(b"peer");
        chunked.push(0x69);
        chunked.extend_from_slice(b"-k3j2h1g0");
        chunked.push(0xff);
        chunked.extend_from_slice(&good[at + sender.len()..]);
        check("indefinite text", &chunked, false);
        let mut not_utf8 = good.clone();
        not_utf8[at + 1] = 0xff;
        check("sender not UTF-8", &not_utf8, false);
        let mut trailing = good.clone();
        trailing.push(0);
        check("trailing byte", &trailing, false);
        let mut reserved = good.clone();
        reserved[0] = 0xbc;
        check("reserved head", &reserved, false);
        // Our order puts `data` last: claim 2^62 bytes of it.
        let ours = encode(&Message::Sync {
            sender_id: "a".into(),
            target_id: "b".into(),
            document_id: doc(),
            data: vec![1, 2, 3],
        });
        let huge = [&ours[..ours.len() - 4], &[0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0]].concat();
        check("huge data", &huge, false);
        for end in 0..good.len() {
            check("truncated", &good[..end], false);
        }
        // Every byte of a usual frame altered: whatever the fast path reads is right.
        for at in 0..good.len() {
            for byte in [0x00, 0x17, 0x18, 0x1f, 0x40, 0x60, 0xa0, 0xf6, 0xff] {
                let mut altered = good.clone();
                altered[at] = byte;
                let general = decode_general(&altered);
                if let Some(msg) = decode_fast(&altered) {
                    assert_eq!(Ok(msg), general, "byte {at} set to {byte:#x}");
                }
                assert_eq!(decode(&altered), general, "byte {at} set to {byte:#x}");
            }
        }
    }
}
