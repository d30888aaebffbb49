//! Reads: the fence that keeps them gap-free, pages read in a task of
//! their own, and the heads a subscription starts from.

use std::sync::atomic::Ordering;

use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::PgStore;
use super::rows::{EventRow, FenceText};
use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::payload::Payload;
use crate::model::validate;
use crate::sql::query::{self, Upto};
use crate::sql::{Number, Statement, db, int, rows};
use crate::store::TypedPage;

/// The highest fence this store has seen. A writer reads the sequence and
/// then takes its pending mark, so others may commit above the head it read
/// before the mark shows: a fence read meanwhile is lower than one read
/// before (still a valid fence: everything below it has finished). Raising
/// every fence to the highest seen keeps `latest_version` and the reads'
/// fences monotonic: what has finished stays finished.
#[derive(Default)]
pub(super) struct FenceFloor(std::sync::atomic::AtomicU64);

impl FenceFloor {
    /// `fence`, or the highest fence seen when that is higher.
    pub(super) fn raise(&self, fence: u64) -> u64 {
        self.0.fetch_max(fence, Ordering::AcqRel).max(fence)
    }
}

/// A spawned task that is aborted when the future awaiting it is dropped,
/// so a caller that gives up on a read leaves no task (and no pooled
/// connection) behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The highest version below which no transaction is pending (see the
/// migration's comment on `synckit_fence`). Must run in its own statement,
/// before the read it bounds.
pub(super) async fn fence(conn: &mut AsyncPgConnection, operation: &'static str) -> Result<u64> {
    let rows: Vec<Number> = Statement::new("SELECT synckit_fence() AS n")
        .load(&mut *conn)
        .await
        .map_err(db(operation))?;
    Ok(Number::first(rows).map_or(0, int::nonnegative))
}

/// The rows of one read and the bounds it was read under.
pub(super) struct RowsRead {
    pub(super) rows: Vec<EventRow>,
    /// A fence the next page of the same read may reuse (raised to the
    /// highest this store has seen: see [`FenceFloor`]).
    fence: Option<Cursor>,
    /// The bound the read itself went up to: the fence its own first
    /// statement stored, or the one it reused (see
    /// [`TypedPage::with_scanned`]).
    scanned: Option<Cursor>,
    held_back: bool,
}

impl RowsRead {
    /// The rows as a page decoded into `P` as it is taken.
    fn into_page<P: Payload>(self) -> TypedPage<P> {
        let mut page = rows::page(self.rows);
        if let Some(fence) = self.fence {
            page = page.with_fence(fence, self.held_back);
        }
        if let Some(scanned) = self.scanned {
            page = page.with_scanned(scanned);
        }
        page
    }
}

/// The fence the first statement of a read's round trip stored (none: 0,
/// which reads nothing).
const SESSION_FENCE: &str =
    "coalesce(nullif(current_setting('synckit.fence', true), '')::bigint, 0)";

