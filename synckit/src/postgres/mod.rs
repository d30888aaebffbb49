//! The PostgreSQL store (feature `postgres`).
//!
#![doc = include_str!("../docs/postgres.md")]

// The files of this module, and of [`crate::sqlite`], are split along the
// same ideas: `store` (the store and its trait impls), `config`, `append`,
// `read`, `rows`, `checkpoint`, `admin` (summaries and figures), `migrate`,
// and the wake-up source (`listener` here: LISTEN/NOTIFY).
mod admin;
mod append;
mod checkpoint;
mod config;
mod connect;
mod conninfo;
mod import;
mod listener;
mod migrate;
mod read;
mod rows;
mod store;
mod tls;

pub use crate::store::report::{MigrationReport, Summary};
pub use admin::PoolStats;
pub use config::Config;
pub use import::{ImportProgress, ImportReport};
pub use migrate::migrate;
pub use store::PgStore;
