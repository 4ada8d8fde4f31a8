//! [`Date`]: a calendar date written `YYYY-MM-DD`, the only date format in the documents.

use std::fmt;
use std::str::FromStr;

use autosurgeon::reconcile::NoKey;
use autosurgeon::{ReadDoc, Reconcile, Reconciler};

use super::*;

/// A calendar date written `YYYY-MM-DD`, the only date format in the documents.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(String);

impl Date {
    /// Checks the shape and that the month and day exist (leap years included); years
    /// outside 1900-2999 are refused as typos.
    pub fn parse(s: &str) -> Result<Date, InvalidDate> {
        let invalid = || InvalidDate(shorten(s));
        let bytes = s.as_bytes();
        let shaped = bytes.len() == 10
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shaped {
            return Err(invalid());
        }
        let number = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .unwrap_or_default()
                .iter()
                .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'))
        };
        let (year, month, day) = (number(0..4), number(5..7), number(8..10));
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(invalid()),
        };
        if !(1900..=2999).contains(&year) || day == 0 || day > days_in_month {
            return Err(invalid());
        }
        Ok(Date(s.to_owned()))
    }

    /// The date with these numbers, if it exists.
    pub fn from_ymd(year: u16, month: u8, day: u8) -> Result<Date, InvalidDate> {
        Date::parse(&format!("{year:04}-{month:02}-{day:02}"))
    }

    /// The `YYYY-MM-DD` spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Date {
    type Err = InvalidDate;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s)
    }
}

/// A string that is not a `YYYY-MM-DD` date of a real day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date {0:?}: use YYYY-MM-DD with a real month and day")]
pub struct InvalidDate(pub String);

impl Reconcile for Date {
    type Key<'k> = NoKey;
    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        reconciler.str(self.as_str())
    }
}

impl FromDoc for Date {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        match slot.opt::<String>()? {
            None => Ok(None),
            Some(s) => Date::parse(&s)
                .map(Some)
                .map_err(|e| slot.invalid(e.to_string())),
        }
    }
}
