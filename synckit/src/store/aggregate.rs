//! Aggregates: state folded from one stream's events, loaded by stream
//! version (from a snapshot when there is one), and commands decided
//! against it and appended with the exact expected version, retried on a
//! conflict.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::cursor::ExpectedVersion;
use crate::model::error::{Error, Result};
use crate::model::event::Event;
use crate::model::recorded::{NewEvent, Recorded};
use crate::model::validate::{MAX_ID_LEN, check_aggregate_id};
use crate::store::EventStore;

/// State built by applying one stream's events, oldest first.
///
/// `Default` is the state of a stream without events. See
/// [`EventStore::decide`] for the command loop and [`Snapshots`] for
/// snapshots.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use synckit::{Aggregate, Event};
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
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The events of its stream.
    type Event: Event;

    /// The aggregate type's name: the key of its snapshots.
    const NAME: &'static str;

    /// Applies one event to the state.
    fn apply(&mut self, event: &Self::Event);

    /// Whether and how often loads keep a snapshot of this type; `None`
    /// (the default) reads the whole stream on every load.
    fn snapshots() -> Option<Snapshots<Self>> {
        None
    }
}

/// The snapshot setting of an [`Aggregate`] type: a snapshot every `N`
/// events, stored with its schema version.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use synckit::{Aggregate, Event, Snapshots};
/// # #[derive(Serialize, Deserialize, Event)]
/// # #[event(aggregate_id = "account")]
/// # enum AccountEvent { Deposited { account: String, amount: u64 } }
/// #[derive(Default, Serialize, Deserialize)]
/// struct Account { balance: u64 }
///
/// impl Aggregate for Account {
///     type Event = AccountEvent;
///     const NAME: &'static str = "account";
///     fn apply(&mut self, AccountEvent::Deposited { amount, .. }: &AccountEvent) {
///         self.balance += amount;
///     }
///     fn snapshots() -> Option<Snapshots<Self>> {
///         // Bump the schema version whenever the state's shape changes:
///         // snapshots of another version are ignored and replaced.
///         Some(Snapshots::every(100).schema_version(2))
///     }
/// }
/// ```
pub struct Snapshots<A> {
    every: u64,
    schema_version: u32,
    encode: fn(&A) -> std::result::Result<Value, serde_json::Error>,
    decode: fn(Value) -> std::result::Result<A, serde_json::Error>,
}

impl<A: Serialize + DeserializeOwned> Snapshots<A> {
    /// A snapshot after each append that crosses a multiple of `events`
    /// stream versions (0 counts as 1), schema version 1.
    pub fn every(events: u64) -> Self {
        Snapshots {
            every: events.max(1),
            schema_version: 1,
            encode: |state| serde_json::to_value(state),
            decode: serde_json::from_value,
        }
    }

    /// The state's schema version: a stored snapshot of another version is
    /// ignored (and replaced by the next one taken).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }
}

impl<A> std::fmt::Debug for Snapshots<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("every", &self.every)
            .field("schema_version", &self.schema_version)
            .finish()
    }
}

/// A snapshot as stores keep it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredSnapshot {
    /// [`Aggregate::NAME`].
    pub aggregate_type: String,
    /// The aggregate (stream).
    pub aggregate_id: String,
    /// The stream version the state includes.
    pub stream_version: u64,
    /// The state's schema version ([`Snapshots::schema_version`]).
    pub schema_version: u32,
    /// The state, as JSON.
    pub state: Value,
}

impl StoredSnapshot {
    /// A snapshot of `aggregate_id` at `stream_version`.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        stream_version: u64,
        schema_version: u32,
        state: Value,
    ) -> Self {
        StoredSnapshot {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            stream_version,
            schema_version,
            state,
        }
    }
}

/// An aggregate's state and the stream version it includes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded<A> {
    /// The state after every event of the stream.
    pub state: A,
    /// The stream version of the last event applied; `None` for a stream
    /// without events.
    pub version: Option<u64>,
    /// The stream version of the snapshot the load started from, if any.
    pub snapshot: Option<u64>,
}

