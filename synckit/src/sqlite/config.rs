//! The settings of a SQLite store.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::DEFAULT_BATCH_SIZE;
#[allow(unused_imports)] // for the docs' links
use crate::store::EventStore;

/// Configuration of a [`SqliteStore`](super::SqliteStore).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The database file; created when missing.
    pub path: PathBuf,
    /// How long a statement waits for another process's lock (default 5 s).
    pub busy_timeout: Duration,
    /// How often subscriptions check for commits of other processes
    /// (`PRAGMA data_version`; default 200 ms).
    pub poll_interval: Duration,
    /// Page size of catch-up reads and the first page of loads (the pages
    /// of a long load grow from it: see [`EventStore::read_stream`];
    /// default 1000).
    pub batch_size: usize,
}

impl Config {
    /// Defaults for this file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}
