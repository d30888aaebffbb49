//! One consumer per checkpoint name: a second waits as a standby and takes
//! over when the first lets go, dies or is paused past its lease; a paused
//! one can never move the checkpoint again. The suite check runs on every
//! backend; the process checks run real OS processes (this test binary,
//! re-run as a member) stopped with SIGSTOP and killed with SIGKILL, on
//! PostgreSQL and on a SQLite file.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use synckit::{
    Cursor, Error, EventStore, ExpectedVersion, Filter, NewEvent, Recorded, Start,
    SubscriptionSource,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::behaviour::checkpoint_reaches;

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"))
}

async fn append_n<S: EventStore>(store: &S, count: usize) -> u64 {
    let events = (0..count)
        .map(|n| NewEvent::new(format!("s-{n}"), "Tick", json!({ "n": n })))
        .collect();
    let written = store.append(ExpectedVersion::Any, events).await.unwrap();
    written.last().unwrap().version
}

/// Two consumers of one name on one store: every event is handled once,
/// by the one holding the lease; when it stops, the other takes over from
/// the checkpoint at once.
pub async fn a_second_consumer_of_a_name_waits_as_a_standby_and_takes_over<
    S: SubscriptionSource,
>(
    store: S,
) {
    let calls: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut runs = Vec::new();
    let mut progress = Vec::new();
    for consumer in 0..2 {
        let subscription = store
            .subscribe(Filter::all(), Start::checkpoint("billing"))
            .await
            .unwrap();
        progress.push(subscription.progress());
        let calls = calls.clone();
        runs.push(tokio::spawn(subscription.run(move |e: Recorded| {
            calls.lock().unwrap().push((consumer, e.version));
            async { Ok::<_, std::convert::Infallible>(()) }
        })));
    }
    let mut head = 0;
    for _ in 0..10 {
        head = append_n(&store, 10).await;
    }
    checkpoint_reaches(&store, "billing", head).await;
    let active = {
        let calls = calls.lock().unwrap();
        let versions: Vec<u64> = calls.iter().map(|(_, v)| *v).collect();
        assert_eq!(versions, (1..=head).collect::<Vec<_>>(), "each event once");
        let active = calls[0].0;
        assert!(calls.iter().all(|(c, _)| *c == active), "one consumer");
        active
    };
    let standby = 1 - active;
    assert!(progress[standby].handled() < Cursor::new(head));

    // The active one stops: the standby takes over where it left off.
    runs[active].abort();
    // Stopped for sure (an abort takes effect at the task's next await).
    let _ = (&mut runs[active]).await;
    let next = append_n(&store, 5).await;
    within("the takeover", progress[standby].wait_for(next))
        .await
        .unwrap();
    let calls = calls.lock().unwrap();
    let after: Vec<(usize, u64)> = calls[head as usize..].to_vec();
    assert_eq!(
        after,
        ((head + 1)..=next)
            .map(|v| (standby, v))
            .collect::<Vec<_>>()
    );
    runs[standby].abort();
}

/// How the parent reaches a member process's store.
fn member_command(target: &str, name: &str, ttl_ms: u64, hold_at: u64) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "leases::member_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SYNCKIT_LEASE_MEMBER", target)
        .env("SYNCKIT_LEASE_NAME", name)
        .env("SYNCKIT_LEASE_TTL_MS", ttl_ms.to_string())
        .env("SYNCKIT_LEASE_HOLD_AT", hold_at.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A member of a lease test, run by the parent as its own process: it
/// follows the durable subscription `SYNCKIT_LEASE_NAME`, prints
/// `member: event V` for each event and `member: commit V ok|lost` after
/// each commit; before committing the event at `SYNCKIT_LEASE_HOLD_AT` it
/// prints `member: holding V` and waits for a line on its input.
#[tokio::test]
#[ignore = "run by the lease tests as a process of its own"]
async fn member_process() {
    let Ok(target) = std::env::var("SYNCKIT_LEASE_MEMBER") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let ttl = Duration::from_millis(var("SYNCKIT_LEASE_TTL_MS").parse().unwrap());
    let hold_at: u64 = var("SYNCKIT_LEASE_HOLD_AT").parse().unwrap();
    let store = synckit::open(&target).await.unwrap();
    let mut subscription = store
        .subscribe(Filter::all(), Start::checkpoint(var("SYNCKIT_LEASE_NAME")))
        .await
        .unwrap()
        .with_lease_ttl(ttl);
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let say = |line: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "member: {line}").unwrap();
        out.flush().unwrap();
    };
    while let Some(event) = subscription.next().await {
        let version = event.unwrap().version;
        say(format!("event {version}"));
        if version == hold_at {
            say(format!("holding {version}"));
            let _ = input.next_line().await;
        }
        match subscription.commit().await {
            Ok(()) => say(format!("commit {version} ok")),
            Err(Error::LeaseLost { .. }) => say(format!("commit {version} lost")),
            Err(e) => panic!("commit {version}: {e}"),
        }
    }
}