impl<A> Loaded<A> {
    /// The expected version that appends exactly after this state.
    pub fn expected(&self) -> ExpectedVersion {
        match self.version {
            Some(v) => ExpectedVersion::Exact(v),
            None => ExpectedVersion::NoStream,
        }
    }
}

/// The settings of one [`EventStore::decide`] call.
///
/// ```
/// use std::time::Duration;
/// use synckit::Decide;
///
/// let settings = Decide::new()
///     .attempts(10)
///     .backoff(Duration::from_millis(2), Duration::from_millis(200))
///     .command_id("transfer-7f3a");
/// # let _ = settings;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Decide {
    attempts: u32,
    first_delay: Duration,
    max_delay: Duration,
    command_id: Option<String>,
}

impl Default for Decide {
    fn default() -> Self {
        Decide {
            attempts: 5,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
            command_id: None,
        }
    }
}

impl Decide {
    /// 5 attempts, backoff from 1 ms doubling up to 100 ms, no command id.
    pub fn new() -> Self {
        Decide::default()
    }

    /// How many times to load, decide and append before a conflict is
    /// returned (0 counts as 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The wait after the first conflict, doubled after each next one up
    /// to `max`; each wait is jittered to between half and all of it, so
    /// that contending callers spread out.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_delay = first;
        self.max_delay = max.max(first);
        self
    }

    /// Makes the events' ids `"{command_id}:{index}"`, so that a command
    /// retried by its caller (after a timeout, a redelivered message)
    /// appends nothing twice: a command whose first event is stored already
    /// returns its stored events without deciding again.
    pub fn command_id(mut self, id: impl Into<String>) -> Self {
        self.command_id = Some(id.into());
        self
    }

    fn delay(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
        let capped = doubled.min(self.max_delay);
        capped.mul_f64(0.5 + jitter())
    }
}

/// A number in `[0, 0.5)`.
fn jitter() -> f64 {
    #[cfg(feature = "runtime")]
    {
        fastrand::f64() / 2.0
    }
    #[cfg(not(feature = "runtime"))]
    {
        // No random source on every target without the runtime: the
        // sub-second clock is spread enough for a jitter.
        f64::from(chrono::Utc::now().timestamp_subsec_nanos() % 1000) / 2000.0
    }
}

/// What [`EventStore::decide`] appended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Decided<A: Aggregate> {
    /// The state after the appended events.
    pub state: A,
    /// The stream version after them (`None` when nothing was ever
    /// appended to the stream).
    pub version: Option<u64>,
    /// The events the command appended (or, for a command id seen before,
    /// the events it appended then); empty when the decision was none.
    pub events: Vec<Recorded<A::Event>>,
    /// How many times the command was decided (1 without a conflict).
    pub attempts: u32,
    /// Whether the command's events were found stored before deciding:
    /// nothing was decided or appended now. (A caller racing another with
    /// the same command id may see `false` although its append, identical
    /// to the other's, wrote nothing: an idempotent retry.)
    pub replayed: bool,
}

/// Why [`EventStore::decide`] appended nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError<R> {
    /// The decision refused the command: the caller's own error, unchanged.
    #[error("the command was refused: {0}")]
    Rejected(R),
    /// The store failed, or every attempt met a conflict
    /// ([`Error::Conflict`]: the last one).
    #[error(transparent)]
    Store(#[from] Error),
}

