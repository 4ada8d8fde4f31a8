//! The `http` fuzz target's driver: the HTTP API's request parsing
//! (`sync_core::api`), the very functions the server's handlers call for the listing,
//! the move, the central feed and the aggregates, and the document id of a path.
//!
//! Only sync_core is used, so `sync-core/tests/fuzz_regressions.rs` includes this very
//! file (`#[path]`) to replay the corpus in the ordinary test run.

use sync_core::api::{AggregateRequest, FeedRequest, ListRequest, MoveRequest, MAX_FEED_LIMIT};
use sync_core::protocol::DocumentId;

/// The first byte picks the parser, the rest is its input (a query string, a JSON
/// body, a path segment). Oracles: no panic; whatever parses satisfies the request's
/// bounds (no negative cursor or `since`, a feed limit in 1..=MAX) and parses back to
/// the same request from what it writes (`to_query`, `to_json`, `to_string`).
pub fn http(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 5 == 1 {
        if let Ok(request) = MoveRequest::parse_json(rest) {
            let again = MoveRequest::parse_json(request.to_json().as_bytes())
                .expect("a written move parses");
            assert_eq!(again, request, "move round trip");
        }
        return;
    }
    // Query strings and paths reach the handlers as text (axum refuses other bytes).
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(request) = ListRequest::parse_query(text) {
                assert!(request.since.is_none_or(|s| s >= 0), "negative since");
                let again = ListRequest::parse_query(&request.to_query())
                    .expect("a written listing query parses");
                assert_eq!(again, request, "listing round trip");
            }
        }
        2 => {
            if let Ok(request) = FeedRequest::parse_query(text) {
                assert!(request.cursor >= 0, "negative cursor");
                assert!(
                    (1..=MAX_FEED_LIMIT).contains(&request.limit),
                    "limit out of range"
                );
                let again = FeedRequest::parse_query(&request.to_query())
                    .expect("a written feed query parses");
                assert_eq!(again, request, "feed round trip");
            }
        }
        3 => {
            if let Ok(request) = AggregateRequest::parse_query(text) {
                let again = AggregateRequest::parse_query(&request.to_query())
                    .expect("a written aggregates query parses");
                assert_eq!(again, request, "aggregates round trip");
            }
        }
        _ => {
            if let Ok(id) = text.parse::<DocumentId>() {
                let again: DocumentId = id.to_string().parse().expect("a written id parses");
                assert_eq!(again, id, "document id round trip");
            }
        }
    }
}
