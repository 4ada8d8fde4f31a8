//! [`decode_fast`]: the `sync` and `request` frames that make up most of the traffic,
//! read without building a `ciborium::Value` tree.
//!
//! It reads exactly the shape automerge-repo's JS peers and our own [`super::encode`]
//! write: a definite-length map of five entries — `type`, `senderId`, `targetId`,
//! `documentId`, `data`, in any order — with text keys, text values and a plain byte
//! string for `data`. Anything else (another type, another key or one missing or
//! repeated, `null`/`undefined`, tags, indefinite lengths, invalid UTF-8, an id
//! [`super::decode_general`] would refuse, bytes left over) makes it answer `None`, and
//! [`super::decode`] hands the frame to the general decoder, which decides and words
//! every error. So for any input it either declines or gives what the general decoder
//! gives; the `codec` fuzz target holds it to that.

use super::check_peer_id;
use crate::protocol::ids::DocumentId;
use crate::protocol::message::Message;

/// A `sync` or `request` frame of the common shape, or `None` to defer to
/// [`super::decode_general`].
pub fn decode_fast(bytes: &[u8]) -> Option<Message> {
    let mut r = Reader(bytes);
    if r.head(MAP)? != 5 {
        return None;
    }
    let mut kind = None;
    let mut sender = None;
    let mut target = None;
    let mut document = None;
    let mut data = None;
    for _ in 0..5 {
        let (slot, major) = match r.item(TEXT)? {
            b"type" => (&mut kind, TEXT),
            b"senderId" => (&mut sender, TEXT),
            b"targetId" => (&mut target, TEXT),
            b"documentId" => (&mut document, TEXT),
            b"data" => (&mut data, BYTES),
            _ => return None,
        };
        // A repeated key: the general decoder takes the first, but this is no common shape.
        if slot.replace(r.item(major)?).is_some() {
            return None;
        }
    }
    if !r.0.is_empty() {
        return None;
    }
    let sender_id = peer_id("senderId", sender?)?;
    let target_id = peer_id("targetId", target?)?;
    let document_id: DocumentId = std::str::from_utf8(document?).ok()?.parse().ok()?;
    let data = data?.to_vec();
    match kind? {
        b"sync" => Some(Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        }),
        b"request" => Some(Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }),
        _ => None,
    }
}

/// A peer id the general decoder would accept as it is.
fn peer_id(field: &'static str, bytes: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(bytes).ok()?;
    check_peer_id(field, id).ok()?;
    Some(id.to_owned())
}

/// CBOR major types (RFC 8949, section 3.1) this path reads.
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const MAP: u8 = 5;

/// The bytes not read yet.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The argument of a head of major type `major` with a definite length; `None` for
    /// any other head (another type, indefinite length, reserved values) or too few bytes.
    fn head(&mut self, major: u8) -> Option<u64> {
        let (&first, rest) = self.0.split_first()?;
        if first >> 5 != major {
            return None;
        }
        let width = match first & 0x1f {
            n @ 0..=23 => {
                self.0 = rest;
                return Some(u64::from(n));
            }
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return None,
        };
        if rest.len() < width {
            return None;
        }
        let (arg, rest) = rest.split_at(width);
        self.0 = rest;
        Some(arg.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
    }

    /// The contents of a definite-length text or byte string.
    fn item(&mut self, major: u8) -> Option<&'a [u8]> {
        let len = usize::try_from(self.head(major)?).ok()?;
        if self.0.len() < len {
            return None;
        }
        let (item, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(item)
    }
}