/// The state of `aggregate_id`: the snapshot (when the type keeps them and
/// one of its schema version is there), then every event after it, read
/// by stream version one page at a time.
pub(crate) async fn load<S: EventStore, A: Aggregate>(
    store: &S,
    aggregate_id: &str,
) -> Result<Loaded<A>> {
    check_aggregate_id(aggregate_id)?;
    if let Some(policy) = A::snapshots()
        && let Some(snapshot) = store.load_snapshot(A::NAME, aggregate_id).await?
        && snapshot.schema_version == policy.schema_version
        && let Ok(state) = (policy.decode)(snapshot.state)
    {
        let from = Loaded {
            state,
            version: Some(snapshot.stream_version),
            snapshot: Some(snapshot.stream_version),
        };
        if let Some(loaded) = tail(store, aggregate_id, from).await? {
            return Ok(loaded);
        }
    }
    let empty = Loaded {
        state: A::default(),
        version: None,
        snapshot: None,
    };
    tail(store, aggregate_id, empty).await?.ok_or_else(|| {
        Error::invalid(
            "aggregate id",
            format!(
                "the stored stream versions of {aggregate_id:?} are not 1, 2, 3, ...: rows synckit did not write"
            ),
        )
    })
}

/// Applies the events after `loaded.version`; `None` when they do not
/// follow on from it (a snapshot of a stream that is not there any more:
/// it is ignored).
async fn tail<S: EventStore, A: Aggregate>(
    store: &S,
    aggregate_id: &str,
    mut loaded: Loaded<A>,
) -> Result<Option<Loaded<A>>> {
    // Pages start at the batch size and double while full (up to 16
    // batches): a short tail costs one small read, a long stream few
    // round trips.
    let batch = store.batch_size().max(1);
    let mut limit = batch;
    loop {
        let after = loaded.version.unwrap_or(0);
        let page = store.read_aggregate(aggregate_id, after, limit).await?;
        let full = page.len() == limit;
        limit = limit.saturating_mul(2).min(batch.saturating_mul(16));
        if page.is_empty() && loaded.snapshot == Some(after) && after > 0 {
            // The snapshot's own event must exist.
            if store.stream_version(aggregate_id).await? != Some(after) {
                return Ok(None);
            }
        }
        for (offset, raw) in (1u64..).zip(page) {
            if raw.stream_version != after + offset {
                return Ok(None);
            }
            let event = raw.decode::<A::Event>()?;
            loaded.state.apply(&event.data);
            loaded.version = Some(event.stream_version);
        }
        if !full {
            return Ok(Some(loaded));
        }
    }
}

