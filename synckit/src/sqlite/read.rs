//! Reads: SQLite assigns versions under its write lock, so they become
//! visible in commit order and a read needs no fence.

use diesel::RunQueryDsl;
use diesel::sqlite::Sqlite;

use super::SqliteStore;
use super::rows::Row;
use super::store::Place;
use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::model::filter::Filter;
use crate::model::validate;
use crate::sql::query::{self, Upto};

impl SqliteStore {
    /// The rows of a read: up to `limit` events after `after` that pass
    /// `filter`.
    pub(super) async fn read_rows(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
        place: Place,
    ) -> Result<Vec<Row>> {
        validate::check_filter(filter)?;
        let query = query::events_after::<Sqlite>(filter, after, Upto::Head, limit);
        self.run("read", place, move |c| Ok(query.load(c)?)).await
    }
}
