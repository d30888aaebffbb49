//! An HTTP and Server-Sent Events face for any store (feature `server`):
//! an [axum] router to mount in an application, or to run with
//! `synckit serve`.
//!
//! ```no_run
//! use synckit::server::{self, TokenPolicy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = synckit::open("sqlite://events.db").await?;
//! let app = server::router(store)
//!     .policy(TokenPolicy::from_file("tokens.txt")?)
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Routes
//!
//! | route | answers |
//! |---|---|
//! | `GET /events?after=&limit=&stream=&type=` | one [`Page`](crate::protocol::Page) in global order; `stream` and `type` may repeat |
//! | `GET /events/live?after=&stream=&type=` | the same events as Server-Sent Events, then live |
//! | `GET /streams/{aggregate_id}?after=&limit=` | one page of a stream, by stream version |
//! | `POST /streams/{aggregate_id}/events` | appends an [`AppendRequest`](crate::protocol::AppendRequest): 201 with the recorded events |
//!
//! Every error is a JSON [`ErrorBody`](crate::protocol::ErrorBody) with a
//! stable code (its table lists them).
//!
//! **Pages.** `next` is where the following page starts; a page is full
//! when it holds `limit` events, and a full page whose last event is below
//! `head` never changes: it is sent with `Cache-Control: immutable`
//! (`private`, varying on `Authorization`, unless access is anonymous).
//!
//! **Live.** Each event is an SSE message whose `id:` is its version and
//! whose `data:` is the stored event as JSON, so a browser's `EventSource`
//! resumes by itself with `Last-Event-ID` (which wins over `?after=`). An
//! event `caught-up` says the catch-up is over and what follows is live;
//! an event `progress` (`{"version": N}`, `id: N`) moves the position past
//! events the caller's filter or access left out; an event `error` carries
//! an [`ErrorBody`](crate::protocol::ErrorBody) for a stored event that
//! cannot be read, in its place. Comments are sent as heartbeats. A feed
//! reads the store only as fast as its client reads: it queues at most
//! [`Limits::with_live_buffer`] messages, and a client that leaves a full
//! queue untouched for [`Limits::with_live_stall`] is cut off: its stream
//! ends after what was queued, and it resumes from its last id.
//!
//! # Access control
//!
//! A router needs a [`Policy`]: it maps each request to a [`Principal`]
//! (401 without one) that decides which streams and types it may read and
//! append to. A read of a stream it may not read is 403; `/events` and the
//! live feed leave out the events it may not read; an append with one
//! event it may not append is 403 and writes nothing. There is no default:
//! [`RouterBuilder::build`] refuses a router without a policy unless
//! [`RouterBuilder::allow_anonymous`] says so.
//!
//! ```
//! use synckit::MemoryStore;
//! use synckit::server::{self, Access, Principal};
//!
//! // Callers name themselves in a header a gateway in front has checked;
//! // each reads and appends to its own streams only.
//! let app = server::router(MemoryStore::new())
//!     .policy(|caller: &server::Caller<'_>| {
//!         let user = caller.headers().get("x-user")?.to_str().ok()?.to_owned();
//!         let own = format!("user-{user}");
//!         Some(Principal::new(user, move |_: Access, stream: &str| stream == own))
//!     })
//!     .build()?;
//! # let _ = app;
//! # Ok::<(), synckit::Error>(())
//! ```
//!
//! # Observability
//!
//! Every request is a `tracing` span (tower-http's `TraceLayer`) and is
//! counted in `synckit_http_requests_total` and timed in
//! `synckit_http_request_seconds`, labelled by `route`, `method` and
//! `status`; `synckit_http_live_connections` gauges open live feeds.

mod policy;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::Semaphore;
use tower_http::cors::CorsLayer;

use crate::model::error::{Error, Result};
use crate::store::SubscriptionSource;

pub use policy::{Access, Caller, Policy, Principal, TokenPolicy};

/// The server's bounds.
///
/// ```
/// use std::time::Duration;
/// use synckit::server::Limits;
///
/// let limits = Limits::default()
///     .with_body_bytes(256 * 1024)
///     .with_live_connections(10_000)
///     .with_heartbeat(Duration::from_secs(30));
/// assert_eq!(limits.page_size(), 1000);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    body_bytes: usize,
    page_size: usize,
    live_connections: usize,
    live_buffer: usize,
    live_stall: Duration,
    heartbeat: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1024 * 1024,
            page_size: 1000,
            live_connections: 1024,
            live_buffer: 1024,
            live_stall: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
        }
    }
}

impl Limits {
    /// The largest append body accepted (default 1 MiB; 413 above).
    pub fn with_body_bytes(mut self, bytes: usize) -> Self {
        self.body_bytes = bytes;
        self
    }

