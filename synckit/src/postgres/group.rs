//! Group commit: appends that arrive together share a transaction.
//!
//! Every append of a store goes into its writer queue. A group starts at
//! once when nothing is committing, so an append that arrives alone waits
//! for nothing; appends that arrive during a commit wait for it, no longer,
//! and then commit together: one statement, one WAL flush, one
//! notification statement for all of them. Large appends do not wait for
//! one another (see [`LARGE_GROUPS_IN_FLIGHT`]).
//!
//! Each append keeps its own outcome. The appends of a group run in
//! arrival order, in rounds: a round is one statement holding at most one
//! append per stream, so that an append sees the ones before it on its
//! stream, as a serial execution would (two racing expectations on one
//! stream: the first wins, the second conflicts). An expectation that
//! fails writes nothing and fails nothing else. When the group's
//! transaction fails as a whole (a lost race on a unique index, a duplicate
//! id, an error), each of its appends runs again on its own, in order, so
//! that one append's error never becomes another's. The group runs in a
//! task of its own: an append whose caller goes away before its group
//! starts is left out; once started, it commits whole or not at all, and
//! the others are unaffected.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::sync::oneshot;

use super::PgStore;
use super::append::{
    Appended, Committed, Connection, NOTIFY_APPENDED_SQL, append_statement, head_range, position,
};
use super::rows::Inserted;
use crate::model::cursor::ExpectedVersion;
use crate::model::error::{Error, Result};
use crate::model::recorded::NewEvent;
use crate::sql::{Statement, TxError};

/// How many groups of one store commit at once while they are small. One:
/// the appends that arrive during a commit wait for it and then share the
/// next, which is what lifts single appends past one commit per event (a
/// second group in flight would split them into smaller groups: measured
/// with the benchmark's single-append rows).
const GROUPS_IN_FLIGHT: usize = 1;

/// How many groups commit at once when the waiting appends hold at least
/// [`LARGE_GROUP_EVENTS`] events: such appends amortize a commit on their
/// own, and waiting for one another would only serialize them (the
/// 100-event batch rows of the benchmark).
const LARGE_GROUPS_IN_FLIGHT: usize = 4;

/// See [`LARGE_GROUPS_IN_FLIGHT`].
const LARGE_GROUP_EVENTS: usize = 32;

/// What an append gets back: its events, and what became of them.
type Reply = (Vec<NewEvent>, std::result::Result<Appended, TxError>);

/// One append waiting for its group.
struct Job {
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Reply>,
}

/// A store's writer queue.
#[derive(Default)]
pub(super) struct Writer {
    state: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    /// The events of the waiting appends.
    waiting_events: usize,
    /// Groups committing now (each a task draining the queue).
    running: usize,
}

impl Writer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queue {
    /// The next group: appends in arrival order, as many as fit
    /// `max_appends` and `max_events` (the first always does). Appends
    /// whose callers left are dropped unwritten.
    fn take(&mut self, max_appends: usize, max_events: usize) -> Vec<Job> {
        let mut group: Vec<Job> = Vec::new();
        let mut events = 0;
        while let Some(job) = self.waiting.front() {
            if job.reply.is_closed() {
                self.waiting_events -= job.events.len();
                self.waiting.pop_front();
                continue;
            }
            if !group.is_empty()
                && (group.len() >= max_appends || events + job.events.len() > max_events)
            {
                break;
            }
            events += job.events.len();
            self.waiting_events -= job.events.len();
            group.extend(self.waiting.pop_front());
        }
        group
    }
}

/// Runs `append` and, right behind it on the same connection, the
/// statement that sends what it recorded (see `recorded!` in `append`):
/// both go in one round trip, each its own transaction, the notifications
/// after the commit. Should the append fail, nothing was recorded and the
/// second statement sends nothing.
async fn piped<T>(
    conn: &mut AsyncPgConnection,
    append: impl AsyncFnOnce(&mut &AsyncPgConnection) -> std::result::Result<T, TxError>,
) -> std::result::Result<T, TxError> {
    use diesel_async::RunQueryDsl;
    let shared: &AsyncPgConnection = conn;
    let (mut first, mut second) = (shared, shared);
    // Polled in this order, the append's statement is sent first.
    let (appended, notified) = futures::join!(
        append(&mut first),
        Statement::<diesel::pg::Pg>::new(NOTIFY_APPENDED_SQL).execute(&mut second)
    );
    if let Err(error) = notified {
        notify_failed(&error);
    }
    appended
}

/// Sends what this connection's appends recorded, after their commit.
async fn notify_recorded(conn: &mut AsyncPgConnection) {
    use diesel_async::RunQueryDsl;
    if let Err(error) = Statement::<diesel::pg::Pg>::new(NOTIFY_APPENDED_SQL)
        .execute(conn)
        .await
    {
        notify_failed(&error);
    }
}

