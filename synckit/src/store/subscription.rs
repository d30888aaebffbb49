//! Catch-up-then-live subscriptions, shared by every backend.
//!
//! A subscription owns a position and reads the store after it, page by
//! page, through the backend's gap-free [`EventStore::read`]. When a page
//! comes back short it has reached the head: it says so once
//! ([`Message::CaughtUp`]) and waits for a wake-up from the store's
//! [`Hub`](crate::store::hub::Hub), then reads again. Events are never pushed
//! through the wake-up, so the table stays the one source of truth.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, Stream, StreamExt};
use serde_json::Value;

use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::model::event::Event;
use crate::model::filter::{Filter, Start};
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::model::validate::MAX_ID_LEN;
use crate::store::SubscriptionSource;
use crate::store::group::Partitions;
use crate::store::hub::Registration;
use crate::store::lease::{self, Held, Lease};
use crate::store::page::{PageRow, SharedPage};
use crate::store::parked::{ParkStore, ParkedStatus, Parking};
use crate::store::progress::Progress;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message<T = Value> {
    /// The next event, in version order.
    Event(Recorded<T>),
    /// The catch-up reached the head of the store: what follows is live.
    /// Sent once per subscription.
    CaughtUp,
    /// The subscription has read every event up to this position: the
    /// ones after the last event it delivered do not pass its filter (or
    /// had committed before a [`Start::Now`]). Sent when a read at the head
    /// goes past such events, so that a durable consumer can commit the
    /// position ([`Subscription::commit_at`]) and a restart does not read
    /// them again.
    Progress(Cursor),
}

/// The subscription behind the derive's typed helpers
/// (`Account::subscribe_from(&store, start)`): `E`'s event types, of one
/// aggregate when given, decoded into `E`.
pub fn subscribe_as<E: Event, S: SubscriptionSource>(
    store: &S,
    aggregate_id: Option<String>,
    start: Start,
) -> impl Future<Output = Result<Subscription<E>>> + Send {
    let filter = match aggregate_id {
        Some(id) => E::filter().and_streams([id]),
        None => E::filter(),
    };
    let opening = store.subscribe(filter, start);
    async move { Ok(opening.await?.typed()) }
}

type SaveCheckpoint = Arc<dyn Fn(Cursor) -> BoxFuture<'static, Result<()>> + Send + Sync>;
type RetryDelay = Arc<dyn Fn(u32) -> BoxFuture<'static, ()> + Send + Sync>;

/// How [`Subscription::run`] retries a handler that fails on an event:
/// how many calls in all, and the wait before each next one (doubling from
/// `backoff` up to `max_backoff`). The default: 5 calls, waiting 100 ms,
/// 200 ms, 400 ms and 800 ms between them. Every failed call is logged
/// (`tracing`, level warn, then error for the last) with the subscription,
/// the event and the attempt.
///
/// When the last call fails, a durable subscription (or group member)
/// parks the event by default ([`HandlerRetry::then_park`]; see
/// [`ParkedEvent`](crate::ParkedEvent)) and goes on; with
/// [`HandlerRetry::then_stop`], and always for a subscription that is not
/// durable, `run` stops with [`Error::Handler`].
///
/// The waits need a timer: on a tokio runtime they are tokio's; elsewhere
/// (the in-memory store driven by another executor, wasm32) the calls
/// follow one another at once.
///
/// ```
/// use std::time::Duration;
/// use synckit::HandlerRetry;
///
/// let retry = HandlerRetry::default()
///     .with_attempts(3)
///     .with_backoff(Duration::from_millis(10), Duration::from_secs(1));
/// assert_eq!(retry.delay(1), Duration::from_millis(10));
/// assert_eq!(retry.delay(2), Duration::from_millis(20));
/// assert_eq!(HandlerRetry::once().attempts(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerRetry {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    park: bool,
}

impl Default for HandlerRetry {
    fn default() -> Self {
        HandlerRetry {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            park: true,
        }
    }
}

impl HandlerRetry {
    /// One call per event: the first failure parks the event (or stops the
    /// run, as [`HandlerRetry::then_stop`] says).
    pub fn once() -> Self {
        HandlerRetry::default().with_attempts(1)
    }

    /// At most `attempts` calls for one event (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Waits `backoff` after the first failure, doubling after each next
    /// one up to `max_backoff` (at least `backoff`).
    pub fn with_backoff(mut self, backoff: Duration, max_backoff: Duration) -> Self {
        self.backoff = backoff;
        self.max_backoff = max_backoff.max(backoff);
        self
    }

    /// The most calls for one event.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the last call for an event fails, a durable subscription (or
    /// group member) parks the event and goes on: the default. See
    /// [`ParkedEvent`](crate::ParkedEvent).
    pub fn then_park(mut self) -> Self {
        self.park = true;
        self
    }

    /// When the last call for an event fails, `run` stops with
    /// [`Error::Handler`], and a durable subscription resumes with that
    /// event: the policy of subscriptions that are not durable, and of
    /// projections.
    pub fn then_stop(mut self) -> Self {
        self.park = false;
        self
    }

    /// Whether a durable subscription parks an event its handler keeps
    /// failing on ([`HandlerRetry::then_park`]).
    pub fn parks(&self) -> bool {
        self.park
    }

    /// The wait after failed call number `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff)
    }
}

/// A live subscription: a [`Stream`] of recorded events in version order.
///
/// `Subscription<Value>` yields raw events; `Subscription<E>` (from
/// [`Subscription::typed`] or the derive's `E::subscribe`) decodes each into
/// `E`, and a decode failure is an error item naming the event, after which
/// the subscription goes on with the next event. Dropping the subscription
/// unsubscribes it alone.
#[must_use = "a subscription delivers nothing unless polled"]
pub struct Subscription<T = Value> {
    messages: BoxStream<'static, Result<Message>>,
    state: Arc<SharedState>,
    checkpoint: Option<(String, SaveCheckpoint)>,
    retry_delay: RetryDelay,
    description: String,
    handler_retry: HandlerRetry,
    progress: Progress,
    /// A durable subscription's lease (a group member's liveness).
    lease: Option<Arc<Lease>>,
    /// A group member's partitions.
    group: Option<Partitions>,
    /// The most events a projection applies in one transaction.
    per_transaction: usize,
    /// Where a durable subscription parks events.
    parking: Option<Arc<dyn ParkStore>>,
    _payload: PhantomData<fn() -> T>,
}

