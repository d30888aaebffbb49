//! The JSON bodies of synckit's HTTP protocol, shared by the server
//! (feature `server`) and any Rust client; they build everywhere the typed
//! core does, `wasm32-unknown-unknown` included.
//!
//! Events travel in their stored form: a [`Recorded`] serializes as
//! `{"version", "stream_version", "id", "aggregate_id", "event_type",
//! "data", "metadata", "created_at"}`.
//!
//! ```
//! use synckit::ExpectedVersion;
//! use synckit::protocol::AppendRequest;
//!
//! let body: AppendRequest = serde_json::from_str(
//!     r#"{"expected_version": "no_stream",
//!         "events": [{"type": "User.Registered", "data": {"name": "Ada"}}]}"#,
//! )?;
//! assert_eq!(body.expected_version, ExpectedVersion::NoStream);
//! assert_eq!(body.events[0].event_type, "User.Registered");
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::cursor::ExpectedVersion;
use crate::model::error::{Error, Result};
use crate::model::recorded::{NewEvent, Recorded};
use crate::model::validate::MAX_JSON_DEPTH;

/// How many levels the bodies wrap around an event's data
/// (`{"events": [{"data": ...}]}`), with one to spare.
const ENVELOPE_DEPTH: usize = 4;

/// Parses a protocol body (what [`Page`], [`AppendRequest`] and
/// [`Appended`] serialize to).
///
/// An event's data may nest [`MAX_JSON_DEPTH`] levels, and the bodies wrap
/// it in a few more: past `serde_json`'s default limit of 128. This counts
/// the nesting first, without recursion, refuses a body deeper than any
/// event could make it, and parses the rest without that limit.
///
/// ```
/// use synckit::protocol::{Appended, nesting_depth};
///
/// let deep = (0..127).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
/// let body = serde_json::json!({"events": [{
///     "version": 1, "stream_version": 1, "id": "e1", "aggregate_id": "a",
///     "event_type": "Deep", "data": deep, "metadata": {},
///     "created_at": "2026-01-01T00:00:00Z",
/// }]});
/// let text = serde_json::to_vec(&body)?;
/// assert_eq!(nesting_depth(&text), 130);
/// let appended: Appended = synckit::protocol::from_slice(&text)?;
/// assert_eq!(appended.events[0].data, deep);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    let depth = nesting_depth(body);
    if depth > MAX_JSON_DEPTH + ENVELOPE_DEPTH {
        return Err(serde::de::Error::custom(format!(
            "the body nests {depth} levels of arrays and objects; an event's data may nest \
             at most {MAX_JSON_DEPTH}"
        )));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The deepest nesting of arrays and objects in JSON text (outside its
/// strings), counted without recursion; malformed text gets a count too,
/// and fails when parsed.
pub fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// One page of events in global order (`GET /events`) or in stream order
/// (`GET /streams/{aggregate_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Page {
    /// The events, in order.
    pub events: Vec<Recorded>,
    /// Where the next page starts: pass it as `after`. It can be past the
    /// last event of `events` when the page read events the filter or the
    /// caller's access left out.
    pub next: u64,
    /// The last position readers could see when the page was read (global
    /// version, or the stream's version for a stream).
    pub head: u64,
    /// Stored rows among the page's that cannot be read back (a row another
    /// writer stored: text that is not JSON, a time that is not one), by
    /// version: each stands in its place between `events`, and readers go
    /// on past it. Absent when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

impl Page {
    /// A page.
    pub fn new(events: Vec<Recorded>, next: u64, head: u64) -> Self {
        Page {
            events,
            next,
            head,
            unreadable: Vec::new(),
        }
    }

    /// The page with the rows it could not read.
    #[must_use]
    pub fn with_unreadable(mut self, unreadable: Vec<Unreadable>) -> Self {
        self.unreadable = unreadable;
        self
    }
}

/// A stored row a page could not read back
/// ([`Error::UnreadableEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Unreadable {
    /// Its global version.
    pub version: u64,
    /// Its event id.
    pub id: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Unreadable {
    /// The row's error, as a local store reports it.
    pub fn into_error(self) -> Error {
        Error::UnreadableEvent {
            version: self.version,
            id: self.id,
            reason: self.reason,
        }
    }
}

/// The body of `POST /streams/{aggregate_id}/events` (one stream) and of
/// `POST /events` (an atomic batch over several streams, each event naming
/// its `aggregate_id`; the expected version must then be `"any"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AppendRequest {
    /// `"any"` (the default), `"no_stream"`, `"stream_exists"` or the
    /// stream's exact version as a number.
    #[serde(default = "any", with = "expected_version")]
    pub expected_version: ExpectedVersion,
    /// The events, all of the stream in the path.
    pub events: Vec<AppendEvent>,
}

fn any() -> ExpectedVersion {
    ExpectedVersion::Any
}

impl AppendRequest {
    /// A request from events built for one stream.
    pub fn new(expected_version: ExpectedVersion, events: &[NewEvent]) -> Self {
        AppendRequest {
            expected_version,
            events: events
                .iter()
                .map(|e| AppendEvent {
                    id: Some(e.id().to_owned()),
                    aggregate_id: Some(e.aggregate_id().to_owned()),
                    event_type: e.event_type().to_owned(),
                    data: e.data().clone(),
                    metadata: Some(e.metadata().clone()),
                })
                .collect(),
        }
    }

    /// The events to append, each to its own `aggregate_id` or, without
    /// one, to `stream` (the stream in the path of
    /// `POST /streams/{aggregate_id}/events`); an event without an id gets
    /// a new one. [`Error::InvalidInput`] when an event names no stream,
    /// or another stream than `stream`.
    pub fn into_events(self, stream: Option<&str>) -> Result<Vec<NewEvent>> {
        self.events
            .into_iter()
            .map(|e| {
                let aggregate_id = match (e.aggregate_id, stream) {
                    (Some(own), Some(path)) if own != path => {
                        return Err(Error::InvalidInput {
                            field: "aggregate id",
                            reason: format!(
                                "an event of stream {own:?} in an append to stream {path:?}"
                            ),
                        });
                    }
                    (Some(own), _) => own,
                    (None, Some(path)) => path.to_owned(),
                    (None, None) => {
                        return Err(Error::InvalidInput {
                            field: "aggregate id",
                            reason: "every event of `POST /events` names its `aggregate_id`"
                                .to_owned(),
                        });
                    }
                };
                let mut new = NewEvent::new(aggregate_id, e.event_type, e.data)
                    .with_metadata_map(e.metadata.unwrap_or_default());
                if let Some(id) = e.id {
                    new = new.with_id(id);
                }
                Ok(new)
            })
            .collect()
    }
}

/// One event of an [`AppendRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AppendEvent {
    /// The event id; give one to make retries idempotent (a new UUIDv7
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The event's stream: required by `POST /events`; optional in
    /// `POST /streams/{aggregate_id}/events`, where it must be the path's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<String>,
    /// The event type (`type`, or `event_type` as in stored events).
    #[serde(rename = "type", alias = "event_type")]
    pub event_type: String,
    /// The event's JSON.
    pub data: Value,
    /// A JSON object of metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// The answer to an append: the recorded events, in order (the stored ones
/// when the append repeated earlier events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Appended {
    /// The events as recorded.
    pub events: Vec<Recorded>,
}

