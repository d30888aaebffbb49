//! Aggregates on every backend: load, decide and append with retry,
//! command ids, snapshots. Instantiated per backend by `behaviour_suite!`.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use synckit::{
    Aggregate, Decide, DecideError, Error, Event, EventStore, ExpectedVersion, NewEvent, Snapshots,
    StoredSnapshot,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate_id = "account")]
pub enum BankEvent {
    Deposited { account: String, amount: u64 },
    Withdrawn { account: String, amount: u64 },
}

/// An account that refuses overdrafts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Account {
    balance: u64,
}

impl Aggregate for Account {
    type Event = BankEvent;
    const NAME: &'static str = "account";

    fn apply(&mut self, event: &BankEvent) {
        match event {
            BankEvent::Deposited { amount, .. } => self.balance += amount,
            BankEvent::Withdrawn { amount, .. } => self.balance -= amount,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Refused {
    Overdraft { balance: u64, amount: u64 },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

fn withdraw(account: &str, amount: u64) -> impl FnMut(&Account) -> Result<Vec<BankEvent>, Refused> {
    let account = account.to_owned();
    move |state| {
        if state.balance < amount {
            return Err(Refused::Overdraft {
                balance: state.balance,
                amount,
            });
        }
        Ok(vec![BankEvent::Withdrawn {
            account: account.clone(),
            amount,
        }])
    }
}

fn deposit(account: &str, amount: u64) -> impl FnMut(&Account) -> Result<Vec<BankEvent>, Refused> {
    let account = account.to_owned();
    move |_| {
        Ok(vec![BankEvent::Deposited {
            account: account.clone(),
            amount,
        }])
    }
}

/// The balance of `account` folded from its stored events, checking that
/// no prefix of them is ever negative.
async fn fold_without_overdraft<S: EventStore>(store: &S, account: &str) -> u64 {
    let mut balance: i64 = 0;
    let mut after = 0;
    loop {
        let page = store.read_aggregate(account, after, 100).await.unwrap();
        if page.is_empty() {
            return u64::try_from(balance).unwrap();
        }
        for raw in page {
            assert_eq!(raw.stream_version, after + 1, "stream order");
            after = raw.stream_version;
            match raw.decode::<BankEvent>().unwrap().data {
                BankEvent::Deposited { amount, .. } => balance += i64::try_from(amount).unwrap(),
                BankEvent::Withdrawn { amount, .. } => balance -= i64::try_from(amount).unwrap(),
            }
            assert!(balance >= 0, "an overdraft was stored on {account}");
        }
    }
}

pub async fn concurrent_commands_never_overdraw_and_each_applies_once<S: EventStore>(store: S) {
    let accounts = ["acc-0", "acc-1", "acc-2"];
    for account in accounts {
        store
            .decide(account, Decide::new(), deposit(account, 100))
            .await
            .unwrap();
    }
    let settings = Decide::new()
        .attempts(200)
        .backoff(Duration::from_micros(200), Duration::from_millis(20));
    let mut tasks = Vec::new();
    for task in 0..10u64 {
        let store = store.clone();
        let settings = settings.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for command in 0..40u64 {
                let account = ["acc-0", "acc-1", "acc-2"][((task + command) % 3) as usize];
                let id = format!("t{task}-c{command}");
                let settings = settings.clone().command_id(id.clone());
                let result = if command % 4 == 0 {
                    store.decide(account, settings, deposit(account, 7)).await
                } else {
                    store
                        .decide(account, settings, withdraw(account, 3 + task))
                        .await
                };
                outcomes.push((id, account, result.map(|d| (d.events.len(), d.attempts))));
            }
            outcomes
        }));
    }
    let mut applied = 0;
    let mut refused = 0;
    let mut conflicts_retried = 0;
    for task in tasks {
        for (id, account, outcome) in task.await.unwrap() {
            match outcome {
                Ok((1, attempts)) => {
                    applied += 1;
                    conflicts_retried += attempts - 1;
                    let stored = store.get(&format!("{id}:0")).await.unwrap();
                    assert_eq!(stored.aggregate_id, account);
                }
                Ok(other) => panic!("{id}: unexpected {other:?}"),
                Err(DecideError::Rejected(Refused::Overdraft { .. })) => {
                    refused += 1;
                    assert!(matches!(
                        store.get(&format!("{id}:0")).await,
                        Err(Error::EventNotFound { .. })
                    ));
                }
                Err(e) => panic!("{id}: {e}"),
            }
        }
    }
    assert_eq!(applied + refused, 400);
    let stored_commands: usize = {
        let mut n = 0;
        for account in accounts {
            n += store.stream_version(account).await.unwrap().unwrap() as usize - 1;
        }
        n
    };
    assert_eq!(stored_commands, applied, "each applied command stored once");
    for account in accounts {
        let folded = fold_without_overdraft(&store, account).await;
        let loaded = store.load_aggregate::<Account>(account).await.unwrap();
        assert_eq!(loaded.state.balance, folded, "{account}");
    }
    // With 10 tasks on 3 accounts, conflicts happen and are retried
    // (reported, not asserted: an unlucky schedule may serialize them).
    eprintln!("applied {applied}, refused {refused}, conflicts retried {conflicts_retried}");
}

pub async fn a_command_id_sent_twice_and_concurrently_appends_once<S: EventStore>(store: S) {
    let settings = || Decide::new().attempts(50).command_id("cmd-1");
    let first = store
        .decide("acc", settings(), deposit("acc", 10))
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = store
        .decide("acc", settings(), deposit("acc", 10))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.events.len(), 1);
    assert_eq!(again.events[0].id, "cmd-1:0");
    assert_eq!((again.state.balance, again.version), (10, Some(1)));