#[derive(Default)]
struct SharedState {
    caught_up: AtomicBool,
    /// Version of the last event handed to the consumer.
    delivered: AtomicU64,
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("position", &self.position())
            .field("caught_up", &self.is_caught_up())
            .field("checkpoint", &self.checkpoint.as_ref().map(|(n, _)| n))
            .finish()
    }
}

impl<T> Subscription<T> {
    /// The same subscription decoding into another payload type.
    pub fn typed<U: Payload>(self) -> Subscription<U> {
        Subscription {
            messages: self.messages,
            state: self.state,
            checkpoint: self.checkpoint,
            retry_delay: self.retry_delay,
            description: self.description,
            handler_retry: self.handler_retry,
            progress: self.progress,
            lease: self.lease,
            group: self.group,
            per_transaction: self.per_transaction,
            parking: self.parking,
            _payload: PhantomData,
        }
    }

    /// How many events a projection (`PgStore::project`,
    /// `SqliteStore::project`) may apply in one transaction: up to `n`
    /// (at least 1; default 1) of those already read, never waiting for
    /// more. Larger transactions commit less often; a handler failure
    /// retries the whole transaction.
    pub fn with_events_per_transaction(mut self, n: usize) -> Self {
        self.per_transaction = n.max(1);
        self
    }

    /// How long a durable subscription's lease lasts without renewal
    /// (default 10 s, at least 300 ms; renewed every third of it): how
    /// soon a standby takes over from a consumer that died or stopped. Set
    /// it before the first poll. No effect on other subscriptions.
    pub fn with_lease_ttl(self, ttl: Duration) -> Self {
        if let Some(lease) = &self.lease {
            lease.set_ttl(ttl);
        }
        self
    }

    /// Whether this durable subscription holds its lease now: `false`
    /// while it waits as a standby (and for other subscriptions). A group
    /// member holds its membership's lease while it is a live member.
    pub fn holds_lease(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.held().is_some())
    }

    /// The partitions this consumer group member owns now, in order
    /// (empty for other subscriptions, and before the first poll).
    pub fn partitions(&self) -> Vec<u32> {
        self.group
            .as_ref()
            .map(Partitions::owned)
            .unwrap_or_default()
    }

    /// The same subscription with another handler retry policy for
    /// [`Subscription::run`].
    pub fn with_handler_retry(mut self, retry: HandlerRetry) -> Self {
        self.handler_retry = retry;
        self
    }

    /// How far [`Subscription::run`] has handled: take it before calling
    /// `run`, and wait on it from elsewhere.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The checkpoint name of a durable subscription, else its filter.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the subscription has reached the head of the store once.
    pub fn is_caught_up(&self) -> bool {
        self.state.caught_up.load(Ordering::Acquire)
    }

    /// The position after the last event delivered.
    pub fn position(&self) -> Cursor {
        Cursor::new(self.state.delivered.load(Ordering::Acquire))
    }

    /// The name of a durable subscription.
    pub fn checkpoint_name(&self) -> Option<&str> {
        self.checkpoint.as_ref().map(|(n, _)| n.as_str())
    }

    /// Stores the position after the last delivered event as this durable
    /// subscription's checkpoint: a restart resumes after it. Call it once
    /// the event is handled. The future borrows nothing, so it may be
    /// spawned or awaited while the subscription is polled elsewhere.
    pub fn commit(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.commit_at(self.position())
    }

    /// Stores `position` as this durable subscription's checkpoint.
    pub fn commit_at(&self, position: Cursor) -> impl Future<Output = Result<()>> + Send + 'static {
        let save = self.checkpoint.as_ref().map(|(_, save)| save.clone());
        async move {
            match save {
                Some(save) => save(position).await,
                None => Err(Error::invalid(
                    "subscription",
                    "only a subscription started with Start::Checkpoint has a checkpoint",
                )),
            }
        }
    }
}

impl<T: Payload> Subscription<T> {
    /// The subscription as a stream of [`Message`]s, with the caught-up
    /// marker.
    pub fn messages(self) -> impl Stream<Item = Result<Message<T>>> + Send {
        let state = self.state;
        self.messages.map(move |item| match item? {
            Message::Event(raw) => {
                state.delivered.store(raw.version, Ordering::Release);
                T::from_recorded(raw).map(Message::Event)
            }
            Message::CaughtUp => Ok(Message::CaughtUp),
            Message::Progress(position) => {
                state.delivered.store(position.version(), Ordering::Release);
                Ok(Message::Progress(position))
            }
        })
    }
}

