//! Consumer groups on PostgreSQL: a group of 1, 2 and 4 members reading
//! the same events beside one plain durable subscription, and how long a
//! group takes to hand a dead member's partitions (SIGKILL) and a stopped
//! member's partitions (Ctrl-C) to the member left.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit::{EventStore, Filter, Recorded, Start, SubscriptionSource};

use crate::pg::{self, Bench};
use crate::report::{self, Goal, Rates, Row};

/// Partitions of every group here.
const PARTITIONS: u32 = 8;
/// The lease time to live of the rebalance rows (the bound a dead member's
/// partitions wait for: nothing can take them before it).
const TTL: Duration = Duration::from_secs(2);

/// Events per second of one consumer reading `events` events from the
/// beginning with a handler that does nothing, committing after each
/// event as `run` does: a plain durable subscription (`members` = 0), or
/// a group of `members` members, each on a store of its own (as in
/// separate processes).
async fn consume(url: &str, name: &str, members: usize, events: u64) -> f64 {
    let started = Instant::now();
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    let mut progresses = Vec::new();
    for _ in 0..members.max(1) {
        let store = pg::store(url).await;
        let start = match members {
            0 => Start::checkpoint(name),
            _ => Start::group(name, PARTITIONS),
        };
        let subscription = store
            .subscribe(Filter::all(), start)
            .await
            .expect("subscribe");
        progresses.push(subscription.progress());
        runs.push(tokio::spawn(
            subscription.run(|_: Recorded| async { Ok::<_, Infallible>(()) }),
        ));
        stores.push(store);
    }
    if members == 0 {
        progresses[0].wait_for(events).await.expect("caught up");
    } else {
        // Done when every partition's checkpoint is at the head.
        loop {
            let groups = stores[0].groups().await.expect("groups");
            let group = groups.iter().find(|g| g.name == name);
            if group.is_some_and(|g| {
                g.parts.len() == PARTITIONS as usize
                    && g.parts.iter().all(|p| p.position >= Some(events))
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    for store in &stores {
        store.close().await.expect("close");
    }
    for run in runs {
        run.await.expect("join").expect("run");
    }
    rate
}

/// Group reads with 1, 2 and 4 members against one plain durable
/// subscription, in alternating orders.
pub async fn throughput(bench: &Bench, events: u64) -> Vec<Row> {
    let url = bench.fresh("synckit_bench_a").await;
    pg::seed(&url, events).await;
    let sizes = [0usize, 1, 2, 4];
    let mut rates: Vec<Rates> = sizes.iter().map(|_| Rates::default()).collect();
    let mut round = 0;
    for forward in [true, false] {
        let order: Vec<usize> = if forward {
            (0..sizes.len()).collect()
        } else {
            (0..sizes.len()).rev().collect()
        };
        for i in order {
            round += 1;
            // A name of its own each time: every consumer reads from the
            // beginning.
            let name = format!("bench-{round}");
            rates[i].push(consume(&url, &name, sizes[i], events).await);
        }
    }
    let plain = rates[0].best();
    sizes[1..]
        .iter()
        .zip(&rates[1..])
        .map(|(members, r)| Row {
            measurement: format!(
                "consumer group, {members} member{}, {PARTITIONS} partitions, {} events (commit per event)",
                if *members == 1 { "" } else { "s" },
                pg::thousands(events)
            ),
            synckit: report::rate(r.best()),
            baseline: format!("{} (one plain durable subscription)", report::rate(plain)),
            ratio: r.best() / plain,
            goal: Goal::Reported,
            figures: json!({"events": events, "members": members, "partitions": PARTITIONS,
                            "group": r.best(), "plain": plain,
                            "rounds": {"group": r.all(), "plain": rates[0].all()}}),
        })
        .collect()
}

/// A member process for the rebalance rows (`--probe group-member <url>
/// <ttl ms>`): joins group `rebalance`, handles everything with a handler
/// that does nothing, and on Ctrl-C closes its store (its partitions given
/// back) and exits.
pub async fn member_process(url: &str, ttl: Duration) {
    let store = pg::store(url).await;
    let subscription = store
        .subscribe(Filter::all(), Start::group("rebalance", PARTITIONS))
        .await
        .expect("subscribe")
        .with_lease_ttl(ttl);
    let run = tokio::spawn(subscription.run(|_: Recorded| async { Ok::<_, Infallible>(()) }));
    let _ = tokio::signal::ctrl_c().await;
    store.close().await.expect("close");
    let _ = run.await;
}

/// The owners of group `rebalance`'s partitions, and its live members.
async fn owners<S: SubscriptionSource>(store: &S) -> (Vec<Option<String>>, BTreeSet<String>) {
    let groups = store.groups().await.expect("groups");
    match groups.iter().find(|g| g.name == "rebalance") {
        Some(g) => (
            g.parts.iter().map(|p| p.owner.clone()).collect(),
            g.members.iter().map(|m| m.id.clone()).collect(),
        ),
        None => (Vec::new(), BTreeSet::new()),
    }
}

/// Polls until `done` holds of the owners and members, for at most 30 s.
async fn until<S: SubscriptionSource>(
    store: &S,
    what: &str,
    done: impl Fn(&[Option<String>], &BTreeSet<String>) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (parts, members) = owners(store).await;
        if done(&parts, &members) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One member in this process and one in a child process; the child is
/// killed (`kill`: SIGKILL) or stopped (`!kill`: SIGINT, a clean
/// shutdown). Returns the time from the signal until the member left owns
/// every partition.
async fn handover(url: &str, kill: bool) -> Duration {
    let store = pg::store(url).await;
    let subscription = store
        .subscribe(Filter::all(), Start::group("rebalance", PARTITIONS))
        .await
        .expect("subscribe")
        .with_lease_ttl(TTL);
    let run = tokio::spawn(subscription.run(|_: Recorded| async { Ok::<_, Infallible>(()) }));
    until(&store, "the first member", |parts, members| {
        members.len() == 1 && parts.iter().all(Option::is_some)
    })
    .await;
    let (_, alone) = owners(&store).await;
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("the bench"))
        .args(["--probe", "group-member", url])
        .arg(TTL.as_millis().to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("start the member process");
    let half = PARTITIONS as usize / 2;
    until(&store, "two members with half each", |parts, members| {
        members.len() == 2
            && parts.iter().all(Option::is_some)
            && parts
                .iter()
                .filter(|o| alone.contains(o.as_deref().unwrap_or("")))
                .count()
                == half
    })
    .await;
    let signalled = Instant::now();
    if kill {
        child.start_kill().expect("SIGKILL");
    } else {
        let pid = child.id().expect("the child's pid").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT");
        assert!(sent.success(), "kill -INT {pid}");
    }
    let _ = child.wait().await;
    let done = until(&store, "the member left owning everything", |parts, _| {
        parts.len() == PARTITIONS as usize
            && parts
                .iter()
                .all(|o| o.as_deref().is_some_and(|o| alone.contains(o)))
    })
    .await;
    store.close().await.expect("close");
    let _ = run.await;
    done - signalled
}

/// The rebalance rows: the time to take a killed member's partitions
/// against the lease time to live (the earliest they can be taken), and
/// a clean shutdown's handover against the same.
pub async fn rebalance(bench: &Bench) -> Vec<Row> {
    let url = bench.fresh("synckit_bench_a").await;
    let (mut killed, mut stopped) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        killed.push(handover(&url, true).await);
        stopped.push(handover(&url, false).await);
    }
    let ttl_ms = TTL.as_secs_f64() * 1e3;
    let row = |what: &str, times: &[Duration], goal: Goal| {
        // The median of three.
        let mut sorted = times.to_vec();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        Row {
            measurement: format!(
                "consumer group rebalance, 2 members, {PARTITIONS} partitions: {what}"
            ),
            synckit: report::ms(median),
            baseline: format!("{} (the lease time to live)", report::ms(TTL)),
            ratio: median.as_secs_f64() * 1e3 / ttl_ms,
            goal,
            figures: json!({"ttl_ms": ttl_ms,
                            "rounds_ms": times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<_>>()}),
        }
    };
    vec![
        // Taken once the lease expires, at the survivor's next step (every
        // third of the time to live).
        row(
            "a member killed (SIGKILL), until the other owns its partitions",
            &killed,
            Goal::AtMost(1.5),
        ),
        // Given back at once; taken at the survivor's next step.
        row(
            "a member stopped (Ctrl-C), until the other owns its partitions",
            &stopped,
            Goal::AtMost(0.5),
        ),
    ]
}