    let mut racing = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        racing.push(tokio::spawn(async move {
            store
                .decide(
                    "acc",
                    Decide::new().attempts(50).command_id("cmd-2"),
                    withdraw("acc", 4),
                )
                .await
                .map(|d| (d.replayed, d.events[0].id.clone()))
        }));
    }
    for task in racing {
        // Every caller gets the command's one event: appended by it, found
        // stored, or returned by its identical append (an idempotent retry).
        let (_, id) = task.await.unwrap().unwrap();
        assert_eq!(id, "cmd-2:0");
    }
    let loaded = store.load_aggregate::<Account>("acc").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (6, Some(2)));
    // A command id belongs to one stream.
    let elsewhere = store.decide("other", settings(), deposit("other", 1)).await;
    assert!(matches!(
        elsewhere,
        Err(DecideError::Store(Error::InvalidInput { .. }))
    ));
}

pub async fn a_refused_failing_or_panicking_decision_writes_nothing<S: EventStore>(store: S) {
    let refused = store.decide("acc", Decide::new(), withdraw("acc", 1)).await;
    assert!(matches!(
        refused,
        Err(DecideError::Rejected(Refused::Overdraft {
            balance: 0,
            amount: 1
        }))
    ));
    let panicking = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .decide(
                    "acc",
                    Decide::new(),
                    |_: &Account| -> Result<Vec<BankEvent>, Refused> {
                        panic!("the decision panicked")
                    },
                )
                .await
                .map(drop)
        })
        .await
    };
    assert!(panicking.unwrap_err().is_panic());
    // Events for another stream are refused whole.
    let wrong = store
        .decide("acc", Decide::new(), deposit("not-acc", 5))
        .await;
    assert!(matches!(
        wrong,
        Err(DecideError::Store(Error::InvalidInput { .. }))
    ));
    assert_eq!(store.stream_version("acc").await.unwrap(), None);
    assert_eq!(store.stream_version("not-acc").await.unwrap(), None);
    let empty = store.load_aggregate::<Account>("acc").await.unwrap();
    assert_eq!((empty.state, empty.version), (Account::default(), None));
}

/// The values applied, in order: a snapshot that skipped or reordered one
/// would show.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger<const EVERY: u64> {
    seen: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(type = "ledger.entry")]
pub struct Entry {
    #[event(aggregate_id)]
    ledger: String,
    value: u64,
}

impl<const EVERY: u64> Aggregate for Ledger<EVERY> {
    type Event = Entry;
    const NAME: &'static str = "ledger";

    fn apply(&mut self, event: &Entry) {
        self.seen.push(event.value);
    }

    fn snapshots() -> Option<Snapshots<Self>> {
        Some(Snapshots::every(EVERY).schema_version(3))
    }
}

