//! One way to open a store from configuration: a target string (the
//! `DATABASE_URL` of an application) picks the backend.

use crate::store::aggregate::StoredSnapshot;
use serde_json::Value;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::{Filter, Start};
use crate::model::payload::Payload;
use crate::model::recorded::{NewEvent, Recorded};
use crate::store::hub::Hub;
use crate::store::memory::MemoryStore;
use crate::store::subscription::Subscription;
use crate::store::{EventStore, SubscriptionSource, TypedPage};

/// Which store a target names, with the backend's settings (to adjust
/// before [`AnyStore::connect`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreConfig {
    /// `memory:`: a [`MemoryStore`].
    Memory,
    /// A path, or `sqlite://path`: the embedded store.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(crate::sqlite::Config),
    /// `postgres://...`, `postgresql://...` or a key=value connection
    /// string: PostgreSQL.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(crate::postgres::Config),
}

impl StoreConfig {
    /// Reads a target: `postgres://` or `postgresql://` URLs and key=value
    /// strings (`host=... dbname=...`) are PostgreSQL, `memory:` is the
    /// in-memory store, and anything else is a SQLite file path (an
    /// optional `sqlite://` before it). An empty target, or one whose
    /// backend this build leaves out, is [`Error::InvalidInput`].
    ///
    /// ```
    /// use synckit::StoreConfig;
    ///
    /// assert!(matches!(StoreConfig::parse("memory:")?, StoreConfig::Memory));
    /// assert!(matches!(StoreConfig::parse("events.db")?, StoreConfig::Sqlite(_)));
    /// assert!(matches!(
    ///     StoreConfig::parse("postgres://postgres@127.0.0.1/app")?,
    ///     StoreConfig::Postgres(_)
    /// ));
    /// assert!(StoreConfig::parse("  ").is_err());
    /// # Ok::<(), synckit::Error>(())
    /// ```
    pub fn parse(target: &str) -> Result<Self> {
        let target = target.trim();
        if target.is_empty() {
            return Err(Error::invalid(
                "target",
                "empty: give a postgres:// URL, a SQLite file path or memory:",
            ));
        }
        if target == "memory:" {
            return Ok(StoreConfig::Memory);
        }
        let postgres = target.starts_with("postgres://")
            || target.starts_with("postgresql://")
            || target.contains('=');
        if postgres {
            #[cfg(feature = "postgres")]
            return Ok(StoreConfig::Postgres(crate::postgres::Config::new(target)));
            #[cfg(not(feature = "postgres"))]
            return Err(Error::invalid(
                "target",
                "a PostgreSQL target needs synckit's `postgres` feature",
            ));
        }
        let path = target.strip_prefix("sqlite://").unwrap_or(target);
        #[cfg(feature = "sqlite")]
        return Ok(StoreConfig::Sqlite(crate::sqlite::Config::new(path)));
        #[cfg(not(feature = "sqlite"))]
        return Err(Error::invalid(
            "target",
            format!("{path:?} would be a SQLite file, which needs synckit's `sqlite` feature"),
        ));
    }
}

/// Opens the store `target` names ([`StoreConfig::parse`]) with its
/// backend's defaults.
///
/// ```
/// use synckit::{Cursor, EventStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> synckit::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let events_db = dir.path().join("events.db").display().to_string();
/// // An application passes its DATABASE_URL: a file path here.
/// let store = synckit::open(&events_db).await?;
/// assert_eq!(store.backend(), "sqlite");
/// let events = store.load(Cursor::START).await?;
/// # assert!(events.is_empty());
/// # Ok(()) }
/// ```
pub async fn open(target: &str) -> Result<AnyStore> {
    AnyStore::connect(StoreConfig::parse(target)?).await
}

/// A store of whichever backend the configuration chose; it implements
/// [`EventStore`] and [`SubscriptionSource`] by handing each call to it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// In memory.
    Memory(MemoryStore),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(crate::sqlite::SqliteStore),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(crate::postgres::PgStore),
}

impl AnyStore {
    /// Connects to (or opens, or creates) the configured store.
    pub async fn connect(config: StoreConfig) -> Result<Self> {
        Ok(match config {
            StoreConfig::Memory => AnyStore::Memory(MemoryStore::new()),
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(config) => {
                AnyStore::Sqlite(crate::sqlite::SqliteStore::connect(config).await?)
            }
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(config) => {
                AnyStore::Postgres(crate::postgres::PgStore::connect(config).await?)
            }
        })
    }

