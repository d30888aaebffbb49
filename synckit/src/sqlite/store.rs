//! The SQLite store: its connection, where calls on it run, and the store
//! traits, whose work the other files of this module do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel::{RunQueryDsl, SqliteConnection};
use serde_json::Value;

use super::{Config, append, migrate, watcher};
use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::payload::Payload;
use crate::model::recorded::{NewEvent, Recorded};
use crate::model::validate;
use crate::sql::{Number, STREAM_HEAD_SQL, TxError, int, rows};
use crate::store::aggregate::StoredSnapshot;
use crate::store::hub::Hub;
use crate::store::{EventStore, SubscriptionSource, TypedPage};

/// Cacheable raw SQL on SQLite.
type Statement<'f> = crate::sql::Statement<'f, Sqlite>;

pub(super) type Conn = Arc<std::sync::Mutex<SqliteConnection>>;

/// Where a call on the connection runs.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Place {
    /// On this worker under `block_in_place` (multi-threaded runtimes),
    /// which hands the worker's other tasks to another thread meanwhile: a
    /// SQLite call is short, and handing each to a blocking thread and back
    /// costs more than the call.
    Here,
    /// On a blocking thread, so that the caller's task goes on meanwhile
    /// (the next page of a stream is read while this one is consumed).
    Elsewhere,
}

