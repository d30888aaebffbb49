//! Exactly-once projections: the handler's writes and the checkpoint
//! commit in one transaction (SQL of the leased save shared with SQLite:
//! [`crate::sql::lease`]).

use diesel::pg::Pg;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, TransactionManager};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::PgStore;
use crate::model::error::{BoxError, Result};
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::sql::{Number, db, lease};
use crate::store::subscription::{Applied, Apply, LeasedSave, Subscription};

type Transactions = <AsyncPgConnection as AsyncConnection>::TransactionManager;

impl PgStore {
    /// Runs an exactly-once projection: `handler` gets the events of
    /// `subscription` (a durable one, `Start::Checkpoint`, or a group
    /// member, `Start::Group`, opened on this store) with the connection
    /// of a database transaction, and the subscription's checkpoint moves
    /// past them in the same transaction. The read model the handler
    /// writes and the checkpoint commit together or not at all, so after a
    /// crash at any point the projection resumes after exactly what it
    /// committed: no event is applied twice, none is skipped.
    ///
    /// - Each transaction holds one event, or up to
    ///   [`Subscription::with_events_per_transaction`] of those already
    ///   read.
    /// - The checkpoint save checks the subscription's lease (a partition's
    ///   for a group member) in the transaction, its row locked until the
    ///   commit: a consumer that lost its lease commits nothing, not even
    ///   the handler's writes.
    /// - A handler error rolls the transaction back and is retried as
    ///   [`Subscription::with_handler_retry`] says, then ends the
    ///   projection with [`Error::Handler`](crate::Error::Handler).
    /// - A transaction whose outcome is unknown (the connection failed
    ///   around its commit) is settled by reading the checkpoint again.
    /// - Poison events, transient errors and the store's closing behave as
    ///   in [`Subscription::run`].
    ///
    /// The handler must write through the connection it is given (a write
    /// elsewhere is outside the transaction) and must not commit it. It
    /// returns its future boxed (`Box::pin(async move { … })`), which lets
    /// it borrow the connection and the events.
    ///
    /// ```no_run
    /// use diesel::sql_types::{BigInt, Text};
    /// use diesel_async::RunQueryDsl;
    /// use synckit::postgres::{Config, PgStore};
    /// use synckit::{Filter, Recorded, Start, SubscriptionSource};
    ///
    /// # async fn example() -> synckit::Result<()> {
    /// let store = PgStore::connect(Config::new("postgres://postgres@127.0.0.1/app")).await?;
    /// let subscription = store
    ///     .subscribe(Filter::types(["Deposited"]), Start::checkpoint("balances"))
    ///     .await?;
    /// store
    ///     .project(subscription, |conn, events: &[Recorded]| Box::pin(async move {
    ///         for event in events {
    ///             diesel::sql_query(
    ///                 "INSERT INTO balances (account, amount) VALUES ($1, $2) \
    ///                  ON CONFLICT (account) DO UPDATE SET amount = balances.amount + $2",
    ///             )
    ///             .bind::<Text, _>(&event.aggregate_id)
    ///             .bind::<BigInt, _>(event.data["amount"].as_i64().unwrap_or(0))
    ///             .execute(conn)
    ///             .await?;
    ///         }
    ///         Ok::<_, diesel::result::Error>(())
    ///     }))
    ///     .await
    /// # }
    /// ```
    pub async fn project<T, F, E>(&self, subscription: Subscription<T>, handler: F) -> Result<()>
    where
        T: Payload + Clone + Send + Sync,
        F: for<'c> FnMut(
                &'c mut AsyncPgConnection,
                &'c [Recorded<T>],
            ) -> BoxFuture<'c, std::result::Result<(), E>>
            + Send,
        E: Into<BoxError> + 'static,
    {
        subscription
            .project_with(PgProjection {
                store: self.clone(),
                handler,
            })
            .await
    }
}

/// A projection's transactions on PostgreSQL.
struct PgProjection<F> {
    store: PgStore,
    handler: F,
}

impl<T, F, E> Apply<T> for PgProjection<F>
where
    T: Payload + Clone + Send + Sync,
    F: for<'c> FnMut(
            &'c mut AsyncPgConnection,
            &'c [Recorded<T>],
        ) -> BoxFuture<'c, std::result::Result<(), E>>
        + Send,
    E: Into<BoxError> + 'static,
{
    fn apply(
        &mut self,
        events: Vec<Recorded<T>>,
        saves: Vec<LeasedSave>,
    ) -> BoxFuture<'_, Result<Applied>> {
        let PgProjection { store, handler } = self;
        async move {
            store
                .with_conn("project", async |conn| {
                    Transactions::begin_transaction(conn)
                        .await
                        .map_err(db("project"))?;
                    let outcome = apply(conn, handler, &events, &saves).await;
                    match outcome {
                        Ok(Applied::Committed) => {
                            if let Err(e) = Transactions::commit_transaction(conn).await {
                                let _ = Transactions::rollback_transaction(conn).await;
                                return Err(crate::Error::database("project", e));
                            }
                            Ok(Applied::Committed)
                        }
                        other => {
                            let _ = Transactions::rollback_transaction(conn).await;
                            other
                        }
                    }
                })
                .await
        }
        .boxed()
    }
}

/// The handler's writes, then each checkpoint save under its lease, in
/// the transaction begun on `conn`.
async fn apply<T, F, E>(
    conn: &mut AsyncPgConnection,
    handler: &mut F,
    events: &[Recorded<T>],
    saves: &[LeasedSave],
) -> Result<Applied>
where
    F: for<'c> FnMut(
        &'c mut AsyncPgConnection,
        &'c [Recorded<T>],
    ) -> BoxFuture<'c, std::result::Result<(), E>>,
    E: Into<BoxError>,
{
    if !events.is_empty()
        && let Err(error) = handler(conn, events).await
    {
        return Ok(Applied::Failed(error.into()));
    }
    for (i, save) in saves.iter().enumerate() {
        let rows: Vec<Number> = lease::save_checkpoint::<Pg>(&save.key, save.token, save.position)
            .load(conn)
            .await
            .map_err(db("project"))?;
        if rows.is_empty() {
            return Ok(Applied::LeaseLost(i));
        }
    }
    Ok(Applied::Committed)
}
