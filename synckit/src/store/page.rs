//! Pages: what one read of a backend returns, how a long read's pages grow,
//! and the rows of the pages subscriptions share.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::Stream;
use futures::{FutureExt, ready};
use serde_json::Value;

use super::EventStore;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::model::filter::Filter;
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;

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

/// One row of a page a subscription reads: the event, or why the stored
/// row cannot be read (it names the row, so the reader can step over it).
pub(crate) type PageRow = std::result::Result<Recorded, UnreadableRow>;

/// A stored row that does not decode, as a shared read hands it to every
/// participant (an [`Error`](crate::Error) is not `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct UnreadableRow {
    pub(crate) version: u64,
    pub(crate) id: String,
    pub(crate) reason: String,
}

impl UnreadableRow {
    /// The row of a decode error; every raw decode error names its row
    /// ([`Error::UnreadableEvent`](crate::Error::UnreadableEvent)).
    pub(crate) fn of(error: crate::Error, after: Cursor) -> Self {
        match error {
            crate::Error::UnreadableEvent {
                version,
                id,
                reason,
            } => UnreadableRow {
                version,
                id,
                reason,
            },
            // Not expected from a raw read; name the position it follows.
            other => UnreadableRow {
                version: after.version() + 1,
                id: String::new(),
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn into_error(self) -> crate::Error {
        crate::Error::UnreadableEvent {
            version: self.version,
            id: self.id,
            reason: self.reason,
        }
    }
}

/// A page as subscriptions read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedPage {
    pub(crate) rows: Vec<PageRow>,
    /// The fence stopped the read below a version already taken by a
    /// writer that had not finished: the page may be short because of a
    /// commit on any stream, so its reader wants to be woken by any commit.
    pub(crate) held_back: bool,
    /// What the rows hold in memory, roughly (0: unknown).
    pub(crate) bytes: usize,
    /// See [`TypedPage::with_scanned`].
    pub(crate) scanned: Option<Cursor>,
}

/// The size of the page after a full one of `len` events and `bytes`, read
/// with `limit` by a reader of `batch`-sized pages: double, up to
/// [`READ_PAGE_BYTES`] at that page's bytes per event and
/// [`MAX_PAGE_GROWTH`] batch sizes; never below the batch size. Long loads
/// and catching-up subscriptions grow alike.
pub(crate) fn grown(batch: usize, limit: usize, len: usize, bytes: usize) -> usize {
    if bytes == 0 || len == 0 {
        return limit;
    }
    let per_event = (bytes / len).max(1);
    let ceiling = (READ_PAGE_BYTES / per_event)
        .min(batch.saturating_mul(MAX_PAGE_GROWTH))
        .max(batch);
    limit.saturating_mul(2).min(ceiling)
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
    /// [`SharedPage::held_back`](SharedPage)).
    held_back: bool,
    /// See [`TypedPage::with_scanned`].
    scanned: Option<Cursor>,
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
            scanned: None,
            events: Box::new(rows.into_iter().map(decode)),
        }
    }

    /// The page, read over every version up to `scanned`: when it holds
    /// fewer events than it was asked for, every event up to `scanned` that
    /// passes the read's filter is in it (or before its start). A filtered
    /// subscription moves its position there, matching or not, so that its
    /// checkpoint reaches the head after events it does not take.
    pub(crate) fn with_scanned(mut self, scanned: Cursor) -> Self {
        self.scanned = Some(scanned);
        self
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
    pub(crate) fn into_shared(self, after: Cursor) -> SharedPage {
        SharedPage {
            rows: self
                .events
                .map(|row| row.map_err(|e| UnreadableRow::of(e, after)))
                .collect(),
            held_back: self.held_back,
            bytes: self.bytes,
            scanned: self.scanned,
        }
    }
}

/// The pages of [`EventStore::read_stream_as`], one read ahead.
pub(crate) struct Pages<S, P> {
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
    pub(crate) fn new(store: S, filter: Filter, after: Cursor) -> Self {
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

    /// The size of the page after a full one of `len` events and `bytes`.
    fn grown(&self, len: usize, bytes: usize) -> usize {
        grown(self.batch, self.limit, len, bytes)
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
