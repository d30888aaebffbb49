//! In-memory demultiplexing of "new events" wake-ups to subscriptions.
//!
//! A backend calls [`Hub::notify`] once per committed event (or
//! [`Hub::notify_all`] when it cannot tell what changed: a poll tick, a
//! reconnect). Only the subscriptions whose filter can match are woken, so
//! ten thousand stream subscriptions cost one map lookup per event, not ten
//! thousand wake-ups. A wake-up carries no event: the woken subscription
//! reads the store from its own position, so a coalesced or lost wake-up
//! costs latency, never an event.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::Shared;
use futures::task::AtomicWaker;

use crate::cursor::Cursor;
use crate::error::Result;
use crate::filter::Filter;
use crate::recorded::Recorded;

/// A coalescing wake-up flag: any number of `raise` calls before the next
/// `wait` count as one.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Forgets earlier wake-ups; call before reading the store so that a
    /// wake-up during the read leads to another read.
    pub(crate) fn clear(&self) {
        self.raised.store(false, Ordering::Release);
    }

    /// Resolves once `raise` has been called since the last `clear`.
    pub(crate) fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

pub(crate) struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.signal.waker.register(cx.waker());
        if self.signal.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A read in flight that other subscriptions may share.
struct SharedRead {
    /// The wake-up generation when it started: it sees every commit
    /// notified up to then.
    started: u64,
    ticket: u64,
    page: Shared<oneshot::Receiver<Option<Arc<Vec<Recorded>>>>>,
}

/// What a shared read is keyed by: the same filter from the same position
/// for the same page size reads the same events.
type ReadKey = (Filter, u64, usize);

#[derive(Default)]
struct Registry {
    next_id: u64,
    closed: bool,
    /// Raised by every wake-up.
    generation: u64,
    next_ticket: u64,
    reads: HashMap<ReadKey, SharedRead>,
    signals: HashMap<u64, (Filter, Arc<Signal>)>,
    /// Subscriptions that watch every stream, woken by any event whose type
    /// they accept.
    unscoped: HashSet<u64>,
    /// Subscriptions scoped to streams, by aggregate id.
    by_stream: HashMap<String, HashSet<u64>>,
}

/// The wake-up registry of one store; cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscriptions", &self.len())
            .finish()
    }
}

impl Hub {
    /// A hub with no subscriptions.
    pub fn new() -> Self {
        Hub::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the maps half
        // updated in a way that matters: keep going with what is there.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscription's filter; dropping the returned handle
    /// unregisters it (and only it).
    pub(crate) fn register(&self, filter: &Filter) -> Registration {
        let signal = Arc::new(Signal::default());
        let mut reg = self.lock();
        let id = reg.next_id;
        reg.next_id += 1;
        if reg.closed {
            signal.raise();
        }
        match filter.aggregate_ids() {
            Some(streams) => {
                for s in streams {
                    reg.by_stream.entry(s.clone()).or_default().insert(id);
                }
            }
            None => {
                reg.unscoped.insert(id);
            }
        }
        reg.signals.insert(id, (filter.clone(), signal.clone()));
        Registration {
            hub: Arc::downgrade(&self.inner),
            id,
            signal,
        }
    }

    /// Wakes the subscriptions that may want an event of this aggregate and
    /// type.
    pub fn notify(&self, aggregate_id: &str, event_type: &str) {
        let mut reg = self.lock();
        reg.generation += 1;
        let scoped = reg.by_stream.get(aggregate_id).into_iter().flatten();
        for id in reg.unscoped.iter().chain(scoped) {
            if let Some((filter, signal)) = reg.signals.get(id)
                && filter.matches_parts(aggregate_id, event_type)
            {
                signal.raise();
            }
        }
    }

    /// Wakes every subscription (poll tick, reconnect, close).
    pub fn notify_all(&self) {
        let mut reg = self.lock();
        reg.generation += 1;
        for (_, signal) in reg.signals.values() {
            signal.raise();
        }
    }

    /// The wake-up generation, raised by every [`Hub::notify`] and
    /// [`Hub::notify_all`].
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Reads a page with `read`, or shares a read of the same filter,
    /// position and size that another subscription has in flight and that
    /// started at generation `seen` or later (the generation the caller saw
    /// after clearing its signal), so that it covers every commit that woke
    /// the caller. Ten subscriptions woken by one event then cost one read.
    /// When the shared read fails or is dropped, the caller reads itself.
    pub(crate) async fn read_shared<Fut>(
        &self,
        filter: &Filter,
        position: Cursor,
        limit: usize,
        seen: u64,
        read: impl FnOnce() -> Fut,
    ) -> Result<Vec<Recorded>>
    where
        Fut: Future<Output = Result<Vec<Recorded>>>,
    {
        let key: ReadKey = (filter.clone(), position.version(), limit);
        let joined = {
            let reg = self.lock();
            reg.reads
                .get(&key)
                .filter(|r| r.started >= seen)
                .map(|r| r.page.clone())
        };
        if let Some(page) = joined {
            if let Ok(Some(page)) = page.await {
                return Ok((*page).clone());
            }
            return read().await;
        }
        let (tx, rx) = oneshot::channel();
        let ticket = {
            let mut reg = self.lock();
            let ticket = reg.next_ticket;
            reg.next_ticket += 1;
            let started = reg.generation;
            reg.reads.insert(
                key.clone(),
                SharedRead {
                    started,
                    ticket,
                    page: rx.shared(),
                },
            );
            ticket
        };
        // Unlists the read however this future ends (dropped included).
        let _unlist = Unlist {
            hub: self,
            key,
            ticket,
        };
        match read().await {
            Ok(page) => {
                let page = Arc::new(page);
                let _ = tx.send(Some(page.clone()));
                Ok(Arc::try_unwrap(page).unwrap_or_else(|shared| (*shared).clone()))
            }
            Err(e) => {
                let _ = tx.send(None);
                Err(e)
            }
        }
    }

    /// Marks the hub closed and wakes everyone so that subscriptions notice.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify_all();
    }

