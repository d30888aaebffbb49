//! Parked events: what [`Subscription::run`](crate::Subscription::run)
//! does with an event its handler keeps failing on, instead of stopping.
//!
//! The event is parked (a row of the `synckit_parked` table on the SQL
//! backends) and the subscription goes on; the later events of the same
//! aggregate are parked behind it, in order, so that the aggregate's events
//! are still handled in order, while other aggregates' events go on. An
//! operator retries the event ([`SubscriptionSource::retry_parked`],
//! `synckit parked retry VERSION`) or skips it
//! ([`SubscriptionSource::skip_parked`], `synckit parked skip VERSION`);
//! the running subscription then hands the aggregate's parked events to its
//! handler again, in order, within a second.

// Without the runtime the run loop that parks is not built.
#![cfg_attr(not(feature = "runtime"), allow(dead_code))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::model::error::{Error, Result};
use crate::model::recorded::Recorded;
use crate::store::SubscriptionSource;

/// How often a subscription with parked events looks for ones released.
pub(crate) const RELEASE_POLL: Duration = Duration::from_secs(1);

/// A parked event of a durable subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The durable subscription's checkpoint name, or the group's name.
    pub subscription: String,
    /// The event's version.
    pub version: u64,
    /// The event's id.
    pub id: String,
    /// The event's aggregate.
    pub aggregate_id: String,
    /// Why it is parked.
    pub status: ParkedStatus,
    /// The handler's last error (or why it waits).
    pub error: String,
    /// How many times the handler was called for it.
    pub attempts: u32,
    /// When it was parked, by the database's clock.
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// Why an event is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParkedStatus {
    /// The handler failed on it after every attempt.
    Failed,
    /// An earlier event of its aggregate is parked: it waits behind it.
    Waiting,
    /// Failed, and asked to be handled again.
    Retry,
}

impl ParkedStatus {
    /// The name stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkedStatus::Failed => "failed",
            ParkedStatus::Waiting => "waiting",
            ParkedStatus::Retry => "retry",
        }
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn parse(stored: &str) -> Self {
        match stored {
            "waiting" => ParkedStatus::Waiting,
            "retry" => ParkedStatus::Retry,
            // The table's check allows nothing else.
            _ => ParkedStatus::Failed,
        }
    }
}

impl std::fmt::Display for ParkedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `run` needs of its store to park events, whatever the store.
pub(crate) trait ParkStore: Send + Sync {
    fn park(&self, event: ParkedEvent) -> BoxFuture<'static, Result<()>>;
    fn list(&self, subscription: String) -> BoxFuture<'static, Result<Vec<ParkedEvent>>>;
    fn set_failed(
        &self,
        subscription: String,
        version: u64,
        error: String,
        attempts: u32,
    ) -> BoxFuture<'static, Result<bool>>;
    fn remove(&self, subscription: String, version: u64) -> BoxFuture<'static, Result<bool>>;
    fn get(&self, id: String) -> BoxFuture<'static, Result<Recorded>>;
}

impl<S: SubscriptionSource> ParkStore for S {
    fn park(&self, event: ParkedEvent) -> BoxFuture<'static, Result<()>> {
        let store = self.clone();
        async move { store.park_event(event).await }.boxed()
    }

    fn list(&self, subscription: String) -> BoxFuture<'static, Result<Vec<ParkedEvent>>> {
        let store = self.clone();
        async move { store.parked(Some(&subscription)).await }.boxed()
    }

    fn set_failed(
        &self,
        subscription: String,
        version: u64,
        error: String,
        attempts: u32,
    ) -> BoxFuture<'static, Result<bool>> {
        let store = self.clone();
        async move {
            store
                .set_parked(
                    &subscription,
                    version,
                    ParkedStatus::Failed,
                    Some((&error, attempts)),
                    None,
                )
                .await
        }
        .boxed()
    }

    fn remove(&self, subscription: String, version: u64) -> BoxFuture<'static, Result<bool>> {
        let store = self.clone();
        async move { store.skip_parked(&subscription, version).await }.boxed()
    }

    fn get(&self, id: String) -> BoxFuture<'static, Result<Recorded>> {
        let store = self.clone();
        async move { store.get(&id).await }.boxed()
    }
}

/// A durable subscription's parking: where, and which aggregates have
/// parked events now.
pub(crate) struct Parking {
    pub(crate) name: String,
    pub(crate) store: Arc<dyn ParkStore>,
    /// Aggregates with parked events (their next events wait).
    pub(crate) blocked: BTreeSet<String>,
    /// Loaded from the store once.
    pub(crate) loaded: bool,
}

impl Parking {
    pub(crate) fn new(name: String, store: Arc<dyn ParkStore>) -> Self {
        Parking {
            name,
            store,
            blocked: BTreeSet::new(),
            loaded: false,
        }
    }

    /// The parked events by aggregate, in version order, as stored now;
    /// refreshes which aggregates are blocked.
    pub(crate) async fn refresh(&mut self) -> Result<BTreeMap<String, Vec<ParkedEvent>>> {
        let rows = self.store.list(self.name.clone()).await?;
        let mut by_aggregate: BTreeMap<String, Vec<ParkedEvent>> = BTreeMap::new();
        for row in rows {
            by_aggregate
                .entry(row.aggregate_id.clone())
                .or_default()
                .push(row);
        }
        self.blocked = by_aggregate.keys().cloned().collect();
        self.loaded = true;
        Ok(by_aggregate)
    }

    /// The row that parks `event` as `status`.
    pub(crate) fn row<T>(
        &self,
        event: &Recorded<T>,
        status: ParkedStatus,
        error: String,
        attempts: u32,
    ) -> ParkedEvent {
        ParkedEvent {
            subscription: self.name.clone(),
            version: event.version,
            id: event.id.clone(),
            aggregate_id: event.aggregate_id.clone(),
            status,
            error,
            attempts,
            parked_at: chrono::Utc::now(),
        }
    }

    /// Parks `row`'s event, blocking its aggregate.
    pub(crate) async fn park(&mut self, row: ParkedEvent) -> Result<()> {
        let (aggregate, version, id, status) = (
            row.aggregate_id.clone(),
            row.version,
            row.id.clone(),
            row.status,
        );
        self.store.park(row).await?;
        #[cfg(feature = "runtime")]
        tracing::warn!(
            subscription = %self.name,
            version,
            id = %id,
            aggregate_id = %aggregate,
            status = %status,
            "parked the event: the subscription goes on with other aggregates"
        );
        #[cfg(not(feature = "runtime"))]
        let _ = (version, id, status);
        self.blocked.insert(aggregate);
        Ok(())
    }
}

/// The default of [`SubscriptionSource::park_event`]: a store that keeps
/// no parked events.
pub(crate) fn unsupported() -> Error {
    Error::invalid(
        "parked events",
        "this store keeps no parked events: use HandlerRetry::then_stop",
    )
}
