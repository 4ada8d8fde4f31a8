//! The HTTP API's requests: query strings and bodies parsed and checked without I/O.
//!
//! The server's handlers parse every parameter with these functions (so the `http`
//! fuzz target exercises the code that runs), and each request can be written back
//! (`to_query`, `to_json`) as a client would send it: parsing what was written gives
//! the same request.
//!
//! Unknown parameters are ignored (as browsers and proxies add their own); a parameter
//! given twice, a value of the wrong type, or an out-of-range one is refused with an
//! [`InvalidRequest`] that names it.

use crate::partition::{DocumentKind, WijkId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Records per central feed page, unless `limit` asks for fewer.
pub const MAX_FEED_LIMIT: usize = 10_000;

/// A request the API refuses, with a message fit for a client developer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {0}")]
pub struct InvalidRequest(pub String);

fn invalid(what: impl fmt::Display) -> InvalidRequest {
    InvalidRequest(what.to_string())
}

/// Deserialises a query string (without the leading `?`) into `T`.
fn query<'a, T: Deserialize<'a>>(raw: &'a str) -> Result<T, InvalidRequest> {
    serde_urlencoded::from_str(raw).map_err(|e| invalid(format_args!("query string: {e}")))
}

/// A number parameter, refused with its name when it is not one of type `T`.
fn number<T: FromStr>(name: &str, raw: Option<String>) -> Result<Option<T>, InvalidRequest>
where
    T::Err: fmt::Display,
{
    raw.map(|v| {
        v.parse::<T>()
            .map_err(|e| invalid(format_args!("{name}: {e}")))
    })
    .transpose()
}

/// Writes `pairs` (name, value; absent values skipped) as a query string.
fn write_query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<String>)>) -> String {
    let pairs: Vec<(&str, String)> = pairs
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
    // Pairs of strings always serialise; an empty query is the fallback that cannot be.
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `GET /api/v1/documents?wijk=&kind=&since=`: the caller's readable documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    pub wijk: Option<WijkId>,
    pub kind: Option<DocumentKind>,
    /// The `cursor` of an earlier listing (unix seconds, not negative).
    pub since: Option<i64>,
}

#[derive(Deserialize)]
struct RawList {
    wijk: Option<String>,
    kind: Option<String>,
    since: Option<String>,
}

impl ListRequest {
    pub fn parse_query(raw: &str) -> Result<Self, InvalidRequest> {
        let raw: RawList = query(raw)?;
        let since = number::<i64>("since", raw.since)?;
        if since.is_some_and(|s| s < 0) {
            return Err(invalid("since must not be negative"));
        }
        Ok(ListRequest {
            wijk: raw.wijk.map(WijkId::new).transpose().map_err(invalid)?,
            kind: raw
                .kind
                .map(|k| k.parse::<DocumentKind>())
                .transpose()
                .map_err(invalid)?,
            since,
        })
    }

    pub fn to_query(&self) -> String {
        write_query([
            ("wijk", self.wijk.as_ref().map(ToString::to_string)),
            ("kind", self.kind.map(|k| k.as_str().to_owned())),
            ("since", self.since.map(|s| s.to_string())),
        ])
    }
}

/// The body of `POST /api/v1/documents/{id}/move` as sent: `{"wijk": "…"}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MoveBody {
    /// The target wijk.
    pub wijk: String,
}

/// A move, checked: the target wijk is spelled correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRequest {
    pub wijk: WijkId,
}

impl TryFrom<MoveBody> for MoveRequest {
    type Error = InvalidRequest;
    fn try_from(body: MoveBody) -> Result<Self, InvalidRequest> {
        Ok(MoveRequest {
            wijk: WijkId::new(body.wijk).map_err(invalid)?,
        })
    }
}

impl MoveRequest {
    /// The body as bytes, as the server's JSON extractor reads it.
    pub fn parse_json(body: &[u8]) -> Result<Self, InvalidRequest> {
        let body: MoveBody =
            serde_json::from_slice(body).map_err(|e| invalid(format_args!("body: {e}")))?;
        MoveRequest::try_from(body)
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({ "wijk": self.wijk.as_str() }).to_string()
    }
}

