//! The live feed that wakes a [`RemoteStore`](super::RemoteStore)'s
//! subscriptions: `GET /events/live` from the head, each event a
//! [`Hub::notify`], each (re)connect a [`Hub::notify_all`]. It carries no
//! event to anyone: subscriptions read pages from their own position, so a
//! wake-up lost while the feed reconnects costs latency, never an event.
//!
//! Natively it reads the stream with reqwest; in the browser it is an
//! `EventSource`, which reconnects by itself with `Last-Event-ID`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Deserialize;

use crate::store::hub::Hub;
use crate::store::signal::Signal;

use super::http::Api;

/// How often a feed with nothing to deliver checks whether any
/// subscription is left (it stops after the last one).
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// The running feed of one store.
pub(super) struct Feed {
    stop: Arc<Stop>,
    running: Arc<AtomicBool>,
}

/// The slot a store keeps its feed in: a feed that stops because no
/// subscription is left clears its `running` under this lock, so a
/// subscription registered meanwhile starts a new one.
pub(super) type FeedSlot = Mutex<Option<Feed>>;

impl Feed {
    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Stops the feed: it closes its connection at once.
    pub(super) fn stop(self) {
        self.stop.raise();
    }

    /// Starts a feed for `hub`'s subscriptions.
    pub(super) fn start(api: Api, hub: Hub, max_backoff: Duration, slot: Weak<FeedSlot>) -> Feed {
        let stop = Arc::new(Stop::default());
        let running = Arc::new(AtomicBool::new(true));
        let feed = Follow {
            api,
            hub,
            max_backoff,
            slot,
            stop: Arc::clone(&stop),
            running: Arc::clone(&running),
        };
        spawn(feed);
        Feed { stop, running }
    }
}

/// A sticky stop flag one task waits on.
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    signal: Signal,
}

impl Stop {
    fn raise(&self) {
        self.stopped.store(true, Ordering::Release);
        self.signal.raise();
    }

    fn is_raised(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        while !self.is_raised() {
            self.signal.wait().await;
        }
    }
}

/// What a feed task holds.
struct Follow {
    api: Api,
    hub: Hub,
    max_backoff: Duration,
    slot: Weak<FeedSlot>,
    stop: Arc<Stop>,
    running: Arc<AtomicBool>,
}

impl Follow {
    /// Whether the feed should end: stopped, its store gone, or no
    /// subscription left (then it marks itself stopped under the slot's
    /// lock, so that the next subscription starts another).
    fn should_end(&self) -> bool {
        if self.stop.is_raised() {
            return true;
        }
        let Some(slot) = self.slot.upgrade() else {
            return true;
        };
        let _slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.hub.is_empty() {
            self.running.store(false, Ordering::Release);
            return true;
        }
        false
    }

    /// Acts on one message of the feed; returns the id to resume after.
    fn deliver(&self, kind: &str, id: &str, data: &str) -> Option<u64> {
        match kind {
            "" | "message" => {
                if let Ok(event) = crate::protocol::from_slice::<Parts>(data.as_bytes()) {
                    self.hub.notify(&event.aggregate_id, &event.event_type);
                } else {
                    self.hub.notify_all();
                }
            }
            "caught-up" | "error" => self.hub.notify_all(),
            _ => {}
        }
        id.parse().ok()
    }
}

/// What a wake-up needs of an event.
#[derive(Deserialize)]
struct Parts {
    aggregate_id: String,
    event_type: String,
}

