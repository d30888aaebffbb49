//! The one LISTEN connection of a store.
//!
//! It listens on `events_global` only: every notification carries the
//! aggregate id and the event type, so the store's [`Hub`] wakes exactly
//! the subscriptions that may want the event, however many there are. A
//! wake-up carries no event; subscriptions read the table, so notifications
//! lost while the connection is down cost latency, never an event. After
//! every (re)connect, and at every idle tick, all subscriptions are woken to
//! re-read from their own positions.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use super::config::Config;
use super::connect;
use crate::model::error::{Error, with_causes};
use crate::model::notification::{GLOBAL_CHANNEL, NotificationPayload};
use crate::store::hub::Hub;

/// What the rest of the store sees of the listener.
#[derive(Default)]
pub(crate) struct ListenerState {
    connected: AtomicBool,
    /// Consecutive failed connection attempts.
    failures: AtomicU32,
    /// Set once the listener gave up: why.
    gave_up: Mutex<Option<String>>,
}

impl ListenerState {
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The listener's task was stopped: its connection is gone.
    pub(crate) fn stopped(&self) {
        self.connected.store(false, Ordering::Release);
    }

    /// `Err` once the listener has given up reconnecting.
    pub(crate) fn health(&self) -> crate::Result<()> {
        match &*self.gave_up.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(Error::ListenerFailed {
                attempts: self.failures.load(Ordering::Acquire),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The delay before reconnect attempt `attempt` (from 1): the reconnect
/// interval doubled per failure, capped at one minute, with ±50 % jitter so
/// that many processes do not reconnect in step.
pub(crate) fn backoff(interval: Duration, attempt: u32) -> Duration {
    let base = interval
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(60));
    base.mul_f64(0.5 + fastrand::f64())
}

/// Runs the listener until the store closes (the task is aborted) or it
/// gives up after `max_reconnect_attempts` consecutive failures.
pub(crate) async fn run(config: Config, hub: Hub, state: Arc<ListenerState>) {
    let metrics = config.metrics;
    loop {
        match session(&config, &hub, &state, metrics).await {
            Ok(()) => {}
            Err(error) => {
                state.connected.store(false, Ordering::Release);
                let failures = state.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if metrics {
                    metrics::counter!("synckit_listener_failures_total").increment(1);
                }
                if failures > config.max_reconnect_attempts {
                    tracing::error!(%error, failures, "listener gave up reconnecting");
                    *state.gave_up.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(error.to_string());
                    // Subscriptions wake, see the failure and end with it.
                    hub.notify_all();
                    return;
                }
                let delay = backoff(config.reconnect_interval, failures);
                tracing::warn!(%error, failures, ?delay, "listener disconnected; reconnecting");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection's life: connect, LISTEN, wake everyone, then forward
/// notifications and tick when idle, until the connection fails.
async fn session(
    config: &Config,
    hub: &Hub,
    state: &ListenerState,
    metrics: bool,
) -> crate::Result<()> {
    let (client, mut messages) = connect::connect_raw(config).await?;
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<String>();
    let demux = hub.clone();
    let driver = tokio::spawn(async move {
        let reason = loop {
            match messages.next().await {
                // With no subscription open (a store that only writes),
                // there is no one to wake: skip the parse.
                Some(Ok(AsyncMessage::Notification(_))) if demux.is_empty() => {}
                Some(Ok(AsyncMessage::Notification(n))) => {
                    match NotificationPayload::from_json(n.payload()) {
                        Ok(p) => demux.notify(&p.aggregate_id, &p.event_type),
                        // Not ours to parse: wake everyone rather than lose it.
                        Err(_) => demux.notify_all(),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break with_causes(&e),
                None => break "the connection closed".to_owned(),
            }
        };
        let _ = closed_tx.send(reason);
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN \"{GLOBAL_CHANNEL}\""))
            .await
            .map_err(|e| Error::database("listen", e))?;
        state.connected.store(true, Ordering::Release);
        state.failures.store(0, Ordering::Release);
        if metrics {
            metrics::gauge!("synckit_listener_connected").set(1.0);
        }
        tracing::info!("listener connected");
        // Whatever committed while we were away is in the table.
        hub.notify_all();
        loop {
            tokio::select! {
                reason = &mut closed_rx => {
                    return Err(Error::database("listen", reason.unwrap_or_else(|_| "listener task ended".to_owned())));
                }
                () = tokio::time::sleep(config.notification_timeout) => {
                    // Idle: check the connection, export the queue usage,
                    // and let subscriptions poll the table.
                    let check = tokio::time::timeout(
                        config.connect_timeout,
                        client.query_one("SELECT pg_notification_queue_usage()", &[]),
                    )
                    .await;
                    match check {
                        Ok(Ok(row)) => {
                            if metrics {
                                let usage: f64 = row.get(0);
                                metrics::gauge!("synckit_notification_queue_usage").set(usage);
                            }
                        }
                        Ok(Err(e)) => return Err(Error::database("listen", e)),
                        Err(_) => return Err(Error::database("listen", "health check timed out")),
                    }
                    hub.notify_all();
                }
            }
        }
    }
    .await;
    state.connected.store(false, Ordering::Release);
    if metrics {
        metrics::gauge!("synckit_listener_connected").set(0.0);
    }
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        for attempt in 1..=20 {
            let d = backoff(base, attempt);
            let nominal = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(60));
            assert!(d >= nominal / 2 && d <= nominal * 3 / 2, "{attempt}: {d:?}");
        }
    }
}
