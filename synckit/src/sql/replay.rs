//! The idempotent-replay lookup of an append: does it repeat stored events?

use std::collections::HashMap;

use super::{Dialect, Statement, query};
use crate::model::error::Result;
use crate::model::recorded::{NewEvent, Recorded};
use crate::store::idempotent_replay;

/// The stored events sharing an id with `events` ([`query::events_with_ids`]).
pub(crate) fn lookup<DB: Dialect>(events: &[NewEvent]) -> Statement<'static, DB> {
    query::events_with_ids(events.iter().map(|e| e.id().to_owned()).collect())
}

/// What the append of `events` is, given the `stored` events
/// [`lookup`] found: a replay (those events, when it repeats them all),
/// [`crate::Error::DuplicateEvent`] when it repeats some or with other
/// content, `None` when it repeats none.
pub(crate) fn outcome(events: &[NewEvent], stored: &[Recorded]) -> Result<Option<Vec<Recorded>>> {
    let by_id: HashMap<&str, &Recorded> = stored.iter().map(|r| (r.id.as_str(), r)).collect();
    idempotent_replay(events.iter(), |id| by_id.get(id).copied())
}