    /// Number of registered subscriptions.
    pub fn len(&self) -> usize {
        self.lock().signals.len()
    }

    /// Whether no subscription is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filters of the registered subscriptions.
    pub fn filters(&self) -> Vec<Filter> {
        self.lock()
            .signals
            .values()
            .map(|(f, _)| f.clone())
            .collect()
    }
}

/// A registered subscription's wake-up; unregisters on drop.
pub(crate) struct Registration {
    hub: Weak<Mutex<Registry>>,
    id: u64,
    pub(crate) signal: Arc<Signal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut reg = hub.lock().unwrap_or_else(|p| p.into_inner());
        let Some((filter, _)) = reg.signals.remove(&self.id) else {
            return;
        };
        match filter.aggregate_ids() {
            Some(streams) => {
                for s in streams {
                    if let Some(ids) = reg.by_stream.get_mut(s) {
                        ids.remove(&self.id);
                        if ids.is_empty() {
                            reg.by_stream.remove(s);
                        }
                    }
                }
            }
            None => {
                reg.unscoped.remove(&self.id);
            }
        }
    }
}

/// Removes a finished (or abandoned) shared read from the board.
struct Unlist<'a> {
    hub: &'a Hub,
    key: ReadKey,
    ticket: u64,
}

impl Drop for Unlist<'_> {
    fn drop(&mut self) {
        let mut reg = self.hub.lock();
        if reg
            .reads
            .get(&self.key)
            .is_some_and(|r| r.ticket == self.ticket)
        {
            reg.reads.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(r: &Registration) -> bool {
        r.signal.raised.load(Ordering::Acquire)
    }

    fn page(version: u64) -> Vec<Recorded> {
        let event = crate::NewEvent::new("a", "T", serde_json::json!({"n": version}));
        vec![event.into_recorded(version, 1, chrono::Utc::now())]
    }

    #[test]
    fn readers_woken_together_share_one_read() {
        use std::sync::atomic::AtomicUsize;
        let hub = Hub::new();
        let filter = Filter::all();
        hub.notify("a", "T");
        let seen = hub.generation();
        let reads = AtomicUsize::new(0);
        let (open, gate) = oneshot::channel::<()>();
        let gate = gate.shared();
        let reader = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            let _ = gate.clone().await;
            Ok(page(7))
        };
        let first = hub.read_shared(&filter, Cursor::START, 10, seen, reader);
        let second = hub.read_shared(&filter, Cursor::START, 10, seen, reader);
        // Another position or page size is another read.
        let elsewhere = hub.read_shared(&filter, Cursor::new(3), 10, seen, reader);
        let all = futures::future::join4(first, second, elsewhere, async {
            open.send(()).expect("gate");
        });
        let (a, b, c, ()) = futures::executor::block_on(all);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(a.unwrap()[0].version, 7);
        assert_eq!(b.unwrap()[0].version, 7);
        assert_eq!(c.unwrap()[0].version, 7);
        assert!(hub.lock().reads.is_empty(), "finished reads are unlisted");
    }

    #[test]
    fn a_read_started_before_the_wake_up_is_not_shared() {
        use std::sync::atomic::AtomicUsize;
        let hub = Hub::new();
        let filter = Filter::all();
        let reads = AtomicUsize::new(0);
        let (open, gate) = oneshot::channel::<()>();
        let gate = gate.shared();
        let reader = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            let _ = gate.clone().await;
            Ok(page(1))
        };
        let older = hub.read_shared(&filter, Cursor::START, 10, hub.generation(), reader);
        let mut older = Box::pin(older);
        // Start the older read, then a commit wakes a second reader.
        assert!(futures::FutureExt::now_or_never(&mut older).is_none());
        hub.notify("a", "T");
        let newer = hub.read_shared(&filter, Cursor::START, 10, hub.generation(), reader);
        let both = futures::future::join3(older, newer, async {
            open.send(()).expect("gate");
        });
        let (a, b, ()) = futures::executor::block_on(both);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "the later reader read itself"
        );
    }

    #[test]
    fn a_dropped_or_failed_shared_read_leaves_the_others_to_read_themselves() {
        use std::sync::atomic::AtomicUsize;
        let hub = Hub::new();
        let filter = Filter::all();
        let seen = hub.generation();
        let reads = AtomicUsize::new(0);
        let (open, gate) = oneshot::channel::<()>();
        let gate = gate.shared();
        let failed = AtomicBool::new(false);
        let failing = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            let _ = gate.clone().await;
            failed.store(true, Ordering::SeqCst);
            Err(crate::Error::database("read", "connection lost"))
        };
        let pending = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            futures::future::pending::<()>().await;
            Ok(page(1))
        };
        let working = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            // Called only once the shared read has failed: the caller
            // waited for it rather than reading at once.
            assert!(failed.load(Ordering::SeqCst));
            Ok(page(2))
        };
        // A creator dropped mid-read.
        let mut abandoned = Box::pin(hub.read_shared(&filter, Cursor::START, 10, seen, pending));
        assert!(futures::FutureExt::now_or_never(&mut abandoned).is_none());
        drop(abandoned);
        assert!(hub.lock().reads.is_empty(), "an abandoned read is unlisted");
        // A creator that fails: its joiner reads for itself.
        let first = hub.read_shared(&filter, Cursor::START, 10, seen, failing);
        let second = hub.read_shared(&filter, Cursor::START, 10, seen, working);
        let (a, b, ()) =
            futures::executor::block_on(futures::future::join3(first, second, async {
                open.send(()).expect("gate");
            }));
        assert!(a.is_err());
        assert_eq!(b.unwrap()[0].version, 2);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn wakes_only_matching_subscriptions() {
        let hub = Hub::new();
        let all = hub.register(&Filter::all());
        let a = hub.register(&Filter::stream("a"));
        let b = hub.register(&Filter::stream("b"));
        let typed = hub.register(&Filter::types(["created"]));
        hub.notify("a", "renamed");
        assert!(raised(&all) && raised(&a));
        assert!(!raised(&b) && !raised(&typed));
        hub.notify("b", "created");
        assert!(raised(&b) && raised(&typed));
    }

    #[test]
    fn dropping_a_registration_removes_it_alone() {
        let hub = Hub::new();
        let first = hub.register(&Filter::stream("a"));
        let second = hub.register(&Filter::stream("a"));
        drop(first);
        assert_eq!(hub.len(), 1);
        hub.notify("a", "t");
        assert!(raised(&second));
        drop(second);
        assert!(hub.is_empty());
        assert!(hub.lock().by_stream.is_empty());
    }
}