/// Runs `task` on the connection without stalling the runtime: a wait on
/// another process's write lock blocks no other task.
pub(super) async fn on_connection<R: Send + 'static>(
    conn: &Conn,
    place: Place,
    task: impl FnOnce(&mut SqliteConnection) -> R + Send + 'static,
) -> std::result::Result<R, tokio::task::JoinError> {
    let conn = conn.clone();
    let work = move || task(&mut conn.lock().unwrap_or_else(|p| p.into_inner()));
    if place == Place::Here
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
    {
        Ok(tokio::task::block_in_place(work))
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

pub(super) struct Inner {
    /// The connection, taken out by `close`. Calls clone the handle and
    /// lock the connection itself on the thread that runs them, so that no
    /// lock is held across an await: a call whose future is dropped, or no
    /// longer polled (a subscription whose consumer went quiet), holds up
    /// no one once its blocking part is done.
    pub(super) conn: std::sync::Mutex<Option<Conn>>,
    pub(super) config: Config,
    pub(super) closed: AtomicBool,
    pub(super) hub: Hub,
    pub(super) poller: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// The embedded event store; clones share one connection.
///
/// ```
/// use synckit::sqlite::SqliteStore;
/// use synckit::{Cursor, EventStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> synckit::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("events.db");
/// let store = SqliteStore::open(&path).await?;
/// let events = store.load(Cursor::START).await?;
/// # assert!(events.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.config.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database file with default settings.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        SqliteStore::connect(Config::new(path)).await
    }

    /// Opens (or creates) the database file, runs the embedded migrations,
    /// and starts watching for other processes' commits. A directory, a
    /// read-only file, a file that is not a SQLite database or a database
    /// with tables synckit did not create is refused, unmodified.
    pub async fn connect(config: Config) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::invalid("config", "batch_size must be at least 1"));
        }
        let opening = config.clone();
        let (conn, _) = tokio::task::spawn_blocking(move || migrate::open_checked(&opening))
            .await
            .map_err(|e| Error::database("open", e))??;
        let poll_config = config.clone();
        let hub = Hub::new();
        let inner = Arc::new(Inner {
            conn: std::sync::Mutex::new(Some(Arc::new(std::sync::Mutex::new(conn)))),
            config,
            closed: AtomicBool::new(false),
            hub: hub.clone(),
            poller: std::sync::Mutex::new(None),
        });
        let poller = tokio::spawn(watcher::watch_other_processes(poll_config, hub));
        *inner.poller.lock().unwrap_or_else(|p| p.into_inner()) = Some(poller);
        Ok(SqliteStore { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Runs `task` on the connection, on a blocking thread.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        operation: &'static str,
        place: Place,
        task: impl FnOnce(&mut SqliteConnection) -> std::result::Result<R, TxError> + Send + 'static,
    ) -> Result<R> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::StoreClosed)?;
        let outcome = on_connection(&conn, place, task)
            .await
            .map_err(|e| Error::database(operation, e))?;
        outcome.map_err(|e| e.into_error(operation))
    }
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        validate::check_append(expected, &events)?;
        if events.is_empty() {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(Error::StoreClosed);
            }
            return Ok(Vec::new());
        }
        // The immediate transaction holds the write lock from the id and
        // stream checks to the commit, so no other writer can race them.
        let recorded = self
            .run("append", Place::Here, move |c| {
                append::append_blocking(c, expected, events)
            })
            .await?;
        for e in &recorded {
            self.inner.hub.notify(&e.aggregate_id, &e.event_type);
        }
        Ok(recorded)
    }

    async fn read(&self, filter: &Filter, after: Cursor, limit: usize) -> Result<Vec<Recorded>> {
        let rows = self.read_rows(filter, after, limit, Place::Here).await?;
        rows::recorded(rows)
    }

    async fn read_page_as<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        _upto: Option<Cursor>,
    ) -> Result<TypedPage<P>> {
        // Off this task: the stream reads its next page meanwhile.
        let rows = self
            .read_rows(filter, after, limit, Place::Elsewhere)
            .await?;
        Ok(rows::page(rows))
    }

    async fn read_page(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> Result<TypedPage<Value>> {
        let (rows, scanned) = self.read_rows_scanned(filter, after, limit).await?;
        let page = rows::page(rows);
        Ok(match scanned {
            Some(scanned) => page.with_scanned(scanned),
            None => page,
        })
    }

    async fn latest_version(&self) -> Result<Cursor> {
        self.run("latest_version", Place::Here, |c| {
            let n: Vec<Number> = Statement::new(super::read::HEAD_SQL).load(c)?;
            Ok(Cursor::new(Number::first(n).map_or(0, int::nonnegative)))
        })
        .await
    }

    async fn stream_version(&self, aggregate_id: &str) -> Result<Option<u64>> {
        validate::check_aggregate_id(aggregate_id)?;
        let aggregate_id = aggregate_id.to_owned();
        self.run("stream_version", Place::Here, move |c| {
            let n: Vec<Number> = Statement::new(STREAM_HEAD_SQL)
                .bind::<Text, _>(&aggregate_id)
                .load(c)?;
            Ok(Number::first(n).map(int::nonnegative))
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        if !self.inner.closed.load(Ordering::Acquire) {
            crate::store::lease::give_back_all(self).await;
        }
        self.inner.closed.store(true, Ordering::Release);
        if let Some(task) = self
            .inner
            .poller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        // Dropping the connection closes the file (once calls in flight
        // are done with it).
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(conn);
        self.inner.hub.close();
        Ok(())
    }

    fn batch_size(&self) -> usize {
        self.inner.config.batch_size
    }

    async fn get(&self, id: &str) -> Result<Recorded> {
        SqliteStore::get(self, id).await
    }

    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>> {
        self.read_aggregate_at(aggregate_id, after, limit).await
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<StoredSnapshot>> {
        self.load_snapshot_at(aggregate_type, aggregate_id).await
    }

    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<()> {
        self.save_snapshot_at(snapshot).await
    }

    async fn delete_snapshots(&self, aggregate_type: &str) -> Result<u64> {
        self.delete_snapshots_at(aggregate_type).await
    }
}

impl SubscriptionSource for SqliteStore {
    fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Cursor>> {
        self.load_checkpoint_at(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: Cursor) -> Result<()> {
        self.save_checkpoint_at(name, position).await
    }

    async fn acquire_lease(
        &self,
        key: &crate::store::lease::LeaseKey,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        self.acquire_lease_at(key, ttl).await
    }

    async fn release_lease(&self, key: &crate::store::lease::LeaseKey, token: u64) -> Result<()> {
        self.release_lease_at(key, token).await
    }

    async fn save_leased_checkpoint(
        &self,
        key: &crate::store::lease::LeaseKey,
        token: u64,
        position: Cursor,
    ) -> Result<bool> {
        self.save_leased_checkpoint_at(key, token, position).await
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<crate::store::lease::LiveLease>> {
        self.live_leases_at(prefix).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<(String, Cursor)>> {
        self.list_checkpoints_at(prefix).await
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<crate::ParkedEvent>> {
        self.parked_at(subscription).await
    }

    async fn skip_parked(&self, subscription: &str, version: u64) -> Result<bool> {
        self.skip_parked_at(subscription, version).await
    }

    async fn park_event(&self, event: crate::ParkedEvent) -> Result<()> {
        self.park_event_at(&event).await
    }

    async fn set_parked(
        &self,
        subscription: &str,
        version: u64,
        status: crate::ParkedStatus,
        error: Option<(&str, u32)>,
        only_from: Option<crate::ParkedStatus>,
    ) -> Result<bool> {
        self.set_parked_at(subscription, version, status, error, only_from)
            .await
    }

    fn retry_delay(&self, attempt: u32) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(Duration::from_millis(20u64 << attempt.min(8)))
    }
}
