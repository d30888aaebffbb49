//! How far a running subscription has handled the store: what a command
//! handler waits on to read its own writes from a projection.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use event_listener::{Event, listener};

use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::store::signal::Signal;

/// How far [`Subscription::run`](crate::Subscription::run) (or a
/// [`SubscriptionHandle`](crate::SubscriptionHandle)) has got: cheap to
/// clone, and usable from any task while the subscription runs.
///
/// The position counts an event once its handler succeeded and, for a
/// durable subscription, its checkpoint is saved; events the filter passes
/// over, and poison events, count as soon as the subscription reads past
/// them. So after appending at version `v`, [`Progress::wait_for`]`(v)`
/// returns once the projection has seen everything up to `v`, whether or
/// not `v` was an event it takes.
///
/// ```
/// # use synckit::{EventStore, ExpectedVersion, Filter, MemoryStore, NewEvent, Start, SubscriptionSource};
/// # futures::executor::block_on(async {
/// let store = MemoryStore::new();
/// let subscription = store.subscribe(Filter::types(["Deposited"]), Start::Beginning).await?;
/// let progress = subscription.progress();
/// let run = subscription.run(|_| async { Ok::<_, std::convert::Infallible>(()) });
/// let written = store
///     .append(ExpectedVersion::Any, vec![NewEvent::new("acc-1", "Opened", serde_json::json!({}))])
///     .await?;
/// let waited = async {
///     // Version 1 is not a `Deposited`: passed over, it still counts.
///     let reached = progress.wait_for(written[0].version).await?;
///     assert!(reached.version() >= 1);
///     store.close().await
/// };
/// let (ran, waited) = futures::join!(run, waited);
/// ran?;
/// waited?;
/// # Ok::<(), synckit::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Shared>,
}

struct Shared {
    subscription: String,
    /// The position after everything handled.
    handled: AtomicU64,
    caught_up: AtomicBool,
    ended: AtomicBool,
    /// Raised on every change above.
    changed: Event,
    /// Wakes the subscription to read again: the filter keeps it asleep
    /// through commits it does not take, which a waiter waits for too.
    nudge: Arc<Signal>,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("subscription", &self.inner.subscription)
            .field("handled", &self.handled())
            .field("caught_up", &self.is_caught_up())
            .field("ended", &self.has_ended())
            .finish()
    }
}

impl Progress {
    pub(crate) fn new(subscription: String, start: Cursor, nudge: Arc<Signal>) -> Self {
        Progress {
            inner: Arc::new(Shared {
                subscription,
                handled: AtomicU64::new(start.version()),
                caught_up: AtomicBool::new(false),
                ended: AtomicBool::new(false),
                changed: Event::new(),
                nudge,
            }),
        }
    }

    /// The position after the last event handled (or passed over).
    pub fn handled(&self) -> Cursor {
        Cursor::new(self.inner.handled.load(Ordering::Acquire))
    }

    /// Whether the subscription has handled everything up to the head the
    /// store had when its catch-up ended.
    pub fn is_caught_up(&self) -> bool {
        self.inner.caught_up.load(Ordering::Acquire)
    }

    /// Whether the subscription has stopped (its run returned, failed or
    /// was dropped).
    pub fn has_ended(&self) -> bool {
        self.inner.ended.load(Ordering::Acquire)
    }

    /// Waits until every event up to `version` is handled or passed over;
    /// returns the position reached. Fails with
    /// [`Error::SubscriptionEnded`] when the subscription stops first.
    pub async fn wait_for(&self, version: u64) -> Result<Cursor> {
        self.until(Some(version), || self.handled().version() >= version)
            .await
    }

    /// Waits until the subscription has caught up with the store (see
    /// [`Message::CaughtUp`](crate::Message)) and handled everything
    /// before; returns the position reached. Fails with
    /// [`Error::SubscriptionEnded`] when the subscription stops first.
    pub async fn caught_up(&self) -> Result<Cursor> {
        self.until(None, || self.is_caught_up()).await
    }

    async fn until(&self, wanted: Option<u64>, reached: impl Fn() -> bool) -> Result<Cursor> {
        loop {
            if reached() {
                return Ok(self.handled());
            }
            if self.has_ended() {
                return Err(Error::SubscriptionEnded {
                    subscription: self.inner.subscription.clone(),
                    position: self.handled().version(),
                    wanted,
                });
            }
            // Listen, then look again: a change between the first look and
            // the listening is not missed.
            listener!(self.inner.changed => changed);
            if reached() || self.has_ended() {
                continue;
            }
            if wanted.is_some() {
                // Versions the filter does not take wake no one: read again
                // to pass over them.
                self.inner.nudge.raise();
            }
            changed.await;
        }
    }

    pub(crate) fn set_handled(&self, position: u64) {
        self.inner.handled.fetch_max(position, Ordering::AcqRel);
        self.inner.changed.notify(usize::MAX);
    }

    pub(crate) fn set_caught_up(&self) {
        self.inner.caught_up.store(true, Ordering::Release);
        self.inner.changed.notify(usize::MAX);
    }

    /// A guard that marks the subscription ended when dropped: on return,
    /// on error, on panic and when the run is dropped.
    pub(crate) fn ends_on_drop(&self) -> EndsOnDrop {
        EndsOnDrop(self.clone())
    }
}

pub(crate) struct EndsOnDrop(Progress);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        self.0.inner.ended.store(true, Ordering::Release);
        self.0.inner.changed.notify(usize::MAX);
    }
}
