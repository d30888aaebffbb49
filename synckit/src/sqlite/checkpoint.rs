//! Durable subscriptions' checkpoints (SQL shared with PostgreSQL:
//! [`crate::sql::checkpoint`]).

use diesel::RunQueryDsl;
use diesel::sqlite::Sqlite;

use super::SqliteStore;
use super::store::Place;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::sql::{Number, checkpoint, lease, parked};
use crate::store::lease::{LeaseKey, LiveLease};
use crate::store::parked::{ParkedEvent, ParkedStatus};
use std::time::Duration;

impl SqliteStore {
    /// The stored position of checkpoint `name`.
    pub(super) async fn load_checkpoint_at(&self, name: &str) -> Result<Option<Cursor>> {
        let query = checkpoint::load::<Sqlite>(name.to_owned());
        self.run("load_checkpoint", Place::Here, move |c| {
            let rows: Vec<Number> = query.load(c)?;
            Ok(checkpoint::position(rows))
        })
        .await
    }

    /// Stores a durable subscription's position.
    pub(super) async fn save_checkpoint_at(&self, name: &str, position: Cursor) -> Result<()> {
        let query = checkpoint::save::<Sqlite>(name.to_owned(), position);
        self.run("save_checkpoint", Place::Here, move |c| {
            query.execute(c)?;
            Ok(())
        })
        .await
    }

    /// Takes or renews a lease ([`crate::sql::lease::acquire`]).
    pub(super) async fn acquire_lease_at(
        &self,
        key: &LeaseKey,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let query = lease::acquire::<Sqlite>(lease::SQLITE_ACQUIRE_SQL, key, ttl);
        self.run("acquire_lease", Place::Here, move |c| {
            let rows: Vec<Number> = query.load(c)?;
            Ok(lease::token(rows))
        })
        .await
    }

    /// Gives a lease back ([`crate::sql::lease::release`]).
    pub(super) async fn release_lease_at(&self, key: &LeaseKey, token: u64) -> Result<()> {
        let query = lease::release::<Sqlite>(key, token);
        self.run("release_lease", Place::Here, move |c| {
            query.execute(c)?;
            Ok(())
        })
        .await
    }

    /// Saves a checkpoint under its lease ([`crate::sql::lease::save_checkpoint`]).
    pub(super) async fn save_leased_checkpoint_at(
        &self,
        key: &LeaseKey,
        token: u64,
        position: Cursor,
    ) -> Result<bool> {
        let query = lease::save_checkpoint::<Sqlite>(key, token, position);
        self.run("save_checkpoint", Place::Here, move |c| {
            let rows: Vec<Number> = query.load(c)?;
            Ok(!rows.is_empty())
        })
        .await
    }

    /// The live leases named `prefix…`.
    pub(super) async fn live_leases_at(&self, prefix: &str) -> Result<Vec<LiveLease>> {
        let query = lease::live::<Sqlite>(lease::SQLITE_LIVE_SQL, prefix);
        self.run("live_leases", Place::Here, move |c| {
            let rows: Vec<lease::LiveRow> = query.load(c)?;
            Ok(lease::live_leases(rows))
        })
        .await
    }

    /// The checkpoints named `prefix…`.
    pub(super) async fn list_checkpoints_at(&self, prefix: &str) -> Result<Vec<(String, Cursor)>> {
        let query = lease::live::<Sqlite>(lease::SQLITE_CHECKPOINTS_SQL, prefix);
        self.run("list_checkpoints", Place::Here, move |c| {
            let rows: Vec<lease::CheckpointRow> = query.load(c)?;
            Ok(lease::checkpoints(rows))
        })
        .await
    }

    /// Parks an event ([`crate::sql::parked::park`]).
    pub(super) async fn park_event_at(&self, event: &ParkedEvent) -> Result<()> {
        let query = parked::park::<Sqlite>(parked::SQLITE_PARK_SQL, event);
        self.run("park_event", Place::Here, move |c| {
            query.execute(c)?;
            Ok(())
        })
        .await
    }

    /// The parked events of `subscription` (all when `None`).
    pub(super) async fn parked_at(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>> {
        let query = parked::list::<Sqlite>(subscription);
        self.run("parked", Place::Here, move |c| {
            let rows: Vec<parked::ParkedRow> = query.load(c)?;
            Ok(parked::rows(rows))
        })
        .await
    }

    /// Sets a parked event's status ([`crate::sql::parked::set`]).
    pub(super) async fn set_parked_at(
        &self,
        subscription: &str,
        version: u64,
        status: ParkedStatus,
        error: Option<(&str, u32)>,
        only_from: Option<ParkedStatus>,
    ) -> Result<bool> {
        let query = parked::set::<Sqlite>(subscription, version, status, error, only_from);
        self.run("set_parked", Place::Here, move |c| {
            let rows: Vec<Number> = query.load(c)?;
            Ok(parked::found(rows))
        })
        .await
    }

    /// Deletes a parked event.
    pub(super) async fn skip_parked_at(&self, subscription: &str, version: u64) -> Result<bool> {
        let query = parked::remove::<Sqlite>(subscription, version);
        self.run("skip_parked", Place::Here, move |c| {
            let rows: Vec<Number> = query.load(c)?;
            Ok(parked::found(rows))
        })
        .await
    }
}
