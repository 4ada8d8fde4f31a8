//! Partitions: the (wijk, kind) pair that scopes every document.
//!
//! A document's partition is read from its `meta` map when it is created and never
//! changes afterwards; grants and the access policy speak in these terms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The two kinds of documents buurtsync stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// A household plan (gezinsplan / ondersteuningsplan): special-category data.
    Plan,
    /// A group activity in the wijk, logged by volunteers and professionals.
    Activiteit,
}

impl DocumentKind {
    /// The spelling used in `meta.kind`, the catalog and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Plan => "plan",
            DocumentKind::Activiteit => "activiteit",
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DocumentKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plan" => Ok(DocumentKind::Plan),
            "activiteit" => Ok(DocumentKind::Activiteit),
            other => Err(UnknownKind(other.to_owned())),
        }
    }
}

/// A `meta.kind` (or CLI argument) that names no document kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown document kind {0:?} (expected \"plan\" or \"activiteit\")")]
pub struct UnknownKind(pub String);

/// A wijk identifier, e.g. `assen-noord`. Lowercase ASCII letters, digits and dashes,
/// 1 to 64 characters, so it is safe in URLs, logs and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WijkId(String);

impl WijkId {
    /// Checks the spelling; see the type's documentation.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidWijkId> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(WijkId(id))
        } else {
            Err(InvalidWijkId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WijkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for WijkId {
    type Error = InvalidWijkId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        WijkId::new(s)
    }
}

impl From<WijkId> for String {
    fn from(w: WijkId) -> String {
        w.0
    }
}

impl FromStr for WijkId {
    type Err = InvalidWijkId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WijkId::new(s)
    }
}

/// A wijk id with characters outside `[a-z0-9-]` or of the wrong length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid wijk id {0:?}: use 1-64 lowercase letters, digits or dashes")]
pub struct InvalidWijkId(pub String);

/// Where a document lives: fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub wijk: WijkId,
    pub kind: DocumentKind,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.wijk, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wijk ids are restricted so they can never smuggle separators or personal data.
    #[test]
    fn wijk_id_spelling() {
        let check = |input: &str, ok: bool| assert_eq!(WijkId::new(input).is_ok(), ok, "{input:?}");
        check("assen-noord", true);
        check("wijk7", true);
        check("", false);
        check("Assen", false);
        check("a/b", false);
        check("naïef", false);
        check(&"x".repeat(65), false);
        check(&"x".repeat(64), true);
    }

    /// Kinds round-trip through their `meta.kind` spelling.
    #[test]
    fn kind_spelling() {
        for kind in [DocumentKind::Plan, DocumentKind::Activiteit] {
            assert_eq!(kind.as_str().parse::<DocumentKind>(), Ok(kind));
        }
        assert!("Plan".parse::<DocumentKind>().is_err());
    }
}