impl<T: Payload + Clone> Subscription<T> {
    /// Calls `handler` for every event, in order, until the subscription
    /// ends; a durable subscription commits its checkpoint after each
    /// success, and after reads that pass over events its filter does not
    /// take. [`Subscription::progress`] tells how far it has got.
    ///
    /// Policy, the same on every backend:
    ///
    /// - A handler error is retried as [`Subscription::with_handler_retry`]
    ///   says ([`HandlerRetry::default`]: 5 calls for the same event), each
    ///   failure logged. Then a durable subscription parks the event (a
    ///   [`ParkedEvent`](crate::ParkedEvent), in the store) and goes on:
    ///   the later events of the same aggregate are parked behind it, in
    ///   order, while other aggregates' events are handled, and a
    ///   [retry](crate::SubscriptionSource::retry_parked) or a
    ///   [skip](crate::SubscriptionSource::skip_parked) hands them to the
    ///   handler again (checked every second). Parked events count as
    ///   handled for the checkpoint and [`Progress`](crate::Progress). With
    ///   [`HandlerRetry::then_stop`], or for a subscription that is not
    ///   durable, `run` returns [`Error::Handler`] naming the subscription
    ///   and the event instead, and the subscription stops there (a durable
    ///   one resumes with that event).
    /// - A poison event, a stored event that cannot be decoded
    ///   ([`Error::UnreadableEvent`], or [`Error::Decode`] and
    ///   [`Error::UnknownEventType`] for the subscription's type), stops no
    ///   one: it is logged (`tracing`, level error, with the subscription,
    ///   its version and id), counted in the `synckit_poison_events_total`
    ///   counter, and passed over; a durable subscription's checkpoint
    ///   moves past it. The event stays in the store, where a raw read
    ///   still reaches it.
    /// - Transient errors (see [`Error::is_transient`]) of reads and of
    ///   checkpoint saves are retried with the store's backoff; any other
    ///   error ends `run` with [`Error::Subscription`], which names the
    ///   subscription and holds the error.
    /// - `run` returns `Ok(())` when the store is closed.
    pub async fn run<F, Fut, E>(self, mut handler: F) -> Result<()>
    where
        F: FnMut(Recorded<T>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<crate::model::error::BoxError>,
    {
        let Subscription {
            mut messages,
            state,
            checkpoint,
            retry_delay,
            description,
            handler_retry,
            progress,
            lease,
            group,
            parking,
            ..
        } = self;
        // Waiters learn that the run stopped however it stops.
        let _ends = progress.ends_on_drop();
        let save = checkpoint.map(|(_, save)| save);
        let stopped = |error: Error| Error::Subscription {
            subscription: description.clone(),
            source: Box::new(error),
        };
        let mut parking = parking
            .filter(|_| handler_retry.parks())
            .map(|store| Parking::new(description.clone(), store));
        #[cfg(feature = "runtime")]
        let mut next_release = None::<tokio::time::Instant>;
        loop {
            // Parked events released by a retry or a skip: handled first.
            if let Some(parking) = &mut parking {
                #[cfg(feature = "runtime")]
                let due = next_release.is_none_or(|at| tokio::time::Instant::now() >= at);
                #[cfg(not(feature = "runtime"))]
                let due = true;
                if due {
                    #[cfg(feature = "runtime")]
                    if tokio::runtime::Handle::try_current().is_ok() {
                        next_release =
                            Some(tokio::time::Instant::now() + crate::store::parked::RELEASE_POLL);
                    }
                    let released = release(
                        parking,
                        group.as_ref(),
                        &mut handler,
                        handler_retry,
                        &description,
                    )
                    .await;
                    match released {
                        Ok(()) => {}
                        Err(Error::StoreClosed) => return Ok(()),
                        Err(error) if error.is_transient() => {}
                        Err(error) => return Err(stopped(error)),
                    }
                }
            }
            #[cfg(feature = "runtime")]
            let item = match (&parking, next_release) {
                // Wake for the next look at parked events.
                (Some(parking), Some(at)) if !parking.blocked.is_empty() => {
                    match tokio::time::timeout_at(at, messages.next()).await {
                        Ok(item) => item,
                        Err(_) => continue,
                    }
                }
                _ => messages.next().await,
            };
            #[cfg(not(feature = "runtime"))]
            let item = messages.next().await;
            let Some(item) = item else { break };
            let item = match item {
                Ok(Message::Event(raw)) => {
                    let version = raw.version;
                    state.delivered.store(version, Ordering::Release);
                    T::from_recorded(raw).map(|event| (version, Some(event)))
                }
                Ok(Message::Progress(position)) => {
                    state.delivered.store(position.version(), Ordering::Release);
                    Ok((position.version(), None))
                }
                Ok(Message::CaughtUp) => {
                    progress.set_caught_up();
                    continue;
                }
                Err(error) => Err(error),
            };
            let (version, event) = match item {
                Ok(item) => item,
                Err(error) if error.is_transient() => continue,
                Err(Error::StoreClosed) => return Ok(()),
                // A stored event that does not decode, raw or as `T`.
                Err(error) => match error.poisoned_event() {
                    Some((version, id)) => {
                        report_poison(&description, version, id, &error);
                        (version, None)
                    }
                    None => return Err(stopped(error)),
                },
            };
            if let Some(event) = event {
                let blocked = parking
                    .as_ref()
                    .is_some_and(|p| p.blocked.contains(&event.aggregate_id));
                let (event, outcome) = if blocked {
                    (event, Err((None, 0)))
                } else {
                    let (event, outcome) =
                        handle(&mut handler, event, handler_retry, &description).await;
                    (
                        event,
                        outcome.map_err(|(source, attempts)| (Some(source), attempts)),
                    )
                };
                if let Err((source, attempts)) = outcome {
                    let (status, error) = match &source {
                        Some(source) => (ParkedStatus::Failed, source.to_string()),
                        None => (
                            ParkedStatus::Waiting,
                            "waiting behind an earlier parked event of its aggregate".to_owned(),
                        ),
                    };
                    let parked = match &mut parking {
                        Some(parking) => loop {
                            let row = parking.row(&event, status, error.clone(), attempts);
                            match parking.park(row).await {
                                Ok(()) => break Ok(()),
                                Err(Error::StoreClosed) => return Ok(()),
                                Err(error) if error.is_transient() => {
                                    retry_delay(1).await;
                                }
                                Err(error) => break Err(error),
                            }
                        },
                        None => Err(crate::store::parked::unsupported()),
                    };
                    if let Err(park_error) = parked {
                        return Err(Error::Handler {
                            subscription: description,
                            version,
                            source: source.unwrap_or_else(|| Box::new(park_error)),
                        });
                    }
                }
            }
            if let Some(save) = &save {
                let mut attempt = 0;
                loop {
                    match save(Cursor::new(version)).await {
                        Ok(()) => break,
                        Err(Error::StoreClosed) => return Ok(()),
                        // Another consumer holds the lease now: this one
                        // waits as a standby again (at the next read) and
                        // the event is the new holder's to handle.
                        Err(Error::LeaseLost { .. }) => break,
                        Err(error) if error.is_transient() => {
                            attempt += 1;
                            retry_delay(attempt).await;
                        }
                        Err(error) => return Err(stopped(error)),
                    }
                }
                if lease.as_ref().is_some_and(|l| l.is_lost()) {
                    continue;
                }
            }
            progress.set_handled(version);
        }
        Ok(())
    }
}

/// Calls `handler` for `event` as `retry` says, logging each failure;
/// the last error and the number of calls when every call failed.
///
/// Takes the event and gives it back: held across the handler's awaits, a
/// reference would need `T: Sync`.
async fn handle<T: Clone, F, Fut, E>(
    handler: &mut F,
    event: Recorded<T>,
    retry: HandlerRetry,
    description: &str,
) -> (
    Recorded<T>,
    std::result::Result<(), (crate::model::error::BoxError, u32)>,
)
where
    F: FnMut(Recorded<T>) -> Fut,
    Fut: Future<Output = std::result::Result<(), E>>,
    E: Into<crate::model::error::BoxError>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Convert at once: the handler's error type need not be Send.
        let outcome = handler(event.clone()).await.map_err(Into::into);
        let Err(source) = outcome else {
            return (event, Ok(()));
        };
        report_handler_failure(description, &event, attempt, retry, &*source);
        if attempt >= retry.attempts() {
            return (event, Err((source, attempt)));
        }
        let delay = retry.delay(attempt);
        drop(source);
        pause(delay).await;
    }
}