/// The wait before attempt `attempt + 1` (from 1): 50 ms doubling up to
/// `max`, with jitter so that clients cut off together do not come back
/// together.
pub(super) fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1 << attempt.saturating_sub(1).min(16));
    base.min(max).mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use futures::StreamExt;

    use super::Follow;
    use eventsource_stream::Eventsource;

    pub(super) fn spawn(feed: Follow) {
        tokio::spawn(async move { feed.run().await });
    }

    pub(in crate::client) fn sleep(delay: std::time::Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(delay)
    }

    impl Follow {
        async fn run(self) {
            let mut last = None;
            let mut failures = 0;
            while !self.should_end() {
                if failures > 0 {
                    tokio::select! {
                        () = sleep(super::backoff(failures, self.max_backoff)) => {}
                        () = self.stop.wait() => return,
                    }
                }
                tokio::select! {
                    followed = self.follow(&mut last, &mut failures) => match followed {
                        // The server ended the feed (its store closed, it
                        // shuts down): back off a little all the same, so
                        // a feed that ends at once is not a busy loop.
                        Ok(()) => failures = failures.max(1),
                        Err(error) => {
                            failures += 1;
                            tracing::debug!(%error, failures, "the live feed of a remote store failed; it reconnects");
                        }
                    },
                    () = self.stop.wait() => return,
                }
                // Whatever was missed while it was away.
                self.hub.notify_all();
            }
        }

        /// One connection: from the last id seen (or the head), until the
        /// feed ends or should end. The first message resets `failures`.
        async fn follow(&self, last: &mut Option<u64>, failures: &mut u32) -> crate::Result<()> {
            let after = match *last {
                Some(id) => id,
                None => {
                    let url = self.api.url(&["events"], &[("limit", "0".to_owned())]);
                    let page: crate::protocol::Page = self.api.get("live", url).await?;
                    page.head
                }
            };
            let url = self
                .api
                .url(&["events", "live"], &[("after", after.to_string())]);
            let response = self.api.live(url).await?;
            self.hub.notify_all();
            let mut messages = response.bytes_stream().eventsource();
            let mut idle = tokio::time::interval(super::IDLE_CHECK);
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(Ok(m)) => {
                            *failures = 0;
                            if let Some(id) = self.deliver(&m.event, &m.id, &m.data) {
                                *last = Some(id);
                            }
                        }
                        Some(Err(e)) => {
                            return Err(crate::Error::Remote {
                                operation: "live",
                                status: None,
                                code: "unreachable".to_owned(),
                                message: e.to_string(),
                            });
                        }
                        None => return Ok(()),
                    },
                    _ = idle.tick() => if self.should_end() {
                        return Ok(());
                    },
                }
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod browser {
    use std::cell::Cell;
    use std::rc::Rc;

    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::{JsCast, JsValue};
    use web_sys::{EventSource, MessageEvent};

    use super::Follow;

    pub(super) fn spawn(feed: Follow) {
        wasm_bindgen_futures::spawn_local(async move { feed.run().await });
    }

    pub(in crate::client) fn sleep(delay: std::time::Duration) -> impl Future<Output = ()> + Send {
        crate::client::http::send_boxed(gloo_timers::future::sleep(delay))
    }

    /// An `EventSource` and its listeners, closed when dropped.
    struct Source {
        source: EventSource,
        _listeners: Vec<Closure<dyn FnMut(JsValue)>>,
    }

    impl Drop for Source {
        fn drop(&mut self) {
            self.source.close();
        }
    }

    impl Follow {
        async fn run(self) {
            let feed = Rc::new(self);
            let last = Rc::new(Cell::new(None));
            let mut failures = 0;
            while !feed.should_end() {
                if failures > 0 {
                    let pause = sleep(super::backoff(failures, feed.max_backoff));
                    let stop = feed.stop.wait();
                    futures::future::select(std::pin::pin!(pause), std::pin::pin!(stop)).await;
                    if feed.should_end() {
                        return;
                    }
                    // While it is away, subscriptions look for themselves
                    // at each attempt.
                    feed.hub.notify_all();
                }
                let after = match last.get() {
                    Some(id) => id,
                    None => {
                        let url = feed.api.url(&["events"], &[("limit", "0".to_owned())]);
                        match feed.api.get::<crate::protocol::Page>("live", url).await {
                            Ok(page) => page.head,
                            Err(_) => {
                                failures += 1;
                                continue;
                            }
                        }
                    }
                };
                let Ok((source, closed)) = Self::open(&feed, after, &last) else {
                    failures += 1;
                    continue;
                };
                // Open until the browser gives up on it (an error answer),
                // the store stops it, or no subscription is left.
                loop {
                    let idle = sleep(super::IDLE_CHECK);
                    let stop = feed.stop.wait();
                    futures::future::select(std::pin::pin!(stop), std::pin::pin!(idle)).await;
                    if feed.should_end() {
                        return;
                    }
                    if closed.get() {
                        break;
                    }
                }
                drop(source);
                failures = 1;
                feed.hub.notify_all();
            }
        }

        /// Opens an `EventSource` after `after`; the browser resumes it by
        /// itself with `Last-Event-ID`. `closed` turns true when it gives
        /// up (an error answer).
        fn open(
            feed: &Rc<Follow>,
            after: u64,
            last: &Rc<Cell<Option<u64>>>,
        ) -> Result<(Source, Rc<Cell<bool>>), ()> {
            let mut query = vec![("after", after.to_string())];
            if let Some(token) = &feed.api.token {
                query.push(("access_token", token.clone()));
            }
            let url = feed.api.url(&["events", "live"], &query);
            let source = EventSource::new(url.as_str()).map_err(|_| ())?;
            let closed = Rc::new(Cell::new(false));
            let mut listeners = Vec::new();
            for kind in ["open", "message", "caught-up", "error", "progress"] {
                let feed = Rc::clone(feed);
                let closed = Rc::clone(&closed);
                let last = Rc::clone(last);
                let source_ref = source.clone();
                let listener = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                    match event.dyn_ref::<MessageEvent>() {
                        Some(m) => {
                            let data = m.data().as_string().unwrap_or_default();
                            if let Some(id) = feed.deliver(kind, &m.last_event_id(), &data) {
                                last.set(Some(id));
                            }
                        }
                        // `open`, or the connection's own error.
                        None => feed.hub.notify_all(),
                    }
                    if source_ref.ready_state() == EventSource::CLOSED {
                        closed.set(true);
                    }
                });
                source
                    .add_event_listener_with_callback(kind, listener.as_ref().unchecked_ref())
                    .map_err(|_| ())?;
                listeners.push(listener);
            }
            Ok((
                Source {
                    source,
                    _listeners: listeners,
                },
                closed,
            ))
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub(super) use browser::sleep;
#[cfg(target_arch = "wasm32")]
use browser::spawn;
#[cfg(not(target_arch = "wasm32"))]
pub(super) use native::sleep;
#[cfg(not(target_arch = "wasm32"))]
use native::spawn;
