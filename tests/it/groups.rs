//! Consumer groups: members share one subscription by partition; each
//! aggregate's events go to one member, in order; a member that leaves
//! hands its partitions over at once, one that joins gets its share, one
//! that dies is replaced when its leases expire, and one paused past its
//! leases can never commit again. The suite check runs on every backend;
//! the process checks run real OS processes (this test binary, re-run as
//! a member) killed with SIGKILL and paused with SIGSTOP, on PostgreSQL
//! and on a SQLite file.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use synckit::{
    Error, EventStore, ExpectedVersion, Filter, Group, NewEvent, Recorded, Start,
    SubscriptionSource,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

pub(crate) async fn within<F: std::future::Future>(
    what: &str,
    seconds: u64,
    future: F,
) -> F::Output {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {seconds} s"))
}

/// Polls `check` every 20 ms until it holds, for at most `seconds`.
pub(crate) async fn until<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, seconds, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The partitions each live member of `group` owns, by member.
pub(crate) async fn shares<S: SubscriptionSource>(store: &S, group: &str) -> Vec<Vec<u32>> {
    let groups = store.groups().await.unwrap();
    let mut shares: Vec<Vec<u32>> = groups
        .iter()
        .filter(|g| g.name == group)
        .flat_map(|g| g.members.iter().map(|m| m.partitions.clone()))
        .collect();
    shares.sort();
    shares
}

/// Whether the members own every partition, `per_member` or one fewer
/// each, with `members` members.
pub(crate) fn balanced(shares: &[Vec<u32>], members: usize, partitions: u32) -> bool {
    let total: usize = shares.iter().map(Vec::len).sum();
    let most = (partitions as usize).div_ceil(members.max(1));
    shares.len() == members
        && total == partitions as usize
        && shares
            .iter()
            .all(|s| s.len() + 1 >= most && s.len() <= most)
}

type Handled = Arc<Mutex<Vec<(usize, Recorded)>>>;

async fn join<S: SubscriptionSource>(
    store: &S,
    member: usize,
    handled: &Handled,
) -> tokio::task::JoinHandle<synckit::Result<()>> {
    let subscription = store
        .subscribe(Filter::all(), Start::group("projector", 6))
        .await
        .unwrap()
        .with_lease_ttl(Duration::from_millis(900));
    let handled = handled.clone();
    tokio::spawn(subscription.run(move |event: Recorded| {
        handled.lock().unwrap().push((member, event));
        async { Ok::<_, std::convert::Infallible>(()) }
    }))
}

/// Appends `count` events spread over 30 aggregates: the last version.
async fn append_spread<S: EventStore>(store: &S, count: usize) -> u64 {
    let mut last = 0;
    for chunk in 0..count / 10 {
        let events = (0..10)
            .map(|n| {
                let k = chunk * 10 + n;
                NewEvent::new(format!("agg-{}", k % 30), "Tick", json!({ "k": k }))
            })
            .collect();
        let written = store.append(ExpectedVersion::Any, events).await.unwrap();
        last = written.last().unwrap().version;
    }
    last
}

/// Every version from `from` to `to` handled exactly once, each
/// aggregate's by one member in stream order; the members that handled.
fn check_once(handled: &[(usize, Recorded)], from: u64, to: u64) -> Vec<usize> {
    let window: Vec<&(usize, Recorded)> = handled
        .iter()
        .filter(|(_, e)| (from..=to).contains(&e.version))
        .collect();
    let mut versions: Vec<u64> = window.iter().map(|(_, e)| e.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (from..=to).collect::<Vec<_>>(), "each event once");
    let mut by_aggregate: HashMap<&str, (usize, u64)> = HashMap::new();
    for (member, event) in &window {
        let seen = by_aggregate
            .entry(event.aggregate_id.as_str())
            .or_insert((*member, 0));
        assert_eq!(
            seen.0, *member,
            "{} went to two members",
            event.aggregate_id
        );
        assert!(
            event.stream_version > seen.1,
            "{} out of order",
            event.aggregate_id
        );
        seen.1 = event.stream_version;
    }
    let mut members: Vec<usize> = window.iter().map(|(m, _)| *m).collect();
    members.sort_unstable();
    members.dedup();
    members
}