fn notify_failed(error: &dyn std::fmt::Display) {
    // Recorded whatever `Config::metrics` says: this is rare, and the one
    // sign that listeners will be late.
    metrics::counter!("synckit_notify_failures_total").increment(1);
    tracing::warn!(%error,
        "committed events were not notified; listeners find them at their next idle tick");
}

/// Each append's round: one after the last round that holds any of its
/// streams, so one stream appears at most once per round and in arrival
/// order across rounds.
fn rounds(jobs: &[Job]) -> Vec<Vec<usize>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let round = job
            .events
            .iter()
            .filter_map(|e| last.get(e.aggregate_id.as_str()))
            .max()
            .map_or(0, |r| r + 1);
        for e in &job.events {
            last.insert(e.aggregate_id.as_str(), round);
        }
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        rounds[round].push(j);
    }
    rounds
}

impl PgStore {
    /// Queues an append for the next group and waits for its outcome.
    pub(super) async fn submit(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Reply> {
        self.pool()?;
        let (reply, outcome) = oneshot::channel();
        let start = {
            let mut queue = self.inner.writer.lock();
            queue.waiting_events += events.len();
            queue.waiting.push_back(Job {
                expected,
                events,
                reply,
            });
            let start = queue.running < GROUPS_IN_FLIGHT
                || (queue.running < LARGE_GROUPS_IN_FLIGHT
                    && queue.waiting_events >= LARGE_GROUP_EVENTS);
            if start {
                queue.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(tracing::Instrument::in_current_span(
                self.clone().drain_writer(),
            ));
        }
        outcome.await.map_err(|_| {
            Error::database(
                "append",
                "the group commit ended without an outcome (its task panicked); \
                 the append may or may not have been written",
            )
        })
    }

    /// Commits groups until the queue is empty.
    async fn drain_writer(self) {
        // Should a group panic, the queue still gets a task to drain it.
        struct Running {
            store: PgStore,
            finished: bool,
        }
        impl Drop for Running {
            fn drop(&mut self) {
                if self.finished {
                    return;
                }
                let mut queue = self.store.inner.writer.lock();
                queue.running -= 1;
                if !queue.waiting.is_empty()
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    queue.running += 1;
                    runtime.spawn(self.store.clone().drain_writer());
                }
            }
        }
        let mut running = Running {
            store: self,
            finished: false,
        };
        let store = running.store.clone();
        let config = &store.inner.config;
        loop {
            let group = {
                let mut queue = store.inner.writer.lock();
                let group = queue.take(config.max_group_appends, config.batch_size);
                if group.is_empty() {
                    // Under the lock: a job queued after this sees the
                    // slot free and starts a task of its own.
                    queue.running -= 1;
                    running.finished = true;
                    return;
                }
                group
            };
            store.commit_group(group).await;
            // The appends just answered are often the next ones already:
            // let their callers run and queue them, so that they commit
            // together rather than the first alone and the rest behind it.
            tokio::task::yield_now().await;
        }
    }

    /// Commits one group and replies to its appends. On a direct
    /// connection the notification statement goes right behind the
    /// append's, in the same round trip ([`piped`]); behind a transaction
    /// pooler, whose next transaction may run on another server session,
    /// the notifications go by value after the commit.
    async fn commit_group(&self, mut group: Vec<Job>) {
        let config = &self.inner.config;
        let chunk = config.batch_size;
        let pipe = !config.transaction_pooling;
        if config.metrics {
            metrics::histogram!("synckit_append_group_size").record(group.len() as f64);
        }
        // Each outcome, and whether its notifications went already.
        let outcomes: Vec<(std::result::Result<Appended, TxError>, bool)> = if group.len() == 1 {
            vec![self.append_one_job(&group[0], chunk, pipe).await]
        } else {
            let rounds = rounds(&group);
            let together = self
                .with_conn("append", async |conn| {
                    Ok(if rounds.len() == 1 {
                        // One statement: atomic without a transaction, and
                        // one round trip for the whole group.
                        if pipe {
                            piped(conn, async |conn| {
                                Self::append_rounds(conn, &group, rounds, true).await
                            })
                            .await
                        } else {
                            Self::append_rounds(conn, &group, rounds, false).await
                        }
                    } else {
                        let written = conn
                            .transaction::<_, TxError, _>(async |conn| {
                                Self::append_rounds(conn, &group, rounds, pipe).await
                            })
                            .await;
                        if pipe && written.is_ok() {
                            notify_recorded(conn).await;
                        }
                        written
                    })
                })
                .await;
            let failed = match together {
                Ok(Ok(outcomes)) => Ok(outcomes),
                Ok(Err(e)) => Err(e.into_error("append")),
                Err(e) => Err(e),
            };
            match failed {
                Ok(outcomes) => outcomes.into_iter().map(|o| (Ok(o), pipe)).collect(),
                Err(reason) => {
                    tracing::debug!(appends = group.len(), %reason, "group commit failed; each append runs alone");
                    let mut outcomes = Vec::with_capacity(group.len());
                    for job in &group {
                        outcomes.push(self.append_one_job(job, chunk, pipe).await);
                    }
                    outcomes
                }
            }
        };
        let mut committed: Vec<Committed> = Vec::new();
        for (job, (outcome, notified)) in group.drain(..).zip(outcomes) {
            if let (false, Ok(Appended::Written(positions))) = (notified, &outcome) {
                committed.extend(Committed::of(&job.events, positions));
            }
            // A caller that left gets nothing; what it wrote stays written.
            let _ = job.reply.send((job.events, outcome));
        }
        if !committed.is_empty() {
            self.notify_after_commit(committed).await;
        }
    }

    /// One append in a statement (or a transaction) of its own, and
    /// whether its notifications went: piped behind it when `pipe` and it
    /// fits one statement. A larger append records nothing (its record
    /// would grow with every chunk) and is notified by value, as behind a
    /// pooler.
    async fn append_one_job(
        &self,
        job: &Job,
        chunk: usize,
        pipe: bool,
    ) -> (std::result::Result<Appended, TxError>, bool) {
        let pipe = pipe && job.events.len() <= chunk;
        let outcome = self
            .with_conn("append", async |conn| {
                Ok(if pipe {
                    piped(conn, async |conn| {
                        Self::append_chunks(conn, job.expected, &job.events, chunk, true).await
                    })
                    .await
                } else {
                    Self::append_alone(conn, job.expected, &job.events, chunk, false).await
                })
            })
            .await
            .unwrap_or_else(|e| Err(TxError::Store(e)));
        (outcome, pipe)
    }

    /// The appends of a group, round by round, in the caller's
    /// transaction: each one's positions, or [`Appended::NotWritten`] where
    /// its expectation failed. Multi-stream appends and appends without an
    /// expectation take optimistic positions (a lost race fails the group,
    /// whose appends then run alone, under the stream locks).
    async fn append_rounds<C: Connection>(
        conn: &mut C,
        group: &[Job],
        rounds: Vec<Vec<usize>>,
        record: bool,
    ) -> std::result::Result<Vec<Appended>, TxError> {
        use diesel_async::RunQueryDsl;
        let mut outcomes: Vec<Option<Appended>> = group.iter().map(|_| None).collect();
        for round in rounds {
            let mut ordinals = Vec::new();
            let mut ranges = Vec::new();
            for &j in &round {
                let job = &group[j];
                let (job_ordinals, _) = super::append::ordinals(&job.events);
                ordinals.extend(job_ordinals);
                ranges.extend(std::iter::repeat_n(
                    head_range(job.expected),
                    job.events.len(),
                ));
            }
            let events = round.iter().flat_map(|&j| group[j].events.iter());
            let rows: Vec<Inserted> = append_statement(events, ordinals, ranges)
                .bind::<diesel::sql_types::Bool, _>(record)
                .load(&mut *conn)
                .await?;
            let mut by_id: HashMap<&str, &Inserted> =
                rows.iter().map(|r| (r.id.as_str(), r)).collect();
            for &j in &round {
                let job = &group[j];
                let found: Vec<&Inserted> = job
                    .events
                    .iter()
                    .filter_map(|e| by_id.remove(e.id.as_str()))
                    .collect();
                outcomes[j] = Some(if found.is_empty() {
                    Appended::NotWritten
                } else if found.len() == job.events.len() {
                    Appended::Written(found.into_iter().map(position).collect())
                } else {
                    // Part of an append: cannot happen, as an append's
                    // rows share one stream head and one range. Should it,
                    // the group fails (rolled back when it is a
                    // transaction) and each append runs alone, where a
                    // stored part is met as a duplicate.
                    return Err(TxError::Raced);
                });
            }
            if !by_id.is_empty() {
                return Err(TxError::Store(Error::database(
                    "append",
                    "the rows returned are not the events sent",
                )));
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Appended::NotWritten))
            .collect())
    }

    /// Sends the notifications of a group's committed events. Should that
    /// fail (the connection died right after the commit), nothing is lost:
    /// every listener wakes its subscriptions at its idle tick, and they
    /// read the table.
    async fn notify_after_commit(&self, mut committed: Vec<Committed>) {
        committed.sort_by_key(|c| c.version);
        let sent = self
            .with_conn("notify", async |conn| {
                Self::notify_committed(conn, &committed)
                    .await
                    .map_err(|e| Error::database("notify", e))
            })
            .await;
        if let Err(error) = sent {
            notify_failed(&error);
        }
    }
}