/// A member process and its output.
struct Member {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Member {
    fn start(target: &str, name: &str, ttl_ms: u64, hold_at: u64) -> Self {
        let mut child = member_command(target, name, ttl_ms, hold_at)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Member { child, lines }
    }

    /// The member's next line of its own (not the test harness's).
    async fn next(&mut self) -> String {
        loop {
            let line = within("the member's output", self.lines.next_line())
                .await
                .unwrap()
                .expect("the member exited");
            // The harness's "test ... " has no line end of its own.
            if let Some((_, said)) = line.split_once("member: ") {
                return said.to_owned();
            }
        }
    }

    async fn expect(&mut self, wanted: &str) {
        assert_eq!(self.next().await, wanted);
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// The process checks, on one store `target` names.
async fn members_hand_over_and_a_paused_one_cannot_commit(target: &str) {
    let store = synckit::open(target).await.unwrap();
    let head = append_n(&store, 10).await;
    assert_eq!(head, 10);

    // A member holds the lease, handles 1 and 2, and stops before
    // committing 3: paused (SIGSTOP) past its lease of 1 s.
    let mut zombie = Member::start(target, "worker", 1_000, 3);
    for v in 1..=2 {
        zombie.expect(&format!("event {v}")).await;
        zombie.expect(&format!("commit {v} ok")).await;
    }
    zombie.expect("event 3").await;
    zombie.expect("holding 3").await;
    zombie.signal("-STOP");

    // A standby here (a store of its own) takes over once the lease
    // expires, from 2.
    let other = synckit::open(target).await.unwrap();
    let standby = other
        .subscribe(Filter::all(), Start::checkpoint("worker"))
        .await
        .unwrap()
        .with_lease_ttl(Duration::from_secs(60));
    let progress = standby.progress();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handled = seen.clone();
    let running = tokio::spawn(standby.run(move |e: Recorded| {
        handled.lock().unwrap().push(e.version);
        async { Ok::<_, std::convert::Infallible>(()) }
    }));
    within("the takeover", progress.wait_for(head))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), (3..=head).collect::<Vec<_>>());

    // Resumed, the zombie's commit of 3 is refused: the checkpoint stays.
    zombie.signal("-CONT");
    zombie
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    zombie.expect("commit 3 lost").await;
    assert_eq!(
        store.load_checkpoint("worker").await.unwrap(),
        Some(Cursor::new(head))
    );

    // The standby here closes its store, which gives the lease back: the
    // member (now the standby) takes over at once, well before the 60 s
    // lease would expire, from the checkpoint, reading nothing it had read
    // before.
    other.close().await.unwrap();
    within("the run", running).await.unwrap().unwrap();
    let next = append_n(&store, 1).await;
    zombie.expect(&format!("event {next}")).await;
    zombie.expect(&format!("commit {next} ok")).await;
    checkpoint_reaches(&store, "worker", next).await;

    // Killed (SIGKILL), the member gives nothing back: its lease expires
    // and a new consumer takes over.
    zombie.signal("-KILL");
    let _ = zombie.child.wait().await;
    let mut after = store
        .subscribe(Filter::all(), Start::checkpoint("worker"))
        .await
        .unwrap();
    let last = append_n(&store, 1).await;
    let event = within("the takeover after SIGKILL", after.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.version, last);
    assert!(after.holds_lease());
    after.commit().await.unwrap();
    checkpoint_reaches(&store, "worker", last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_members_hand_over_and_a_paused_one_cannot_commit() {
    let url = synckit_workspace::database_url().await;
    members_hand_over_and_a_paused_one_cannot_commit(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_members_hand_over_and_a_paused_one_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    members_hand_over_and_a_paused_one_cannot_commit(&path).await;
}