/// Three members of one group on one store divide its six partitions;
/// each event is handled once, each aggregate's by one member in order.
/// One leaves: its partitions pass to the others at once. One joins: it
/// gets its share within a lease period (900 ms; the check allows two).
pub async fn a_group_divides_its_partitions_and_rebalances_as_members_come_and_go<
    S: SubscriptionSource,
>(
    store: S,
) {
    let handled: Handled = Arc::default();
    let mut members = Vec::new();
    for member in 0..3 {
        members.push(join(&store, member, &handled).await);
    }
    until("three members sharing six partitions", 20, || async {
        balanced(&shares(&store, "projector").await, 3, 6)
    })
    .await;
    let head = append_spread(&store, 300).await;
    until("every event handled", 20, || async {
        handled.lock().unwrap().len() >= head as usize
    })
    .await;
    let all = check_once(&handled.lock().unwrap(), 1, head);
    assert_eq!(all, vec![0, 1, 2], "every member handled its share");

    // Member 0 stops: its partitions pass to the two others at once.
    let leaving = members.remove(0);
    leaving.abort();
    let _ = leaving.await;
    until("two members sharing six partitions", 2, || async {
        balanced(&shares(&store, "projector").await, 2, 6)
    })
    .await;
    let from = head + 1;
    let head = append_spread(&store, 60).await;
    until("every event handled", 20, || async {
        handled
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.version >= from)
            .count()
            >= (head - from + 1) as usize
    })
    .await;
    assert_eq!(check_once(&handled.lock().unwrap(), from, head), vec![1, 2]);

    // A new member joins: within two lease periods it has its share.
    let joined = tokio::time::Instant::now();
    members.push(join(&store, 3, &handled).await);
    until("a joining member's share", 20, || async {
        balanced(&shares(&store, "projector").await, 3, 6)
    })
    .await;
    let took = joined.elapsed();
    assert!(took < Duration::from_millis(1800), "rebalanced in {took:?}");
    let from = head + 1;
    let head = append_spread(&store, 60).await;
    until("every event handled", 20, || async {
        handled
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.version >= from)
            .count()
            >= (head - from + 1) as usize
    })
    .await;
    let last = check_once(&handled.lock().unwrap(), from, head);
    assert!(
        last.contains(&3),
        "the new member handles its share: {last:?}"
    );
    for member in members {
        member.abort();
    }
}

