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

use futures::task::AtomicWaker;

use crate::filter::Filter;

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

#[derive(Default)]
struct Registry {
    next_id: u64,
    closed: bool,
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
        let reg = self.lock();
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
        for (_, signal) in self.lock().signals.values() {
            signal.raise();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(r: &Registration) -> bool {
        r.signal.raised.load(Ordering::Acquire)
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