    /// The backend's name: `memory`, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(_) => "postgres",
        }
    }
}

/// Runs `$call` on the store inside, whichever it is.
macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($store) => $call,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite($store) => $call,
            #[cfg(feature = "postgres")]
            AnyStore::Postgres($store) => $call,
        }
    };
}

impl EventStore for AnyStore {
    async fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        each!(self, s => s.append(expected, events).await)
    }

    async fn read(&self, filter: &Filter, after: Cursor, limit: usize) -> Result<Vec<Recorded>> {
        each!(self, s => s.read(filter, after, limit).await)
    }

    async fn latest_version(&self) -> Result<Cursor> {
        each!(self, s => s.latest_version().await)
    }

    async fn stream_version(&self, aggregate_id: &str) -> Result<Option<u64>> {
        each!(self, s => s.stream_version(aggregate_id).await)
    }

    async fn close(&self) -> Result<()> {
        each!(self, s => s.close().await)
    }

    fn batch_size(&self) -> usize {
        each!(self, s => s.batch_size())
    }

    async fn get(&self, id: &str) -> Result<Recorded> {
        each!(self, s => EventStore::get(s, id).await)
    }

    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>> {
        each!(self, s => s.read_aggregate(aggregate_id, after, limit).await)
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<StoredSnapshot>> {
        each!(self, s => s.load_snapshot(aggregate_type, aggregate_id).await)
    }

    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<()> {
        each!(self, s => s.save_snapshot(snapshot).await)
    }

    async fn delete_snapshots(&self, aggregate_type: &str) -> Result<u64> {
        each!(self, s => s.delete_snapshots(aggregate_type).await)
    }

    async fn read_page_as<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> Result<TypedPage<P>> {
        each!(self, s => s.read_page_as(filter, after, limit, upto).await)
    }

    async fn read_page(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> Result<TypedPage<Value>> {
        each!(self, s => s.read_page(filter, after, limit).await)
    }
}

impl SubscriptionSource for AnyStore {
    fn hub(&self) -> &Hub {
        each!(self, s => s.hub())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Cursor>> {
        each!(self, s => s.load_checkpoint(name).await)
    }

    async fn save_checkpoint(&self, name: &str, position: Cursor) -> Result<()> {
        each!(self, s => s.save_checkpoint(name, position).await)
    }

    async fn acquire_lease(
        &self,
        key: &crate::store::lease::LeaseKey,
        ttl: std::time::Duration,
    ) -> Result<Option<u64>> {
        each!(self, s => s.acquire_lease(key, ttl).await)
    }

    async fn release_lease(&self, key: &crate::store::lease::LeaseKey, token: u64) -> Result<()> {
        each!(self, s => s.release_lease(key, token).await)
    }

    async fn save_leased_checkpoint(
        &self,
        key: &crate::store::lease::LeaseKey,
        token: u64,
        position: Cursor,
    ) -> Result<bool> {
        each!(self, s => s.save_leased_checkpoint(key, token, position).await)
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<crate::store::lease::LiveLease>> {
        each!(self, s => s.live_leases(prefix).await)
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<(String, Cursor)>> {
        each!(self, s => s.list_checkpoints(prefix).await)
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<crate::ParkedEvent>> {
        each!(self, s => s.parked(subscription).await)
    }

    async fn skip_parked(&self, subscription: &str, version: u64) -> Result<bool> {
        each!(self, s => s.skip_parked(subscription, version).await)
    }

    async fn park_event(&self, event: crate::ParkedEvent) -> Result<()> {
        each!(self, s => s.park_event(event).await)
    }

    async fn set_parked(
        &self,
        subscription: &str,
        version: u64,
        status: crate::ParkedStatus,
        error: Option<(&str, u32)>,
        only_from: Option<crate::ParkedStatus>,
    ) -> Result<bool> {
        each!(self, s => s.set_parked(subscription, version, status, error, only_from).await)
    }

    fn health(&self) -> Result<()> {
        each!(self, s => s.health())
    }

    async fn start_now(&self) -> Result<(Cursor, Vec<u64>)> {
        each!(self, s => s.start_now().await)
    }

    async fn retry_delay(&self, attempt: u32) {
        each!(self, s => s.retry_delay(attempt).await)
    }

    async fn subscribe(&self, filter: Filter, start: Start) -> Result<Subscription> {
        each!(self, s => s.subscribe(filter, start).await)
    }
}
