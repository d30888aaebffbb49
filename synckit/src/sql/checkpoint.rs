//! The SQL of durable subscriptions' checkpoints (and an import's
//! progress, which is a checkpoint too).

use super::{Dialect, Number, Statement, int};
use crate::model::cursor::Cursor;

/// The stored position of checkpoint `name`, as [`Number`] rows.
pub(crate) fn load<DB: Dialect>(name: String) -> Statement<'static, DB> {
    DB::bind_text(
        Statement::new("SELECT position AS n FROM synckit_checkpoints WHERE name = $1"),
        name,
    )
}

/// The position [`load`] found, if any (a negative one as the start: see
/// [`int`]).
pub(crate) fn position(rows: Vec<Number>) -> Option<Cursor> {
    Number::first(rows).map(|p| Cursor::new(int::nonnegative(p)))
}

/// Stores `position` as checkpoint `name`.
pub(crate) fn save<DB: Dialect>(name: String, position: Cursor) -> Statement<'static, DB> {
    let statement = DB::bind_text(Statement::new(DB::SAVE_CHECKPOINT_SQL), name);
    DB::bind_int(statement, position.as_i64())
}
