//! Oracle shared by the `apply` target and its replay in the test run: the ops the
//! server counts from a payload's headers to decide where to apply it
//! (`sync_core::chunks::sync_message_ops`, through `engine::runs_inline`) are the ops
//! the engine's screen counts on the decoded message, refusals alike.

use sync_core::chunks;

/// Panics when the header count and the screen disagree on a payload automerge decodes.
pub fn agrees_with_screen(payload: &[u8]) {
    let Ok(message) = automerge::sync::Message::decode(payload) else {
        return;
    };
    for budget in [
        chunks::Budget::default(),
        chunks::Budget {
            inflated_bytes: 64 * 1024,
            ops: sync_core::engine::INLINE_OPS,
        },
    ] {
        assert_eq!(
            chunks::sync_message_ops(payload, budget),
            chunks::screen(&message, budget),
            "the header count and the screen disagree"
        );
    }
}
