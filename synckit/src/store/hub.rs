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
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};

use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::model::filter::Filter;
use crate::store::lease::LeaseKey;
use crate::store::page::SharedPage;
use crate::store::signal::Signal;

/// A read in flight that other subscriptions may share.
struct SharedRead {
    /// Tells this read from a later one of the same key.
    serial: u64,
    /// The wake-up generation when it started: it sees every commit
    /// notified up to then.
    started: u64,
    /// The read itself: whichever participant polls it drives it, so no one
    /// waits on another subscription's task. `None` when it failed. Held
    /// weakly: the participants own it, and when the last of them is
    /// dropped mid-read, the read is dropped with everything it holds (a
    /// connection, a lock, the store itself), instead of lingering here.
    page: WeakSharedRead,
}

type SharedReadFuture = Shared<BoxFuture<'static, Option<Arc<SharedPage>>>>;
type WeakSharedRead = WeakShared<BoxFuture<'static, Option<Arc<SharedPage>>>>;

/// Shared reads older than this many wake-ups are no longer offered (they
/// may still finish for those already on them).
const SHARED_READ_GENERATIONS: u64 = 1024;

/// How many listed reads trigger a clean-up of finished and abandoned ones.
const PRUNE_AT: usize = 4096;

/// What a shared read is keyed by: the same filter from the same position
/// for the same page size reads the same events.
type ReadKey = (Filter, u64, usize);

#[derive(Default)]
struct Registry {
    next_id: u64,
    closed: bool,
    /// Raised by every wake-up.
    generation: u64,
    reads: HashMap<ReadKey, SharedRead>,
    signals: HashMap<u64, (Filter, Arc<Signal>)>,
    /// Subscriptions that watch every stream, woken by any event whose type
    /// they accept.
    unscoped: HashSet<u64>,
    /// Subscriptions scoped to streams, by aggregate id.
    by_stream: HashMap<String, HashSet<u64>>,
    /// Subscriptions whose last read the fence held back: the next commit
    /// of any stream and type wakes them (once).
    held_back: HashSet<u64>,
    /// The leases this store's subscriptions hold, with their tokens: given
    /// back when the store closes.
    leases: HashMap<LeaseKey, u64>,
}

