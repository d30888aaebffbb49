//! Configuration of the PostgreSQL store.

use std::fmt;
use std::time::Duration;

use crate::store::DEFAULT_BATCH_SIZE;

/// Configuration of a [`PgStore`](super::PgStore): the fields a PostgreSQL event store needs, each
/// with an effect.
///
/// ```
/// use std::time::Duration;
/// use synckit::postgres::Config;
///
/// let mut config = Config::new("postgres://app:secret@db.internal:5432/events");
/// config.max_open_conns = 50;
/// config.prepared_statements = false; // PgBouncer in transaction mode
/// assert!(!format!("{config:?}").contains("secret"));
/// # let _ = Duration::ZERO;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The connection string, as a URL (`postgres://user:pass@host/db`) or
    /// key=value pairs (`host=... user=... password=...`). Never printed:
    /// `Debug` and log lines show [`Config::redacted_connection_string`].
    pub connection_string: String,
    /// Most connections the pool opens (default 25).
    pub max_open_conns: u32,
    /// The fewest idle connections the pool keeps open: it opens this many
    /// up front, and reaping connections idle for longer than
    /// [`Config::conn_max_idle_time`] stops here (default 10, at most
    /// `max_open_conns`). The pool has no upper bound on idle connections
    /// below `max_open_conns`: idle ones above this are closed by
    /// `conn_max_idle_time`.
    pub min_idle_conns: u32,
    /// Connections older than this are closed when returned (default 1 h;
    /// `None` keeps them).
    pub conn_max_lifetime: Option<Duration>,
    /// Connections idle for longer than this are closed, down to
    /// `min_idle_conns` (default 15 min; `None` keeps them).
    pub conn_max_idle_time: Option<Duration>,
    /// How long connecting, or waiting for a pooled connection, may take
    /// before failing with [`Error::InvalidConnection`](crate::Error) or a
    /// database error (default 10 s).
    pub connect_timeout: Duration,
    /// Idle time after which subscriptions poll the table and the listener
    /// checks its connection (default 30 s).
    pub notification_timeout: Duration,
    /// First delay before the listener reconnects; doubles with jitter on
    /// each failed attempt (default 5 s).
    pub reconnect_interval: Duration,
    /// Reconnect attempts before subscriptions end with an error
    /// (default 10).
    pub max_reconnect_attempts: u32,
    /// Page size of catch-up reads and the first page of loads (the pages
    /// of a long load grow from it: see [`EventStore::read_stream`]), and
    /// chunk size of batch appends: one statement per chunk (default 1000).
    ///
    /// [`EventStore::read_stream`]: crate::EventStore::read_stream
    pub batch_size: usize,
    /// Most appends one transaction commits together (default 64; 1: each
    /// append commits alone). Appends that arrive while the store's earlier
    /// appends are committing wait for that commit, no longer, and then
    /// commit as one group of at most this many appends and
    /// [`Config::batch_size`] events: one transaction and one WAL flush
    /// for all, each append with its own expectation, idempotency and
    /// outcome. An append that arrives when nothing is committing starts at
    /// once. See [`EventStore::append`](crate::EventStore::append).
    pub max_group_appends: usize,
    /// Whether connections cache prepared statements (default on). Turn it
    /// off behind PgBouncer in transaction mode: every statement is then
    /// prepared unnamed and never reused.
    pub prepared_statements: bool,
    /// The connection string points at a pooler in transaction mode
    /// (PgBouncer's `pool_mode = transaction`), where consecutive
    /// transactions of one client may run on different server connections
    /// (default off). The store then relies on no session state: every
    /// operation runs in one transaction (a statement's preparation and
    /// execution stay on one server connection), the fence of a read is a
    /// transaction-local setting, and statements are not cached (as with
    /// `prepared_statements` off). What needs a session of its own, the
    /// LISTEN connection and the migrations' advisory lock, uses
    /// [`Config::direct_connection_string`]; without it, subscriptions and
    /// `run_migrations` are refused with [`Error::InvalidInput`].
    ///
    /// [`Error::InvalidInput`]: crate::Error::InvalidInput
    pub transaction_pooling: bool,
    /// A connection string straight to the server, bypassing any pooler,
    /// for the LISTEN connection and the migrations (default `None`: they
    /// use [`Config::connection_string`]). Redacted like it.
    pub direct_connection_string: Option<String>,
    /// Whether the store records `metrics` counters, gauges and histograms
    /// (default on; with no recorder installed they cost nothing).
    pub metrics: bool,
    /// Whether connecting runs the embedded migrations (default on). Safe
    /// when several processes start at once; a database that is up to date
    /// runs no DDL. Turn it off where the application's role may not run
    /// DDL, and run [`migrate`](super::migrate) separately.
    pub run_migrations: bool,
}

impl Config {
    /// The defaults (see the field docs) for this connection string.
    pub fn new(connection_string: impl Into<String>) -> Self {
        Config {
            connection_string: connection_string.into(),
            max_open_conns: 25,
            min_idle_conns: 10,
            conn_max_lifetime: Some(Duration::from_secs(3600)),
            conn_max_idle_time: Some(Duration::from_secs(15 * 60)),
            connect_timeout: Duration::from_secs(10),
            notification_timeout: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(5),
            max_reconnect_attempts: 10,
            batch_size: DEFAULT_BATCH_SIZE,
            max_group_appends: 64,
            prepared_statements: true,
            transaction_pooling: false,
            direct_connection_string: None,
            metrics: true,
            run_migrations: true,
        }
    }