/// How an export is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON record per line (the feed's default).
    Ndjson,
    /// One JSON document (the aggregates' default).
    Json,
    /// CSV that opens in Excel.
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    /// `raw` among `allowed` (the first is the default when `raw` is absent).
    fn parse(raw: Option<&str>, allowed: &[Format]) -> Result<Format, InvalidRequest> {
        match raw {
            None => Ok(allowed[0]),
            Some(s) => allowed
                .iter()
                .copied()
                .find(|f| f.as_str() == s)
                .ok_or_else(|| {
                    invalid(format_args!(
                        "unknown format {s:?} (expected {})",
                        allowed
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ))
                }),
        }
    }
}

/// A CSV field separator: `comma` (default) or `semicolon`, which Dutch Excel expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Separator {
    #[default]
    Comma,
    Semicolon,
}

impl Separator {
    /// From the `sep` query parameter (`comma`/`,` or `semicolon`/`;`).
    pub fn parse(raw: Option<&str>) -> Result<Separator, InvalidRequest> {
        match raw {
            None | Some("comma" | ",") => Ok(Separator::Comma),
            Some("semicolon" | ";") => Ok(Separator::Semicolon),
            Some(other) => Err(invalid(format_args!(
                "unknown separator {other:?} (expected comma or semicolon)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Separator::Comma => "comma",
            Separator::Semicolon => "semicolon",
        }
    }

    /// The byte written between fields.
    pub fn byte(self) -> u8 {
        match self {
            Separator::Comma => b',',
            Separator::Semicolon => b';',
        }
    }
}

/// `GET /api/v1/central/feed?cursor=&limit=&format=ndjson|csv&sep=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRequest {
    /// The `Buurtsync-Next-Cursor` of the previous call; 0 (everything) if absent.
    pub cursor: i64,
    /// Records per page, 1 to [`MAX_FEED_LIMIT`] (a larger or zero `limit` is clamped).
    pub limit: usize,
    pub format: Format,
    pub sep: Separator,
}

#[derive(Deserialize)]
struct RawFeed {
    cursor: Option<String>,
    limit: Option<String>,
    format: Option<String>,
    sep: Option<String>,
}

impl FeedRequest {
    pub fn parse_query(raw: &str) -> Result<Self, InvalidRequest> {
        let raw: RawFeed = query(raw)?;
        let cursor = number::<i64>("cursor", raw.cursor)?.unwrap_or(0);
        if cursor < 0 {
            return Err(invalid("cursor must not be negative"));
        }
        Ok(FeedRequest {
            cursor,
            limit: number::<usize>("limit", raw.limit)?
                .unwrap_or(MAX_FEED_LIMIT)
                .clamp(1, MAX_FEED_LIMIT),
            format: Format::parse(raw.format.as_deref(), &[Format::Ndjson, Format::Csv])?,
            sep: Separator::parse(raw.sep.as_deref())?,
        })
    }

    pub fn to_query(&self) -> String {
        write_query([
            ("cursor", Some(self.cursor.to_string())),
            ("limit", Some(self.limit.to_string())),
            ("format", Some(self.format.as_str().to_owned())),
            ("sep", Some(self.sep.as_str().to_owned())),
        ])
    }
}

/// The period the central office's aggregates count in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[default]
    Month,
    Quarter,
    Year,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }
}

impl FromStr for Period {
    type Err = InvalidRequest;
    fn from_str(s: &str) -> Result<Self, InvalidRequest> {
        match s {
            "month" => Ok(Period::Month),
            "quarter" => Ok(Period::Quarter),
            "year" => Ok(Period::Year),
            other => Err(invalid(format_args!(
                "unknown period {other:?} (expected month, quarter or year)"
            ))),
        }
    }
}

/// `GET /api/v1/central/aggregates?period=&format=json|csv&sep=&min_count=` (and the
/// dashboard's pages, which take the same parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRequest {
    pub period: Period,
    pub format: Format,
    pub sep: Separator,
    /// Raise (never lower) the server's suppression threshold for this export.
    pub min_count: Option<u64>,
}

#[derive(Deserialize)]
struct RawAggregate {
    period: Option<String>,
    format: Option<String>,
    sep: Option<String>,
    min_count: Option<String>,
}

