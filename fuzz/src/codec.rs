//! The `codec` target's steps: any bytes through the protocol decoder, with the general
//! decoder as the oracle of its fast path, and a round trip of whatever decodes.

use sync_core::protocol::codec::{decode_fast, decode_general};
use sync_core::protocol::{self, Message};

/// Decodes `data`. The fast path must decline or give exactly what the general decoder
/// gives, so `decode` answers (message or error) as the general decoder does; a decoded
/// message must survive an encode/decode round trip, and our own encoding of a `sync` or
/// `request` frame must take the fast path.
pub fn codec(data: &[u8]) {
    let general = decode_general(data);
    if let Some(fast) = decode_fast(data) {
        assert_eq!(
            Ok(&fast),
            general.as_ref(),
            "the fast path disagrees with the general decoder"
        );
    }
    let decoded = protocol::decode(data);
    assert_eq!(decoded, general, "decode differs from the general decoder");
    if let Ok(msg) = decoded {
        let bytes = protocol::encode(&msg);
        let again = protocol::decode(&bytes).expect("our own encoding must decode");
        assert_eq!(again, msg, "encode/decode round trip changed the message");
        if matches!(msg, Message::Sync { .. } | Message::Request { .. }) {
            assert_eq!(
                decode_fast(&bytes),
                Some(msg),
                "our own sync/request frame missed the fast path"
            );
        }
    }
}
