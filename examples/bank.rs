//! A small bank on aggregates: accounts that refuse overdrafts, ten tasks
//! sending forty commands each to three accounts at once, every conflict
//! decided again on the new state, and a final check that the stored
//! history never went below zero.
//!
//! Run: `cargo run --example bank` (a fresh SQLite file, removed at the
//! end, unless `DATABASE_URL` names a store).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use synckit::{Aggregate, AnyStore, Decide, DecideError, Event, EventStore, Snapshots};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate_id = "account")]
enum AccountEvent {
    Deposited { account: String, amount: u64 },
    Withdrawn { account: String, amount: u64 },
}

/// An account's state: its balance. Snapshots every 50 events keep loads
/// short however long the history grows.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: u64,
}

impl Aggregate for Account {
    type Event = AccountEvent;
    const NAME: &'static str = "account";

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrawn { amount, .. } => self.balance -= amount,
        }
    }

    fn snapshots() -> Option<Snapshots<Self>> {
        Some(Snapshots::every(50))
    }
}

/// The command: withdraw `amount`, refused below zero.
fn withdraw(
    account: &str,
    amount: u64,
) -> impl FnMut(&Account) -> Result<Vec<AccountEvent>, String> + Send + use<> {
    let account = account.to_owned();
    move |state| {
        if state.balance < amount {
            return Err(format!(
                "{account}: balance {} is below {amount}",
                state.balance
            ));
        }
        Ok(vec![AccountEvent::Withdrawn {
            account: account.clone(),
            amount,
        }])
    }
}

fn deposit(
    account: &str,
    amount: u64,
) -> impl FnMut(&Account) -> Result<Vec<AccountEvent>, String> + Send + use<> {
    let account = account.to_owned();
    move |_| {
        Ok(vec![AccountEvent::Deposited {
            account: account.clone(),
            amount,
        }])
    }
}

async fn bank(store: AnyStore) -> synckit::Result<()> {
    let run = chrono::Utc::now().timestamp_micros();
    let accounts: Vec<String> = (0..3).map(|i| format!("acc-{run}-{i}")).collect();
    for account in &accounts {
        store
            .decide(account, Decide::new(), deposit(account, 100))
            .await
            .map_err(store_error)?;
    }
    let settings = Decide::new()
        .attempts(100)
        .backoff(Duration::from_micros(200), Duration::from_millis(20));
    let mut tasks = Vec::new();
    for task in 0..10u64 {
        let (store, accounts, settings) = (store.clone(), accounts.clone(), settings.clone());
        tasks.push(tokio::spawn(async move {
            let (mut applied, mut refused, mut retries) = (0, 0, 0);
            for command in 0..40u64 {
                let account = &accounts[((task + command) % 3) as usize];
                // The command id makes a retried command append nothing twice.
                let settings = settings
                    .clone()
                    .command_id(format!("{account}-t{task}-c{command}"));
                let outcome = if command % 4 == 0 {
                    store.decide(account, settings, deposit(account, 7)).await
                } else {
                    store
                        .decide(account, settings, withdraw(account, 3 + task))
                        .await
                };
                match outcome {
                    Ok(done) => {
                        applied += 1;
                        retries += done.attempts - 1;
                    }
                    Err(DecideError::Rejected(_)) => refused += 1,
                    Err(e) => return Err(store_error(e)),
                }
            }
            Ok::<_, synckit::Error>((applied, refused, retries))
        }));
    }
    let (mut applied, mut refused, mut retries) = (0, 0, 0);
    for task in tasks {
        let (a, r, t) = task.await.expect("the task ran")?;
        (applied, refused, retries) = (applied + a, refused + r, retries + t);
    }
    println!(
        "400 commands: {applied} applied, {refused} refused (overdraft), {retries} conflicts decided again"
    );
    for account in &accounts {
        let loaded = store.load_aggregate::<Account>(account).await?;
        // The stored history, folded by hand: never below zero.
        let mut balance: i64 = 0;
        let mut lowest = 0;
        for event in store.read_aggregate(account, 0, 10_000).await? {
            match event.decode::<AccountEvent>()?.data {
                AccountEvent::Deposited { amount, .. } => {
                    balance += i64::try_from(amount).unwrap_or(i64::MAX)
                }
                AccountEvent::Withdrawn { amount, .. } => {
                    balance -= i64::try_from(amount).unwrap_or(i64::MAX)
                }
            }
            lowest = lowest.min(balance);
        }
        assert_eq!(
            u64::try_from(balance).ok(),
            Some(loaded.state.balance),
            "the load equals the fold"
        );
        assert!(lowest >= 0, "no overdraft was stored");
        println!(
            "{account}: balance {} after {} events (loaded from the snapshot at {:?}), lowest {lowest}",
            loaded.state.balance,
            loaded.version.unwrap_or(0),
            loaded.snapshot
        );
    }
    store.close().await
}

fn store_error(e: DecideError<String>) -> synckit::Error {
    match e {
        DecideError::Store(e) => e,
        other => synckit::Error::InvalidInput {
            field: "command",
            reason: other.to_string(),
        },
    }
}

#[tokio::main]
async fn main() -> synckit::Result<()> {
    let fresh = std::env::temp_dir().join(format!(
        "synckit-bank-{}.db",
        chrono::Utc::now().timestamp_micros()
    ));
    let target = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| fresh.display().to_string());
    let store = synckit::open(&target).await?;
    println!("using the {} store", store.backend());
    bank(store).await?;
    for file in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{file}", fresh.display()));
    }
    Ok(())
}