/// Every error answer: a stable `error` code, a human `message`, and the
/// code's own fields (a conflict's `aggregate_id`, `expected` and
/// `actual`; an invalid input's `field`).
///
/// | status | `error` |
/// |---|---|
/// | 400 | `bad_request` (malformed JSON or query), `bad_cursor` |
/// | 401 | `unauthorized` (no or unknown credentials) |
/// | 403 | `forbidden` (the caller may not read or append to that stream or type) |
/// | 404 | `not_found` (route, or event id) |
/// | 405 | `method_not_allowed` |
/// | 409 | `conflict` (expected version), `duplicate_event` (an id stored with other content) |
/// | 413 | `too_large` (the body is over the server's limit) |
/// | 422 | `invalid_input` (an event the store refuses before writing) |
/// | 503 | `unavailable` (store closed, a transient failure, too many live connections: retry) |
/// | 500 | `internal` (see the server's log) |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody {
    /// The stable code.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The code's own fields.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl ErrorBody {
    /// An error body without details.
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// The `data:` of the SSE event `progress`: everything up to `version` has
/// been read (the events after the last one sent did not pass the filter),
/// so a client resumes from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Progress {
    /// The position read up to.
    pub version: u64,
}

/// `ExpectedVersion` on the wire: `"any"`, `"no_stream"`,
/// `"stream_exists"` or a number (use with `#[serde(with = ...)]`).
pub mod expected_version {
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;
    use std::fmt;

    use crate::model::cursor::ExpectedVersion;

    /// Writes the wire form.
    pub fn serialize<S: Serializer>(value: &ExpectedVersion, s: S) -> Result<S::Ok, S::Error> {
        match value {
            ExpectedVersion::Any => s.serialize_str("any"),
            ExpectedVersion::NoStream => s.serialize_str("no_stream"),
            ExpectedVersion::StreamExists => s.serialize_str("stream_exists"),
            ExpectedVersion::Exact(n) => s.serialize_u64(*n),
        }
    }

    /// Reads the wire form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ExpectedVersion, D::Error> {
        struct Expected;
        impl Visitor<'_> for Expected {
            type Value = ExpectedVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""any", "no_stream", "stream_exists" or a stream version"#)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ExpectedVersion, E> {
                Ok(ExpectedVersion::Exact(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ExpectedVersion, E> {
                u64::try_from(n)
                    .map(ExpectedVersion::Exact)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ExpectedVersion, E> {
                match s {
                    "any" => Ok(ExpectedVersion::Any),
                    "no_stream" => Ok(ExpectedVersion::NoStream),
                    "stream_exists" => Ok(ExpectedVersion::StreamExists),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(Expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_round_trip_and_bad_ones_are_refused() {
        for (text, expected) in [
            (r#""any""#, ExpectedVersion::Any),
            (r#""no_stream""#, ExpectedVersion::NoStream),
            (r#""stream_exists""#, ExpectedVersion::StreamExists),
            ("7", ExpectedVersion::Exact(7)),
        ] {
            let body = format!(r#"{{"expected_version": {text}, "events": []}}"#);
            let parsed: AppendRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(parsed.expected_version, expected);
            let back = serde_json::to_string(&parsed).unwrap();
            assert!(back.contains(text), "{back}");
        }
        for bad in [r#""sometimes""#, "-1", "1.5", "null"] {
            let body = format!(r#"{{"expected_version": {bad}, "events": []}}"#);
            assert!(
                serde_json::from_str::<AppendRequest>(&body).is_err(),
                "{bad}"
            );
        }
        let unknown = r#"{"events": [], "expected": 1}"#;
        assert!(serde_json::from_str::<AppendRequest>(unknown).is_err());
    }
}
