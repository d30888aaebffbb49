//! The one error type of synckit.

use std::fmt;

use crate::model::cursor::ExpectedVersion;

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
    #[error("unknown event type {event_type:?}{}, expected one of {expected:?}", DisplayEvent(*version, event_id.as_deref()))]
    UnknownEventType {
        /// The stored event type.
        event_type: String,
        /// The stored event's id, when known.
        event_id: Option<String>,
        /// The stored event's version, when known.
        version: Option<u64>,
        /// The types the Rust type accepts.
        expected: &'static [&'static str],
    },

    /// A stored event's data does not fit the Rust type of its event type.
    #[error("cannot decode event of type {event_type:?}{}: {source}", DisplayEvent(*version, event_id.as_deref()))]
    Decode {
        /// The stored event type.
        event_type: String,
        /// The stored event's id, when known.
        event_id: Option<String>,
        /// The stored event's version, when known.
        version: Option<u64>,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// An upcaster (`#[event(upcast(vN = ".."))]`) failed on a
    /// stored event: the step from schema version `from` to `from + 1`.
    ///
    /// Reads and subscriptions yield it as one error item in the event's
    /// place and go on with the next event; retrying cannot help.
    #[error("cannot upcast event of type {event_type:?}{} from schema version {from} to {}: {source}", DisplayEvent(*version, event_id.as_deref()), u64::from(*from) + 1)]
    Upcast {
        /// The stored event type.
        event_type: String,
        /// The stored event's id, when known.
        event_id: Option<String>,
        /// The stored event's version, when known.
        version: Option<u64>,
        /// The schema version the failing step starts from.
        from: u32,
        /// The upcaster's error.
        #[source]
        source: BoxError,
    },

    /// A stored event that synckit cannot read back at all: its JSON, its
    /// metadata, its time or its positions are not what the store writes
    /// (a row written by another tool, or data the JSON decoder refuses,
    /// such as numbers beyond `f64` or nesting deeper than
    /// [`MAX_JSON_DEPTH`](crate::model::validate::MAX_JSON_DEPTH)).
    ///
    /// Reads and subscriptions yield it as one error item in the event's
    /// place and go on with the next event; retrying cannot help.
    #[error("stored event {id:?} at version {version} cannot be read: {reason}")]
    UnreadableEvent {
        /// The event's global version.
        version: u64,
        /// The event's id.
        id: String,
        /// What is wrong with the stored row.
        reason: String,
    },

    /// The connection string is malformed or its server cannot be reached.
    #[error("invalid connection: {reason}")]
    InvalidConnection {
        /// What is wrong; never contains a password.
        reason: String,
    },

    /// The database failed an operation. Whether trying again can help
    /// is judged from the driver's error: see [`Error::is_transient`].
    #[error("database error during {operation}: {source}")]
    Database {
        /// The store operation (`append`, `load`, ...).
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// A call of a [`RemoteStore`](crate::client::RemoteStore) over the
    /// HTTP protocol failed for a reason no other variant names: the
    /// server could not be reached (`status` is `None`, `code` is
    /// `"unreachable"`), refused the caller (401 `unauthorized`, 403
    /// `forbidden`), or failed (`unavailable`, `internal`). `code` is the
    /// server's error code ([`ErrorBody::error`](crate::protocol::ErrorBody)).
    ///
    /// Transient when the server was out of reach or answered 429, 502,
    /// 503 or 504.
    #[error("{operation} over HTTP failed{}: {message} ({code})", DisplayStatus(*status))]
    Remote {
        /// The store operation (`append`, `read`, ...).
        operation: &'static str,
        /// The HTTP status of the answer, `None` without one.
        status: Option<u16>,
        /// The server's error code, or `unreachable` without an answer.
        code: String,
        /// What went wrong, as the server or the HTTP client said.
        message: String,
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

    /// A subscription's [`run`](crate::Subscription::run) ended with
    /// `source`: the error of a read or a checkpoint save that no retry
    /// cures, named after the subscription it stopped.
    #[error("subscription {subscription:?} stopped: {source}")]
    Subscription {
        /// The subscription's name or filter.
        subscription: String,
        /// What stopped it.
        #[source]
        source: Box<Error>,
    },

    /// A durable subscription's checkpoint was not saved: its lease has
    /// passed to another consumer of the same name (this one was paused or
    /// cut off past the lease's time to live). The subscription goes back
    /// to standby; the event is handled again by whoever holds the lease.
    #[error("subscription {subscription:?} does not hold its lease: the checkpoint was not saved")]
    LeaseLost {
        /// The checkpoint name.
        subscription: String,
    },

    /// A subscription ended before it had handled everything a
    /// [`Progress`](crate::Progress) waiter waited for.
    #[error(
        "subscription {subscription:?} ended at position {position} before {}",
        match wanted { Some(v) => format!("reaching version {v}"), None => "catching up".to_owned() }
    )]
    SubscriptionEnded {
        /// The subscription's name or filter.
        subscription: String,
        /// How far it had handled when it ended.
        position: u64,
        /// The version the waiter waited for (`None`: the catch-up).
        wanted: Option<u64>,
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

    /// Whether the operation may succeed when tried again unchanged.
    ///
    /// True for a lost or refused connection, a pool that timed out, a
    /// serialization failure, a deadlock, a server shutting down or out of
    /// resources, a database file locked by another process: judged from
    /// the driver's error (the SQLSTATE class on PostgreSQL). False for
    /// everything else: conflicts, bad input, a stored event that does not
    /// decode, a schema that is not synckit's, a broken invariant. Every
    /// retry loop of synckit retries only transient errors.
    ///
    /// ```
    /// let err = synckit::Error::database("append", "an invariant broke");
    /// assert!(!err.is_transient());
    /// assert!(!synckit::Error::StoreClosed.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database { source, .. } => {
                crate::model::transient::is_transient(source.as_ref())
            }
            Error::Subscription { source, .. } => source.is_transient(),
            Error::Remote { status, .. } => {
                matches!(status, None | Some(429 | 502 | 503 | 504))
            }
            _ => false,
        }
    }

    /// A database error that a retry may cure (contention the store could
    /// not resolve within its own retries).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn retryable(operation: &'static str, reason: impl Into<String>) -> Self {
        Error::database(operation, crate::model::transient::Retryable(reason.into()))
    }

    /// Attaches the version and id of the stored event to a decode error
    /// (an unreadable one gets its version).
    pub(crate) fn with_event(self, at: u64, id: &str) -> Self {
        match self {
            Error::Decode {
                event_type, source, ..
            } => Error::Decode {
                event_type,
                event_id: Some(id.to_owned()),
                version: Some(at),
                source,
            },
            Error::UnknownEventType {
                event_type,
                expected,
                ..
            } => Error::UnknownEventType {
                event_type,
                event_id: Some(id.to_owned()),
                version: Some(at),
                expected,
            },
            Error::Upcast {
                event_type,
                from,
                source,
                ..
            } => Error::Upcast {
                event_type,
                event_id: Some(id.to_owned()),
                version: Some(at),
                from,
                source,
            },
            Error::UnreadableEvent { reason, .. } => Error::UnreadableEvent {
                version: at,
                id: id.to_owned(),
                reason,
            },
            other => other,
        }
    }

    /// The version and id of the stored event a decode error is about: a
    /// poison event, which retrying cannot cure.
    pub(crate) fn poisoned_event(&self) -> Option<(u64, &str)> {
        match self {
            Error::UnreadableEvent { version, id, .. } => Some((*version, id)),
            Error::Decode {
                version: Some(version),
                event_id: Some(id),
                ..
            }
            | Error::UnknownEventType {
                version: Some(version),
                event_id: Some(id),
                ..
            }
            | Error::Upcast {
                version: Some(version),
                event_id: Some(id),
                ..
            } => Some((*version, id)),
            _ => None,
        }
    }

    /// The stored event at `version` cannot be read back.
    pub(crate) fn unreadable(version: u64, id: &str, reason: impl std::fmt::Display) -> Self {
        Error::UnreadableEvent {
            version,
            id: id.to_owned(),
            reason: reason.to_string(),
        }
    }
}

struct DisplayStatus(Option<u16>);

impl fmt::Display for DisplayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, " with status {status}"),
            None => f.write_str(" without an answer"),
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

struct DisplayEvent<'a>(Option<u64>, Option<&'a str>);

impl fmt::Display for DisplayEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(version), Some(id)) => write!(f, " (event {id:?} at version {version})"),
            (None, Some(id)) => write!(f, " (event {id:?})"),
            (Some(version), None) => write!(f, " (at version {version})"),
            (None, None) => Ok(()),
        }
    }
}
