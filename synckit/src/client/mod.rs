//! [`RemoteStore`]: a store over synckit's HTTP face (feature `client`),
//! natively and in the browser (`wasm32-unknown-unknown`).
//!
//! A `RemoteStore` implements [`EventStore`] and [`SubscriptionSource`]
//! against a server built with [`server::router`](crate::server) (or
//! `synckit serve`), so code written for stores runs on it unchanged,
//! typed helpers included:
//!
//! ```no_run
//! # #[derive(Debug, serde::Serialize, serde::Deserialize, synckit::Event)]
//! # enum UserEvent { Registered { #[event(aggregate_id)] id: String, name: String } }
//! # async fn demo() -> synckit::Result<()> {
//! use futures::StreamExt;
//! use synckit::client::{Config, RemoteStore};
//! use synckit::{EventStore, ExpectedVersion};
//!
//! let remote = RemoteStore::connect(
//!     Config::new("http://127.0.0.1:8080").with_token("s3cret"),
//! )
//! .await?;
//! let registered = UserEvent::Registered { id: "user-1".into(), name: "Ada".into() };
//! remote.append_event(ExpectedVersion::NoStream, &registered).await?;
//!
//! let mut user = UserEvent::subscribe_stream(&remote, "user-1").await?;
//! while let Some(event) = user.next().await {
//!     let event = event?;
//!     println!("{}: {:?}", event.version, event.data);
//! }
//! # Ok(()) }
//! ```
//!
//! ## How it works
//!
//! - Appends are `POST /streams/{aggregate_id}/events`, or `POST /events`
//!   for a batch over several streams: atomic either way. Input is checked
//!   before anything is sent; conflicts, duplicates and what the server
//!   refuses come back as the same [`Error`] variants a local store
//!   returns.
//! - Reads are `GET /events` and `GET /streams/{aggregate_id}` pages. The
//!   server caps its pages and leaves out the events the caller may not
//!   read; a read goes on past both until it has `limit` events or reaches
//!   the head.
//! - Subscriptions are the store's own ([`SubscriptionSource::subscribe`]):
//!   they read pages from their own position, so they are gap-free, in
//!   order and exactly once whatever the network does. What wakes them is
//!   one live feed per store (`GET /events/live`; `EventSource` in the
//!   browser), opened with the first subscription and closed after the
//!   last: it reconnects with backoff and resumes from the last id it saw,
//!   and every reconnect wakes every subscription, so a lost wake-up costs
//!   latency, never an event. While the server is unreachable,
//!   subscriptions yield transient [`Error::Remote`] items, wait with
//!   backoff and resume where they were.
//! - Checkpoints, leases, parked events and snapshots live in this
//!   process's memory: durable subscriptions and consumer groups resume
//!   exactly once while the process lives, and start from their
//!   [`Start`] again in a new one. Snapshots are a cache,
//!   so keeping them locally changes no result.
//! - After [`EventStore::close`] every call fails with
//!   [`Error::StoreClosed`] and subscriptions end; dropping every handle
//!   does the same.
//!
//! Errors that need no store variant ([`Error::Remote`]) name the
//! operation, the HTTP status and the server's error code; an unreachable
//! server, 429, 502, 503 and 504 are transient.

mod feed;
mod http;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Url;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::{Filter, Start};
use crate::model::recorded::{NewEvent, Recorded};
use crate::protocol::{AppendRequest, Appended, Page, Unreadable};
use crate::store::aggregate::StoredSnapshot;
use crate::store::hub::Hub;
use crate::store::lease::{LeaseKey, LiveLease};
use crate::store::memory::MemoryStore;
use crate::store::parked::{ParkedEvent, ParkedStatus};
use crate::store::subscription::Subscription;
use crate::store::{DEFAULT_BATCH_SIZE, EventStore, SubscriptionSource, TypedPage};

use http::Api;

/// How to reach a server, for [`RemoteStore::connect`].
///
/// ```
/// use std::time::Duration;
/// use synckit::client::Config;
///
/// let config = Config::new("https://events.example.com/api")
///     .with_token("s3cret")
///     .with_batch_size(500)
///     .with_max_backoff(Duration::from_secs(10));
/// assert_eq!(config.batch_size, 500);
/// // Its token stays out of logs.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The base address the router is mounted at (`http://host:port` or
    /// with a path prefix).
    pub url: String,
    /// The bearer token the server's policy knows the caller by; `None`
    /// for a server that allows anonymous access.
    pub token: Option<String>,
    /// Events per page of reads and subscriptions (the server may cap
    /// it; reads go on past its cap). 1000 by default.
    pub batch_size: usize,
    /// The longest wait between two attempts of a failed read or live
    /// feed (backoff doubles from 50 ms up to it, with jitter). 5 s by
    /// default.
    pub max_backoff: Duration,
}