/// A member started with another partition count than the live members'
/// is refused with an error naming the group; bad definitions fail at
/// once.
pub async fn a_member_with_another_partition_count_is_refused<S: SubscriptionSource>(store: S) {
    let mut first = store
        .subscribe(Filter::all(), Start::group("counted", 4))
        .await
        .unwrap();
    let mut second = store
        .subscribe(Filter::all(), Start::group("counted", 5))
        .await
        .unwrap();
    // The first joins (and catches up on an empty store).
    let polled = tokio::time::timeout(Duration::from_millis(300), first.next()).await;
    assert!(polled.is_err(), "nothing to deliver: {polled:?}");
    assert_eq!(first.partitions(), vec![0, 1, 2, 3]);
    let refused = within("the refusal", 20, second.next()).await.unwrap();
    match refused {
        Err(Error::InvalidInput { reason, .. }) => {
            assert!(reason.contains("counted has 4 partitions"), "{reason}")
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    assert!(within("the end", 20, second.next()).await.is_none());
    for bad in [Group::new("", 4), Group::new("a:b", 4), Group::new("ok", 0)] {
        let err = store
            .subscribe(Filter::all(), Start::Group(bad.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{bad:?}: {err}");
    }
    let reserved = store
        .subscribe(Filter::all(), Start::checkpoint("synckit.group:x:0"))
        .await
        .unwrap_err();
    assert!(matches!(reserved, Error::InvalidInput { .. }), "{reserved}");
}

// ---------------------------------------------------------------------
// Real processes.

/// A member of a group test, run by the parent as its own process: it
/// follows group `SYNCKIT_GROUP_NAME` (`SYNCKIT_GROUP_PARTITIONS`
/// partitions, leases of `SYNCKIT_GROUP_TTL_MS`), prints `member: event V
/// AGGREGATE STREAM_VERSION` for each event and `member: commit V
/// ok|lost` after committing it; before committing the event at
/// `SYNCKIT_GROUP_HOLD_AT` it prints `member: holding V` and waits for a
/// line on its input.
#[tokio::test]
#[ignore = "run by the group tests as a process of its own"]
async fn member_process() {
    let Ok(target) = std::env::var("SYNCKIT_GROUP_MEMBER") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let ttl = Duration::from_millis(var("SYNCKIT_GROUP_TTL_MS").parse().unwrap());
    let hold_at: u64 = var("SYNCKIT_GROUP_HOLD_AT").parse().unwrap();
    let store = synckit::open(&target).await.unwrap();
    let start = match var("SYNCKIT_GROUP_PARTITIONS").parse().unwrap() {
        0 => Start::checkpoint(var("SYNCKIT_GROUP_NAME")),
        partitions => Start::group(var("SYNCKIT_GROUP_NAME"), partitions),
    };
    let mut subscription = store
        .subscribe(Filter::all(), start)
        .await
        .unwrap()
        .with_lease_ttl(ttl);
    let say = |line: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "member: {line}").unwrap();
        out.flush().unwrap();
    };
    if std::env::var("SYNCKIT_GROUP_MODE").as_deref() == Ok("project") {
        subscription = subscription
            .with_events_per_transaction(var("SYNCKIT_GROUP_PER_TRANSACTION").parse().unwrap());
        crate::projection::project_into_read_model(store, subscription, say).await;
        return;
    }
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Some(event) = subscription.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) if e.is_transient() => continue,
            Err(e) => panic!("{e}"),
        };
        let version = event.version;
        say(format!(
            "event {version} {} {}",
            event.aggregate_id, event.stream_version
        ));
        if version == hold_at {
            say(format!("holding {version}"));
            let _ = input.next_line().await;
        }
        loop {
            match subscription.commit().await {
                Ok(()) => say(format!("commit {version} ok")),
                Err(Error::LeaseLost { .. }) => say(format!("commit {version} lost")),
                Err(e) if e.is_transient() => continue,
                Err(e) => panic!("commit {version}: {e}"),
            }
            break;
        }
    }
}

/// One event as a member process printed it.
#[derive(Debug, Clone)]
struct Seen {
    version: u64,
    aggregate: String,
    stream_version: u64,
}

/// A member process, and what it printed so far.
pub(crate) struct Process {
    pub(crate) child: Child,
    events: Arc<Mutex<Vec<Seen>>>,
    commits: Arc<Mutex<Vec<(u64, bool)>>>,
    holding: Arc<tokio::sync::Notify>,
}

impl Process {
    fn start(target: &str, partitions: u32, ttl_ms: u64, hold_at: u64) -> Self {
        Self::start_with(target, partitions, ttl_ms, hold_at, &[])
    }