impl PgStore {
    /// The rows of a read: up to `limit` events after `after` that pass
    /// `filter`, up to the fence.
    pub(super) async fn read_rows(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> Result<RowsRead> {
        validate::check_filter(filter)?;
        let filter = filter.clone();
        let pooled = self.inner.config.transaction_pooling;
        let rows = self
            .with_conn("read", async |conn| {
                if limit == 0 {
                    return Ok(RowsRead {
                        rows: Vec::new(),
                        fence: upto,
                        scanned: None,
                        held_back: false,
                    });
                }
                // One round trip, two statements: the first stores the fence
                // in a session setting, the second reads up to it with a
                // snapshot taken after it (Read Committed: one snapshot per
                // statement). Should they ever run in the other order, the
                // read sees an older fence (still a valid one) or none
                // (reads nothing), never a wrong one. A fence an earlier
                // page took (`upto`) is still valid: reading up to it again
                // saves the first statement.
                let query = query::events_after::<Pg>(
                    &filter,
                    after,
                    match upto {
                        Some(fence) => Upto::Version(fence),
                        None => Upto::Sql(SESSION_FENCE),
                    },
                    limit,
                );
                // Session-wide, or (behind a transaction pooler, where the
                // read runs in a transaction of its own) local to it.
                let set_fence = Statement::new(if pooled {
                    "SELECT set_config('synckit.fence', synckit_fence()::text, true) AS fence, \
                     (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
                        FROM events_version_seq) AS head"
                } else {
                    "SELECT set_config('synckit.fence', synckit_fence()::text, false) AS fence, \
                     (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
                        FROM events_version_seq) AS head"
                });
                if upto.is_some() {
                    let rows = query.load::<EventRow>(conn).await.map_err(db("read"))?;
                    return Ok(RowsRead {
                        rows,
                        fence: upto,
                        scanned: upto,
                        held_back: false,
                    });
                }
                let conn: &AsyncPgConnection = conn;
                let (fence, rows): (Vec<FenceText>, Vec<EventRow>) = futures::try_join!(
                    set_fence.load::<FenceText>(&mut &*conn),
                    query.load::<EventRow>(&mut &*conn)
                )
                .map_err(db("read"))?;
                let (fence, head) = fence.into_iter().next().map_or((None, None), |f| {
                    (f.fence.and_then(|t| t.parse::<u64>().ok()), f.head)
                });
                // The fence is below a version a writer has taken: the read
                // may be short until that writer finishes.
                let held_back = matches!((fence, head), (Some(f), Some(h)) if int::to_sql(f) < h);
                Ok(RowsRead {
                    rows,
                    fence: fence.map(|f| Cursor::new(self.inner.fence_floor.raise(f))),
                    // The fence as stored, not raised: a higher one seen
                    // elsewhere may cover commits this read's snapshot
                    // predates. The two statements run in the order sent
                    // (diesel-async sends each from its first poll, in
                    // join order, on one connection).
                    scanned: fence.map(Cursor::new),
                    held_back,
                })
            })
            .await?;
        if self.inner.config.metrics {
            metrics::counter!("synckit_events_read_total").increment(int::len(rows.rows.len()));
        }
        Ok(rows)
    }

    /// A page read in a task of its own (see the comment inside).
    pub(super) async fn read_page_spawned<P: Payload>(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        upto: Option<Cursor>,
    ) -> Result<TypedPage<P>> {
        // A task of its own reads the page off the socket as fast as the
        // server sends it, whatever the caller is doing meanwhile (the
        // stream reads a page ahead while its consumer goes through the
        // last one; a subscription may not be polled at all), and gives
        // its connection back when done; polled only by the consumer, the
        // read made the server stall and wake up again many times per page.
        let store = self.clone();
        let filter = filter.clone();
        let read = async move { store.read_rows(&filter, after, limit, upto).await };
        let read = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(read)))
            .await
            .map_err(|e| Error::database("read", e))??;
        Ok(read.into_page())
    }

    /// The fence now, never lower than one this store saw before.
    pub(super) async fn latest_fence(&self) -> Result<Cursor> {
        let fence = self
            .with_conn("latest_version", async |conn| {
                fence(conn, "latest_version").await
            })
            .await?;
        Ok(Cursor::new(self.inner.fence_floor.raise(fence)))
    }

    /// The `stream_version` of an aggregate's last event.
    pub(super) async fn stream_head_of(&self, aggregate_id: &str) -> Result<Option<u64>> {
        validate::check_aggregate_id(aggregate_id)?;
        let aggregate_id = aggregate_id.to_owned();
        self.with_conn("stream_version", async |conn| {
            PgStore::stream_head(conn, &aggregate_id)
                .await
                .map_err(db("stream_version"))
        })
        .await
    }

    /// The fence, and the versions above it that had committed: while a
    /// writer below them is pending, the fence lags behind them, and a
    /// subscription from now must not deliver what committed before it.
    pub(super) async fn fence_and_committed_above(&self) -> Result<(Cursor, Vec<u64>)> {
        let (fence, committed) = self
            .with_conn("subscribe", async |conn| {
                let fence = fence(conn, "subscribe").await?;
                // A later statement: its snapshot sees every commit up to
                // now, above the fence read before it.
                let rows: Vec<Number> = Statement::new(
                    "SELECT version AS n FROM events WHERE version > $1 ORDER BY version",
                )
                .bind::<BigInt, _>(int::to_sql(fence))
                .load(&mut *conn)
                .await
                .map_err(db("subscribe"))?;
                Ok((fence, rows))
            })
            .await?;
        let fence = self.inner.fence_floor.raise(fence);
        let committed = committed
            .into_iter()
            .filter_map(|r| r.n.map(int::nonnegative))
            .filter(|v| *v > fence)
            .collect();
        Ok((Cursor::new(fence), committed))
    }
}
