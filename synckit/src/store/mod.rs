//! The store traits every backend implements, and what is written once on
//! top of them: paging, subscriptions, shared reads, the in-memory store
//! and the spawned handlers.

pub(crate) mod aggregate;
pub(crate) mod group;
#[cfg(feature = "runtime")]
pub(crate) mod handler;
pub mod hub;
pub(crate) mod lease;
pub(crate) mod memory;
pub(crate) mod page;
pub(crate) mod parked;
pub(crate) mod progress;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod report;
pub(crate) mod signal;
pub(crate) mod subscription;

use page::Pages;
pub use page::TypedPage;

use std::future::Future;

use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use serde_json::Value;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::event::Event;
use crate::model::filter::{Filter, Start};
use crate::model::payload::Payload;
use crate::model::recorded::{NewEvent, Recorded};
use crate::store::aggregate::{Aggregate, Decide, DecideError, Decided, Loaded, StoredSnapshot};
use crate::store::hub::Hub;
use crate::store::lease::LeaseKey;
use crate::store::subscription::Subscription;

/// Page size of loads and catch-up reads when a backend does not say.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 1000;

/// An event store: atomic appends and gap-free reads in global order.
///
/// Every backend (in memory, SQLite, PostgreSQL) implements it with the same
/// guarantees:
///
/// - an append is stored whole or not at all, after its
///   [`ExpectedVersion`] holds;
/// - an event id appended again with the same aggregate, type and data is
///   an idempotent retry that returns the stored events and writes nothing;
///   with other content it is [`Error::DuplicateEvent`];
/// - reads return events in `version` order and never step over an event
///   that commits later with a lower version, so a reader that resumes from
///   the last version it saw never misses one;
/// - a stored event that cannot be decoded is one error naming its version
///   and id ([`Error::UnreadableEvent`], [`Error::Decode`]): streamed reads
///   and subscriptions yield it in its place and go on; whole pages
///   ([`EventStore::read`], [`EventStore::load`]) fail with it;
/// - every future may be dropped at any await point and leaves no lock,
///   connection or task behind;
/// - errors say whether a retry can help ([`Error::is_transient`]);
/// - after [`EventStore::close`], every call fails with
///   [`Error::StoreClosed`].
///
/// Handles are cheap to clone and share one store; dropping every handle
/// frees what the store holds, as `close` does.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends events atomically, after checking `expected` against the
    /// stream's version (an append that expects a version covers one
    /// aggregate). Returns the recorded events in order.
    ///
    /// On PostgreSQL, appends that arrive while the store's previous commit
    /// is in flight commit together in one statement (group commit), each
    /// with its own expectation and outcome, in arrival order; one that
    /// arrives when nothing is committing starts at once
    /// (`postgres::Config::max_group_appends`). A future dropped before its
    /// group starts writes nothing; once started, its append commits whole
    /// or not at all.
    fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send;

    /// Reads up to `limit` events after `after` that pass `filter`, in
    /// version order.
    fn read(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send;

    /// The version of the last event readers can see (the start when empty).
    fn latest_version(&self) -> impl Future<Output = Result<Cursor>> + Send;

    /// The `stream_version` of an aggregate's last event, `None` without
    /// events.
    fn stream_version(
        &self,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Closes the store; idempotent. Later calls fail with
    /// [`Error::StoreClosed`], and open subscriptions end.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// The event with this id, or [`Error::EventNotFound`].
    fn get(&self, id: &str) -> impl Future<Output = Result<Recorded>> + Send;

    /// Up to `limit` events of one aggregate after its stream version
    /// `after` (0: from the first), in stream order: the read of one
    /// stream by its own positions, which aggregates use.
    fn read_aggregate(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send;

    /// The snapshot of one aggregate, if one is stored (see [`Snapshots`](crate::Snapshots)).
    fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<StoredSnapshot>>> + Send;

    /// Stores a snapshot, unless one of a later stream version at the same
    /// schema version is stored already.
    fn save_snapshot(&self, snapshot: StoredSnapshot) -> impl Future<Output = Result<()>> + Send;

    /// Deletes every snapshot of one aggregate type; returns how many.
    /// Snapshots are a cache: this changes no load's result.
    fn delete_snapshots(&self, aggregate_type: &str) -> impl Future<Output = Result<u64>> + Send;

    /// The state of one aggregate and the stream version it includes: the
    /// latest snapshot when the type keeps them ([`Aggregate::snapshots`]),
    /// then the stream's events after it, read by stream version.
    fn load_aggregate<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Loaded<A>>> + Send {
        let store = self.clone();
        let aggregate_id = aggregate_id.to_owned();
        async move { aggregate::load::<Self, A>(&store, &aggregate_id).await }
    }

    /// Runs a command on one aggregate: loads it, asks `decision` for the
    /// events to append (or the caller's own error), appends them with the
    /// exact expected version, and on [`Error::Conflict`] loads and decides
    /// again, after a jittered backoff, up to [`Decide::attempts`].
    ///
    /// The decision's error comes back unchanged as
    /// [`DecideError::Rejected`]; exhausted attempts as the last conflict.
    /// A decision that fails or panics leaves nothing written. With
    /// [`Decide::command_id`], a command seen before returns what it
    /// appended then. A snapshot is taken after an append that crosses a
    /// multiple of the type's snapshot interval, off the caller's path.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// use synckit::{Aggregate, Decide, DecideError, Event, EventStore, MemoryStore};
    ///
    /// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    /// #[event(aggregate_id = "account")]
    /// enum AccountEvent {
    ///     Deposited { account: String, amount: u64 },
    ///     Withdrawn { account: String, amount: u64 },
    /// }
    ///
    /// #[derive(Default)]
    /// struct Account { balance: u64 }
    ///
    /// impl Aggregate for Account {
    ///     type Event = AccountEvent;
    ///     const NAME: &'static str = "account";
    ///     fn apply(&mut self, event: &AccountEvent) {
    ///         match event {
    ///             AccountEvent::Deposited { amount, .. } => self.balance += amount,
    ///             AccountEvent::Withdrawn { amount, .. } => self.balance -= amount,
    ///         }
    ///     }
    /// }
    ///
    /// fn withdraw(account: &Account, amount: u64) -> Result<Vec<AccountEvent>, String> {
    ///     if account.balance < amount {
    ///         return Err(format!("balance {} is below {amount}", account.balance));
    ///     }
    ///     Ok(vec![AccountEvent::Withdrawn { account: "acc-1".into(), amount }])
    /// }
    ///
    /// # futures::executor::block_on(async {
    /// let store = MemoryStore::new();
    /// let deposit = |_: &Account| {
    ///     Ok::<_, String>(vec![AccountEvent::Deposited { account: "acc-1".into(), amount: 10 }])
    /// };
    /// store.decide("acc-1", Decide::new(), deposit).await.unwrap();
    /// let done = store.decide("acc-1", Decide::new(), |a: &Account| withdraw(a, 4)).await.unwrap();
    /// assert_eq!((done.state.balance, done.version), (6, Some(2)));
    /// let refused = store.decide("acc-1", Decide::new(), |a: &Account| withdraw(a, 7)).await;
    /// assert!(matches!(refused, Err(DecideError::Rejected(reason)) if reason.contains("below 7")));
    /// let loaded = store.load_aggregate::<Account>("acc-1").await?;
    /// assert_eq!((loaded.state.balance, loaded.version), (6, Some(2)));
    /// # Ok::<(), synckit::Error>(())
    /// # }).unwrap();
    /// ```
    fn decide<A, R, F>(
        &self,
        aggregate_id: &str,
        settings: Decide,
        decision: F,
    ) -> impl Future<Output = std::result::Result<Decided<A>, DecideError<R>>> + Send
    where
        A: Aggregate,
        R: Send,
        F: FnMut(&A) -> std::result::Result<Vec<A::Event>, R> + Send,
    {
        let store = self.clone();
        let aggregate_id = aggregate_id.to_owned();
        async move { aggregate::decide(&store, &aggregate_id, settings, decision).await }
    }

    /// Page size of loads and catch-up reads.
    fn batch_size(&self) -> usize {
        DEFAULT_BATCH_SIZE
    }

    /// Every event after `after`, read page by page. Use
    /// [`EventStore::read_stream`] when the result may not fit in memory.
    fn load(&self, after: Cursor) -> impl Future<Output = Result<Vec<Recorded>>> + Send {
        self.read_stream(Filter::all(), after).try_collect()
    }

    /// The events of one aggregate after the global position `after`.
    fn load_by_aggregate(
        &self,
        aggregate_id: &str,
        after: Cursor,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send {
        let checked = crate::model::validate::check_aggregate_id(aggregate_id);
        let events = self.read_stream(Filter::stream(aggregate_id), after);
        async move {
            checked?;
            events.try_collect().await
        }
    }

    /// A stream of every event after `after` that passes `filter`, fetched
    /// one page at a time: memory bounded by two pages whatever the store
    /// holds. The first page holds [`EventStore::batch_size`] events; while
    /// pages come back full, each next one doubles, up to about
    /// 2 MiB of rows (judged by the page before) and at most
    /// 16 batch sizes, but never below the batch size. A
    /// short read costs one small page; a long one few round trips. The
    /// next page is requested as soon as one arrives, so the database reads
    /// it while the caller goes through this one. It ends at the head as of
    /// its last page, or after the first error.
    fn read_stream(&self, filter: Filter, after: Cursor) -> BoxStream<'static, Result<Recorded>> {
        self.read_stream_as::<Value>(filter, after)
    }

    /// [`EventStore::read_stream`] decoded into `P`: an [`Event`] type
    /// (or raw JSON). The backends decode each event straight from its
    /// stored JSON; an event that does not decode is an error item, after
    /// which the stream goes on.
    ///
    /// ```
    /// # use synckit::{Cursor, Event, EventStore, MemoryStore};
    /// # #[derive(serde::Serialize, serde::Deserialize, synckit::Event)]
    /// # struct Deposited { #[event(aggregate_id)] account: String, amount: u64 }
    /// # async fn demo(store: MemoryStore) -> synckit::Result<()> {
    /// use futures::TryStreamExt;
    ///
    /// let total: u64 = store
    ///     .read_stream_as::<Deposited>(Deposited::filter(), Cursor::START)
    ///     .try_fold(0, |sum, e| async move { Ok(sum + e.data.amount) })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    fn read_stream_as<P: Payload>(
        &self,
        filter: Filter,
        after: Cursor,
    ) -> BoxStream<'static, Result<Recorded<P>>> {
        Pages::<Self, P>::new(self.clone(), filter, after).boxed()
    }

    /// One page of [`EventStore::read_stream_as`], decoded as it is
    /// iterated. Backends override it to decode from the stored JSON
    /// without building a [`Value`] first.
    ///
    /// `upto`, when given, is the fence an earlier page of the same read
    /// was read under (backends with a fence say which on each page): a
    /// backend may read up to it again instead of taking a new one, since
    /// an older fence is still a valid one.
    #[doc(hidden)]
    fn read_page_as<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> impl Future<Output = Result<TypedPage<P>>> + Send {
        let _ = upto;
        let page = self.read(filter, after, limit);
        async move {
            // Sizes unknown: such pages do not grow.
            Ok(TypedPage::from_rows(
                page.await?,
                Recorded::cursor,
                |_| 0,
                P::from_recorded,
            ))
        }
    }

    /// One raw page as a subscription reads it: like
    /// [`EventStore::read_page_as`], but awaited whole by its reader, so
    /// backends read it in place rather than on a task or thread of its own
    /// (which only pays off when the reader works through one page while
    /// the next arrives).
    #[doc(hidden)]
    fn read_page(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<TypedPage<Value>>> + Send {
        self.read_page_as::<Value>(filter, after, limit, None)
    }

    /// Parses cursor text: a version number, as [`Cursor::parse`] does.
    fn parse_version(&self, text: &str) -> Result<Cursor> {
        Cursor::parse(text)
    }

    /// Appends one typed event.
    fn append_event<E: Event>(
        &self,
        expected: ExpectedVersion,
        event: &E,
    ) -> impl Future<Output = Result<Recorded>> + Send {
        let new = NewEvent::from_event(event);
        async move {
            let mut recorded = self.append(expected, vec![new?]).await?;
            recorded
                .pop()
                .ok_or_else(|| Error::database("append", "no row returned"))
        }
    }

    /// Appends typed events atomically.
    fn append_events<E: Event>(
        &self,
        expected: ExpectedVersion,
        events: &[E],
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send {
        let new: Result<Vec<NewEvent>> = events.iter().map(NewEvent::from_event).collect();
        async move { self.append(expected, new?).await }
    }
}

/// A store that can feed subscriptions: wake-ups on commit and durable
/// checkpoints.
pub trait SubscriptionSource: EventStore {
    /// The wake-up registry the backend notifies on every commit it sees
    /// (the backends' own; not for callers).
    #[doc(hidden)]
    fn hub(&self) -> &Hub;

    /// The stored position of a durable subscription.
    fn load_checkpoint(&self, name: &str) -> impl Future<Output = Result<Option<Cursor>>> + Send;

    /// Stores the position of a durable subscription.
    fn save_checkpoint(
        &self,
        name: &str,
        position: Cursor,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Takes or renews the lease `key` for `ttl`: its fencing token, or
    /// `None` while another consumer holds it. A store shared by several
    /// processes keeps leases where all of them see it (the SQL backends:
    /// the `synckit_leases` table); this default grants every lease, so a
    /// store that does not override it has no standbys.
    #[doc(hidden)]
    fn acquire_lease(
        &self,
        key: &LeaseKey,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<Option<u64>>> + Send {
        let _ = (key, ttl);
        std::future::ready(Ok(Some(1)))
    }

    /// Gives the lease back at once, if `key` still holds it with `token`.
    #[doc(hidden)]
    fn release_lease(&self, key: &LeaseKey, token: u64) -> impl Future<Output = Result<()>> + Send {
        let _ = (key, token);
        std::future::ready(Ok(()))
    }

    /// Saves checkpoint `key.name` at `position` if `key` still holds its
    /// lease with `token`, in one atomic step; `false` when it does not
    /// (nothing saved).
    #[doc(hidden)]
    fn save_leased_checkpoint(
        &self,
        key: &LeaseKey,
        token: u64,
        position: Cursor,
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = token;
        let save = self.save_checkpoint(&key.name, position);
        async move { save.await.map(|()| true) }
    }

    /// The leases whose names start with `prefix` that are held now (not
    /// expired, not given back), by name and part. The default lists none.
    #[doc(hidden)]
    fn live_leases(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<crate::store::lease::LiveLease>>> + Send {
        let _ = prefix;
        std::future::ready(Ok(Vec::new()))
    }

    /// The stored checkpoints whose names start with `prefix`, by name.
    /// The default lists none.
    #[doc(hidden)]
    fn list_checkpoints(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, Cursor)>>> + Send {
        let _ = prefix;
        std::future::ready(Ok(Vec::new()))
    }

    /// Every consumer group ([`Start::Group`]) with a live member or a
    /// checkpoint in this store: its live members with the partitions each
    /// owns, and every partition's owner, checkpoint and lag behind the
    /// head, by name.
    ///
    /// ```
    /// # use synckit::{Filter, MemoryStore, Start, SubscriptionSource};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> synckit::Result<()> {
    /// use futures::FutureExt;
    ///
    /// let store = MemoryStore::new();
    /// let mut member = store.subscribe(Filter::all(), Start::group("projector", 4)).await?;
    /// // The first poll joins the group; alone, the member owns every partition.
    /// assert!(futures::StreamExt::next(&mut member).now_or_never().is_none());
    /// assert_eq!(member.partitions(), vec![0, 1, 2, 3]);
    /// let groups = store.groups().await?;
    /// assert_eq!(groups[0].name, "projector");
    /// assert_eq!(groups[0].members.len(), 1);
    /// assert_eq!(groups[0].members[0].partitions, vec![0, 1, 2, 3]);
    /// # Ok(()) }
    /// ```
    fn groups(&self) -> impl Future<Output = Result<Vec<crate::ConsumerGroup>>> + Send {
        let store = self.clone();
        async move { crate::store::group::list(&store).await }
    }

    /// The parked events of durable subscription (or group) `subscription`,
    /// or of every one when `None`, by subscription and version: the
    /// events a handler kept failing on, and the later events of their
    /// aggregates waiting behind them (see [`HandlerRetry`](crate::HandlerRetry)). A store that
    /// keeps none (the default) lists none.
    fn parked(
        &self,
        subscription: Option<&str>,
    ) -> impl Future<Output = Result<Vec<crate::ParkedEvent>>> + Send {
        let _ = subscription;
        std::future::ready(Ok(Vec::new()))
    }

    /// Asks for the parked event at `version` of `subscription`, which its
    /// handler failed on, to be handled again: the running subscription
    /// hands it, then the events of its aggregate waiting behind it, to its
    /// handler within a second. `false` when no such failed event is
    /// parked.
    fn retry_parked(
        &self,
        subscription: &str,
        version: u64,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.set_parked(
            subscription,
            version,
            crate::ParkedStatus::Retry,
            None,
            Some(crate::ParkedStatus::Failed),
        )
    }

    /// Drops the parked event at `version` of `subscription`: it is never
    /// handled, and the events of its aggregate waiting behind it are
    /// handed to the handler of the running subscription, in order, within
    /// a second. `false` when no such event is parked.
    fn skip_parked(
        &self,
        subscription: &str,
        version: u64,
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = (subscription, version);
        std::future::ready(Ok(false))
    }

    /// Parks an event (nothing when it is parked already).
    #[doc(hidden)]
    fn park_event(&self, event: crate::ParkedEvent) -> impl Future<Output = Result<()>> + Send {
        let _ = event;
        std::future::ready(Err(crate::store::parked::unsupported()))
    }

    /// Sets a parked event's status (and error and attempts), only when
    /// its status is `only_from` now if given; `false` when not found.
    #[doc(hidden)]
    fn set_parked(
        &self,
        subscription: &str,
        version: u64,
        status: crate::ParkedStatus,
        error: Option<(&str, u32)>,
        only_from: Option<crate::ParkedStatus>,
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = (subscription, version, status, error, only_from);
        std::future::ready(Ok(false))
    }

    /// `Err` when subscriptions can no longer be served (the listener gave
    /// up); they end with that error.
    fn health(&self) -> Result<()> {
        Ok(())
    }

    /// Where a subscription that starts now begins: a position, and the
    /// versions above it that had committed already (a backend whose
    /// fence can lag behind commits lists them, so that a subscription
    /// from now delivers only what commits after it starts, yet nothing
    /// that was still pending below those).
    #[doc(hidden)]
    fn start_now(&self) -> impl Future<Output = Result<(Cursor, Vec<u64>)>> + Send {
        let latest = self.latest_version();
        async move { Ok((latest.await?, Vec::new())) }
    }

    /// Waits before a subscription retries a read that failed with a
    /// transient error (`attempt` counts from 1).
    fn retry_delay(&self, attempt: u32) -> impl Future<Output = ()> + Send {
        let _ = attempt;
        std::future::ready(())
    }

    /// Subscribes to the events passing `filter`, from `start`.
    ///
    /// The subscription reads the store from its own position, so wake-ups
    /// that are lost or coalesced cost latency, never an event; it delivers
    /// in version order, yields [`Message::CaughtUp`](crate::Message) once
    /// when it reaches the head, then follows new commits. A stored event
    /// that cannot be decoded is an error item in its place, after which it
    /// goes on; transient read errors are error items too, retried with
    /// backoff. [`Start::Now`] delivers what commits after the call.
    fn subscribe(
        &self,
        filter: Filter,
        start: Start,
    ) -> impl Future<Output = Result<Subscription>> + Send {
        crate::store::subscription::open(self.clone(), filter, start)
    }
}

/// Decides whether an append repeats events stored earlier.
///
/// `Ok(Some(stored))` when every event exists with the same content (a retry:
/// nothing to write), `Ok(None)` when none exists, and
/// [`Error::DuplicateEvent`] when an id exists with other content or the
/// batch overlaps stored events only in part.
pub(crate) fn idempotent_replay<'a, F>(
    events: impl Iterator<Item = &'a NewEvent>,
    lookup: F,
) -> Result<Option<Vec<Recorded>>>
where
    F: Fn(&str) -> Option<&'a Recorded>,
{
    let mut found = Vec::new();
    let mut missing = None;
    for event in events {
        match lookup(&event.id) {
            Some(stored) if event.same_content(stored) => found.push(stored.clone()),
            Some(_) => {
                return Err(Error::DuplicateEvent {
                    id: event.id.clone(),
                    reason: "an event with this id exists with other content".to_owned(),
                });
            }
            None => missing = Some(event.id.clone()),
        }
    }
    match (found.first(), missing) {
        (None, _) => Ok(None),
        (Some(_), None) => Ok(Some(found)),
        (Some(stored), Some(_)) => Err(Error::DuplicateEvent {
            id: stored.id.clone(),
            reason: "the batch repeats some stored events but not all".to_owned(),
        }),
    }
}
