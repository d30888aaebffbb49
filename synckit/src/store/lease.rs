//! One consumer per checkpoint name: the lease a durable subscription holds
//! while it reads, its heartbeat, and the standby wait of the others.
//!
//! A lease is a row in the database (on the SQL backends), so consumers in
//! any number of processes on one database agree: one of them holds it and
//! reads; the others wait as standbys and take it over when it is given
//! back (the subscription is dropped) or expires (its process died or
//! stopped renewing). Every checkpoint save checks the lease's fencing
//! token in its own statement, so a consumer that lost its lease (paused
//! past its expiry, say) can never move the checkpoint again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;

use crate::model::error::{Error, Result};
use crate::store::SubscriptionSource;
use crate::store::signal::Signal;

/// How long a lease lasts without renewal unless the subscription says
/// otherwise ([`Subscription::with_lease_ttl`](crate::Subscription::with_lease_ttl)).
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The shortest lease: renewals every third of it stay a few per second.
pub(crate) const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// The most a standby waits between two attempts to take a lease.
const MAX_STANDBY_RETRY: Duration = Duration::from_secs(1);

/// Which lease, and who asks for it.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    /// The checkpoint name.
    pub name: String,
    /// The part of the subscription (0: all of it).
    pub part: u32,
    /// The consumer: unique per subscription.
    pub owner: String,
}

/// A lease held now, as [`SubscriptionSource::live_leases`] lists it.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLease {
    /// The lease's name.
    pub name: String,
    /// Its part.
    pub part: u32,
    /// Its holder.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// How long it lasts unless renewed.
    pub expires_in: Duration,
}

/// A subscription's side of its lease.
pub(crate) struct Lease {
    pub(crate) key: LeaseKey,
    /// The token while held, 0 while not.
    token: AtomicU64,
    ttl_ms: AtomicU64,
    /// The lease passed to another consumer (a save was refused, or a
    /// renewal found it taken): the subscription goes back to standby.
    lost: AtomicBool,
    /// The stored checkpoint may differ from what the subscription holds
    /// (a transaction whose outcome is unknown): read it again.
    reload: AtomicBool,
    /// Wakes the subscription when the lease is lost.
    wake: Arc<Signal>,
}

impl Lease {
    pub(crate) fn new(name: String, wake: Arc<Signal>) -> Arc<Self> {
        Self::of(
            LeaseKey {
                name,
                part: 0,
                owner: new_owner(),
            },
            DEFAULT_LEASE_TTL,
            wake,
        )
    }

    /// The lease `key`, lasting `ttl` without renewal.
    pub(crate) fn of(key: LeaseKey, ttl: Duration, wake: Arc<Signal>) -> Arc<Self> {
        Arc::new(Lease {
            key,
            token: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(millis(ttl.max(MIN_LEASE_TTL))),
            lost: AtomicBool::new(false),
            reload: AtomicBool::new(false),
            wake,
        })
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Acquire))
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms
            .store(millis(ttl.max(MIN_LEASE_TTL)), Ordering::Release);
    }

    /// The token, when the lease is held and not known to be lost.
    pub(crate) fn held(&self) -> Option<u64> {
        match self.token.load(Ordering::Acquire) {
            0 => None,
            _ if self.lost.load(Ordering::Acquire) => None,
            token => Some(token),
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Asks the subscription to read its checkpoint again before it goes
    /// on.
    pub(crate) fn request_reload(&self) {
        self.reload.store(true, Ordering::Release);
        self.wake.raise();
    }

    /// Whether a reload was asked for since the last call.
    pub(crate) fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::AcqRel)
    }

    fn take(&self, token: u64) {
        self.token.store(token, Ordering::Release);
        self.lost.store(false, Ordering::Release);
    }

    /// Marks the lease lost and wakes the subscription.
    pub(crate) fn lose(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            #[cfg(feature = "runtime")]
            tracing::warn!(
                subscription = %self.key.name,
                owner = %self.key.owner,
                "lost the subscription's lease to another consumer: back to standby"
            );
        }
        self.wake.raise();
    }

    /// Saves `position` as the checkpoint while the lease is held; fails
    /// with [`Error::LeaseLost`] when it is not.
    pub(crate) async fn save<S: SubscriptionSource>(
        &self,
        store: &S,
        position: crate::Cursor,
    ) -> Result<()> {
        let lost = || Error::LeaseLost {
            subscription: self.key.name.clone(),
        };
        let token = self.held().ok_or_else(lost)?;
        if store
            .save_leased_checkpoint(&self.key, token, position)
            .await?
        {
            Ok(())
        } else {
            self.lose();
            Err(lost())
        }
    }
}

/// A new consumer id: unique per subscription.
pub(crate) fn new_owner() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a subscription holds while it holds its lease: the heartbeat,
/// stopped, and the lease given back, when dropped.
pub(crate) struct Held {
    #[cfg(feature = "runtime")]
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    release: Option<futures::future::BoxFuture<'static, ()>>,
    token: u64,
}

