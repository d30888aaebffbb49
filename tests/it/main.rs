//! synckit's integration tests, compiled into one binary.

mod behaviour;
mod derive;
mod import;
mod memory;
mod postgres;
mod realtime;
mod sqlite;
mod tls;
