//! Durable subscriptions' checkpoints (SQL shared with SQLite:
//! [`crate::sql::checkpoint`]).

use diesel::pg::Pg;
use diesel_async::RunQueryDsl;

use super::PgStore;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::sql::{Number, checkpoint, db, lease, parked};
use crate::store::lease::{LeaseKey, LiveLease};
use crate::store::parked::{ParkedEvent, ParkedStatus};
use std::time::Duration;

impl PgStore {
    /// The stored position of checkpoint `name`.
    pub(super) async fn load_checkpoint_at(&self, name: &str) -> Result<Option<Cursor>> {
        let name = name.to_owned();
        self.with_conn("load_checkpoint", async |conn| {
            let rows: Vec<Number> = checkpoint::load::<Pg>(name)
                .load(&mut *conn)
                .await
                .map_err(db("load_checkpoint"))?;
            Ok(checkpoint::position(rows))
        })
        .await
    }

    /// Stores a durable subscription's position.
    pub(super) async fn save_checkpoint_at(&self, name: &str, position: Cursor) -> Result<()> {
        let name = name.to_owned();
        self.with_conn("save_checkpoint", async |conn| {
            checkpoint::save::<Pg>(name, position)
                .execute(&mut *conn)
                .await
                .map_err(db("save_checkpoint"))?;
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
        let query = lease::acquire::<Pg>(lease::PG_ACQUIRE_SQL, key, ttl);
        self.with_conn("acquire_lease", async |conn| {
            let rows: Vec<Number> = query.load(&mut *conn).await.map_err(db("acquire_lease"))?;
            Ok(lease::token(rows))
        })
        .await
    }

    /// Gives a lease back ([`crate::sql::lease::release`]).
    pub(super) async fn release_lease_at(&self, key: &LeaseKey, token: u64) -> Result<()> {
        let query = lease::release::<Pg>(key, token);
        self.with_conn("release_lease", async |conn| {
            query
                .execute(&mut *conn)
                .await
                .map_err(db("release_lease"))?;
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
        let query = lease::save_checkpoint::<Pg>(key, token, position);
        self.with_conn("save_checkpoint", async |conn| {
            let rows: Vec<Number> = query
                .load(&mut *conn)
                .await
                .map_err(db("save_checkpoint"))?;
            Ok(!rows.is_empty())
        })
        .await
    }

    /// The live leases named `prefix…`.
    pub(super) async fn live_leases_at(&self, prefix: &str) -> Result<Vec<LiveLease>> {
        let query = lease::live::<Pg>(lease::PG_LIVE_SQL, prefix);
        self.with_conn("live_leases", async |conn| {
            let rows: Vec<lease::LiveRow> =
                query.load(&mut *conn).await.map_err(db("live_leases"))?;
            Ok(lease::live_leases(rows))
        })
        .await
    }

    /// The checkpoints named `prefix…`.
    pub(super) async fn list_checkpoints_at(&self, prefix: &str) -> Result<Vec<(String, Cursor)>> {
        let query = lease::live::<Pg>(lease::PG_CHECKPOINTS_SQL, prefix);
        self.with_conn("list_checkpoints", async |conn| {
            let rows: Vec<lease::CheckpointRow> = query
                .load(&mut *conn)
                .await
                .map_err(db("list_checkpoints"))?;
            Ok(lease::checkpoints(rows))
        })
        .await
    }

    /// Parks an event ([`crate::sql::parked::park`]).
    pub(super) async fn park_event_at(&self, event: &ParkedEvent) -> Result<()> {
        let query = parked::park::<Pg>(parked::PG_PARK_SQL, event);
        self.with_conn("park_event", async |conn| {
            query.execute(&mut *conn).await.map_err(db("park_event"))?;
            Ok(())
        })
        .await
    }

    /// The parked events of `subscription` (all when `None`).
    pub(super) async fn parked_at(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>> {
        let query = parked::list::<Pg>(subscription);
        self.with_conn("parked", async |conn| {
            let rows: Vec<parked::ParkedRow> =
                query.load(&mut *conn).await.map_err(db("parked"))?;
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
        let query = parked::set::<Pg>(subscription, version, status, error, only_from);
        self.with_conn("set_parked", async |conn| {
            let rows: Vec<Number> = query.load(&mut *conn).await.map_err(db("set_parked"))?;
            Ok(parked::found(rows))
        })
        .await
    }

    /// Deletes a parked event.
    pub(super) async fn skip_parked_at(&self, subscription: &str, version: u64) -> Result<bool> {
        let query = parked::remove::<Pg>(subscription, version);
        self.with_conn("skip_parked", async |conn| {
            let rows: Vec<Number> = query.load(&mut *conn).await.map_err(db("skip_parked"))?;
            Ok(parked::found(rows))
        })
        .await
    }
}