/// Hands the parked events released since the last look (the first of
/// their aggregate retried or skipped) to `handler`, in version order per
/// aggregate: each handled one leaves the table; one that fails again is
/// parked as failed again, and its aggregate waits behind it. A group
/// member looks only at the aggregates of the partitions it owns.
async fn release<T: Payload + Clone, F, Fut, E>(
    parking: &mut Parking,
    group: Option<&Partitions>,
    handler: &mut F,
    retry: HandlerRetry,
    description: &str,
) -> Result<()>
where
    F: FnMut(Recorded<T>) -> Fut,
    Fut: Future<Output = std::result::Result<(), E>>,
    E: Into<crate::model::error::BoxError>,
{
    let by_aggregate = parking.refresh().await?;
    let owned = group.map(Partitions::owned);
    let mut changed = false;
    for (aggregate, rows) in by_aggregate {
        if let (Some(parts), Some(owned)) = (group, &owned)
            && !owned.contains(&parts.partition_of(&aggregate))
        {
            continue;
        }
        for row in rows {
            if row.status == ParkedStatus::Failed {
                break;
            }
            changed = true;
            let stored = match parking.store.get(row.id.clone()).await {
                Ok(stored) => stored,
                // Gone (a store that deletes events): nothing to handle.
                Err(Error::EventNotFound { .. }) => {
                    parking
                        .store
                        .remove(parking.name.clone(), row.version)
                        .await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let event = match T::from_recorded(stored) {
                Ok(event) => event,
                Err(error) => {
                    report_poison(description, row.version, &row.id, &error);
                    parking
                        .store
                        .remove(parking.name.clone(), row.version)
                        .await?;
                    continue;
                }
            };
            match handle(handler, event, retry, description).await.1 {
                Ok(()) => {
                    parking
                        .store
                        .remove(parking.name.clone(), row.version)
                        .await?;
                    #[cfg(feature = "runtime")]
                    tracing::info!(
                        subscription = description,
                        version = row.version,
                        id = %row.id,
                        "handled a parked event"
                    );
                }
                Err((source, attempts)) => {
                    parking
                        .store
                        .set_failed(
                            parking.name.clone(),
                            row.version,
                            source.to_string(),
                            row.attempts.saturating_add(attempts),
                        )
                        .await?;
                    break;
                }
            }
        }
    }
    if changed {
        parking.refresh().await?;
    }
    Ok(())
}

/// A checkpoint save a projection's transaction makes: the lease it is
/// made under and the position.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) struct LeasedSave {
    pub(crate) key: crate::store::lease::LeaseKey,
    pub(crate) token: u64,
    pub(crate) position: Cursor,
}

/// What one projection transaction came to.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) enum Applied {
    /// The events applied and the checkpoints saved, together.
    Committed,
    /// The handler failed: rolled back.
    Failed(crate::model::error::BoxError),
    /// Save number `.0` found its lease passed to another consumer:
    /// rolled back.
    LeaseLost(usize),
}

/// A backend's projection transaction: applies `events` and makes
/// `saves` in one transaction, or neither.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) trait Apply<T>: Send {
    fn apply(
        &mut self,
        events: Vec<Recorded<T>>,
        saves: Vec<LeasedSave>,
    ) -> BoxFuture<'_, Result<Applied>>;
}

