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

/// A durable subscription as the database holds it (`subscriptions()` of
/// both database backends): its checkpoint, how far it lags behind the
/// head, and the consumer holding its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableSubscription {
    /// The checkpoint name.
    pub name: String,
    /// The stored checkpoint (`None`: never saved).
    pub position: Option<u64>,
    /// Versions between the checkpoint and the head readers see.
    pub lag: u64,
    /// The consumer that holds the lease now (`None`: nobody; a standby
    /// takes it at its next attempt).
    pub holder: Option<LeaseHolder>,
}

/// Who holds a durable subscription's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The consumer's id (one per subscription instance).
    pub owner: String,
    /// The lease's fencing token: one higher each time it changed hands.
    pub token: u64,
    /// How long the lease lasts unless renewed.
    pub expires_in: std::time::Duration,
}