    /// Refuses values the store cannot run with, with an error naming the
    /// field; every other value is used as it is.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let invalid = |reason: &str| Err(crate::Error::invalid("config", reason));
        if self.batch_size == 0 {
            return invalid("batch_size must be at least 1");
        }
        if self.max_group_appends == 0 {
            return invalid("max_group_appends must be at least 1 (1: each append commits alone)");
        }
        if self.max_open_conns == 0 {
            return invalid("max_open_conns must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be above zero");
        }
        if self.notification_timeout.is_zero() {
            return invalid("notification_timeout must be above zero");
        }
        if self.conn_max_lifetime.is_some_and(|d| d.is_zero()) {
            return invalid("conn_max_lifetime must be above zero (None keeps connections)");
        }
        if self.conn_max_idle_time.is_some_and(|d| d.is_zero()) {
            return invalid("conn_max_idle_time must be above zero (None keeps idle connections)");
        }
        if self.transaction_pooling
            && self.run_migrations
            && self.direct_connection_string.is_none()
        {
            return invalid(
                "run_migrations behind a transaction pooler needs direct_connection_string \
                 (the migrations hold a session-level lock), or run_migrations = false",
            );
        }
        Ok(())
    }

    /// The connection string of what needs a session: the listener and the
    /// migrations.
    pub(crate) fn session_connection_string(&self) -> &str {
        self.direct_connection_string
            .as_deref()
            .unwrap_or(&self.connection_string)
    }

    /// Whether pooled connections cache prepared statements.
    pub(crate) fn caches_statements(&self) -> bool {
        self.prepared_statements && !self.transaction_pooling
    }

    /// The connection string with its password replaced by `***`, in URL
    /// and in key=value form alike.
    pub fn redacted_connection_string(&self) -> String {
        redact(&self.connection_string)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("connection_string", &self.redacted_connection_string())
            .field("max_open_conns", &self.max_open_conns)
            .field("min_idle_conns", &self.min_idle_conns)
            .field("conn_max_lifetime", &self.conn_max_lifetime)
            .field("conn_max_idle_time", &self.conn_max_idle_time)
            .field("connect_timeout", &self.connect_timeout)
            .field("notification_timeout", &self.notification_timeout)
            .field("reconnect_interval", &self.reconnect_interval)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("batch_size", &self.batch_size)
            .field("prepared_statements", &self.prepared_statements)
            .field("transaction_pooling", &self.transaction_pooling)
            .field(
                "direct_connection_string",
                &self.direct_connection_string.as_deref().map(redact),
            )
            .field("metrics", &self.metrics)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

pub(crate) use super::conninfo::redact;

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (0u64..100_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_secs),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any configuration is refused with an error or builds a pool and
        /// a connection setup without panicking.
        #[test]
        fn no_configuration_value_panics(
            conn in "\\PC{0,40}",
            max_open in 0u32..40,
            max_idle in 0u32..60,
            lifetime in proptest::option::of(duration()),
            idle in proptest::option::of(duration()),
            connect_timeout in duration(),
            notification_timeout in duration(),
            reconnect in duration(),
            batch in 0usize..3,
        ) {
            let mut config = Config::new(format!("postgres://u:p@h/{conn}"));
            config.max_open_conns = max_open;
            config.min_idle_conns = max_idle;
            config.conn_max_lifetime = lifetime;
            config.conn_max_idle_time = idle;
            config.connect_timeout = connect_timeout;
            config.notification_timeout = notification_timeout;
            config.reconnect_interval = reconnect;
            config.batch_size = batch;
            let _ = format!("{config:?}");
            if config.check().is_ok() {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let _guard = runtime.enter();
                drop(super::super::connect::pool(&config));
                let _ = super::super::connect::parse(&config);
                for attempt in [1, 2, 30, u32::MAX] {
                    let _ = super::super::listener::backoff(config.reconnect_interval, attempt);
                }
            }
        }
    }

    #[test]
    fn zero_durations_are_refused_not_panicked_on() {
        let mut config = Config::new("postgres://u@h/d");
        config.conn_max_idle_time = Some(Duration::ZERO);
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("conn_max_idle_time")
        );
        let mut config = Config::new("postgres://u@h/d");
        config.conn_max_lifetime = Some(Duration::ZERO);
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("conn_max_lifetime")
        );
        let mut config = Config::new("postgres://u@h/d");
        config.connect_timeout = Duration::ZERO;
        assert!(config.check().is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", Config::new("postgres://u:topsecret@h/d"));
        assert!(!text.contains("topsecret"), "{text}");
        let text = format!("{:?}", Config::new("postgres://u:top/sec?ret@h/d"));
        assert!(!text.contains("top") && !text.contains("ret"), "{text}");
        let mut config = Config::new("postgres://u@pooler/d");
        config.direct_connection_string = Some("postgres://u:hidden@db/d".to_owned());
        let text = format!("{config:?}");
        assert!(!text.contains("hidden"), "{text}");
        let text = format!("{:?}", Config::new("user=u password=topsecret host=h"));
        assert!(!text.contains("topsecret"), "{text}");
    }
}