impl<T: Payload + Clone> Subscription<T> {
    /// Drives a projection: gathers up to `per_transaction` events already
    /// read, with the checkpoint saves that record them, and hands both to
    /// `apply`, which commits them in one transaction or not at all. After
    /// a transaction whose outcome is unknown (a transient error) the
    /// subscription reads its checkpoints again, so what committed is
    /// never applied twice and what did not is applied again.
    #[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
    pub(crate) async fn project_with<A: Apply<T>>(self, mut apply: A) -> Result<()> {
        let Subscription {
            mut messages,
            state,
            retry_delay,
            description,
            handler_retry,
            progress,
            lease,
            group,
            per_transaction,
            ..
        } = self;
        if lease.is_none() {
            return Err(Error::invalid(
                "subscription",
                "a projection needs a durable subscription (Start::Checkpoint or Start::Group)",
            ));
        }
        let _ends = progress.ends_on_drop();
        let stopped = |error: Error| Error::Subscription {
            subscription: description.clone(),
            source: Box::new(error),
        };
        let mut failures = 0;
        loop {
            let mut events: Vec<Recorded<T>> = Vec::new();
            let mut position = None::<Cursor>;
            // Passed over events (filtered out, undecodable): every
            // partition's checkpoint moves, not only the events'.
            let mut passed_over = false;
            let mut ended = false;
            let mut item = messages.next().await;
            loop {
                let at = match &item {
                    Some(Ok(Message::Event(raw))) => Some(raw.version),
                    Some(Ok(Message::Progress(at))) => Some(at.version()),
                    Some(Err(error)) => error.poisoned_event().map(|(v, _)| v),
                    _ => None,
                };
                if let (Some(at), Some(before)) = (at, position)
                    && at < before.version()
                {
                    // The subscription went back to its checkpoint (a
                    // takeover, a reload). A plain one reads again all it
                    // had read after it: start the batch over. A group
                    // member reads again only a partition it just took:
                    // each partition's save below is its own.
                    if group.is_none() {
                        events.clear();
                        passed_over = false;
                        position = None;
                    }
                }
                let furthest =
                    |position: Option<Cursor>, at: Cursor| Some(position.map_or(at, |p| p.max(at)));
                match item {
                    None => ended = true,
                    Some(Ok(Message::Event(raw))) => {
                        let version = raw.version;
                        state.delivered.store(version, Ordering::Release);
                        position = furthest(position, Cursor::new(version));
                        match T::from_recorded(raw) {
                            Ok(event) => events.push(event),
                            Err(error) => match error.poisoned_event() {
                                Some((version, id)) => {
                                    report_poison(&description, version, id, &error);
                                    passed_over = true;
                                }
                                None => return Err(stopped(error)),
                            },
                        }
                    }
                    Some(Ok(Message::Progress(at))) => {
                        state.delivered.store(at.version(), Ordering::Release);
                        position = furthest(position, at);
                        passed_over = true;
                    }
                    Some(Ok(Message::CaughtUp)) => progress.set_caught_up(),
                    Some(Err(error)) if error.is_transient() => {}
                    Some(Err(Error::StoreClosed)) => return Ok(()),
                    Some(Err(error)) => match error.poisoned_event() {
                        Some((version, id)) => {
                            report_poison(&description, version, id, &error);
                            position = furthest(position, Cursor::new(version));
                            passed_over = true;
                        }
                        None => return Err(stopped(error)),
                    },
                }
                if ended || events.len() >= per_transaction {
                    break;
                }
                // More of what is read already, without waiting.
                match messages.next().now_or_never() {
                    Some(next) => item = next,
                    None => break,
                }
            }
            let Some(position) = position else {
                if ended {
                    return Ok(());
                }
                continue;
            };
            let mut leases = Vec::new();
            let mut saves = Vec::new();
            match (&group, &lease) {
                (Some(parts), _) => {
                    // Each partition at its own last event of the batch,
                    // every partition as far as the batch read when it
                    // passed over events.
                    let mut targets: std::collections::BTreeMap<u32, (Arc<Lease>, u64)> =
                        Default::default();
                    let mut plan = |planned: Vec<(u32, Arc<Lease>, u64)>| {
                        for (p, part, at) in planned {
                            let target = targets.entry(p).or_insert((part, at));
                            target.1 = target.1.max(at);
                        }
                    };
                    for event in &events {
                        let p = parts.partition_of(&event.aggregate_id);
                        plan(parts.plan(Cursor::new(event.version), Some(&[p])));
                    }
                    if passed_over {
                        plan(parts.plan(position, None));
                    }
                    let mut held = Vec::new();
                    for (p, (part, at)) in targets {
                        if let Some(token) = part.held() {
                            held.push(p);
                            saves.push(LeasedSave {
                                key: part.key.clone(),
                                token,
                                position: Cursor::new(at),
                            });
                            leases.push((Some(p), part));
                        }
                    }
                    // Events of a partition this member has lost are the
                    // new owner's to apply.
                    events.retain(|e| held.contains(&parts.partition_of(&e.aggregate_id)));
                }
                (None, Some(lease)) => match lease.held() {
                    Some(token) => {
                        saves.push(LeasedSave {
                            key: lease.key.clone(),
                            token,
                            position,
                        });
                        leases.push((None, lease.clone()));
                    }
                    // Lost: the subscription goes back to standby.
                    None => continue,
                },
                (None, None) => unreachable!("checked above"),
            }
            if saves.is_empty() {
                if ended {
                    return Ok(());
                }
                continue;
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                match apply.apply(events.clone(), saves.clone()).await {
                    Ok(Applied::Committed) => {
                        failures = 0;
                        if let Some(parts) = &group {
                            for (save, (p, _)) in saves.iter().zip(&leases) {
                                if let Some(p) = p {
                                    parts.mark_saved(*p, save.position.version());
                                }
                            }
                        }
                        progress.set_handled(position.version());
                        break;
                    }
                    Ok(Applied::Failed(source)) => {
                        let first = events.first().expect("only events fail");
                        let last = attempt >= handler_retry.attempts();
                        report_handler_failure(
                            &description,
                            first,
                            attempt,
                            handler_retry,
                            &*source,
                        );
                        if last {
                            return Err(Error::Handler {
                                subscription: description,
                                version: first.version,
                                source,
                            });
                        }
                        drop(source);
                        pause(handler_retry.delay(attempt)).await;
                    }
                    Ok(Applied::LeaseLost(i)) => {
                        if let Some((_, lost)) = leases.get(i) {
                            lost.lose();
                        }
                        if let Some(parts) = &group {
                            // The rest of the batch rolled back too.
                            parts.request_reload();
                        }
                        break;
                    }
                    Err(Error::StoreClosed) => return Ok(()),
                    Err(error) if error.is_transient() => {
                        // Committed or not: the checkpoints say.
                        failures += 1;
                        match &group {
                            Some(parts) => parts.request_reload(),
                            None => {
                                if let Some(lease) = &lease {
                                    lease.request_reload();
                                }
                            }
                        }
                        retry_delay(failures).await;
                        break;
                    }
                    Err(error) => return Err(stopped(error)),
                }
            }
            if ended {
                return Ok(());
            }
        }
    }
}

