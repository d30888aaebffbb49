//! Durable subscriptions' checkpoints (SQL shared with PostgreSQL:
//! [`crate::sql::checkpoint`]).

use diesel::RunQueryDsl;
use diesel::sqlite::Sqlite;

use super::SqliteStore;
use super::store::Place;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::sql::{Number, checkpoint};

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
}