impl Held {
    /// Lets go of a lease found lost without giving it back: the
    /// subscription may take it again at once under the same token (no
    /// one else took it), and a late release would free it under its feet.
    pub(crate) fn abandon(mut self, hub: &crate::store::hub::Hub, lease: &Lease) {
        self.release = None;
        hub.forget_lease(&lease.key, self.token);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        #[cfg(feature = "runtime")]
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        if let Some(release) = self.release.take() {
            #[cfg(feature = "runtime")]
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // Given back at once; if this fails, the lease expires.
                runtime.spawn(release);
                return;
            }
            // No runtime: a store whose release needs none (in memory).
            let _ = release.now_or_never();
        }
    }
}

/// Waits until this subscription holds `lease`: at once when it is free,
/// else as a standby, trying again when a lease is given back on this
/// store or every third of the lease's time to live (at most every
/// second). Starts the heartbeat that keeps it.
pub(crate) async fn acquire<S: SubscriptionSource>(store: &S, lease: &Arc<Lease>) -> Result<Held> {
    let mut announced = false;
    loop {
        // Listen before trying, so that a release meanwhile is not missed.
        let released = store.hub().lease_released();
        if let Some(held) = try_acquire(store, lease).await? {
            return Ok(held);
        }
        if !announced {
            announced = true;
            #[cfg(feature = "runtime")]
            tracing::info!(
                subscription = %lease.key.name,
                owner = %lease.key.owner,
                "another consumer holds the subscription's lease: waiting as a standby"
            );
        }
        standby_wait(released, standby_retry(lease.ttl())).await;
    }
}

/// How long a standby waits between two attempts: a third of the lease's
/// time to live, at most a second.
pub(crate) fn standby_retry(ttl: Duration) -> Duration {
    (ttl / 3).min(MAX_STANDBY_RETRY)
}

/// Takes `lease` when it is free (or this consumer's already), with its
/// heartbeat; `None` while another consumer holds it.
pub(crate) async fn try_acquire<S: SubscriptionSource>(
    store: &S,
    lease: &Arc<Lease>,
) -> Result<Option<Held>> {
    let Some(token) = store.acquire_lease(&lease.key, lease.ttl()).await? else {
        return Ok(None);
    };
    lease.take(token);
    store.hub().hold_lease(&lease.key, token);
    #[cfg(feature = "runtime")]
    tracing::debug!(
        subscription = %lease.key.name,
        part = lease.key.part,
        owner = %lease.key.owner,
        token,
        "took the lease"
    );
    Ok(Some(Held {
        #[cfg(feature = "runtime")]
        heartbeat: heartbeat(store.clone(), lease.clone(), token),
        release: Some({
            let (store, key) = (store.clone(), lease.key.clone());
            async move {
                store.hub().forget_lease(&key, token);
                let _ = store.release_lease(&key, token).await;
                store.hub().lease_given_back();
            }
            .boxed()
        }),
        token,
    }))
}

/// Waits for `released`, or `retry` on a tokio runtime (without one, only
/// a release on this store wakes a standby: the in-memory store's leases
/// never expire).
pub(crate) async fn standby_wait(released: impl std::future::Future<Output = ()>, retry: Duration) {
    #[cfg(feature = "runtime")]
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = tokio::time::timeout(retry, released).await;
        return;
    }
    let _ = retry;
    released.await;
}

/// Renews the lease every third of its time to live; marks it lost when a
/// renewal finds it taken, or when renewals have failed for longer than it
/// lives.
#[cfg(feature = "runtime")]
fn heartbeat<S: SubscriptionSource>(
    store: S,
    lease: Arc<Lease>,
    token: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some(runtime.spawn(async move {
        let mut renewed = tokio::time::Instant::now();
        loop {
            let ttl = lease.ttl();
            tokio::time::sleep(ttl / 3).await;
            if !store.hub().holds_lease(&lease.key, token) {
                // Given back by a closing store: renewing would take it again.
                return;
            }
            match store.acquire_lease(&lease.key, ttl).await {
                Ok(Some(now)) if now == token => renewed = tokio::time::Instant::now(),
                Ok(_) => return lease.lose(),
                Err(error) if renewed.elapsed() < ttl => {
                    tracing::warn!(
                        subscription = %lease.key.name,
                        %error,
                        "could not renew the subscription's lease; trying again"
                    );
                }
                Err(_) => return lease.lose(),
            }
        }
    }))
}

/// Gives back every lease the subscriptions of `store` hold: the first
/// step of closing a store, so that standbys elsewhere take over at once.
pub(crate) async fn give_back_all<S: SubscriptionSource>(store: &S) {
    for (key, token) in store.hub().take_leases() {
        // On failure the lease expires instead.
        let _ = store.release_lease(&key, token).await;
    }
}