/// Waits `delay` on a tokio runtime; elsewhere (no timer) not at all.
async fn pause(delay: Duration) {
    #[cfg(feature = "runtime")]
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(delay).await;
    }
    #[cfg(not(feature = "runtime"))]
    let _ = delay;
}

/// Logs one failed handler call of [`Subscription::run`].
fn report_handler_failure<T>(
    subscription: &str,
    event: &Recorded<T>,
    attempt: u32,
    retry: HandlerRetry,
    error: &(dyn std::error::Error + 'static),
) {
    #[cfg(feature = "runtime")]
    {
        let attempts = retry.attempts();
        if attempt >= attempts {
            tracing::error!(
                subscription,
                version = event.version,
                id = %event.id,
                attempt,
                attempts,
                %error,
                "handler failed on its last attempt: stopping the subscription"
            );
        } else {
            tracing::warn!(
                subscription,
                version = event.version,
                id = %event.id,
                attempt,
                attempts,
                retry_in = ?retry.delay(attempt),
                %error,
                "handler failed; retrying"
            );
        }
    }
    #[cfg(not(feature = "runtime"))]
    let _ = (subscription, event, attempt, retry, error);
}

impl<T: Payload> Stream for Subscription<T> {
    type Item = Result<Recorded<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.messages.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Message::CaughtUp))) => continue,
                Poll::Ready(Some(Ok(Message::Progress(position)))) => {
                    self.state
                        .delivered
                        .store(position.version(), Ordering::Release);
                    continue;
                }
                Poll::Ready(Some(Ok(Message::Event(raw)))) => {
                    self.state.delivered.store(raw.version, Ordering::Release);
                    Poll::Ready(Some(T::from_recorded(raw)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// Logs and counts a poison event that [`Subscription::run`] passes over.
fn report_poison(subscription: &str, version: u64, id: &str, error: &Error) {
    #[cfg(feature = "runtime")]
    {
        tracing::error!(
            subscription,
            version,
            id,
            %error,
            "passing over a stored event that cannot be decoded"
        );
        metrics::counter!("synckit_poison_events_total").increment(1);
    }
    #[cfg(not(feature = "runtime"))]
    let _ = (subscription, version, id, error);
}

fn check_checkpoint_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ID_LEN || name.contains('\0') {
        return Err(Error::invalid(
            "checkpoint name",
            format!("must be 1 to {MAX_ID_LEN} bytes without NUL characters"),
        ));
    }
    if name.starts_with(crate::store::group::NAMESPACE) {
        return Err(Error::invalid(
            "checkpoint name",
            format!(
                "names starting with {:?} are consumer groups' (Start::Group)",
                crate::store::group::NAMESPACE
            ),
        ));
    }
    Ok(())
}

/// Opens a subscription on any [`SubscriptionSource`].
pub(crate) async fn open<S: SubscriptionSource>(
    store: S,
    filter: Filter,
    start: Start,
) -> Result<Subscription> {
    // Register first: a commit between resolving the start and the first
    // read must still wake us (the read would find it anyway, this only
    // saves latency).
    let registration = store.hub().register(&filter);
    let mut checkpoint = None;
    let mut lease = None;
    let mut follower_lease = None;
    #[cfg_attr(not(feature = "runtime"), allow(unused_mut))]
    let mut partitions = None;
    let mut parking: Option<Arc<dyn ParkStore>> = None;
    #[cfg(feature = "runtime")]
    let mut member = None;
    let mut description = filter.describe();
    let mut committed_before = Vec::new();
    let position = match start {
        Start::Beginning => Cursor::START,
        Start::After(cursor) => cursor,
        Start::Now => {
            let (position, committed) = store.start_now().await?;
            committed_before = committed;
            position
        }
        Start::Checkpoint(name) => {
            check_checkpoint_name(&name)?;
            // Where it would start now; read again once the lease is held.
            let position = store.load_checkpoint(&name).await?.unwrap_or(Cursor::START);
            let held = Lease::new(name.clone(), registration.signal.clone());
            let (saver, under) = (store.clone(), held.clone());
            let save: SaveCheckpoint = Arc::new(move |cursor| {
                let (saver, under) = (saver.clone(), under.clone());
                async move { under.save(&saver, cursor).await }.boxed()
            });
            description = name.clone();
            checkpoint = Some((name, save));
            parking = Some(Arc::new(store.clone()));
            follower_lease = Some(held.clone());
            lease = Some(held);
            position
        }
        #[cfg(not(feature = "runtime"))]
        Start::Group(group) => {
            group.check()?;
            return Err(Error::invalid(
                "start",
                "a consumer group member needs the runtime feature (a tokio timer)",
            ));
        }
        #[cfg(feature = "runtime")]
        Start::Group(group) => {
            group.check()?;
            let joined = crate::store::group::Member::new(group, registration.signal.clone());
            let (saver, parts) = (store.clone(), joined.partitions.clone());
            let save: SaveCheckpoint = Arc::new(move |cursor| {
                let (saver, parts) = (saver.clone(), parts.clone());
                async move { parts.save(&saver, cursor).await }.boxed()
            });
            description = joined.name().to_owned();
            checkpoint = Some((description.clone(), save));
            lease = Some(joined.liveness.clone());
            partitions = Some(joined.partitions.clone());
            parking = Some(Arc::new(store.clone()));
            member = Some(Box::new(joined));
            // Where it reads from is set when it takes its first partitions.
            Cursor::START
        }
    };
    let state = Arc::new(SharedState::default());
    state.delivered.store(position.version(), Ordering::Release);
    let delayer = store.clone();
    let retry_delay: RetryDelay = Arc::new(move |attempt| {
        let delayer = delayer.clone();
        async move { delayer.retry_delay(attempt).await }.boxed()
    });
    let batch = store.batch_size().max(1);
    let registration_signal = registration.signal.clone();
    let follower = Follower {
        batch,
        limit: batch,
        store,
        filter,
        position,
        handed: position.version(),
        buffer: VecDeque::new(),
        committed_before: committed_before.into(),
        at_head: false,
        announced: false,
        finished: false,
        failures: 0,
        registration,
        state: state.clone(),
        ahead: None,
        lease: follower_lease,
        held: None,
        reload: false,
        #[cfg(feature = "runtime")]
        group: member,
    };
    Ok(Subscription {
        messages: stream::unfold(follower, Follower::next).boxed(),
        state,
        checkpoint,
        retry_delay,
        progress: Progress::new(description.clone(), position, registration_signal),
        description,
        handler_retry: HandlerRetry::default(),
        lease,
        group: partitions,
        per_transaction: 1,
        parking,
        _payload: PhantomData,
    })
}

struct Follower<S> {
    store: S,
    filter: Filter,
    batch: usize,
    /// The size of the next page: the batch size at the head, growing while
    /// pages come back full (a catch-up), as a long load's do. Subscriptions
    /// at the head, the ones that share reads most, all read batch-sized
    /// pages; subscriptions that catch up together from one position grow
    /// alike, so they share their reads too.
    limit: usize,
    /// How far the subscription has read: the version of the last event
    /// taken from the store, or past it, the version a short read went
    /// over ([`SharedPage::scanned`]).
    position: Cursor,
    /// The position of the last row or [`Message::Progress`] handed out.
    handed: u64,
    /// Rows read and not yet handed out: events, and stored rows that do
    /// not decode (each handed out as one error item in its place).
    buffer: VecDeque<PageRow>,
    /// Versions above a `Start::Now` position that had committed before
    /// the subscription started: passed over, in order.
    committed_before: VecDeque<u64>,
    /// The last read returned less than a page: nothing more is visible.
    at_head: bool,
    announced: bool,
    finished: bool,
    failures: u32,
    registration: Registration,
    state: Arc<SharedState>,
    /// The next page, read while this one is handed out (a catch-up: the
    /// last page came back full).
    ahead: Option<Ahead>,
    /// A durable subscription's lease, and what holding it keeps alive.
    lease: Option<Arc<Lease>>,
    held: Option<Held>,
    /// The lease was just taken: read the checkpoint again.
    reload: bool,
    /// A consumer group member: what it owns, and its steps.
    #[cfg(feature = "runtime")]
    group: Option<Box<crate::store::group::Member>>,
}

/// A page read ahead: the wake-up generation and page size it was started
/// with, and the read, driven each time the subscription is polled.
struct Ahead {
    seen: u64,
    limit: usize,
    read: future::MaybeDone<BoxFuture<'static, Result<SharedPage>>>,
}

impl<S: SubscriptionSource> Follower<S> {
    /// Starts the read of the page after the current position, as
    /// `self.limit` events: shared with the subscriptions that read the
    /// same page at the same time.
    fn start_read(&self) -> Ahead {
        // Clear before reading: a commit during the read raises the
        // signal again and leads to one more read.
        self.registration.signal.clear();
        let seen = self.store.hub().generation();
        let (store, filter) = (self.store.clone(), self.filter.clone());
        let (position, limit) = (self.position, self.limit);
        let read = async move {
            store
                .hub()
                .read_shared(&filter, position, limit, seen, || {
                    let store = store.clone();
                    let filter = filter.clone();
                    async move {
                        let page = store.read_page(&filter, position, limit).await?;
                        Ok(page.into_shared(position))
                    }
                    .boxed()
                })
                .await
        }
        .boxed();
        Ahead {
            seen,
            limit,
            read: future::maybe_done(read),
        }
    }

    /// Lets the page read ahead make progress, without waiting for it.
    async fn drive_ahead(&mut self) {
        if let Some(ahead) = &mut self.ahead {
            let _ = futures::poll!(Pin::new(&mut ahead.read));
        }
    }

    /// For a durable subscription: takes its lease when it does not hold
    /// it (waiting as a standby while another consumer does), then starts
    /// from the checkpoint as it is now. `Some` is a message to hand out
    /// first: an error, or the position it starts from.
    async fn lease(&mut self) -> Option<Result<Message>> {
        let lease = self.lease.clone()?;
        if self.held.is_none() || lease.is_lost() {
            // Lost: what was read under the lease is another's to handle.
            if let Some(held) = self.held.take() {
                held.abandon(self.store.hub(), &lease);
            }
            self.buffer.clear();
            self.ahead = None;
            self.at_head = false;
            self.committed_before.clear();
            match lease::acquire(&self.store, &lease).await {
                Ok(held) => {
                    self.held = Some(held);
                    self.reload = true;
                }
                Err(error) => return Some(Err(self.failed(error).await)),
            }
        }
        if lease.take_reload() {
            // What was read after the checkpoint may be applied already.
            self.buffer.clear();
            self.ahead = None;
            self.at_head = false;
            self.reload = true;
        }
        if self.reload {
            match self.store.load_checkpoint(&lease.key.name).await {
                Ok(position) => {
                    self.reload = false;
                    self.failures = 0;
                    let position = position.unwrap_or(Cursor::START);
                    let moved = position != self.position;
                    self.position = position;
                    self.handed = position.version();
                    self.state
                        .delivered
                        .store(position.version(), Ordering::Release);
                    if moved {
                        // Another consumer moved it since this one looked.
                        return Some(Ok(Message::Progress(position)));
                    }
                }
                Err(error) => return Some(Err(self.failed(error).await)),
            }
        }
        None
    }

    /// For a consumer group member: drops lost partitions and, when due,
    /// rebalances (see [`crate::store::group`]); reads again from where a
    /// partition it took needs. `Some` is an error to hand out.
    #[cfg(feature = "runtime")]
    async fn group_step(&mut self) -> Option<Result<Message>> {
        let member = self.group.as_mut()?;
        match member.step(&self.store).await {
            Ok(crate::store::group::Step::Read) => None,
            Ok(crate::store::group::Step::Rewind(to)) => {
                self.position = to;
                self.handed = to.version();
                self.buffer.clear();
                self.ahead = None;
                self.at_head = false;
                None
            }
            Err(error) => Some(Err(self.failed(error).await)),
        }
    }

    /// Ends the subscription on an error no retry cures; waits the store's
    /// backoff before a transient one is handed out.
    async fn failed(&mut self, error: Error) -> Error {
        if error.is_transient() {
            self.failures += 1;
            self.store.retry_delay(self.failures).await;
        } else {
            self.finished = true;
        }
        error
    }

    async fn next(mut self) -> Option<(Result<Message>, Self)> {
        loop {
            if !self.finished
                && let Some(message) = self.lease().await
            {
                return Some((message, self));
            }
            #[cfg(feature = "runtime")]
            if !self.finished && self.group.is_some() {
                if let Some(message) = self.group_step().await {
                    return Some((message, self));
                }
                if let Some(member) = &mut self.group
                    && member.is_idle()
                {
                    // No partition to read for: wait for one.
                    member.idle_wait(&self.store).await;
                    continue;
                }
            }
            let row = self.buffer.pop_front();
            #[cfg(feature = "runtime")]
            if let (Some(row), Some(member)) = (&row, &self.group)
                && !member.admit(row)
            {
                // Another member's partition.
                self.drive_ahead().await;
                continue;
            }
            match row {
                Some(Ok(event)) => {
                    self.handed = event.version;
                    self.drive_ahead().await;
                    return Some((Ok(Message::Event(event)), self));
                }
                Some(Err(unreadable)) => {
                    self.handed = unreadable.version;
                    self.state
                        .delivered
                        .store(unreadable.version, Ordering::Release);
                    self.drive_ahead().await;
                    return Some((Err(unreadable.into_error()), self));
                }
                None => {}
            }
            if self.finished {
                return None;
            }
            if self.at_head {
                #[cfg(feature = "runtime")]
                let behind = match &mut self.group {
                    // Partitions whose last event is older than the head.
                    Some(member) => member.should_report(self.position),
                    None => false,
                };
                #[cfg(not(feature = "runtime"))]
                let behind = false;
                if self.position.version() > self.handed || behind {
                    // Read past events it does not take: say how far.
                    self.handed = self.position.version();
                    #[cfg(feature = "runtime")]
                    if let Some(member) = &self.group {
                        member.passed(self.position);
                    }
                    return Some((Ok(Message::Progress(self.position)), self));
                }
                if !self.announced {
                    self.announced = true;
                    self.state.caught_up.store(true, Ordering::Release);
                    return Some((Ok(Message::CaughtUp), self));
                }
                let woken = self.registration.signal.wait();
                #[cfg(feature = "runtime")]
                if let Some(member) = &self.group {
                    // Until the member's next step at the latest.
                    let _ = tokio::time::timeout_at(member.next_step(), woken).await;
                } else {
                    woken.await;
                }
                #[cfg(not(feature = "runtime"))]
                woken.await;
            }
            if let Err(error) = self.store.health() {
                self.finished = true;
                return Some((Err(error), self));
            }
            let Ahead {
                seen,
                limit: batch,
                mut read,
            } = match self.ahead.take() {
                Some(ahead) => ahead,
                None => self.start_read(),
            };
            (&mut read).await;
            let hub = self.store.hub();
            let read = Pin::new(&mut read)
                .take_output()
                .expect("a finished read holds its output");
            match read {
                Ok(page) => {
                    self.failures = 0;
                    self.at_head = page.rows.len() < batch;
                    self.limit = if self.at_head {
                        self.batch
                    } else {
                        crate::store::page::grown(self.batch, batch, page.rows.len(), page.bytes)
                    };
                    if let Some(last) = page.rows.last() {
                        self.position = Cursor::new(match last {
                            Ok(event) => event.version,
                            Err(unreadable) => unreadable.version,
                        });
                    }
                    match page.scanned {
                        // A short page holds everything the filter takes up
                        // to the version it read over.
                        Some(scanned) if self.at_head && scanned > self.position => {
                            self.position = scanned;
                        }
                        _ => {}
                    }
                    if self.at_head && page.held_back {
                        // Short because a writer below the head had not
                        // finished: its commit, on whatever stream, is what
                        // this subscription waits for.
                        hub.wake_on_any_commit(&self.registration);
                        if hub.generation() != seen {
                            // Something committed meanwhile: look again.
                            self.registration.signal.raise();
                        }
                    }
                    if self.committed_before.is_empty() {
                        self.buffer.extend(page.rows);
                    } else {
                        for row in page.rows {
                            let version = match &row {
                                Ok(event) => event.version,
                                Err(unreadable) => unreadable.version,
                            };
                            while self.committed_before.front().is_some_and(|v| *v < version) {
                                self.committed_before.pop_front();
                            }
                            if self.committed_before.front() == Some(&version) {
                                self.committed_before.pop_front();
                            } else {
                                self.buffer.push_back(row);
                            }
                        }
                    }
                    if !self.at_head {
                        // Catching up: read the next page while this one
                        // is handed out.
                        self.ahead = Some(self.start_read());
                    }
                }
                Err(error) if error.is_transient() => {
                    self.failures += 1;
                    self.at_head = false;
                    self.store.retry_delay(self.failures).await;
                    return Some((Err(error), self));
                }
                Err(error) => {
                    self.finished = true;
                    return Some((Err(error), self));
                }
            }
        }
    }
}
