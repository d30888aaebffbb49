//! The one error type of synckit.

use std::fmt;

use crate::cursor::ExpectedVersion;

/// Boxed source error of a backend (a database driver, a pool, TLS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with synckit's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in synckit.
///
/// Every variant names the operation or the ids involved, so a log line is
/// enough to tell what failed. New variants may be added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store was closed with `close()`; every later call fails with this.
    #[error("the event store is closed")]
    StoreClosed,

    /// The stream's version did not match the expected version of an append.
    #[error(
        "version conflict on stream {aggregate_id:?}: expected {expected}, actual {}",
        DisplayActual(*actual)
    )]
    Conflict {
        /// The aggregate (stream) appended to.
        aggregate_id: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version at the time of the append; `None` when the
        /// stream has no events.
        actual: Option<u64>,
    },

    /// An event with this id exists already with other content, or a batch
    /// overlaps with events stored earlier only in part.
    #[error("duplicate event id {id:?}: {reason}")]
    DuplicateEvent {
        /// The event id.
        id: String,
        /// Why the id could not be accepted as an idempotent retry.
        reason: String,
    },

    /// No event has this id.
    #[error("event {id:?} not found")]
    EventNotFound {
        /// The id looked up.
        id: String,
    },

    /// A cursor or version could not be parsed or does not belong to this
    /// store (the text is negative, not a number, or out of range).
    #[error("incompatible version {input:?}: {reason}")]
    IncompatibleVersion {
        /// The text or value given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Input that synckit refuses before anything is written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input (`event id`, `aggregate id`, `data`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// An event could not be turned into JSON.
    #[error("cannot serialize event of type {event_type:?}: {source}")]
    Serialization {
        /// The event type being serialized.
        event_type: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event's type is not one the target Rust type can produce.
    #[error("unknown event type {event_type:?}{}, expected one of {expected:?}", DisplayEventId(event_id.as_deref()))]
    UnknownEventType {
        /// The stored event type.
        event_type: String,
        /// The stored event's id, when known.
        event_id: Option<String>,
        /// The types the Rust type accepts.
        expected: &'static [&'static str],
    },

    /// A stored event's data does not fit the Rust type of its event type.
    #[error("cannot decode event of type {event_type:?}{}: {source}", DisplayEventId(event_id.as_deref()))]
    Decode {
        /// The stored event type.
        event_type: String,
        /// The stored event's id, when known.
        event_id: Option<String>,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// The connection string is malformed or its server cannot be reached.
    #[error("invalid connection: {reason}")]
    InvalidConnection {
        /// What is wrong; never contains a password.
        reason: String,
    },

    /// The database failed an operation.
    #[error("database error during {operation}: {source}")]
    Database {
        /// The store operation (`append`, `load`, ...).
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The store's notification listener gave up reconnecting; the
    /// subscriptions it served end with this error.
    #[error("the notification listener gave up after {attempts} failed attempts: {reason}")]
    ListenerFailed {
        /// Consecutive failed connection attempts.
        attempts: u32,
        /// The last failure.
        reason: String,
    },

    /// A subscription handler failed after every retry.
    #[error("subscription {subscription:?} stopped: handler failed at version {version}: {source}")]
    Handler {
        /// The subscription's name or filter.
        subscription: String,
        /// The version of the event the handler failed on.
        version: u64,
        /// The handler's last error.
        #[source]
        source: BoxError,
    },
}

/// An error and its causes as one line, `outer: inner: ...`. Drivers put
/// the useful part in a cause (tokio-postgres shows a server's refusal as
/// just "db error"); a cause whose text the line holds already is left out.
#[cfg(feature = "postgres")]
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Database`].
    pub fn database(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Database {
            operation,
            source: source.into(),
        }
    }

    /// Whether the operation may succeed when tried again unchanged
    /// (connection loss, timeouts); conflicts and bad input never do.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Database { .. })
    }

    /// Attaches the id of the stored event to a decode error.
    pub(crate) fn with_event_id(self, id: &str) -> Self {
        match self {
            Error::Decode {
                event_type, source, ..
            } => Error::Decode {
                event_type,
                event_id: Some(id.to_owned()),
                source,
            },
            Error::UnknownEventType {
                event_type,
                expected,
                ..
            } => Error::UnknownEventType {
                event_type,
                event_id: Some(id.to_owned()),
                expected,
            },
            other => other,
        }
    }
}

struct DisplayActual(Option<u64>);

impl fmt::Display for DisplayActual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("no stream"),
        }
    }
}

struct DisplayEventId<'a>(Option<&'a str>);

impl fmt::Display for DisplayEventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " (event {id:?})"),
            None => Ok(()),
        }
    }
}