    /// A member with more settings (`SYNCKIT_GROUP_MODE=project`: an
    /// exactly-once projection into the table `read_model`).
    pub(crate) fn start_with(
        target: &str,
        partitions: u32,
        ttl_ms: u64,
        hold_at: u64,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "groups::member_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SYNCKIT_GROUP_MEMBER", target)
            .env("SYNCKIT_GROUP_NAME", "workers")
            .env("SYNCKIT_GROUP_PARTITIONS", partitions.to_string())
            .env("SYNCKIT_GROUP_TTL_MS", ttl_ms.to_string())
            .env("SYNCKIT_GROUP_HOLD_AT", hold_at.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let events: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let commits: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
        let holding = Arc::new(tokio::sync::Notify::new());
        let (e, c, h) = (events.clone(), commits.clone(), holding.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some((_, said)) = line.split_once("member: ") else {
                    continue;
                };
                let words: Vec<&str> = said.split(' ').collect();
                match words.as_slice() {
                    ["event", v, aggregate, sv] => e.lock().unwrap().push(Seen {
                        version: v.parse().unwrap(),
                        aggregate: (*aggregate).to_owned(),
                        stream_version: sv.parse().unwrap(),
                    }),
                    ["commit", v, outcome] => c
                        .lock()
                        .unwrap()
                        .push((v.parse().unwrap(), *outcome == "ok")),
                    ["holding", _] => h.notify_one(),
                    // A projection's transaction, before its commit.
                    ["applying", v] => e.lock().unwrap().push(Seen {
                        version: v.parse().unwrap(),
                        aggregate: String::new(),
                        stream_version: 0,
                    }),
                    _ => panic!("unexpected line {said:?}"),
                }
            }
        });
        Process {
            child,
            events,
            commits,
            holding,
        }
    }

    pub(crate) fn handled(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Three member processes consume 20,000 events appended by 4 writers; one
/// is killed (SIGKILL) a quarter of the way in, a fourth joins halfway.
/// Every event is handled; each member handles each aggregate's events in
/// order; the only event handled twice is one the killed member had in
/// flight. Run as exactly-once projections (`project`), the read model
/// holds every event exactly once.
async fn members_share_twenty_thousand_events_through_a_kill_and_a_join(
    target: &str,
    project: bool,
) {
    const TOTAL: usize = 20_000;
    let _alone = crate::SATURATING.lock().await;
    let store = synckit::open(target).await.unwrap();
    if project {
        crate::projection::create_read_model(target).await;
    }
    let env: &[(&str, &str)] = if project {
        &[
            ("SYNCKIT_GROUP_MODE", "project"),
            ("SYNCKIT_GROUP_PER_TRANSACTION", "10"),
        ]
    } else {
        &[]
    };
    let start = || Process::start_with(target, 8, 3_000, 0, env);
    let mut members: Vec<Process> = (0..3).map(|_| start()).collect();
    until("three members sharing eight partitions", 60, || async {
        balanced(&shares(&store, "workers").await, 3, 8)
    })
    .await;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..TOTAL / 4 / 5 {
                    let aggregate = format!("w{writer}-{}", n % 50);
                    let events = (0..5)
                        .map(|k| NewEvent::new(aggregate.clone(), "Tick", json!({ "k": k })))
                        .collect();
                    store.append(ExpectedVersion::Any, events).await.unwrap();
                }
            })
        })
        .collect();
    let total_handled = |members: &[Process]| members.iter().map(Process::handled).sum::<usize>();
    until("a quarter handled", 120, || async {
        total_handled(&members) >= TOTAL / 4
    })
    .await;
    let killed = 1;
    members[killed].signal("-KILL");
    let _ = members[killed].child.wait().await;
    until("half handled", 120, || async {
        total_handled(&members) >= TOTAL / 2
    })
    .await;
    members.push(start());
    for writer in writers {
        within("the writers", 120, writer).await.unwrap();
    }
    if project {
        until("every event in the read model", 120, || async {
            crate::projection::read_model(target).await.0 >= TOTAL as u64
        })
        .await;
        let (rows, most) = crate::projection::read_model(target).await;
        assert_eq!(
            (rows, most),
            (TOTAL as u64, 1),
            "rows, most applications of one event"
        );
        assert!(
            members[3].handled() > 0,
            "the member that joined applied its share"
        );
        return;
    }
    let distinct = |members: &[Process]| {
        let mut versions: Vec<u64> = members
            .iter()
            .flat_map(|m| {
                m.events
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| s.version)
                    .collect::<Vec<_>>()
            })
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions.len()
    };
    until("every event handled", 120, || async {
        distinct(&members) >= TOTAL
    })
    .await;
    let mut copies: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (m, member) in members.iter().enumerate() {
        let mut last: HashMap<String, u64> = HashMap::new();
        for seen in member.events.lock().unwrap().iter() {
            copies.entry(seen.version).or_default().push(m);
            let before = last.insert(seen.aggregate.clone(), seen.stream_version);
            assert!(
                before.is_none_or(|b| b < seen.stream_version),
                "member {m}: {} {} after {before:?}",
                seen.aggregate,
                seen.stream_version
            );
        }
    }
    assert_eq!(
        copies.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL as u64).collect::<Vec<_>>()
    );
    let twice: Vec<(&u64, &Vec<usize>)> = copies.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(
        twice.len() <= 1 && twice.iter().all(|(_, m)| m.contains(&killed)),
        "handled twice: {twice:?}"
    );
    assert!(
        members[3].handled() > 0,
        "the member that joined handled its share"
    );
    until(
        "the three live members sharing eight partitions",
        60,
        || async { balanced(&shares(&store, "workers").await, 3, 8) },
    )
    .await;
}

