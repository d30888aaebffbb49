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
mod poison;
mod pooler;
mod postgres;
mod progress;
mod realtime;
mod sqlite;
mod tls;