/// The token is left out: configurations end up in logs.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("batch_size", &self.batch_size)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

impl Config {
    /// A server at `url`, anonymous.
    pub fn new(url: impl Into<String>) -> Self {
        Config {
            url: url.into(),
            token: None,
            batch_size: DEFAULT_BATCH_SIZE,
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Sends `token` as `Authorization: Bearer` (and as `access_token` on
    /// the browser's `EventSource`, which cannot send headers).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets [`Config::batch_size`].
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`Config::max_backoff`].
    #[must_use]
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }
}

/// An event store on a synckit server, over HTTP and Server-Sent Events;
/// clones share it. See the [module documentation](self).
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    batch_size: usize,
    max_backoff: Duration,
    closed: AtomicBool,
    /// What lives in this process: checkpoints, leases, parked events,
    /// snapshots, and the wake-up hub of the subscriptions.
    local: MemoryStore,
    /// The live feed that wakes subscriptions, while it runs.
    feed: Arc<feed::FeedSlot>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let slot = self.feed.lock().ok().and_then(|mut slot| slot.take());
        if let Some(feed) = slot {
            feed.stop();
        }
    }
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("url", &self.inner.api.base.as_str())
            .field("closed", &self.inner.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// Connects to the server at `config.url`: checks the address and the
    /// configuration, then asks the server for its head, so that a server
    /// out of reach ([`Error::Remote`], transient) or a refused token (401)
    /// fails here rather than at the first read.
    pub async fn connect(config: Config) -> Result<Self> {
        let store = Self::new(config)?;
        store.latest_version().await?;
        Ok(store)
    }

    /// A store on `config.url` without asking the server anything (it may
    /// be down): the first call finds out.
    pub fn new(config: Config) -> Result<Self> {
        let mut base = Url::parse(&config.url).map_err(|e| Error::InvalidInput {
            field: "url",
            reason: format!("{:?} is not an address: {e}", config.url),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidInput {
                field: "url",
                reason: format!("{:?} is not an http or https address", config.url),
            });
        }
        base.set_query(None);
        base.set_fragment(None);
        if config.batch_size == 0 {
            return Err(Error::InvalidInput {
                field: "batch_size",
                reason: "must be at least 1".to_owned(),
            });
        }
        if config.max_backoff.is_zero() {
            return Err(Error::InvalidInput {
                field: "max_backoff",
                reason: "must be above zero".to_owned(),
            });
        }
        if let Some(token) = &config.token
            && (token.is_empty() || token.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(Error::InvalidInput {
                field: "token",
                reason: "must be non-empty, without spaces or control characters".to_owned(),
            });
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::InvalidInput {
                field: "config",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(RemoteStore {
            inner: Arc::new(Inner {
                api: Api {
                    base,
                    token: config.token,
                    http,
                },
                batch_size: config.batch_size,
                max_backoff: config.max_backoff,
                closed: AtomicBool::new(false),
                local: MemoryStore::new(),
                feed: Arc::new(Mutex::new(None)),
            }),
        })
    }

    fn open(&self) -> Result<&Api> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::StoreClosed)
        } else {
            Ok(&self.inner.api)
        }
    }

    /// Pages of `segments` (an `/events` or `/streams/{id}` read) from
    /// `after` until `limit` events or the head: the server caps pages,
    /// and leaves out what the caller may not read while moving `next`
    /// past it.
    fn pages(
        &self,
        operation: &'static str,
        segments: Vec<String>,
        mut query: Vec<(&'static str, String)>,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<(Vec<Row>, Cursor)>> {
        let api = self.open().cloned();
        async move {
            let api = api?;
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let mut rows = Vec::new();
            let mut cursor = after;
            query.push(("after", String::new()));
            query.push(("limit", String::new()));
            let at = query.len() - 2;
            while rows.len() < limit {
                query[at].1 = cursor.to_string();
                query[at + 1].1 = (limit - rows.len()).to_string();
                let page: Page = api.get(operation, api.url(&segments, &query)).await?;
                let moved = page.next > cursor;
                cursor = page.next;
                rows.extend(merged(page.events, page.unreadable));
                if !moved || cursor >= page.head {
                    break;
                }
            }
            rows.truncate(limit);
            Ok((rows, Cursor::new(cursor)))
        }
        .boxed()
    }

    /// [`RemoteStore::pages`] of `GET /events` for `filter`.
    fn global_pages(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Row>, Cursor)>> + Send + use<> {
        let checked = crate::model::validate::check_filter(filter);
        let segments = vec!["events".to_owned()];
        let pages = self.pages(
            "read",
            segments,
            filter_query(filter),
            after.version(),
            limit,
        );
        async move {
            checked?;
            pages.await
        }
    }

    /// The head (`GET /events?limit=0`) or a stream's version
    /// (`GET /streams/{id}?limit=0`).
    fn head(
        &self,
        operation: &'static str,
        segments: &[&str],
    ) -> impl Future<Output = Result<u64>> + Send + use<> {
        let request = self.open().map(|api| {
            let url = api.url(segments, &[("limit", "0".to_owned())]);
            api.get::<Page>(operation, url)
        });
        async move { Ok(request?.await?.head) }
    }

    /// Starts the live feed that wakes subscriptions, unless it runs.
    fn ensure_feed(&self) {
        let mut feed = self
            .inner
            .feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if feed.as_ref().is_some_and(feed::Feed::is_running) {
            return;
        }
        *feed = Some(feed::Feed::start(
            self.inner.api.clone(),
            self.inner.local.hub().clone(),
            self.inner.max_backoff,
            Arc::downgrade(&self.inner.feed),
        ));
    }
}

