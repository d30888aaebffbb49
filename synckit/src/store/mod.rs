//! The store traits every backend implements, and what is written once on
//! top of them: paging, subscriptions, shared reads, the in-memory store
//! and the spawned handlers.

#[cfg(feature = "runtime")]
pub(crate) mod handler;
pub mod hub;
pub(crate) mod memory;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod report;
pub(crate) mod subscription;

use std::future::Future;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use futures::{FutureExt, ready};

use serde_json::Value;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::event::Event;
use crate::model::filter::{Filter, Start};
use crate::model::payload::Payload;
use crate::model::recorded::{NewEvent, Recorded};
use crate::store::hub::Hub;
use crate::store::subscription::Subscription;

/// Page size of loads and catch-up reads when a backend does not say.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 1000;

/// How large the pages of a long read grow ([`EventStore::read_stream`]):
/// about this many bytes of rows, and never more than [`MAX_PAGE_GROWTH`]
/// times the batch size.
///
/// Each page costs a round trip and a wait: the server idles between the
/// last row of one page and the request for the next. Pages of 1,000
/// events of ~200 bytes spend a sixth of a bulk load in that wait; pages
/// of a few thousand make it small (measured by the load row of
/// `cargo run --release --example bench`).
pub(crate) const READ_PAGE_BYTES: usize = 2 << 20;

/// The most a page of a long read grows to, in batch sizes.
pub(crate) const MAX_PAGE_GROWTH: usize = 16;

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

/// One page of a typed read: how many events it holds, the cursor of the
/// last, and the events, decoded as they are taken (so that the next page
/// can be requested before this one is decoded).
#[doc(hidden)]
pub struct TypedPage<P> {
    len: usize,
    /// What the rows hold in memory, roughly (0: unknown).
    bytes: usize,
    last: Option<Cursor>,
    fence: Option<Cursor>,
    /// The fence stopped the read below a version a writer has taken (see
    /// [`SharedPage::held_back`](crate::store::hub::SharedPage)).
    held_back: bool,
    events: Box<dyn Iterator<Item = Result<Recorded<P>>> + Send>,
}

impl<P> TypedPage<P> {
    /// The page of `rows`, each at `cursor`, holding about `bytes` in
    /// memory, and turned into an event by `decode` when it is taken.
    pub(crate) fn from_rows<R: Send + 'static>(
        rows: Vec<R>,
        cursor: impl Fn(&R) -> Cursor,
        bytes: impl Fn(&R) -> usize,
        decode: impl FnMut(R) -> Result<Recorded<P>> + Send + 'static,
    ) -> Self {
        TypedPage {
            len: rows.len(),
            bytes: rows.iter().map(bytes).sum(),
            last: rows.last().map(cursor),
            fence: None,
            held_back: false,
            events: Box::new(rows.into_iter().map(decode)),
        }
    }

    /// The page, read up to `fence`: the next page of the same read may
    /// be read up to it again.
    #[cfg(feature = "postgres")]
    pub(crate) fn with_fence(mut self, fence: Cursor, held_back: bool) -> Self {
        self.fence = Some(fence);
        self.held_back = held_back;
        self
    }
}

impl TypedPage<Value> {
    /// The page as a subscription reads it: each row an event or the
    /// error that names it.
    pub(crate) fn into_shared(self, after: Cursor) -> crate::store::hub::SharedPage {
        crate::store::hub::SharedPage {
            rows: self
                .events
                .map(|row| row.map_err(|e| crate::store::hub::UnreadableRow::of(e, after)))
                .collect(),
            held_back: self.held_back,
        }
    }
}

/// The pages of [`EventStore::read_stream_as`], one read ahead.
struct Pages<S, P> {
    store: S,
    filter: Filter,
    /// The batch size: the first page, and the least any page holds.
    batch: usize,
    /// The size of the page being read.
    limit: usize,
    current: Box<dyn Iterator<Item = Result<Recorded<P>>> + Send>,
    /// The page being read, and its result once in.
    next: Option<BoxFuture<'static, Result<TypedPage<P>>>>,
    arrived: Option<Result<TypedPage<P>>>,
    /// The fence the page being read reuses, if it reuses one.
    reused: Option<Cursor>,
    /// Where the last page handed out ended.
    position: Cursor,
}

