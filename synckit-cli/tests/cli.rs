//! The real `synckit` binary against a real server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use synckit::postgres::{Config, PgStore};
use synckit::sqlite::SqliteStore;
use synckit::{EventStore, ExpectedVersion, NewEvent};
use synckit_workspace::{database_url, raw_client};

fn synckit(database: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(args)
        .env("DATABASE_URL", database)
        .output()
        .expect("run synckit")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_twice_is_a_no_op_the_second_time() {
    let url = database_url().await;
    let first = synckit(&url, &["migrate"]);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout(&first).contains("applied 20261124000001")
            && stdout(&first).contains("20261201000001"),
        "{}",
        stdout(&first)
    );
    let second = synckit(&url, &["migrate"]);
    assert!(second.status.success());
    assert_eq!(stdout(&second).trim(), "up to date: no migration applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_and_a_failure_exit() {
    let out = Command::new(env!("CARGO_BIN_EXE_synckit"))
        .arg("stats")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    // Passwords the driver accepts unencoded, with the characters that
    // end a URL's authority elsewhere.
    for url in [
        "postgres://u:secret@127.0.0.1:1/db",
        "postgres://app:pa/ss@127.0.0.1:1/x",
        "postgres://app:pa?ss@127.0.0.1:1/x?sslmode=disable",
    ] {
        let out = synckit(url, &["stats"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        for secret in ["secret", "pa/ss", "pa?ss"] {
            assert!(!err.contains(secret), "{err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_sqlite_moves_10k_events_and_a_second_run_adds_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.db");
    let source = SqliteStore::open(&file).await.unwrap();
    for chunk in 0..10 {
        let batch: Vec<_> = (0..1000)
            .map(|k| {
                NewEvent::new(
                    format!("a-{}", k % 50),
                    "T",
                    json!({ "n": chunk * 1000 + k }),
                )
            })
            .collect();
        source.append(ExpectedVersion::Any, batch).await.unwrap();
    }
    source.close().await.unwrap();
    let url = database_url().await;
    let file = file.display().to_string();
    let first = synckit(&url, &["import-sqlite", &file]);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout(&first).contains("copied 10000 events now"),
        "{}",
        stdout(&first)
    );
    let second = synckit(&url, &["import-sqlite", &file]);
    assert!(second.status.success(), "{second:?}");
    assert!(
        stdout(&second).contains("copied 0 events now"),
        "{}",
        stdout(&second)
    );
    let stats = synckit(&url, &["stats"]);
    assert!(
        stdout(&stats).contains("events:                   10000"),
        "{}",
        stdout(&stats)
    );
    assert!(
        stdout(&stats).contains("streams:                  50"),
        "{}",
        stdout(&stats)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_json_follows_another_process_and_survives_a_killed_connection() {
    let url = database_url().await;
    let store = PgStore::connect(Config::new(url.clone())).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(["tail", "--json", "--from", "beginning"])
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line for {what} within 30 s"))
    };
    for i in 0..3 {
        store
            .append(
                ExpectedVersion::Any,
                vec![NewEvent::new("t", "T", json!({ "i": i }))],
            )
            .await
            .unwrap();
    }
    for i in 0..3u64 {
        let v: serde_json::Value = serde_json::from_str(&next("the first events")).unwrap();
        assert_eq!(v["version"], i + 1);
        assert_eq!(v["data"]["i"], i);
    }
    // Kill every connection of the tail (pool and listener).
    let admin = raw_client(&url).await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND application_name IN ('synckit', 'synckit-listener')",
            &[],
        )
        .await
        .unwrap();
    for i in 3..6 {
        let mut attempts = 0;
        loop {
            match store
                .append(
                    ExpectedVersion::Any,
                    vec![NewEvent::new("t", "T", json!({ "i": i }))],
                )
                .await
            {
                Ok(_) => break,
                // Our own pooled connections were killed too: retry.
                Err(e) if e.is_transient() && attempts < 20 => attempts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let v: serde_json::Value = serde_json::from_str(&next("events after the kill")).unwrap();
        seen.push(v["data"]["i"].as_u64().unwrap());
    }
    assert_eq!(seen, vec![3, 4, 5]);
    // Ctrl-C ends it cleanly.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The application's own CLI of `examples/app_cli.rs`, which `cargo test`
/// builds beside this test.
fn app_cli(database: &str, args: &[&str]) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir
        .join("examples")
        .join(format!("app_cli{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p synckit-cli` builds it (or `cargo build -p synckit-cli --example app_cli`)",
        path.display()
    );
    Command::new(path)
        .args(args)
        .env("DATABASE_URL", database)
        .output()
        .expect("run app_cli")
}

/// Good and bad old events of `app_cli`'s types, and one of another type.
fn evolution_events() -> Vec<NewEvent> {
    vec![
        NewEvent::new(
            "u1",
            "UserCreated",
            json!({"user_id": "u1", "name": "Ada Lovelace"}),
        )
        .with_id("old-good"),
        NewEvent::new(
            "u2",
            "UserCreated",
            json!({"user_id": "u2", "name": "Plato"}),
        )
        .with_id("old-bad"),
        NewEvent::new(
            "u3",
            "user.registered",
            json!({"user_id": "u3", "first": "Alan", "last": "Turing"}),
        )
        .with_metadata("schema_version", json!(2))
        .with_id("new-good"),
        NewEvent::new("u4", "user.registered", json!({"user_id": "u4"}))
            .with_metadata("schema_version", json!(2))
            .with_id("new-bad"),
        NewEvent::new("o1", "order.placed", json!({"order_id": "o1", "total": 3})).with_id("order"),
        NewEvent::new("x", "somebody.else", json!({})).with_id("other"),
    ]
}

fn assert_exact_report(out: &std::process::Output) {
    assert!(!out.status.success(), "failures exit non-zero: {out:?}");
    let report: serde_json::Value = serde_json::from_str(stdout(out).trim()).unwrap();
    let types = report["types"].as_array().unwrap();
    assert_eq!(types.len(), 2, "{report}");
    assert_eq!(types[0]["event_type"], "user.registered");
    assert_eq!(types[0]["current_version"], 2);
    assert_eq!(types[0]["aliases"], json!(["UserCreated"]));
    let versions = types[0]["versions"].as_array().unwrap();
    let summary: Vec<_> = versions
        .iter()
        .map(|v| {
            let failed: Vec<_> = v["failed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["version"].as_u64().unwrap(),
                        f["id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (
                v["schema_version"].as_u64().unwrap(),
                v["decoded"].as_u64().unwrap(),
                failed,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 1, vec![(2, "old-bad".to_owned())]),
            (2, 1, vec![(4, "new-bad".to_owned())]),
        ]
    );
    let v1_error = versions[0]["failed"][0]["error"].as_str().unwrap();
    assert!(
        v1_error.contains("from schema version 1 to 2") && v1_error.contains("has no space"),
        "{v1_error}"
    );
    let v2_error = versions[1]["failed"][0]["error"].as_str().unwrap();
    assert!(v2_error.contains("missing field"), "{v2_error}");
    assert_eq!(types[1]["event_type"], "order.placed");
    assert_eq!(types[1]["versions"][0]["decoded"], 1);
    assert_eq!(report["unreadable"], json!([]));
}

async fn check_schema_reports_exactly(url: &str) {
    let json = app_cli(url, &["schema", "check", "--json"]);
    assert_exact_report(&json);
    let text = app_cli(url, &["schema", "check"]);
    assert!(!text.status.success());
    let printed = stdout(&text);
    assert!(printed.contains("user.registered"), "{printed}");
    assert!(
        printed.contains("schema version 1: 1 decode, 1 fail"),
        "{printed}"
    );
    assert!(printed.contains("version 2 id old-bad"), "{printed}");
    assert!(
        printed.trim_end().ends_with("3 decode, 2 fail"),
        "{printed}"
    );
    assert!(
        String::from_utf8_lossy(&text.stderr).contains("2 stored events"),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_check_reports_good_and_bad_old_events_exactly_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    let store = SqliteStore::open(&file).await.unwrap();
    store
        .append(ExpectedVersion::Any, evolution_events())
        .await
        .unwrap();
    let before = store.load(synckit::Cursor::START).await.unwrap();
    store.close().await.unwrap();
    let url = file.display().to_string();
    check_schema_reports_exactly(&url).await;
    let after = SqliteStore::open(&file)
        .await
        .unwrap()
        .load(synckit::Cursor::START)
        .await
        .unwrap();
    assert_eq!(before, after, "the check changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_check_reports_good_and_bad_old_events_exactly_on_postgres() {
    let url = database_url().await;
    let store = PgStore::open(url.clone()).await.unwrap();
    store
        .append(ExpectedVersion::Any, evolution_events())
        .await
        .unwrap();
    check_schema_reports_exactly(&url).await;
    store.close().await.unwrap();
}

#[test]
fn schema_check_of_the_stock_binary_says_what_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = synckit(
        &dir.path().join("x.db").display().to_string(),
        &["schema", "check"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("synckit_cli::run"), "{err}");
}

/// `synckit subscriptions` lists every checkpoint name with its position,
/// lag and lease holder, as another process holds one of them.
async fn subscriptions_list_checkpoints_lag_and_holders<S: synckit::SubscriptionSource>(
    store: S,
    target: &str,
) {
    use futures::StreamExt;
    use synckit::{Cursor, Filter, Start};

    let empty = synckit(target, &["subscriptions"]);
    assert!(empty.status.success(), "{empty:?}");
    assert_eq!(stdout(&empty).trim(), "no durable subscriptions");

    let events = (0..5)
        .map(|n| NewEvent::new("s", "T", json!({ "n": n })))
        .collect();
    store.append(ExpectedVersion::Any, events).await.unwrap();
    store
        .save_checkpoint("archive", Cursor::new(2))
        .await
        .unwrap();
    // "mailer" holds its lease: it has read its first event.
    let mut mailer = store
        .subscribe(Filter::all(), Start::checkpoint("mailer"))
        .await
        .unwrap();
    assert_eq!(mailer.next().await.unwrap().unwrap().version, 1);
    mailer.commit().await.unwrap();
    assert!(mailer.holds_lease());

    let out = synckit(target, &["subscriptions"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "archive  checkpoint 2  lag 3  no holder");
    assert!(
        lines[1].starts_with("mailer  checkpoint 1  lag 4  held by ")
            && lines[1].contains("(token 1, "),
        "{text}"
    );
    drop(mailer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lists_checkpoints_lag_and_holders_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = SqliteStore::connect(synckit::sqlite::Config::new(&path))
        .await
        .unwrap();
    subscriptions_list_checkpoints_lag_and_holders(store, &path.display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lists_checkpoints_lag_and_holders_on_postgres() {
    let url = database_url().await;
    let store = PgStore::connect(Config::new(&url)).await.unwrap();
    subscriptions_list_checkpoints_lag_and_holders(store, &url).await;
}

/// A `synckit tail --json --group printers` process and its lines.
struct GroupTail {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl GroupTail {
    fn start(target: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synckit"))
            .args(["tail", "--json", "--group", "printers"])
            .args(extra)
            .env("DATABASE_URL", target)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        GroupTail { child, lines }
    }

    /// The versions printed so far.
    fn printed(&self) -> Vec<u64> {
        self.lines
            .try_iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                v["version"].as_u64().unwrap()
            })
            .collect()
    }
}

/// Two `tail --group` processes print each event once between them;
/// `synckit groups` shows both members and who owns which partition; when
/// one stops (Ctrl-C), the other prints what follows.
async fn tail_group_prints_each_event_once_and_groups_lists_the_members<
    S: synckit::SubscriptionSource,
>(
    store: S,
    target: &str,
) {
    let none = synckit(target, &["groups"]);
    assert_eq!(stdout(&none).trim(), "no consumer groups", "{none:?}");
    // No live member to take the count from, and none given.
    let refused = synckit(target, &["tail", "--group", "printers"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--partitions"));

    let first = GroupTail::start(target, &["--partitions", "4"]);
    let wait_for = |what: &str, check: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = stdout(&synckit(target, &["groups"]));
            if check(&out) {
                return out;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the first member", &|out| out.contains("1 live members"));
    // The second takes the count from the live member.
    let second = GroupTail::start(target, &[]);
    let out = wait_for("two members with two partitions each", &|out| {
        out.contains("2 live members") && out.matches("partitions [").count() == 2 && {
            out.lines()
                .filter(|l| l.contains("partitions ["))
                .all(|l| l.matches(',').count() == 1)
        }
    });
    assert!(
        out.starts_with("printers  4 partitions  2 live members"),
        "{out}"
    );
    assert_eq!(out.matches("  partition ").count(), 4, "{out}");

    let append = async |from: usize| {
        let events = (from..from + 40)
            .map(|n| NewEvent::new(format!("p-{}", n % 16), "T", json!({ "n": n })))
            .collect();
        store.append(ExpectedVersion::Any, events).await.unwrap();
    };
    append(0).await;
    let mut printed = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while printed.0.len() + printed.1.len() < 40 {
        printed.0.extend(first.printed());
        printed.1.extend(second.printed());
        assert!(std::time::Instant::now() < deadline, "{printed:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !printed.0.is_empty() && !printed.1.is_empty(),
        "{printed:?}"
    );
    let mut all: Vec<u64> = printed.0.iter().chain(&printed.1).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=40).collect::<Vec<_>>(), "each event once");

    // Ctrl-C on the first: the second prints everything that follows.
    let mut first = first;
    Command::new("kill")
        .args(["-INT", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(first.child.wait().unwrap().success());
    wait_for("one member with every partition", &|out| {
        out.contains("1 live members") && out.contains("partitions [0,1,2,3]")
    });
    append(40).await;
    let mut later = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while later.len() < 40 {
        later.extend(second.printed());
        assert!(std::time::Instant::now() < deadline, "{later:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    later.sort_unstable();
    assert_eq!(later, (41..=80).collect::<Vec<_>>());
    let mut second = second;
    let _ = second.child.kill();
    let _ = second.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_group_prints_each_event_once_and_groups_lists_the_members_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = SqliteStore::connect(synckit::sqlite::Config::new(&path))
        .await
        .unwrap();
    tail_group_prints_each_event_once_and_groups_lists_the_members(
        store,
        &path.display().to_string(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_group_prints_each_event_once_and_groups_lists_the_members_on_postgres() {
    let url = database_url().await;
    let store = PgStore::connect(Config::new(&url)).await.unwrap();
    tail_group_prints_each_event_once_and_groups_lists_the_members(store, &url).await;
}

/// `synckit parked` lists what a running subscription parked; `retry` and
/// `skip` release it (the subscription, in this process, then hands the
/// aggregate's events to its handler in order); a version parked in two
/// subscriptions needs `--subscription`.
async fn parked_lists_retries_and_skips<S: synckit::SubscriptionSource>(store: S, target: &str) {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use synckit::{Filter, HandlerRetry, Recorded, Start};

    let none = synckit(target, &["parked"]);
    assert!(none.status.success(), "{none:?}");
    assert_eq!(stdout(&none).trim(), "no parked events");

    let poisoned: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::from([1])));
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let quick = || {
        HandlerRetry::default()
            .with_attempts(2)
            .with_backoff(Duration::ZERO, Duration::ZERO)
    };
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("mailer"))
        .await
        .unwrap()
        .with_handler_retry(quick());
    let progress = subscription.progress();
    let (fails, log) = (poisoned.clone(), handled.clone());
    let run = tokio::spawn(subscription.run(move |event: Recorded| {
        let failed = fails.lock().unwrap().contains(&event.version);
        if !failed {
            log.lock().unwrap().push(event.version);
        }
        async move {
            if failed {
                Err(format!("cannot send {}", event.version))
            } else {
                Ok(())
            }
        }
    }));
    let append = async |aggregate: &str| {
        store
            .append(
                ExpectedVersion::Any,
                vec![NewEvent::new(aggregate, "Sent", json!({}))],
            )
            .await
            .unwrap()[0]
            .version
    };
    let eventually = async |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(append("bad").await, 1);
    assert_eq!(append("good").await, 2);
    assert_eq!(append("bad").await, 3);
    progress.wait_for(3).await.unwrap();

    let listed = stdout(&synckit(target, &["parked"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with("mailer  version 1  aggregate bad  id ")
            && lines[0].contains("  failed  attempts 2  parked 20")
            && lines[0].ends_with("cannot send 1"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with("mailer  version 3  aggregate bad  id ")
            && lines[1].contains("  waiting  attempts 0  "),
        "{listed}"
    );
    let refused = |args: &[&str], says: &str| {
        let out = synckit(target, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    };
    refused(&["parked", "retry", "3"], "waits behind an earlier event");
    refused(&["parked", "retry", "9"], "no event is parked at version 9");
    refused(&["parked", "skip", "x"], "invalid value");

    // Fixed, then retried: 1, then 3, in order.
    poisoned.lock().unwrap().clear();
    let retried = synckit(target, &["parked", "retry", "1"]);
    assert!(retried.status.success(), "{retried:?}");
    assert!(stdout(&retried).contains("version 1 in mailer: to be retried"));
    eventually("1 and 3 handled", &|| handled.lock().unwrap().len() == 3).await;
    assert_eq!(*handled.lock().unwrap(), vec![2, 1, 3]);
    assert_eq!(
        stdout(&synckit(target, &["parked"])).trim(),
        "no parked events"
    );

    // Version 4 parked by two subscriptions: the name is needed.
    poisoned.lock().unwrap().insert(4);
    let auditor = store
        .subscribe(Filter::all(), Start::checkpoint("auditor"))
        .await
        .unwrap()
        .with_handler_retry(quick());
    let audited = auditor.progress();
    let auditing = tokio::spawn(auditor.run(|_: Recorded| async { Err::<(), _>("no audit") }));
    assert_eq!(append("worse").await, 4);
    assert_eq!(append("worse").await, 5);
    progress.wait_for(5).await.unwrap();
    audited.wait_for(5).await.unwrap();
    refused(&["parked", "skip", "4"], "pass --subscription NAME");
    let only = stdout(&synckit(target, &["parked", "--subscription", "mailer"]));
    assert_eq!(only.lines().count(), 2, "{only}");
    assert!(only.lines().all(|l| l.starts_with("mailer  ")), "{only}");
    let skipped = synckit(target, &["parked", "skip", "4", "--subscription", "mailer"]);
    assert!(skipped.status.success(), "{skipped:?}");
    assert!(stdout(&skipped).contains("version 4 in mailer: skipped"));
    eventually("5 handled", &|| handled.lock().unwrap().last() == Some(&5)).await;
    assert!(!handled.lock().unwrap().contains(&4));
    // The auditor's are still there.
    let left = stdout(&synckit(target, &["parked"]));
    assert!(left.lines().all(|l| l.starts_with("auditor  ")), "{left}");
    assert!(left.contains("auditor  version 4  "), "{left}");
    run.abort();
    auditing.abort();
    let _ = (run.await, auditing.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_lists_retries_and_skips_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = SqliteStore::connect(synckit::sqlite::Config::new(&path))
        .await
        .unwrap();
    parked_lists_retries_and_skips(store, &path.display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_lists_retries_and_skips_on_postgres() {
    let url = database_url().await;
    let store = PgStore::connect(Config::new(&url)).await.unwrap();
    parked_lists_retries_and_skips(store, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_with_the_token_files_policy_and_stops_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("served.db");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# who may do what\nsecret user-*\n").unwrap();
    let database = db.to_str().unwrap();
    assert!(synckit(database, &["migrate"]).status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&tokens)
        .args(["--allow-origin", "https://app.example.com"])
        .env("DATABASE_URL", database)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    let base = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let http = reqwest::Client::new();
    let body = json!({"expected_version": "no_stream",
                      "events": [{"type": "User.Registered", "data": {"name": "Ada"}}]});
    let post = |stream: &str, token: &str| {
        http.post(format!("{base}/streams/{stream}/events"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    assert_eq!(post("user-1", "wrong").await.unwrap().status(), 401);
    assert_eq!(post("order-1", "secret").await.unwrap().status(), 403);
    assert_eq!(post("user-1", "secret").await.unwrap().status(), 201);
    let page: serde_json::Value = http
        .get(format!("{base}/events"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["aggregate_id"], "user-1");
    // A page of the allowed origin may append (the preflight says so);
    // another origin is not told it may.
    let preflight = |origin: &str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{base}/streams/user-2/events"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://app.example.com"
    );
    let other = preflight("https://elsewhere.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // An open live feed does not hold the shutdown.
    let live = http
        .get(format!("{base}/events/live?access_token=secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    drop(live);
    // What was appended is in the file.
    let store = SqliteStore::open(&db).await.unwrap();
    assert_eq!(store.stream_version("user-1").await.unwrap(), Some(1));

    let refused = synckit(database, &["serve"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--token-file"), "{said}");
    let bad_origin = synckit(
        database,
        &[
            "serve",
            "--allow-anonymous",
            "--allow-origin",
            "app.example.com",
        ],
    );
    assert!(!bad_origin.status.success());
    let said = String::from_utf8_lossy(&bad_origin.stderr);
    assert!(said.contains("is not an origin"), "{said}");
}
