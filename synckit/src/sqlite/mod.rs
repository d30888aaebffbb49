//! The embedded store on SQLite (feature `sqlite`, bundled SQLite).
//!
//! One connection (its calls run on the caller's worker under
//! `block_in_place`, or on a blocking thread), in WAL mode with a busy
//! timeout. SQLite runs one write transaction at a time and assigns
//! `version` inside it, so versions become visible in commit order and
//! reads need no fence. Subscriptions are woken in process after each
//! commit, and by a second connection that polls `PRAGMA data_version` for
//! commits of other processes.
//!
//! The files of this module, and of [`crate::postgres`], are split along
//! the same ideas: `store` (the store and its trait impls), `config`,
//! `append`, `read`, `rows`, `checkpoint`, `admin` (summaries), `migrate`,
//! and the wake-up source (`watcher` here: `PRAGMA data_version`).

mod admin;
mod append;
mod checkpoint;
mod config;
mod migrate;
mod read;
mod rows;
mod store;
mod watcher;

pub use config::Config;
pub use migrate::migrate;
pub use store::SqliteStore;
