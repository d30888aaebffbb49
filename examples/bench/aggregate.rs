//! The aggregate rows on PostgreSQL: decide-and-append on a long stream
//! with and without snapshots, and what conflicts cost when eight tasks
//! decide on one aggregate, each beside its baseline of the same run.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use synckit::{Aggregate, Decide, Event, EventStore, ExpectedVersion, NewEvent, Snapshots};

use crate::pg::{self, Bench};
use crate::report::{self, Goal, Rates, Row};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(type = "counter.added")]
pub struct Added {
    #[event(aggregate_id)]
    counter: String,
    amount: u64,
}

/// A counter folded from every event, without snapshots.
#[derive(Default, Serialize, Deserialize)]
pub struct Plain {
    total: u64,
}

impl Aggregate for Plain {
    type Event = Added;
    const NAME: &'static str = "bench.plain";
    fn apply(&mut self, event: &Added) {
        self.total += event.amount;
    }
}

/// The same counter, with a snapshot every 100 events.
#[derive(Default, Serialize, Deserialize)]
pub struct Snapshotted {
    total: u64,
}

impl Aggregate for Snapshotted {
    type Event = Added;
    const NAME: &'static str = "bench.snapshotted";
    fn apply(&mut self, event: &Added) {
        self.total += event.amount;
    }
    fn snapshots() -> Option<Snapshots<Self>> {
        Some(Snapshots::every(100))
    }
}

fn add<A>(counter: &str) -> impl FnMut(&A) -> Result<Vec<Added>, String> + Send + use<A> {
    let counter = counter.to_owned();
    move |_| {
        Ok(vec![Added {
            counter: counter.clone(),
            amount: 1,
        }])
    }
}

/// `commands` decides in a row on `counter`; commands per second.
async fn decide_in_a_row<A: Aggregate<Event = Added>, S: EventStore>(
    store: &S,
    counter: &str,
    commands: u64,
) -> f64 {
    let started = Instant::now();
    for _ in 0..commands {
        store
            .decide(counter, Decide::new(), add::<A>(counter))
            .await
            .expect("decide");
    }
    commands as f64 / started.elapsed().as_secs_f64()
}

/// Decide-and-append on aggregates of 1,000 events: with snapshots every
/// 100 beside without, turn about, best of two each.
pub async fn decide_on_long_streams(bench: &Bench, commands: u64) -> Row {
    let url = bench.fresh("synckit_bench_a").await;
    let store = pg::store(&url).await;
    for counter in ["plain", "snapshotted"] {
        let events = (0..1000)
            .map(|_| {
                NewEvent::from_event(&Added {
                    counter: counter.into(),
                    amount: 1,
                })
                .expect("encode")
            })
            .collect();
        store
            .append(ExpectedVersion::NoStream, events)
            .await
            .expect("seed");
    }
    // The first snapshot is taken by the first append past 1,000.
    store
        .decide(
            "snapshotted",
            Decide::new(),
            add::<Snapshotted>("snapshotted"),
        )
        .await
        .expect("decide");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut with, mut without) = (Rates::default(), Rates::default());
    for snapshots in [true, false, false, true] {
        if snapshots {
            with.push(decide_in_a_row::<Snapshotted, _>(&store, "snapshotted", commands).await);
        } else {
            without.push(decide_in_a_row::<Plain, _>(&store, "plain", commands).await);
        }
    }
    store.close().await.expect("close");
    let (w, wo) = (with.best(), without.best());
    Row {
        measurement: format!(
            "decide-and-append on an aggregate of 1,000+ events, {commands} commands in a row"
        ),
        synckit: format!(
            "{} commands/s with a snapshot every 100 events",
            report::rate(w).trim_end_matches(" ev/s")
        ),
        baseline: format!(
            "{} commands/s without snapshots (the whole stream per load)",
            report::rate(wo).trim_end_matches(" ev/s")
        ),
        ratio: w / wo,
        goal: Goal::AtLeast(1.0),
        figures: json!({"commands": commands, "with_snapshots": w, "without": wo,
                        "rounds": {"with": with.all(), "without": without.all()}}),
    }
}

/// `tasks` tasks deciding `per_task` commands each, on one counter or on
/// one counter each; commands per second and conflicts decided again.
async fn decide_concurrently<S: EventStore>(
    store: &S,
    tasks: u64,
    per_task: u64,
    one_aggregate: bool,
    run: &str,
) -> (f64, u32) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        let counter = if one_aggregate {
            format!("{run}-shared")
        } else {
            format!("{run}-own-{task}")
        };
        handles.push(tokio::spawn(async move {
            let settings = Decide::new()
                .attempts(1000)
                .backoff(Duration::from_micros(100), Duration::from_millis(10));
            let mut retries = 0;
            for _ in 0..per_task {
                let done = store
                    .decide(&counter, settings.clone(), add::<Plain>(&counter))
                    .await
                    .expect("decide");
                retries += done.attempts - 1;
            }
            retries
        }));
    }
    let mut retries = 0;
    for handle in handles {
        retries += handle.await.expect("task");
    }
    (
        (tasks * per_task) as f64 / started.elapsed().as_secs_f64(),
        retries,
    )
}

/// 8 tasks on one aggregate beside 8 tasks on one aggregate each: what
/// the conflicts and their retries cost.
pub async fn contention(bench: &Bench, per_task: u64) -> Row {
    let url = bench.fresh("synckit_bench_a").await;
    let store = pg::store(&url).await;
    let (mut shared, mut own) = (Rates::default(), Rates::default());
    let mut retries = Vec::new();
    for (round, one) in [true, false, false, true].into_iter().enumerate() {
        let (rate, r) = decide_concurrently(&store, 8, per_task, one, &format!("r{round}")).await;
        if one {
            shared.push(rate);
            retries.push(r);
        } else {
            own.push(rate);
        }
    }
    store.close().await.expect("close");
    let (s, o) = (shared.best(), own.best());
    let total = 8 * per_task;
    Row {
        measurement: format!("decide with retry: 8 tasks × {per_task} commands on one aggregate"),
        synckit: format!(
            "{} commands/s, {} conflicts decided again per {total} commands",
            report::rate(s).trim_end_matches(" ev/s"),
            retries
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        baseline: format!(
            "{} commands/s on one aggregate per task (no conflicts)",
            report::rate(o).trim_end_matches(" ev/s")
        ),
        ratio: s / o,
        goal: Goal::Reported,
        figures: json!({"per_task": per_task, "one_aggregate": s, "own_aggregates": o, "retries": retries,
                        "rounds": {"one": shared.all(), "own": own.all()}}),
    }
}
