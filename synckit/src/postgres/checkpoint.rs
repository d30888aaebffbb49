//! Durable subscriptions' checkpoints (SQL shared with SQLite:
//! [`crate::sql::checkpoint`]).

use diesel::pg::Pg;
use diesel_async::RunQueryDsl;

use super::PgStore;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::sql::{Number, checkpoint, db};

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
}
