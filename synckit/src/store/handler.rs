//! Handler subscriptions on a tokio runtime: a callback per event, in a
//! task of its own, for one stream, all events or one event type.

use std::future::Future;

use crate::model::cursor::Cursor;
use crate::model::error::{BoxError, Result};
use crate::model::filter::{Filter, Start};
use crate::model::notification::NotificationPayload;
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::store::SubscriptionSource;
use crate::store::progress::Progress;
use crate::store::subscription::Subscription;

/// A subscription running its handler on a spawned task.
///
/// Dropping the handle, or [`SubscriptionHandle::close`], stops this
/// subscription alone.
#[derive(Debug)]
#[must_use = "dropping the handle stops the subscription"]
pub struct SubscriptionHandle {
    description: String,
    progress: Progress,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl SubscriptionHandle {
    /// Runs `subscription.run(handler)` on a new task.
    pub fn spawn<T, F, Fut, E>(subscription: Subscription<T>, handler: F) -> Self
    where
        T: Payload + Clone,
        F: FnMut(Recorded<T>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let description = subscription.description().to_owned();
        let progress = subscription.progress();
        let task = tokio::spawn(subscription.run(handler));
        SubscriptionHandle {
            description,
            progress,
            task: Some(task),
        }
    }

    /// How far the handler has got; clone it to wait from elsewhere.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Waits until every event up to `version` is handled (or passed
    /// over): the read-your-writes step of a command handler that appended
    /// at `version` and reads the projection next. See
    /// [`Progress::wait_for`].
    ///
    /// ```
    /// # use synckit::{EventStore, ExpectedVersion, Filter, HandlerSubscriptions, MemoryStore, NewEvent};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> synckit::Result<()> {
    /// use std::sync::{Arc, Mutex};
    ///
    /// let store = MemoryStore::new();
    /// let seen = Arc::new(Mutex::new(0));
    /// let counter = seen.clone();
    /// let projection = store
    ///     .subscribe_with(Filter::all(), move |_| {
    ///         *counter.lock().unwrap() += 1;
    ///         async { Ok::<_, std::convert::Infallible>(()) }
    ///     })
    ///     .await?;
    /// let written = store
    ///     .append(ExpectedVersion::Any, vec![NewEvent::new("a", "Opened", serde_json::json!({}))])
    ///     .await?;
    /// projection.wait_for(written[0].version).await?;
    /// assert_eq!(*seen.lock().unwrap(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, version: u64) -> Result<Cursor> {
        self.progress.wait_for(version).await
    }

    /// Waits until the subscription has caught up with the store and
    /// handled everything before. See [`Progress::caught_up`].
    pub async fn caught_up(&self) -> Result<Cursor> {
        self.progress.caught_up().await
    }

    /// The checkpoint name or filter of the subscription.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the subscription has ended (its handler failed, or the store
    /// closed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the subscription.
    pub fn close(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Waits for the subscription to end and returns why: `Ok` when the
    /// store closed it, [`Error::Handler`](crate::Error::Handler) when the handler gave up, the
    /// store's error otherwise. A panic in the handler resumes here.
    pub async fn wait(mut self) -> Result<()> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Handler subscriptions receiving the notification payload of each event,
/// live from now: `subscribe_with(Filter::stream(id), handler)`,
/// `subscribe_with(Filter::all(), handler)`,
/// `subscribe_with(Filter::types([name]), handler)`. Each reads from the table through the
/// gap-free fence, so a handler sees every event once, in order.
pub trait HandlerSubscriptions: SubscriptionSource {
    /// Calls `handler` for each new event passing `filter`.
    fn subscribe_with<F, Fut, E>(
        &self,
        filter: Filter,
        mut handler: F,
    ) -> impl Future<Output = Result<SubscriptionHandle>> + Send
    where
        F: FnMut(NotificationPayload) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let opening = self.subscribe(filter, Start::Now);
        async move {
            let subscription = opening.await?;
            Ok(SubscriptionHandle::spawn(
                subscription,
                move |event: Recorded| handler(NotificationPayload::of(&event)),
            ))
        }
    }
}

impl<S: SubscriptionSource> HandlerSubscriptions for S {}
