//! The PostgreSQL store (feature `postgres`).
//!
//! Storage goes through diesel-async over a bb8 pool; no libpq.
//!
//! ```no_run
#![doc = include_str!("../docs/examples/postgres_tour.rs")]
//! ```
//!
//! (The examples of this page need a server, so the doctests only compile
//! them; the integration tests run each against a real one.)
//!
//! `cargo run --example postgres` walks through connect, append, a conflict
//! on purpose, a batch, loads and pool stats (`DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! ## Moving from SQLite
//!
//! ```no_run
#![doc = include_str!("../docs/examples/sqlite_to_postgres.rs")]
//! ```
//!
#![doc = include_str!("../docs/postgres.md")]

// The files of this module, and of [`crate::sqlite`], are split along the
// same ideas: `store` (the store and its trait impls), `config`, `append`,
// `read`, `rows`, `checkpoint`, `admin` (summaries and figures), `migrate`,
// and the wake-up source (`listener` here: LISTEN/NOTIFY); `group` is the
// writer queue of group commit, which only PostgreSQL has.
mod admin;
mod aggregate;
mod append;
mod checkpoint;
mod config;
mod connect;
mod conninfo;
mod group;
mod import;
mod listener;
mod migrate;
mod project;
mod read;
mod rows;
mod store;
mod tls;

pub use crate::store::report::{DurableSubscription, LeaseHolder, MigrationReport, Summary};
pub use admin::PoolStats;
pub use config::Config;
pub use import::{ImportProgress, ImportReport};
pub use migrate::migrate;
pub use store::PgStore;