    /// The largest page; a larger `limit` is cut to it (default 1000).
    pub fn with_page_size(mut self, events: usize) -> Self {
        self.page_size = events;
        self
    }

    /// How many live feeds may be open at once (default 1024; 503 above).
    pub fn with_live_connections(mut self, connections: usize) -> Self {
        self.live_connections = connections;
        self
    }

    /// How many messages a live feed queues ahead of what its client has
    /// read (default 1024). While the queue is full the feed reads no
    /// further.
    pub fn with_live_buffer(mut self, messages: usize) -> Self {
        self.live_buffer = messages;
        self
    }

    /// How long a client may leave its full queue untouched before it is
    /// cut off (default 10 s); it resumes from its last id.
    pub fn with_live_stall(mut self, stall: Duration) -> Self {
        self.live_stall = stall;
        self
    }

    /// How often an idle live feed sends a heartbeat comment (default 15 s).
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// The largest append body.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// The largest page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// How many live feeds may be open at once.
    pub fn live_connections(&self) -> usize {
        self.live_connections
    }

    /// A live feed's queue.
    pub fn live_buffer(&self) -> usize {
        self.live_buffer
    }

    /// How long a stalled client is kept.
    pub fn live_stall(&self) -> Duration {
        self.live_stall
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    fn check(&self) -> Result<()> {
        let zero = [
            ("body_bytes", self.body_bytes),
            ("page_size", self.page_size),
            ("live_connections", self.live_connections),
            ("live_buffer", self.live_buffer),
        ]
        .into_iter()
        .find(|(_, n)| *n == 0);
        if let Some((name, _)) = zero {
            return Err(Error::InvalidInput {
                field: "server limits",
                reason: format!("{name} must be at least 1"),
            });
        }
        if self.heartbeat.is_zero() || self.live_stall.is_zero() {
            return Err(Error::InvalidInput {
                field: "server limits",
                reason: "heartbeat and live_stall must be longer than zero".to_owned(),
            });
        }
        // Semaphore's own bound; above it the constructor would panic.
        if self.live_connections > Semaphore::MAX_PERMITS {
            return Err(Error::InvalidInput {
                field: "server limits",
                reason: format!(
                    "live_connections must be at most {}",
                    Semaphore::MAX_PERMITS
                ),
            });
        }
        Ok(())
    }
}

/// Builds the router of a store: see the [module docs](self).
pub fn router<S: SubscriptionSource>(store: S) -> RouterBuilder<S> {
    RouterBuilder {
        store,
        policy: None,
        anonymous: false,
        limits: Limits::default(),
        cors: None,
    }
}

/// The settings of a router; [`RouterBuilder::build`] makes it.
#[must_use = "a builder does nothing until `build` is called"]
pub struct RouterBuilder<S> {
    store: S,
    policy: Option<Arc<dyn Policy>>,
    anonymous: bool,
    limits: Limits,
    cors: Option<CorsLayer>,
}

impl<S: SubscriptionSource> RouterBuilder<S> {
    /// The authorization hook (see [`Policy`]).
    pub fn policy(mut self, policy: impl Policy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Serves every request, unauthenticated, with every stream readable
    /// and writable: only where something in front authenticates, or for
    /// local development.
    pub fn allow_anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// The bounds (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Cross-origin requests: tower-http's layer, as configured (none by
    /// default: browsers then allow same-origin pages only).
    pub fn cors(mut self, cors: CorsLayer) -> Self {
        self.cors = Some(cors);
        self
    }

    /// The router, or [`Error::InvalidInput`] without a policy (and without
    /// [`RouterBuilder::allow_anonymous`]), with both, or with a zero limit.
    pub fn build(self) -> Result<Router> {
        self.limits.check()?;
        let policy = match (self.policy, self.anonymous) {
            (Some(policy), false) => Some(policy),
            (None, true) => None,
            (None, false) => {
                return Err(Error::InvalidInput {
                    field: "server policy",
                    reason: "a router needs a policy (`.policy(...)`), or `.allow_anonymous()` \
                             to serve every stream to anyone"
                        .to_owned(),
                });
            }
            (Some(_), true) => {
                return Err(Error::InvalidInput {
                    field: "server policy",
                    reason: "both a policy and `.allow_anonymous()` were given; choose one"
                        .to_owned(),
                });
            }
        };
        let state = routes::State {
            store: self.store,
            policy,
            live: Arc::new(Semaphore::new(self.limits.live_connections)),
            limits: Arc::new(self.limits),
        };
        let mut router = routes::router(state);
        if let Some(cors) = self.cors {
            router = router.layer(cors);
        }
        Ok(router)
    }
}
