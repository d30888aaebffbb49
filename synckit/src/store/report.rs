//! What the admin calls of every database backend report.

/// Figures about what a store holds (`summary()` of both database
/// backends: `synckit::sqlite::Summary` and `synckit::postgres::Summary`
/// are this type).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Events stored.
    pub events: u64,
    /// Version of the last event readers can see.
    pub latest_version: u64,
    /// Distinct aggregates.
    pub streams: u64,
    /// Events per type, most frequent first.
    pub per_type: Vec<(String, u64)>,
    /// The server's notification queue usage, 0.0 to 1.0 (PostgreSQL;
    /// `None` where there is no such queue).
    pub notification_queue_usage: Option<f64>,
}

/// What a migration run did (`migrate` of both database backends).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Versions applied by this run, in order (empty when up to date).
    pub applied: Vec<String>,
}