impl<S: EventStore, P: Payload> Pages<S, P> {
    fn new(store: S, filter: Filter, after: Cursor) -> Self {
        let batch = store.batch_size().max(1);
        let mut pages = Pages {
            store,
            filter,
            batch,
            limit: batch,
            current: Box::new(std::iter::empty()),
            next: None,
            arrived: None,
            reused: None,
            position: after,
        };
        pages.request(after, None);
        pages
    }

    /// The size of the page after a full one of `len` events and `bytes`:
    /// double, up to [`READ_PAGE_BYTES`] at that page's bytes per event and
    /// 16 batch sizes; never below the batch size.
    fn grown(&self, len: usize, bytes: usize) -> usize {
        if bytes == 0 || len == 0 {
            return self.limit;
        }
        let per_event = (bytes / len).max(1);
        let ceiling = (READ_PAGE_BYTES / per_event)
            .min(self.batch.saturating_mul(MAX_PAGE_GROWTH))
            .max(self.batch);
        self.limit.saturating_mul(2).min(ceiling)
    }

    /// Requests the page after `after`, up to `upto` (a fence an earlier
    /// page was read under) or up to a new fence.
    fn request(&mut self, after: Cursor, upto: Option<Cursor>) {
        let store = self.store.clone();
        let filter = self.filter.clone();
        let limit = self.limit;
        self.reused = upto;
        self.next =
            Some(async move { store.read_page_as::<P>(&filter, after, limit, upto).await }.boxed());
    }

    /// Drives the page being read; keeps its result when it arrives.
    fn poll_next_page(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(read) = &mut self.next {
            let page = ready!(read.poll_unpin(cx));
            self.next = None;
            self.arrived = Some(page);
        }
        Poll::Ready(())
    }
}

// Neither the store handle nor the events are pinned in place.
impl<S, P> Unpin for Pages<S, P> {}

impl<S: EventStore, P: Payload> Stream for Pages<S, P> {
    type Item = Result<Recorded<P>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(event) = this.current.next() {
            // Hand out this page while the next one is read.
            let _ = this.poll_next_page(cx);
            return Poll::Ready(Some(event));
        }
        ready!(this.poll_next_page(cx));
        match this.arrived.take() {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            Some(Ok(page)) => {
                let reused = this.reused.take();
                if let Some(last) = page.last {
                    this.position = last;
                }
                if page.len >= this.limit {
                    // More may follow before the fence: read on under it
                    // (no new fence per page), in a larger page.
                    this.limit = this.grown(page.len, page.bytes);
                    this.request(this.position, page.fence.or(reused));
                } else if reused.is_some() {
                    // The end of a fence taken earlier: the head may have
                    // moved since, so read on under a new one. The read
                    // ends at a page short under a fence of its own.
                    this.request(this.position, None);
                }
                if this.next.is_some() {
                    // Sends the request now rather than at the next poll.
                    let _ = this.poll_next_page(cx);
                }
                this.current = page.events;
                match this.current.next() {
                    Some(event) => Poll::Ready(Some(event)),
                    // An empty page under an older fence: go on with
                    // the page just requested (in flight, or in already).
                    None if this.next.is_some() || this.arrived.is_some() => {
                        Pin::new(this).poll_next(cx)
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn pages(batch: usize) -> Pages<MemoryStore, Value> {
        Pages::new(
            MemoryStore::with_batch_size(batch),
            Filter::all(),
            Cursor::START,
        )
    }

    /// Grows each full page by `bytes_per_event` until it stops growing;
    /// the sizes it went through.
    fn growth(batch: usize, bytes_per_event: usize) -> Vec<usize> {
        let mut pages = pages(batch);
        let mut sizes = vec![pages.limit];
        loop {
            let next = pages.grown(pages.limit, pages.limit * bytes_per_event);
            if next == pages.limit {
                return sizes;
            }
            pages.limit = next;
            sizes.push(next);
        }
    }

    #[test]
    fn pages_of_a_long_read_double_up_to_the_byte_budget() {
        // ~400-byte events: 2 MiB is 5,242 of them.
        assert_eq!(growth(1000, 400), [1000, 2000, 4000, 5242]);
        // Tiny events stop at MAX_PAGE_GROWTH batch sizes.
        assert_eq!(growth(1000, 10).last(), Some(&(1000 * MAX_PAGE_GROWTH)));
        // Events larger than the budget allows never go below the batch.
        assert_eq!(growth(1000, 100_000), [1000]);
        assert_eq!(growth(10, 1_000_000), [10]);
        // Pages of unknown size keep the batch size.
        assert_eq!(pages(1000).grown(1000, 0), 1000);
    }
}
