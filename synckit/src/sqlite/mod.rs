//! The embedded store on SQLite (feature `sqlite`, bundled SQLite).
//!
#![doc = include_str!("../docs/sqlite.md")]

// The files of this module, and of [`crate::postgres`], are split along
// the same ideas: `store` (the store and its trait impls), `config`,
// `append`, `read`, `rows`, `checkpoint`, `admin` (summaries), `migrate`,
// and the wake-up source (`watcher` here: `PRAGMA data_version`).
mod admin;
mod aggregate;
mod append;
mod checkpoint;
mod config;
mod migrate;
mod project;
mod read;
mod rows;
mod store;
mod watcher;

pub use crate::store::report::{DurableSubscription, LeaseHolder, MigrationReport, Summary};
pub use config::Config;
pub use migrate::migrate;
pub use store::SqliteStore;