async fn snapshot_within<S: EventStore>(store: &S, ledger: &str, at_least: u64) -> StoredSnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = store.load_snapshot("ledger", ledger).await.unwrap()
            && s.stream_version >= at_least
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot of {ledger}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn snapshots_every<const EVERY: u64, S: EventStore>(store: &S) {
    let ledger = format!("ledger-{EVERY}");
    for value in 1..=12u64 {
        let id = ledger.clone();
        let decided = store
            .decide(&ledger, Decide::new(), move |_: &Ledger<EVERY>| {
                Ok::<_, Refused>(vec![Entry {
                    ledger: id.clone(),
                    value: value * 10,
                }])
            })
            .await
            .unwrap();
        let want: Vec<u64> = (1..=value).map(|v| v * 10).collect();
        assert_eq!(decided.state.seen, want);
        if value >= EVERY {
            // The snapshot is taken off the caller's path: wait for it,
            // then a load from it plus the tail equals the full fold.
            snapshot_within(store, &ledger, value - value % EVERY).await;
        }
        let loaded = store
            .load_aggregate::<Ledger<EVERY>>(&ledger)
            .await
            .unwrap();
        assert_eq!(loaded.state.seen, want, "every {EVERY}, at {value}");
        assert_eq!(loaded.version, Some(value));
        if value >= EVERY {
            assert!(loaded.snapshot.is_some(), "every {EVERY}, at {value}");
        }
    }
}

pub async fn snapshot_and_tail_equal_the_full_fold_and_are_only_a_cache<S: EventStore>(store: S) {
    snapshots_every::<1, S>(&store).await;
    snapshots_every::<2, S>(&store).await;
    snapshots_every::<5, S>(&store).await;
    let want: Vec<u64> = (1..=12).map(|v| v * 10).collect();
    let load = || store.load_aggregate::<Ledger<5>>("ledger-5");

    // A snapshot of another schema version is ignored...
    let stale = StoredSnapshot::new("ledger", "ledger-5", 12, 2, json!({"seen": [999]}));
    store.delete_snapshots("ledger").await.unwrap();
    store.save_snapshot(stale).await.unwrap();
    let loaded = load().await.unwrap();
    assert_eq!(
        (loaded.state.seen.clone(), loaded.snapshot),
        (want.clone(), None)
    );
    // ...and replaced by the next one taken (at 15, the next multiple).
    let mut want = want;
    for value in [130, 140, 150] {
        store
            .decide("ledger-5", Decide::new(), move |_: &Ledger<5>| {
                Ok::<_, Refused>(vec![Entry {
                    ledger: "ledger-5".into(),
                    value,
                }])
            })
            .await
            .unwrap();
        want.push(value);
    }
    let taken = snapshot_within(&store, "ledger-5", 15).await;
    assert_eq!((taken.schema_version, taken.stream_version), (3, 15));

    // Rows the code did not write are no snapshot: a state that does not
    // decode, a position beyond the stream.
    for (at, state) in [
        (15, json!({"seen": "not a list"})),
        (40, json!({"seen": [1, 2, 3]})),
    ] {
        store.delete_snapshots("ledger").await.unwrap();
        store
            .save_snapshot(StoredSnapshot::new("ledger", "ledger-5", at, 3, state))
            .await
            .unwrap();
        let loaded = load().await.unwrap();
        assert_eq!(
            (loaded.state.seen.clone(), loaded.snapshot),
            (want.clone(), None)
        );
    }
    // Deleting every snapshot changes no result.
    store.delete_snapshots("ledger").await.unwrap();
    store.save_snapshot(taken).await.unwrap();
    assert_eq!(load().await.unwrap().snapshot, Some(15));
    let deleted = store.delete_snapshots("ledger").await.unwrap();
    assert!(deleted >= 1);
    assert!(
        store
            .load_snapshot("ledger", "ledger-5")
            .await
            .unwrap()
            .is_none()
    );
    let loaded = load().await.unwrap();
    assert_eq!(
        (loaded.state.seen, loaded.version, loaded.snapshot),
        (want, Some(15), None)
    );
    let one = store.load_aggregate::<Ledger<1>>("ledger-1").await.unwrap();
    assert_eq!(one.state.seen, (1..=12).map(|v| v * 10).collect::<Vec<_>>());
}

pub async fn a_stream_reads_by_stream_version_and_loads_skip_other_streams<S: EventStore>(
    store: S,
) {
    // Interleave two streams so that global and stream positions differ.
    for i in 0..30u64 {
        let account = if i % 3 == 0 { "a" } else { "b" };
        store
            .append(
                ExpectedVersion::Any,
                vec![
                    NewEvent::from_event(&BankEvent::Deposited {
                        account: account.into(),
                        amount: i,
                    })
                    .unwrap(),
                ],
            )
            .await
            .unwrap();
    }
    let page = store.read_aggregate("a", 4, 3).await.unwrap();
    let positions: Vec<_> = page.iter().map(|e| e.stream_version).collect();
    assert_eq!(positions, [5, 6, 7]);
    assert!(page.iter().all(|e| e.aggregate_id == "a"));
    assert!(store.read_aggregate("a", 10, 5).await.unwrap().is_empty());
    assert!(store.read_aggregate("none", 0, 5).await.unwrap().is_empty());
    assert!(matches!(
        store.read_aggregate("", 0, 5).await,
        Err(Error::InvalidInput { .. })
    ));
    let a = store.load_aggregate::<Account>("a").await.unwrap();
    let want: u64 = (0..30).filter(|i| i % 3 == 0).sum();
    assert_eq!((a.state.balance, a.version), (want, Some(10)));
    let balances: HashMap<&str, u64> = [("a", want)].into_iter().collect();
    assert_eq!(balances["a"], fold_without_overdraft(&store, "a").await);
}