/// A member paused (SIGSTOP) past its leases loses every partition to a
/// new member; resumed, it commits nothing: each save is refused and the
/// checkpoints stay where the new owner put them.
async fn a_paused_member_cannot_commit_for_partitions_it_lost(target: &str) {
    let store = synckit::open(target).await.unwrap();
    for n in 0..40 {
        let events = vec![NewEvent::new(
            format!("z-{}", n % 8),
            "Tick",
            json!({ "n": n }),
        )];
        store.append(ExpectedVersion::Any, events).await.unwrap();
    }
    let zombie = Process::start(target, 4, 1_000, 20);
    within("the zombie holding 20", 60, zombie.holding.notified()).await;
    zombie.signal("-STOP");

    let handled: Handled = Arc::default();
    let taker = store
        .subscribe(Filter::all(), Start::group("workers", 4))
        .await
        .unwrap()
        .with_lease_ttl(Duration::from_secs(60));
    let progress = taker.progress();
    let log = handled.clone();
    let run = tokio::spawn(taker.run(move |event: Recorded| {
        log.lock().unwrap().push((0, event));
        async { Ok::<_, std::convert::Infallible>(()) }
    }));
    within("the takeover", 60, progress.wait_for(40))
        .await
        .unwrap();
    until(
        "every partition taken and saved at the head",
        20,
        || async {
            let groups = store.groups().await.unwrap();
            shares(&store, "workers").await == vec![vec![0, 1, 2, 3]]
                && groups[0].parts.iter().all(|p| p.position == Some(40))
        },
    )
    .await;
    let before = store.groups().await.unwrap()[0].parts.clone();

    let committed_before = zombie.commits.lock().unwrap().len();
    zombie.signal("-CONT");
    let mut zombie = zombie;
    zombie
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    until("the zombie's commit of 20", 20, || async {
        zombie.commits.lock().unwrap().iter().any(|(v, _)| *v == 20)
    })
    .await;
    // Whatever else it still delivers before it learns of its loss, it
    // cannot commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<(u64, bool)> = zombie.commits.lock().unwrap()[committed_before..].to_vec();
    assert!(
        after.iter().all(|(_, ok)| !ok),
        "committed after losing: {after:?}"
    );
    // The checkpoints stay. (Back as a live member, it may own partitions
    // again, under new tokens, from those checkpoints.)
    let positions =
        |parts: &[synckit::GroupPartition]| parts.iter().map(|p| p.position).collect::<Vec<_>>();
    assert_eq!(
        positions(&store.groups().await.unwrap()[0].parts),
        positions(&before)
    );
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_members_share_twenty_thousand_events_through_a_kill_and_a_join() {
    let url = synckit_workspace::database_url().await;
    members_share_twenty_thousand_events_through_a_kill_and_a_join(&url, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_projection_members_apply_twenty_thousand_events_once_through_a_kill_and_a_join() {
    let url = synckit_workspace::database_url().await;
    members_share_twenty_thousand_events_through_a_kill_and_a_join(&url, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_projection_members_apply_twenty_thousand_events_once_through_a_kill_and_a_join() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    members_share_twenty_thousand_events_through_a_kill_and_a_join(&path, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_members_share_twenty_thousand_events_through_a_kill_and_a_join() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    members_share_twenty_thousand_events_through_a_kill_and_a_join(&path, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_paused_member_cannot_commit_for_partitions_it_lost() {
    let url = synckit_workspace::database_url().await;
    a_paused_member_cannot_commit_for_partitions_it_lost(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_paused_member_cannot_commit_for_partitions_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    a_paused_member_cannot_commit_for_partitions_it_lost(&path).await;
}