impl AggregateRequest {
    pub fn parse_query(raw: &str) -> Result<Self, InvalidRequest> {
        let raw: RawAggregate = query(raw)?;
        Ok(AggregateRequest {
            period: raw
                .period
                .as_deref()
                .map_or(Ok(Period::Month), str::parse)?,
            format: Format::parse(raw.format.as_deref(), &[Format::Json, Format::Csv])?,
            sep: Separator::parse(raw.sep.as_deref())?,
            min_count: number::<u64>("min_count", raw.min_count)?,
        })
    }

    pub fn to_query(&self) -> String {
        write_query([
            ("period", Some(self.period.as_str().to_owned())),
            ("format", Some(self.format.as_str().to_owned())),
            ("sep", Some(self.sep.as_str().to_owned())),
            ("min_count", self.min_count.map(|m| m.to_string())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absent parameters take their defaults; unknown ones are ignored.
    #[test]
    fn defaults_and_unknown_parameters() {
        assert_eq!(
            ListRequest::parse_query("").expect("parses"),
            ListRequest::default()
        );
        let feed = FeedRequest::parse_query("utm_source=x").expect("parses");
        assert_eq!(
            feed,
            FeedRequest {
                cursor: 0,
                limit: MAX_FEED_LIMIT,
                format: Format::Ndjson,
                sep: Separator::Comma
            }
        );
        let agg = AggregateRequest::parse_query("").expect("parses");
        assert_eq!((agg.period, agg.format), (Period::Month, Format::Json));
    }

    /// Each refusal names what is wrong.
    #[test]
    fn refusals() {
        for (raw, needle) in [
            ("since=-1", "since"),
            ("since=abc", "since"),
            ("wijk=Assen%20Noord", "Assen Noord"),
            ("kind=recept", "recept"),
            ("wijk=a&wijk=b", "duplicate"),
        ] {
            let e = ListRequest::parse_query(raw).expect_err("refused");
            assert!(e.0.contains(needle), "{raw}: {e}");
        }
        for (raw, needle) in [
            ("cursor=-5", "cursor"),
            ("format=json", "json"),
            ("sep=tab", "tab"),
            ("limit=-1", "limit"),
        ] {
            let e = FeedRequest::parse_query(raw).expect_err("refused");
            assert!(e.0.contains(needle), "{raw}: {e}");
        }
        assert!(AggregateRequest::parse_query("format=ndjson").is_err());
        assert!(AggregateRequest::parse_query("period=week").is_err());
        assert!(MoveRequest::parse_json(br#"{"wijk":"../etc"}"#).is_err());
        assert!(MoveRequest::parse_json(b"{").is_err());
    }

    /// A feed limit outside 1..=MAX is clamped, as the server always did.
    #[test]
    fn feed_limit_is_clamped() {
        assert_eq!(
            FeedRequest::parse_query("limit=0").expect("parses").limit,
            1
        );
        assert_eq!(
            FeedRequest::parse_query("limit=99999999")
                .expect("parses")
                .limit,
            MAX_FEED_LIMIT
        );
    }

    /// What a request writes, it parses back to the same request.
    #[test]
    fn round_trips() {
        let list = ListRequest {
            wijk: Some(WijkId::new("assen-noord").expect("parses")),
            kind: Some(DocumentKind::Plan),
            since: Some(1_700_000_000),
        };
        assert_eq!(
            ListRequest::parse_query(&list.to_query()).expect("parses"),
            list
        );
        let feed =
            FeedRequest::parse_query("cursor=7&limit=20&format=csv&sep=%3B").expect("parses");
        assert_eq!(feed.sep, Separator::Semicolon);
        assert_eq!(
            FeedRequest::parse_query(&feed.to_query()).expect("parses"),
            feed
        );
        let agg = AggregateRequest::parse_query("period=year&min_count=9").expect("parses");
        assert_eq!(
            AggregateRequest::parse_query(&agg.to_query()).expect("parses"),
            agg
        );
        let mv = MoveRequest::parse_json(br#"{"wijk":"emmen-oost","extra":1}"#).expect("parses");
        assert_eq!(
            MoveRequest::parse_json(mv.to_json().as_bytes()).expect("parses"),
            mv
        );
    }
}
