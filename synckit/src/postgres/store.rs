//! The PostgreSQL store: its state, its connections, and the store traits,
//! whose work the other files of this module do.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, TransactionManager};

use super::read::FenceFloor;
use super::{Config, connect, listener, migrate};
use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::payload::Payload;
use crate::model::recorded::{NewEvent, Recorded};
use crate::sql::db;
use crate::store::aggregate::StoredSnapshot;
use crate::store::hub::Hub;
use crate::store::{EventStore, SubscriptionSource, TypedPage};

pub(super) struct Inner {
    pub(super) pool: RwLock<Option<connect::Pool>>,
    pub(super) fence_floor: FenceFloor,
    pub(super) config: Config,
    pub(super) closed: AtomicBool,
    pub(super) hub: Hub,
    pub(super) listener: Arc<listener::ListenerState>,
    pub(super) writer: super::group::Writer,
    listener_task: std::sync::Mutex<ListenerTask>,
}

/// The listener's life: it starts with the first subscription (or
/// [`PgStore::listen`]), so a store that only writes holds no LISTEN
/// connection and is woken by no one's commits.
enum ListenerTask {
    NotStarted,
    Running(tokio::task::JoinHandle<()>),
    Stopped,
}

impl Inner {
    /// Starts the listener unless it runs or the store is closed.
    fn start_listener(&self) {
        let mut task = self.listener_task.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*task, ListenerTask::NotStarted)
            && !AtomicBool::load(&self.closed, Ordering::Acquire)
        {
            *task = ListenerTask::Running(tokio::spawn(tracing::Instrument::in_current_span(
                listener::run(self.config.clone(), self.hub.clone(), self.listener.clone()),
            )));
        }
    }

    fn stop_listener(&self) {
        let mut task = self.listener_task.lock().unwrap_or_else(|p| p.into_inner());
        if let ListenerTask::Running(running) = std::mem::replace(&mut *task, ListenerTask::Stopped)
        {
            // Dropping its connection ends every LISTEN of this store.
            running.abort();
            self.listener.stopped();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_listener();
    }
}

/// The PostgreSQL event store; clones share one pool.
///
/// ```no_run
#[doc = include_str!("../docs/examples/postgres_tour.rs")]
/// ```
#[derive(Clone)]
pub struct PgStore {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.inner.config)
            .field(
                "closed",
                &AtomicBool::load(&self.inner.closed, Ordering::Acquire),
            )
            .finish()
    }
}

impl PgStore {
    /// Connects with the defaults of [`Config::new`], as
    /// [`SqliteStore::open`](crate::sqlite::SqliteStore::open) opens a file.
    pub async fn open(connection_string: impl Into<String>) -> Result<Self> {
        PgStore::connect(Config::new(connection_string)).await
    }

    /// Connects, checks that the server answers within the connect timeout,
    /// and runs the embedded migrations unless the config turns them off.
    #[tracing::instrument(skip_all, fields(db = %config.redacted_connection_string()), err)]
    pub async fn connect(config: Config) -> Result<Self> {
        config.check()?;
        if config.run_migrations {
            let conn = connect::connect(&config, connect::Target::Session).await?;
            let (_, applied) = migrate::migrate_connection(conn).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied migrations");
            }
        }
        let check = !config.run_migrations || config.direct_connection_string.is_some();
        let pool = connect::pool(&config);
        let inner = Arc::new(Inner {
            pool: RwLock::new(Some(pool)),
            fence_floor: FenceFloor::default(),
            config,
            closed: AtomicBool::new(false),
            hub: Hub::new(),
            listener: Arc::new(listener::ListenerState::default()),
            writer: super::group::Writer::default(),
            listener_task: std::sync::Mutex::new(ListenerTask::NotStarted),
        });
        let store = PgStore { inner };
        if check {
            // Through the pool, the way the store's operations go (behind a
            // pooler: in a transaction).
            store
                .with_conn("connect", super::admin::check_schema)
                .await?;
        }
        Ok(store)
    }

    /// Whether the notification listener's connection is up now. The
    /// listener starts with the first subscription, or with
    /// [`PgStore::listen`]; until then this is `false`.
    pub fn is_listener_connected(&self) -> bool {
        self.inner.listener.is_connected()
    }

    /// Starts the notification listener now rather than at the first
    /// subscription (it connects in the background: see
    /// [`PgStore::is_listener_connected`]). Idempotent; nothing after
    /// [`EventStore::close`].
    ///
    /// A store only listens once something may need the wake-ups: a store
    /// that only writes holds no LISTEN connection, and its process is not
    /// woken by every commit of every writer.
    pub async fn listen(&self) {
        self.inner.start_listener();
    }

    /// The filters of the subscriptions open on this store, one entry each.
    pub fn active_subscriptions(&self) -> Vec<Filter> {
        self.inner.hub.filters()
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(super) fn pool(&self) -> Result<connect::Pool> {
        if AtomicBool::load(&self.inner.closed, Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        self.inner
            .pool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::StoreClosed)
    }

    /// Runs `f` on a pooled connection. Behind a transaction pooler
    /// ([`Config::transaction_pooling`]) it runs in one transaction, so
    /// that its statements, prepared and executed, stay on one server
    /// connection.
    pub(super) async fn with_conn<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>,
    ) -> Result<T> {
        let pool = self.pool()?;
        let mut conn = pool
            .get()
            .await
            .map_err(|e| Error::database(operation, e))?;
        if !self.inner.config.transaction_pooling {
            return f(&mut conn).await;
        }
        // Begun and ended by hand: `f` decides the outcome, whatever its
        // type. A database error inside has aborted the transaction, and
        // PostgreSQL's COMMIT then rolls it back; a future dropped inside
        // leaves the connection in a transaction, which the pool discards.
        type Transactions = <AsyncPgConnection as AsyncConnection>::TransactionManager;
        Transactions::begin_transaction(&mut *conn)
            .await
            .map_err(db(operation))?;
        let outcome = f(&mut conn).await;
        if let Err(e) = Transactions::commit_transaction(&mut *conn).await {
            let _ = Transactions::rollback_transaction(&mut *conn).await;
            return Err(Error::database(operation, e));
        }
        outcome
    }
}

