//! synckit's integration tests, compiled into one binary.

mod aggregates;
mod behaviour;
mod cancel;
mod derive;
mod evolution;
mod group_commit;
mod groups;
mod guide;
mod import;
mod leases;
mod memory;
mod open;
mod parked;
mod poison;
mod pooler;
mod postgres;
mod progress;
mod projection;
mod realtime;
mod remote;
#[path = "../support/restartable.rs"]
mod restartable;
mod server;
mod sqlite;
mod tls;

/// Held by the tests that load both cores for long (the 20,000-event group
/// runs) and by those that judge a leak by a short timeout (the
/// cancellation sweeps on PostgreSQL), so that the one never runs beside
/// the other.
pub(crate) static SATURATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