/// The wake-up registry of one store; cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Registry>>,
    /// Raised when a subscription of this store gives its lease back (or
    /// the store closes): its standbys try at once.
    released: Arc<event_listener::Event>,
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
    pub(crate) fn new() -> Self {
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
    pub(crate) fn notify(&self, aggregate_id: &str, event_type: &str) {
        let mut reg = self.lock();
        reg.generation += 1;
        if !reg.held_back.is_empty() {
            // The commit may be the one the fence waited for.
            let held = std::mem::take(&mut reg.held_back);
            for id in held {
                if let Some((_, signal)) = reg.signals.get(&id) {
                    signal.raise();
                }
            }
        }
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
    pub(crate) fn notify_all(&self) {
        let mut reg = self.lock();
        reg.generation += 1;
        reg.held_back.clear();
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
    /// Every participant drives the shared read when it polls, so a
    /// subscription whose consumer stops polling holds up no one; the
    /// registry holds the read weakly, so the last participant to be
    /// dropped drops the read too. When the shared read fails, each
    /// participant reads for itself (and gets its own error).
    pub(crate) async fn read_shared(
        &self,
        filter: &Filter,
        position: Cursor,
        limit: usize,
        seen: u64,
        read: impl Fn() -> BoxFuture<'static, Result<SharedPage>>,
    ) -> Result<SharedPage> {
        let key: ReadKey = (filter.clone(), position.version(), limit);
        let (serial, page) = {
            let mut reg = self.lock();
            let generation = reg.generation;
            let joined = reg
                .reads
                .get(&key)
                .filter(|r| r.started >= seen)
                .and_then(|r| Some((r.serial, r.page.upgrade()?)));
            match joined {
                Some(joined) => joined,
                None => {
                    // Reads whose participants all finished or gave up stay
                    // listed until the same key is read again; drop them,
                    // and the old ones, now and then.
                    if reg.reads.len() >= PRUNE_AT {
                        reg.reads.retain(|_, r| {
                            r.page.upgrade().is_some()
                                && r.started + SHARED_READ_GENERATIONS >= generation
                        });
                    }
                    let page: SharedReadFuture = read()
                        .map(|outcome| outcome.ok().map(Arc::new))
                        .boxed()
                        .shared();
                    reg.next_id += 1;
                    let serial = reg.next_id;
                    if let Some(weak) = page.downgrade() {
                        reg.reads.insert(
                            key.clone(),
                            SharedRead {
                                serial,
                                started: generation,
                                page: weak,
                            },
                        );
                    }
                    (serial, page)
                }
            }
        };
        // When this participant finishes, or is dropped mid-read, it lets
        // go of the read; a read no one holds any more leaves the list.
        let mut holding = Holding {
            hub: self,
            key: &key,
            serial,
            page: Some(page.clone()),
        };
        let outcome = page.await;
        holding.release();
        match outcome {
            Some(page) => Ok(Arc::try_unwrap(page).unwrap_or_else(|shared| (*shared).clone())),
            None => read().await,
        }
    }

    /// Marks a subscription as held back by the fence: the next commit of
    /// any stream wakes it.
    pub(crate) fn wake_on_any_commit(&self, registration: &Registration) {
        let mut reg = self.lock();
        if reg.signals.contains_key(&registration.id) {
            reg.held_back.insert(registration.id);
        }
    }

    /// Number of shared reads listed (finished or not): for tests.
    #[cfg(test)]
    fn listed_reads(&self) -> usize {
        self.lock().reads.len()
    }

    /// Marks the hub closed and wakes everyone so that subscriptions notice.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify_all();
        self.lease_given_back();
    }

    /// Resolves once a lease is given back on this store after the call.
    pub(crate) fn lease_released(&self) -> event_listener::EventListener {
        self.released.listen()
    }

    /// Wakes the standbys of this store.
    pub(crate) fn lease_given_back(&self) {
        self.released.notify(usize::MAX);
    }

    /// Lists a lease a subscription of this store took.
    pub(crate) fn hold_lease(&self, key: &LeaseKey, token: u64) {
        self.lock().leases.insert(key.clone(), token);
    }

    /// Forgets a lease given back (if still listed with `token`).
    pub(crate) fn forget_lease(&self, key: &LeaseKey, token: u64) {
        let mut reg = self.lock();
        if reg.leases.get(key) == Some(&token) {
            reg.leases.remove(key);
        }
    }

    /// Whether a subscription of this store holds `key` with `token` (not
    /// given back, nor taken back by a closing store).
    #[cfg(feature = "runtime")]
    pub(crate) fn holds_lease(&self, key: &LeaseKey, token: u64) -> bool {
        self.lock().leases.get(key) == Some(&token)
    }

    /// The leases this store's subscriptions hold, taken off the list: a
    /// closing store gives them back.
    pub(crate) fn take_leases(&self) -> Vec<(LeaseKey, u64)> {
        self.lock().leases.drain().collect()
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
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn filters(&self) -> Vec<Filter> {
        self.lock()
            .signals
            .values()
            .map(|(f, _)| f.clone())
            .collect()
    }
}

/// A participant's hold on a shared read: released when it is done or
/// dropped, and the read unlisted once finished or held by no one.
struct Holding<'a> {
    hub: &'a Hub,
    key: &'a ReadKey,
    serial: u64,
    page: Option<SharedReadFuture>,
}

impl Holding<'_> {
    fn release(&mut self) {
        // Dropped first, so that the last holder's drop ends the read.
        let Some(page) = self.page.take() else {
            return;
        };
        let finished = page.peek().is_some();
        drop(page);
        let mut reg = self.hub.lock();
        if reg
            .reads
            .get(self.key)
            .is_some_and(|r| r.serial == self.serial && (finished || r.page.upgrade().is_none()))
        {
            reg.reads.remove(self.key);
        }
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.release();
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
        reg.held_back.remove(&self.id);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn raised(r: &Registration) -> bool {
        r.signal.raised.load(Ordering::Acquire)
    }

    fn page(version: u64) -> SharedPage {
        let event = crate::NewEvent::new("a", "T", serde_json::json!({"n": version}));
        SharedPage {
            rows: vec![Ok(event.into_recorded(version, 1, chrono::Utc::now()))],
            held_back: false,
            bytes: 0,
            scanned: None,
        }
    }

    fn first_version(page: Result<SharedPage>) -> u64 {
        page.unwrap().rows[0].as_ref().unwrap().version
    }

    type Reader = Box<dyn Fn() -> BoxFuture<'static, Result<SharedPage>>>;

    /// A reader that counts its reads, waits for `gate`, then returns the
    /// page of version `version` (or fails while `fail` is set).
    fn reader(
        reads: &Arc<std::sync::atomic::AtomicUsize>,
        gate: &Shared<futures::channel::oneshot::Receiver<()>>,
        version: u64,
        fail: &Arc<AtomicBool>,
    ) -> Reader {
        let (reads, gate, fail) = (reads.clone(), gate.clone(), fail.clone());
        Box::new(move || {
            let (reads, gate, fail) = (reads.clone(), gate.clone(), fail.clone());
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                let _ = gate.await;
                if fail.load(Ordering::SeqCst) {
                    Err(crate::Error::database("read", "connection lost"))
                } else {
                    Ok(page(version))
                }
            }
            .boxed()
        })
    }

    fn new_gate() -> (
        futures::channel::oneshot::Sender<()>,
        Shared<futures::channel::oneshot::Receiver<()>>,
    ) {
        let (open, gate) = futures::channel::oneshot::channel();
        (open, gate.shared())
    }

    #[test]
    fn readers_woken_together_share_one_read() {
        let hub = Hub::new();
        let filter = Filter::all();
        hub.notify("a", "T");
        let seen = hub.generation();
        let reads = Arc::default();
        let (open, gate) = new_gate();
        let read = reader(&reads, &gate, 7, &Arc::default());
        let first = hub.read_shared(&filter, Cursor::START, 10, seen, &read);
        let second = hub.read_shared(&filter, Cursor::START, 10, seen, &read);
        // Another position or page size is another read.
        let elsewhere = hub.read_shared(&filter, Cursor::new(3), 10, seen, &read);
        let all = futures::future::join4(first, second, elsewhere, async {
            open.send(()).expect("gate");
        });
        let (a, b, c, ()) = futures::executor::block_on(all);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(first_version(a), 7);
        assert_eq!(first_version(b), 7);
        assert_eq!(first_version(c), 7);
        assert!(hub.lock().reads.is_empty(), "finished reads are unlisted");
    }

    #[test]
    fn a_read_started_before_the_wake_up_is_not_shared() {
        let hub = Hub::new();
        let filter = Filter::all();
        let reads = Arc::default();
        let (open, gate) = new_gate();
        let read = reader(&reads, &gate, 1, &Arc::default());
        let mut older =
            Box::pin(hub.read_shared(&filter, Cursor::START, 10, hub.generation(), &read));
        // Start the older read, then a commit wakes a second reader.
        assert!(FutureExt::now_or_never(&mut older).is_none());
        hub.notify("a", "T");
        let newer = hub.read_shared(&filter, Cursor::START, 10, hub.generation(), &read);
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
    fn a_stalled_participant_holds_up_no_one_and_a_failed_read_is_read_again() {
        let hub = Hub::new();
        let filter = Filter::all();
        let seen = hub.generation();
        let reads = Arc::default();
        let (open, gate) = new_gate();
        let read = reader(&reads, &gate, 5, &Arc::default());
        // The first participant starts the read, then is never polled again
        // (its consumer went quiet) but is not dropped either.
        let mut quiet = Box::pin(hub.read_shared(&filter, Cursor::START, 10, seen, &read));
        assert!(FutureExt::now_or_never(&mut quiet).is_none());
        let other = hub.read_shared(&filter, Cursor::START, 10, seen, &read);
        let (b, ()) = futures::executor::block_on(futures::future::join(other, async {
            open.send(()).expect("gate");
        }));
        assert_eq!(first_version(b), 5, "the joiner drove the read itself");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        drop(quiet);

        // A read that fails: each participant reads for itself.
        let reads = Arc::default();
        let fail = Arc::new(AtomicBool::new(true));
        let (open, gate) = new_gate();
        let read = reader(&reads, &gate, 6, &fail);
        let cursor = Cursor::new(1);
        let first = hub.read_shared(&filter, cursor, 10, seen, &read);
        let second = hub.read_shared(&filter, cursor, 10, seen, &read);
        let (a, b, ()) =
            futures::executor::block_on(futures::future::join3(first, second, async {
                open.send(()).expect("gate");
            }));
        assert!(a.is_err() && b.is_err(), "each gets its own error");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            3,
            "one shared read, then one each"
        );
    }

    /// Set when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_read_whose_participants_are_all_dropped_is_dropped_with_them() {
        let hub = Hub::new();
        let filter = Filter::all();
        let dropped = Arc::new(AtomicBool::new(false));
        let (_open, gate) = new_gate();
        let read = {
            let (dropped, gate) = (dropped.clone(), gate.clone());
            move || {
                // What the read holds (a connection, a lock, the store).
                let held = DropFlag(dropped.clone());
                let gate = gate.clone();
                async move {
                    let _held = held;
                    let _ = gate.await;
                    Ok(page(1))
                }
                .boxed()
            }
        };
        let mut first = Box::pin(hub.read_shared(&filter, Cursor::START, 10, 0, &read));
        let mut second = Box::pin(hub.read_shared(&filter, Cursor::START, 10, 0, &read));
        assert!(FutureExt::now_or_never(&mut first).is_none());
        assert!(FutureExt::now_or_never(&mut second).is_none());
        drop(first);
        assert!(
            !dropped.load(Ordering::SeqCst),
            "the other participant still holds it"
        );
        drop(second);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the read went with its last participant"
        );
        assert_eq!(hub.listed_reads(), 0, "and left the list");
    }

    #[test]
    fn a_subscription_held_back_by_the_fence_wakes_on_any_commit_once() {
        let hub = Hub::new();
        let stream = hub.register(&Filter::stream("a"));
        hub.wake_on_any_commit(&stream);
        hub.notify("b", "T");
        assert!(raised(&stream), "a commit on another stream wakes it");
        stream.signal.clear();
        hub.notify("b", "T");
        assert!(!raised(&stream), "once: the next read decides again");
        hub.wake_on_any_commit(&stream);
        drop(stream);
        assert!(hub.lock().held_back.is_empty());
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
