//! Which events a read or a subscription wants, and where it starts.

use std::collections::BTreeSet;

use crate::model::cursor::Cursor;
use crate::model::recorded::Recorded;
use crate::store::group::Group;

/// Selects events by stream (aggregate id) and by event type.
///
/// Both parts are optional; when both are set an event must match both.
///
/// ```
/// use synckit::Filter;
///
/// let all = Filter::all();
/// let one_stream = Filter::stream("order-1");
/// let some_types = Filter::types(["order.placed", "order.shipped"]);
/// let both = Filter::stream("order-1").and_types(["order.placed"]);
/// assert!(all.is_all());
/// assert_eq!(both.aggregate_ids().unwrap().len(), 1);
/// # let _ = (one_stream, some_types);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    streams: Option<BTreeSet<String>>,
    types: Option<BTreeSet<String>>,
}

impl Filter {
    /// Every event of the store.
    pub fn all() -> Self {
        Filter::default()
    }

    /// The events of one aggregate.
    pub fn stream(aggregate_id: impl Into<String>) -> Self {
        Filter::all().and_streams([aggregate_id])
    }

    /// The events of several aggregates.
    pub fn streams<I, S>(aggregate_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Filter::all().and_streams(aggregate_ids)
    }

    /// The events of these types.
    pub fn types<I, S>(event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Filter::all().and_types(event_types)
    }

    /// Restricts to these aggregates as well (repeated calls widen the set).
    pub fn and_streams<I, S>(mut self, aggregate_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.streams
            .get_or_insert_with(BTreeSet::new)
            .extend(aggregate_ids.into_iter().map(Into::into));
        self
    }

    /// Restricts to these event types as well (repeated calls widen the set).
    pub fn and_types<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types
            .get_or_insert_with(BTreeSet::new)
            .extend(event_types.into_iter().map(Into::into));
        self
    }

    /// The aggregates selected, or `None` for all.
    pub fn aggregate_ids(&self) -> Option<&BTreeSet<String>> {
        self.streams.as_ref()
    }

    /// The event types selected, or `None` for all.
    pub fn event_types(&self) -> Option<&BTreeSet<String>> {
        self.types.as_ref()
    }

    /// Whether the filter selects every event.
    pub fn is_all(&self) -> bool {
        self.streams.is_none() && self.types.is_none()
    }

    /// Whether an event with this aggregate id and type passes the filter.
    pub fn matches_parts(&self, aggregate_id: &str, event_type: &str) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|s| s.contains(aggregate_id))
            && self.types.as_ref().is_none_or(|t| t.contains(event_type))
    }

    /// Whether a recorded event passes the filter.
    pub fn matches<T>(&self, event: &Recorded<T>) -> bool {
        self.matches_parts(&event.aggregate_id, &event.event_type)
    }

    /// A short human description, used in logs and error messages.
    pub fn describe(&self) -> String {
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        match (&self.streams, &self.types) {
            (None, None) => "all".to_owned(),
            (Some(s), None) => format!("streams[{}]", list(s)),
            (None, Some(t)) => format!("types[{}]", list(t)),
            (Some(s), Some(t)) => format!("streams[{}]+types[{}]", list(s), list(t)),
        }
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Start {
    /// With events committed after the subscription is created.
    Now,
    /// With the first event of the store (a full catch-up).
    Beginning,
    /// With the first event after this cursor.
    After(Cursor),
    /// After the last event acknowledged by the named durable subscription,
    /// stored in the database (the beginning when the name is new).
    Checkpoint(String),
    /// As a member of a consumer group: the events of the partitions this
    /// member owns, each partition after its own checkpoint (see
    /// [`Group`]).
    Group(Group),
}

impl Start {
    /// A durable subscription with this name.
    pub fn checkpoint(name: impl Into<String>) -> Self {
        Start::Checkpoint(name.into())
    }

    /// A member of the consumer group `name` of `partitions` partitions.
    pub fn group(name: impl Into<String>, partitions: u32) -> Self {
        Start::Group(Group::new(name, partitions))
    }
}
