//! Which database errors a retry can cure, judged from the driver's error.
//!
//! [`Error::is_transient`](crate::Error::is_transient) walks the source
//! chain of a [`Error::Database`](crate::Error::Database) and asks each
//! driver type it knows. Anything it does not recognise is permanent: a
//! retry loop that retried unknown errors would spin on a broken invariant
//! for ever.

use std::error::Error as StdError;

/// A failure the store itself knows to be temporary (contention it gave up
/// resolving within its own retries).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[derive(Debug)]
pub(crate) struct Retryable(pub(crate) String);

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl std::fmt::Display for Retryable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl StdError for Retryable {}

/// Whether an error, or one of its causes, is one that may go away.
pub(crate) fn is_transient(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(verdict) = judge(e) {
            return verdict;
        }
        cause = e.source();
    }
    false
}

/// The verdict on one error of the chain, `None` when this layer does not
/// say (a wrapper: look at its cause).
fn judge(e: &(dyn StdError + 'static)) -> Option<bool> {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    if e.is::<Retryable>() {
        return Some(true);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return Some(io_is_transient(io));
    }
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    if let Some(diesel) = e.downcast_ref::<diesel::result::Error>() {
        return Some(diesel_is_transient(diesel));
    }
    #[cfg(feature = "postgres")]
    {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            return Some(match pg.code() {
                Some(code) => sqlstate_is_transient(code.code()),
                // No SQLSTATE: the connection failed or closed.
                None => true,
            });
        }
        if let Some(pool) =
            e.downcast_ref::<bb8::RunError<diesel_async::pooled_connection::PoolError>>()
        {
            // A pool that timed out, or could not open a connection.
            let _ = pool;
            return Some(true);
        }
    }
    #[cfg(feature = "runtime")]
    if e.is::<tokio::task::JoinError>() {
        // A panic or a cancelled task: not something a retry cures.
        return Some(false);
    }
    None
}

fn io_is_transient(io: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        io.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | Interrupted
            | UnexpectedEof
            | WouldBlock
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
            | ResourceBusy
    )
}

/// PostgreSQL's SQLSTATE codes that say "try again": connection exceptions
/// (class 08), serialization failures and deadlocks (40001, 40P01),
/// insufficient resources (class 53), an operator's intervention (57P01
/// admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now) and a
/// lock wait that ran out (55P03).
#[cfg(feature = "postgres")]
pub(crate) fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03"
        )
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn diesel_is_transient(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error as E};
    match e {
        E::DatabaseError(kind, info) => match kind {
            Kind::SerializationFailure | Kind::UnableToSendCommand | Kind::ClosedConnection => true,
            Kind::Unknown => message_is_transient(info.message()),
            _ => false,
        },
        E::RollbackErrorOnCommit { commit_error, .. } => diesel_is_transient(commit_error),
        E::BrokenTransactionManager => true,
        _ => false,
    }
}

/// diesel keeps only the message of errors it has no kind for (it does not
/// pass PostgreSQL's SQLSTATE on), so those are recognised by the server's
/// message: PostgreSQL's (in its default English) for the SQLSTATEs of
/// [`sqlstate_is_transient`] that reach diesel as `Unknown`, and SQLite's
/// busy and locked results.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn message_is_transient(message: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        // PostgreSQL
        "deadlock detected",
        "terminating connection due to administrator command",
        "terminating connection because of crash of another server process",
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "sorry, too many clients already",
        "could not obtain lock on",
        "canceling statement due to lock timeout",
        "server closed the connection unexpectedly",
        "connection closed",
        "out of shared memory",
        // SQLite (SQLITE_BUSY, SQLITE_LOCKED)
        "database is locked",
        "database table is locked",
        "database schema is locked",
    ];
    let lower = message.to_ascii_lowercase();
    TRANSIENT.iter().any(|t| lower.contains(t))
}

#[cfg(test)]
mod tests {
    use crate::Error;

    #[cfg(feature = "postgres")]
    #[test]
    fn sqlstates_that_say_try_again() {
        use super::sqlstate_is_transient;
        assert!(sqlstate_is_transient("08006"));
        assert!(sqlstate_is_transient("40001"));
        assert!(sqlstate_is_transient("40P01"));
        assert!(sqlstate_is_transient("57P01"));
        assert!(sqlstate_is_transient("53300"));
        assert!(!sqlstate_is_transient("23505"), "unique violation");
        assert!(!sqlstate_is_transient("22P02"), "invalid text");
        assert!(!sqlstate_is_transient("42P01"), "undefined table");
        assert!(Error::retryable("append", "streams kept moving").is_transient());
    }

    #[test]
    fn only_errors_a_retry_can_cure_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(Error::database("read", io).is_transient());
        assert!(!Error::database("read", "no row returned").is_transient());
        assert!(!Error::unreadable(3, "e-3", "bad time").is_transient());
        assert!(!Error::invalid("data", "too deep").is_transient());
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[test]
    fn diesel_errors_are_judged_by_kind_and_message() {
        use diesel::result::{DatabaseErrorKind as Kind, Error as E};
        let db = |kind, message: &str| {
            Error::database("read", E::DatabaseError(kind, Box::new(message.to_owned())))
        };
        assert!(db(Kind::SerializationFailure, "could not serialize").is_transient());
        assert!(db(Kind::ClosedConnection, "closed").is_transient());
        assert!(db(Kind::Unknown, "deadlock detected").is_transient());
        assert!(db(Kind::Unknown, "database is locked").is_transient());
        assert!(!db(Kind::UniqueViolation, "duplicate key").is_transient());
        assert!(!db(Kind::CheckViolation, "violates check").is_transient());
        assert!(!db(Kind::Unknown, "syntax error at or near").is_transient());
        assert!(!Error::database("read", E::NotFound).is_transient());
    }
}
