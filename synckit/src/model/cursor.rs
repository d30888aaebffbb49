//! Positions in the global order and expected stream versions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::error::Error;

/// A position in the store's global order: "every event after this one".
///
/// A cursor is the `version` of the last event a reader has seen; `0` (also
/// written as the empty string) is the start of the store. Cursors print as
/// plain decimal text and parse back with [`Cursor::parse`] or [`str::parse`];
/// negative or non-numeric text is an [`Error::IncompatibleVersion`], never a
/// wrap-around.
///
/// ```
/// use synckit::Cursor;
///
/// let c: Cursor = "42".parse()?;
/// assert_eq!(c.version(), 42);
/// assert_eq!(c.to_string(), "42");
/// assert_eq!(Cursor::parse("")?, Cursor::START);
/// assert!(Cursor::parse("-1").is_err());
/// # Ok::<(), synckit::Error>(())
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cursor(u64);

impl Cursor {
    /// The start of the store: before the first event.
    pub const START: Cursor = Cursor(0);

    /// The cursor after the event with this global version.
    pub const fn new(version: u64) -> Self {
        Cursor(version)
    }

    /// The global version this cursor points after.
    pub const fn version(self) -> u64 {
        self.0
    }

    /// Parses cursor text: `""` and `"0"` are the start, any other text must
    /// be a non-negative decimal integer that fits a PostgreSQL `BIGINT`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Cursor::START);
        }
        let incompatible = |reason: &str| Error::IncompatibleVersion {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        if trimmed.starts_with('-') {
            return Err(incompatible("a cursor cannot be negative"));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(incompatible("a cursor is a decimal integer"));
        }
        let value: u64 = trimmed
            .parse()
            .map_err(|_| incompatible("the number is too large"))?;
        Cursor::try_from_version(value).map_err(|_| incompatible("the number is too large"))
    }

    /// A cursor from a version, rejecting values beyond `i64::MAX` (the
    /// largest version a store can hold).
    pub fn try_from_version(version: u64) -> Result<Self, Error> {
        if version > i64::MAX as u64 {
            return Err(Error::IncompatibleVersion {
                input: version.to_string(),
                reason: "versions end at 9223372036854775807".to_owned(),
            });
        }
        Ok(Cursor(version))
    }

    /// The cursor as a signed database integer.
    pub fn as_i64(self) -> i64 {
        // The constructors keep the value at most i64::MAX, except `new`,
        // whose larger values saturate (no event has such a version).
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cursor::parse(s)
    }
}

impl From<Cursor> for u64 {
    fn from(c: Cursor) -> u64 {
        c.0
    }
}

/// What an append expects of its stream (the events of one aggregate).
///
/// A mismatch fails the whole append with [`Error::Conflict`], which names
/// the expected and the actual version; nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// No check: append whatever the stream holds.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last `stream_version` must be exactly this (`Exact(0)` is
    /// the same as [`ExpectedVersion::NoStream`]).
    Exact(u64),
}

impl ExpectedVersion {
    /// Checks the stream's current version (`None`: no events) against this
    /// expectation.
    pub fn check(self, aggregate_id: &str, actual: Option<u64>) -> Result<(), Error> {
        let ok = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(n) => actual == Some(n),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict {
                aggregate_id: aggregate_id.to_owned(),
                expected: self,
                actual,
            })
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_numbers_and_rejects_junk() {
        assert_eq!(Cursor::parse("").unwrap(), Cursor::START);
        assert_eq!(Cursor::parse("0").unwrap(), Cursor::START);
        assert_eq!(Cursor::parse(" 17 ").unwrap(), Cursor::new(17));
        for bad in ["-1", "abc", "1.5", "0x10", "9223372036854775808", "+3"] {
            let err = Cursor::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::IncompatibleVersion { ref input, .. } if input == bad),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            Cursor::parse("9223372036854775807").unwrap().as_i64(),
            i64::MAX
        );
    }

    #[test]
    fn display_round_trips() {
        let c = Cursor::new(123_456);
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
    }

    #[test]
    fn expected_version_checks() {
        use ExpectedVersion::*;
        assert!(Any.check("a", None).is_ok());
        assert!(Any.check("a", Some(3)).is_ok());
        assert!(NoStream.check("a", None).is_ok());
        assert!(Exact(0).check("a", None).is_ok());
        assert!(StreamExists.check("a", Some(1)).is_ok());
        assert!(Exact(3).check("a", Some(3)).is_ok());
        let err = Exact(2).check("a", Some(3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "version conflict on stream \"a\": expected version 2, actual 3"
        );
        assert!(NoStream.check("a", Some(1)).is_err());
        let err = StreamExists.check("a", None).unwrap_err();
        assert!(err.to_string().ends_with("actual no stream"), "{err}");
    }
}