/// The events a command with this id appended before, if its first one is
/// stored: read from that event's place in its stream while the ids follow
/// on.
async fn replayed<S: EventStore, A: Aggregate>(
    store: &S,
    aggregate_id: &str,
    command_id: &str,
) -> Result<Option<Vec<Recorded<A::Event>>>> {
    let first = match store.get(&event_id(command_id, 0)).await {
        Ok(first) => first,
        Err(Error::EventNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if first.aggregate_id != aggregate_id {
        return Err(Error::invalid(
            "command id",
            format!(
                "command {command_id:?} appended to stream {:?} before, not to {aggregate_id:?}",
                first.aggregate_id
            ),
        ));
    }
    let page = store
        .read_aggregate(
            aggregate_id,
            first.stream_version - 1,
            store.batch_size().max(1),
        )
        .await?;
    let mut events = Vec::new();
    for (index, raw) in (0..).zip(page) {
        if raw.id != event_id(command_id, index) {
            break;
        }
        events.push(raw.decode::<A::Event>()?);
    }
    Ok(Some(events))
}

fn event_id(command_id: &str, index: usize) -> String {
    format!("{command_id}:{index}")
}

/// Load, decide, append with the exact expected version; on a conflict,
/// wait (jittered backoff) and do it all again, up to the attempts.
pub(crate) async fn decide<S, A, R, F>(
    store: &S,
    aggregate_id: &str,
    settings: Decide,
    mut decision: F,
) -> std::result::Result<Decided<A>, DecideError<R>>
where
    S: EventStore,
    A: Aggregate,
    F: FnMut(&A) -> std::result::Result<Vec<A::Event>, R>,
{
    if let Some(command) = &settings.command_id
        && (command.is_empty() || command.len() + 12 > MAX_ID_LEN)
    {
        return Err(Error::invalid(
            "command id",
            format!("must be 1 to {} bytes", MAX_ID_LEN - 12),
        )
        .into());
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(command) = &settings.command_id
            && let Some(events) = replayed::<S, A>(store, aggregate_id, command).await?
        {
            let loaded = load::<S, A>(store, aggregate_id).await?;
            return Ok(Decided {
                state: loaded.state,
                version: loaded.version,
                events,
                attempts: attempt,
                replayed: true,
            });
        }
        let loaded = load::<S, A>(store, aggregate_id).await?;
        let decided = decision(&loaded.state).map_err(DecideError::Rejected)?;
        if decided.is_empty() {
            return Ok(Decided {
                state: loaded.state,
                version: loaded.version,
                events: Vec::new(),
                attempts: attempt,
                replayed: false,
            });
        }
        let mut new_events = Vec::with_capacity(decided.len());
        for (index, event) in decided.iter().enumerate() {
            if event.aggregate_id() != aggregate_id {
                return Err(Error::invalid(
                    "decision",
                    format!(
                        "an event for stream {:?} in a decision on {aggregate_id:?}",
                        event.aggregate_id()
                    ),
                )
                .into());
            }
            let mut new = NewEvent::from_event(event)?;
            if let Some(command) = &settings.command_id {
                new = new.with_id(event_id(command, index));
            }
            new_events.push(new);
        }
        match store.append(loaded.expected(), new_events).await {
            Ok(recorded) => {
                let mut state = loaded.state;
                let mut events = Vec::with_capacity(recorded.len());
                for (raw, event) in recorded.into_iter().zip(decided) {
                    state.apply(&event);
                    events.push(raw.map(|_| event));
                }
                let version = events.last().map(|e| e.stream_version).or(loaded.version);
                if let (Some(policy), Some(now)) = (A::snapshots(), version) {
                    let before = loaded.version.unwrap_or(0);
                    if now / policy.every > before / policy.every {
                        snapshot(store, aggregate_id, &policy, &state, now);
                    }
                }
                return Ok(Decided {
                    state,
                    version,
                    events,
                    attempts: attempt,
                    replayed: false,
                });
            }
            Err(conflict @ Error::Conflict { .. }) => {
                if attempt >= settings.attempts {
                    return Err(conflict.into());
                }
                sleep(settings.delay(attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stores a snapshot of `state` off the caller's path (a task of its own
/// where there is a runtime): a failure costs only a longer next load.
fn snapshot<S: EventStore, A: Aggregate>(
    store: &S,
    aggregate_id: &str,
    policy: &Snapshots<A>,
    state: &A,
    stream_version: u64,
) {
    let Ok(json) = (policy.encode)(state) else {
        return;
    };
    let snapshot = StoredSnapshot::new(
        A::NAME,
        aggregate_id,
        stream_version,
        policy.schema_version,
        json,
    );
    let store = store.clone();
    spawn_detached(async move { store.save_snapshot(snapshot).await });
}

#[cfg(feature = "runtime")]
fn spawn_detached(saving: impl Future<Output = Result<()>> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(e) = saving.await {
                    tracing::warn!(error = %e, "snapshot not stored");
                }
            });
        }
        // No runtime: only a store that saves at once (memory) can.
        Err(_) => drop(futures::FutureExt::now_or_never(saving)),
    }
}

#[cfg(not(feature = "runtime"))]
fn spawn_detached(saving: impl Future<Output = Result<()>> + Send + 'static) {
    // No runtime to hand it to: the memory store's save completes at once.
    let _ = futures::FutureExt::now_or_never(saving);
}

async fn sleep(delay: Duration) {
    #[cfg(feature = "runtime")]
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::sleep(delay).await;
            return;
        }
    }
    let _ = delay;
    YieldNow(false).await;
}

/// Without a timer, gives the contending tasks a turn: pending once, with
/// the task woken at once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