/// A decision during which another writer moves the stream on, `moves`
/// times: the memory store's append completes at once, so the decision can
/// make it without awaiting.
fn racing_deposit(
    store: synckit::MemoryStore,
    moves: usize,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl FnMut(&Account) -> Result<Vec<BankEvent>, Refused> {
    move |_| {
        let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call < moves {
            let other = NewEvent::from_event(&BankEvent::Deposited {
                account: "acc".into(),
                amount: 1,
            })
            .unwrap();
            futures::executor::block_on(store.append(ExpectedVersion::Any, vec![other])).unwrap();
        }
        Ok(vec![BankEvent::Deposited {
            account: "acc".into(),
            amount: 100,
        }])
    }
}

#[tokio::test]
async fn a_conflict_is_decided_again_on_the_new_state_and_exhausted_attempts_return_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store = synckit::MemoryStore::new();
    let settings = Decide::new()
        .attempts(3)
        .backoff(Duration::from_micros(10), Duration::from_micros(100));
    // Moved on twice: the third decision, on the new state, appends.
    let calls = Arc::new(AtomicUsize::new(0));
    let done = store
        .decide(
            "acc",
            settings.clone(),
            racing_deposit(store.clone(), 2, calls.clone()),
        )
        .await
        .unwrap();
    assert_eq!((done.attempts, calls.load(Ordering::SeqCst)), (3, 3));
    assert_eq!((done.state.balance, done.version), (102, Some(3)));
    // Moved on every time: the last conflict comes back, nothing of ours
    // was written.
    let calls = Arc::new(AtomicUsize::new(0));
    let exhausted = store
        .decide(
            "acc",
            settings,
            racing_deposit(store.clone(), usize::MAX, calls.clone()),
        )
        .await;
    assert!(
        matches!(
            exhausted,
            Err(DecideError::Store(Error::Conflict {
                expected: ExpectedVersion::Exact(5),
                actual: Some(6),
                ..
            }))
        ),
        "{exhausted:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let loaded = store.load_aggregate::<Account>("acc").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (105, Some(6)));
}

/// Rows synckit did not write, on PostgreSQL: a stream with a hole in its
/// stream versions, and snapshot rows that are not snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_synckit_did_not_write_are_refused_or_ignored_by_aggregate_loads() {
    let url = synckit_workspace::database_url().await;
    let store = synckit::postgres::PgStore::open(url.clone()).await.unwrap();
    store
        .decide("acc", Decide::new(), deposit("acc", 10))
        .await
        .unwrap();
    let client = synckit_workspace::raw_client(&url).await;
    client
        .batch_execute(
            "INSERT INTO events (id, aggregate_id, event_type, data, stream_version) VALUES \
             ('gap-1', 'gap', 'BankEvent.Deposited', '{\"account\": \"gap\", \"amount\": 1}', 1), \
             ('gap-3', 'gap', 'BankEvent.Deposited', '{\"account\": \"gap\", \"amount\": 1}', 3); \
             INSERT INTO synckit_snapshots (aggregate_type, aggregate_id, stream_version, schema_version, state) VALUES \
             ('ledger', 'acc', 1, 3, 'not json'), \
             ('ledger', 'ledger-x', 1, 99999999999, '{\"seen\": [7]}')",
        )
        .await
        .unwrap();
    let err = store.load_aggregate::<Account>("gap").await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { .. }) && err.to_string().contains("1, 2, 3"),
        "{err}"
    );
    let decided = store.decide("gap", Decide::new(), deposit("gap", 1)).await;
    assert!(matches!(
        decided,
        Err(DecideError::Store(Error::InvalidInput { .. }))
    ));
    assert!(
        store
            .load_snapshot("ledger", "acc")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .load_snapshot("ledger", "ledger-x")
            .await
            .unwrap()
            .is_none()
    );
    let empty = store.load_aggregate::<Ledger<5>>("ledger-x").await.unwrap();
    assert_eq!(
        (empty.state.seen, empty.version, empty.snapshot),
        (vec![], None, None)
    );
    store.close().await.unwrap();
}