/// One row of a page: an event, or a stored row the server could not read
/// back.
type Row = std::result::Result<Recorded, Unreadable>;

/// The events of rows read as a whole page: it fails with its first
/// unreadable row, as a local store's does.
fn whole(rows: Vec<Row>) -> Result<Vec<Recorded>> {
    rows.into_iter()
        .map(|row| row.map_err(Unreadable::into_error))
        .collect()
}

fn row_cursor(row: &Row) -> Cursor {
    Cursor::new(match row {
        Ok(event) => event.version,
        Err(unreadable) => unreadable.version,
    })
}

/// A page's events and unreadable rows, in version order.
fn merged(events: Vec<Recorded>, unreadable: Vec<Unreadable>) -> Vec<Row> {
    if unreadable.is_empty() {
        return events.into_iter().map(Ok).collect();
    }
    let mut rows: Vec<Row> = events
        .into_iter()
        .map(Ok)
        .chain(unreadable.into_iter().map(Err))
        .collect();
    rows.sort_by_key(row_cursor);
    rows
}

/// The query of a filter: repeated `stream` and `type`.
fn filter_query(filter: &Filter) -> Vec<(&'static str, String)> {
    let streams = filter.aggregate_ids().into_iter().flatten();
    let types = filter.event_types().into_iter().flatten();
    streams
        .map(|s| ("stream", s.clone()))
        .chain(types.map(|t| ("type", t.clone())))
        .collect()
}

impl EventStore for RemoteStore {
    fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send {
        let request = (|| {
            let api = self.open()?;
            crate::model::validate::check_append(expected, &events)?;
            let Some(first) = events.first() else {
                return Ok(None);
            };
            let stream = first.aggregate_id();
            // One stream: its own route; several: `POST /events`, one
            // atomic batch all the same.
            let url = if events.iter().all(|e| e.aggregate_id() == stream) {
                api.url(&["streams", stream, "events"], &[])
            } else {
                api.url(&["events"], &[])
            };
            let body = AppendRequest::new(expected, &events);
            Ok(Some(api.post::<Appended, _>("append", url, &body)))
        })();
        async move {
            match request? {
                Some(request) => Ok(request.await?.events),
                None => Ok(Vec::new()),
            }
        }
    }

    fn read(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send {
        let pages = self.global_pages(filter, after, limit);
        async move { whole(pages.await?.0) }
    }

    fn read_page_as<P: crate::Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> impl Future<Output = Result<TypedPage<P>>> + Send {
        let _ = upto;
        let pages = self.global_pages(filter, after, limit);
        async move {
            let (rows, scanned) = pages.await?;
            // Everything up to where the server read is in the page, so a
            // filtered subscription moves its position past what it left
            // out. An unreadable row is an error in its place.
            let page = TypedPage::from_rows(
                rows,
                row_cursor,
                |_| 0,
                |row| match row {
                    Ok(event) => P::from_recorded(event),
                    Err(unreadable) => Err(unreadable.into_error()),
                },
            );
            Ok(page.with_scanned(scanned))
        }
    }

    fn latest_version(&self) -> impl Future<Output = Result<Cursor>> + Send {
        let head = self.head("latest_version", &["events"]);
        async move { Ok(Cursor::new(head.await?)) }
    }

    fn stream_version(
        &self,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<u64>>> + Send {
        let checked = crate::model::validate::check_aggregate_id(aggregate_id);
        let head = self.head("stream_version", &["streams", aggregate_id]);
        async move {
            checked?;
            Ok(Some(head.await?).filter(|&v| v > 0))
        }
    }

    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(feed) = self
            .inner
            .feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            feed.stop();
        }
        let local = self.inner.local.clone();
        async move { local.close().await }
    }

