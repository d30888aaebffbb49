//! Exactly-once projections: the handler's writes and the checkpoint
//! commit in one transaction (SQL of the leased save shared with
//! PostgreSQL: [`crate::sql::lease`]).

use std::sync::{Arc, Mutex};

use diesel::RunQueryDsl;
use diesel::sqlite::{Sqlite, SqliteConnection};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::SqliteStore;
use super::store::Place;
use crate::model::error::{BoxError, Result};
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::sql::{Number, TxError, lease};
use crate::store::subscription::{Applied, Apply, LeasedSave, Subscription};

/// Why a projection's transaction rolled back.
enum Rollback {
    Db(diesel::result::Error),
    Handler(BoxError),
    LeaseLost(usize),
}

impl From<diesel::result::Error> for Rollback {
    fn from(e: diesel::result::Error) -> Self {
        Rollback::Db(e)
    }
}

impl SqliteStore {
    /// Runs an exactly-once projection: `handler` gets the events of
    /// `subscription` (a durable one, `Start::Checkpoint`, or a group
    /// member, `Start::Group`, opened on this store) with the connection
    /// of a database transaction, and the subscription's checkpoint moves
    /// past them in the same transaction. The read model the handler
    /// writes (tables of the same file) and the checkpoint commit together
    /// or not at all, so after a crash at any point the projection resumes
    /// after exactly what it committed: no event is applied twice, none is
    /// skipped.
    ///
    /// The transaction is an immediate one: it holds the file's write lock
    /// from its start, so the lease check (a partition's for a group
    /// member) and the commit see the same lease, and a consumer that lost
    /// its lease commits nothing, not even the handler's writes. The
    /// handler runs where SQLite calls run, off the async tasks; it should
    /// be as quick as a write.
    ///
    /// Batches, retries, poison events and the store's closing behave as
    /// on PostgreSQL (`PgStore::project`).
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel::sql_types::Text;
    /// use synckit::sqlite::SqliteStore;
    /// use synckit::{EventStore, ExpectedVersion, Filter, NewEvent, Recorded, Start, SubscriptionSource};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> synckit::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("app.db");
    /// let store = SqliteStore::open(&path).await?;
    /// store
    ///     .append(ExpectedVersion::Any, vec![NewEvent::new("user-1", "Registered", serde_json::json!({}))])
    ///     .await?;
    /// let subscription = store.subscribe(Filter::all(), Start::checkpoint("users")).await?;
    /// let progress = subscription.progress();
    /// let projection = tokio::spawn({
    ///     let store = store.clone();
    ///     async move {
    ///         store
    ///             .project(subscription, |conn, events: &[Recorded]| {
    ///                 diesel::sql_query("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY)")
    ///                     .execute(conn)?;
    ///                 for event in events {
    ///                     diesel::sql_query("INSERT INTO users (id) VALUES (?)")
    ///                         .bind::<Text, _>(&event.aggregate_id)
    ///                         .execute(conn)?;
    ///                 }
    ///                 Ok::<_, diesel::result::Error>(())
    ///             })
    ///             .await
    ///     }
    /// });
    /// progress.wait_for(1).await?;
    /// assert_eq!(store.load_checkpoint("users").await?, Some(synckit::Cursor::new(1)));
    /// projection.abort();
    /// # Ok(()) }
    /// ```
    pub async fn project<T, F, E>(&self, subscription: Subscription<T>, handler: F) -> Result<()>
    where
        T: Payload + Clone + Send + Sync + 'static,
        F: FnMut(&mut SqliteConnection, &[Recorded<T>]) -> std::result::Result<(), E>
            + Send
            + 'static,
        E: Into<BoxError>,
    {
        subscription
            .project_with(SqliteProjection {
                store: self.clone(),
                handler: Arc::new(Mutex::new(handler)),
            })
            .await
    }
}

/// A projection's transactions on SQLite.
struct SqliteProjection<F> {
    store: SqliteStore,
    handler: Arc<Mutex<F>>,
}

impl<T, F, E> Apply<T> for SqliteProjection<F>
where
    T: Payload + Clone + Send + Sync + 'static,
    F: FnMut(&mut SqliteConnection, &[Recorded<T>]) -> std::result::Result<(), E> + Send + 'static,
    E: Into<BoxError>,
{
    fn apply(
        &mut self,
        events: Vec<Recorded<T>>,
        saves: Vec<LeasedSave>,
    ) -> BoxFuture<'_, Result<Applied>> {
        let handler = self.handler.clone();
        let store = self.store.clone();
        async move {
            store
                .run("project", Place::Here, move |c| {
                    let outcome = c.immediate_transaction(|c| {
                        if !events.is_empty() {
                            let mut handler = handler.lock().unwrap_or_else(|p| p.into_inner());
                            (*handler)(c, &events).map_err(|e| Rollback::Handler(e.into()))?;
                        }
                        for (i, save) in saves.iter().enumerate() {
                            let rows: Vec<Number> = lease::save_checkpoint::<Sqlite>(
                                &save.key,
                                save.token,
                                save.position,
                            )
                            .load(c)?;
                            if rows.is_empty() {
                                return Err(Rollback::LeaseLost(i));
                            }
                        }
                        Ok(())
                    });
                    match outcome {
                        Ok(()) => Ok(Applied::Committed),
                        Err(Rollback::Handler(error)) => Ok(Applied::Failed(error)),
                        Err(Rollback::LeaseLost(i)) => Ok(Applied::LeaseLost(i)),
                        Err(Rollback::Db(error)) => Err(TxError::Db(error)),
                    }
                })
                .await
        }
        .boxed()
    }
}