impl EventStore for PgStore {
    #[tracing::instrument(skip_all, fields(events = events.len(), %expected), err)]
    async fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        self.append_with_retries(expected, events).await
    }

    async fn read(&self, filter: &Filter, after: Cursor, limit: usize) -> Result<Vec<Recorded>> {
        let read = self.read_rows(filter, after, limit, None).await?;
        crate::sql::rows::recorded(read.rows)
    }

    async fn read_page_as<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> Result<TypedPage<P>> {
        self.read_page_spawned(filter, after, limit, upto).await
    }

    async fn latest_version(&self) -> Result<Cursor> {
        self.latest_fence().await
    }

    async fn stream_version(&self, aggregate_id: &str) -> Result<Option<u64>> {
        self.stream_head_of(aggregate_id).await
    }

    async fn close(&self) -> Result<()> {
        if !self.inner.closed.load(Ordering::Acquire) {
            crate::store::lease::give_back_all(self).await;
        }
        self.inner.closed.store(true, Ordering::Release);
        // Dropping the pool closes its idle connections; connections in use
        // close when their operation ends.
        let pool = self
            .inner
            .pool
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(pool);
        self.inner.stop_listener();
        self.inner.hub.close();
        Ok(())
    }

    fn batch_size(&self) -> usize {
        self.inner.config.batch_size
    }

    async fn get(&self, id: &str) -> Result<Recorded> {
        PgStore::get(self, id).await
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

impl SubscriptionSource for PgStore {
    fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Starts the listener if this is the store's first subscription. A
    /// commit between the subscription's first read and the listener's
    /// LISTEN is not lost: the listener wakes every subscription once it
    /// listens.
    async fn subscribe(&self, filter: Filter, start: crate::Start) -> Result<crate::Subscription> {
        let config = &self.inner.config;
        if config.transaction_pooling && config.direct_connection_string.is_none() {
            // LISTEN through a transaction pooler would look connected and
            // hear nothing: refuse rather than poll silently.
            return Err(Error::invalid(
                "config",
                "subscriptions behind a transaction pooler need direct_connection_string \
                 (LISTEN needs a session of its own)",
            ));
        }
        self.inner.start_listener();
        crate::store::subscription::open(self.clone(), filter, start).await
    }

    /// The fence, and the versions above it that had committed: while a
    /// writer below them is pending, the fence lags behind them, and a
    /// subscription from now must not deliver what committed before it.
    async fn start_now(&self) -> Result<(Cursor, Vec<u64>)> {
        self.fence_and_committed_above().await
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

    fn health(&self) -> Result<()> {
        self.inner.listener.health()
    }

    fn retry_delay(&self, attempt: u32) -> impl std::future::Future<Output = ()> + Send {
        let base = self
            .inner
            .config
            .reconnect_interval
            .min(Duration::from_secs(1));
        let delay = base
            .saturating_mul(1 << attempt.min(5))
            .min(Duration::from_secs(30));
        tokio::time::sleep(delay)
    }
}