    fn get(&self, id: &str) -> impl Future<Output = Result<Recorded>> + Send {
        let request = self.open().map(|api| {
            let url = api.url(&["events", "by-id", id], &[]);
            api.get::<Recorded>("get", url)
        });
        async move { request?.await }
    }

    fn read_aggregate(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Recorded>>> + Send {
        let checked = crate::model::validate::check_aggregate_id(aggregate_id);
        let segments = vec!["streams".to_owned(), aggregate_id.to_owned()];
        let pages = self.pages("read_aggregate", segments, Vec::new(), after, limit);
        async move {
            checked?;
            whole(pages.await?.0)
        }
    }

    fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<StoredSnapshot>>> + Send {
        self.inner.local.load_snapshot(aggregate_type, aggregate_id)
    }

    fn save_snapshot(&self, snapshot: StoredSnapshot) -> impl Future<Output = Result<()>> + Send {
        self.inner.local.save_snapshot(snapshot)
    }

    fn delete_snapshots(&self, aggregate_type: &str) -> impl Future<Output = Result<u64>> + Send {
        self.inner.local.delete_snapshots(aggregate_type)
    }

    fn batch_size(&self) -> usize {
        self.inner.batch_size
    }
}

impl SubscriptionSource for RemoteStore {
    fn hub(&self) -> &Hub {
        self.inner.local.hub()
    }

    fn load_checkpoint(&self, name: &str) -> impl Future<Output = Result<Option<Cursor>>> + Send {
        self.inner.local.load_checkpoint(name)
    }

    fn save_checkpoint(
        &self,
        name: &str,
        position: Cursor,
    ) -> impl Future<Output = Result<()>> + Send {
        self.inner.local.save_checkpoint(name, position)
    }

    fn acquire_lease(
        &self,
        key: &LeaseKey,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>>> + Send {
        self.inner.local.acquire_lease(key, ttl)
    }

    fn release_lease(&self, key: &LeaseKey, token: u64) -> impl Future<Output = Result<()>> + Send {
        self.inner.local.release_lease(key, token)
    }

    fn save_leased_checkpoint(
        &self,
        key: &LeaseKey,
        token: u64,
        position: Cursor,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.inner
            .local
            .save_leased_checkpoint(key, token, position)
    }

    fn live_leases(&self, prefix: &str) -> impl Future<Output = Result<Vec<LiveLease>>> + Send {
        self.inner.local.live_leases(prefix)
    }

    fn list_checkpoints(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, Cursor)>>> + Send {
        self.inner.local.list_checkpoints(prefix)
    }

    fn parked(
        &self,
        subscription: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>>> + Send {
        self.inner.local.parked(subscription)
    }

    fn skip_parked(
        &self,
        subscription: &str,
        version: u64,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.inner.local.skip_parked(subscription, version)
    }

    fn park_event(&self, event: ParkedEvent) -> impl Future<Output = Result<()>> + Send {
        self.inner.local.park_event(event)
    }

    fn set_parked(
        &self,
        subscription: &str,
        version: u64,
        status: ParkedStatus,
        error: Option<(&str, u32)>,
        only_from: Option<ParkedStatus>,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.inner
            .local
            .set_parked(subscription, version, status, error, only_from)
    }

    fn retry_delay(&self, attempt: u32) -> impl Future<Output = ()> + Send {
        feed::sleep(feed::backoff(attempt, self.inner.max_backoff))
    }

    fn subscribe(
        &self,
        filter: Filter,
        start: Start,
    ) -> impl Future<Output = Result<Subscription>> + Send {
        let store = self.clone();
        async move {
            store.open()?;
            let subscription =
                crate::store::subscription::open(store.clone(), filter, start).await?;
            // After the subscription registered with the hub: a feed that
            // saw no subscription and stopped is started again.
            store.ensure_feed();
            Ok(subscription)
        }
    }
}
