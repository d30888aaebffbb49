//! An in-memory store with the guarantees of the database backends.
//!
//! Runtime-agnostic (no tokio, no threads of its own), so it runs on
//! `wasm32-unknown-unknown` as well as in tests. Appends take one lock, so a
//! batch is visible whole or not at all, and versions are assigned in commit
//! order: readers can never see a gap that fills later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::model::cursor::{Cursor, ExpectedVersion};
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::recorded::{NewEvent, Recorded};
use crate::model::validate;
use crate::store::aggregate::StoredSnapshot;
use crate::store::hub::Hub;
use crate::store::lease::{LeaseKey, LiveLease};
use crate::store::parked::{ParkedEvent, ParkedStatus};
use crate::store::{
    DEFAULT_BATCH_SIZE, EventStore, SubscriptionSource, TypedPage, idempotent_replay,
};

#[derive(Default)]
struct State {
    closed: bool,
    events: Vec<Recorded>,
    /// Index into `events` by event id.
    by_id: HashMap<String, usize>,
    /// `stream_version` of each aggregate's last event.
    streams: HashMap<String, u64>,
    /// Indexes into `events` of each aggregate's events, in stream order.
    by_stream: HashMap<String, Vec<usize>>,
    checkpoints: HashMap<String, Cursor>,
    /// Leases by checkpoint name and part.
    leases: HashMap<(String, u32), MemoryLease>,
    /// Snapshots by aggregate type and id.
    snapshots: HashMap<(String, String), StoredSnapshot>,
    /// Parked events by subscription and version.
    parked: std::collections::BTreeMap<(String, u64), ParkedEvent>,
}

/// Who holds a lease in memory.
struct MemoryLease {
    owner: String,
    token: u64,
    released: bool,
}

/// An event store held in memory; clones share it.
///
/// ```
/// use serde_json::json;
/// use synckit::{Cursor, EventStore, ExpectedVersion, MemoryStore, NewEvent};
///
/// # futures::executor::block_on(async {
/// let store = MemoryStore::new();
/// let e = NewEvent::new("order-1", "order.placed", json!({"total": 12}));
/// store.append(ExpectedVersion::NoStream, vec![e]).await?;
/// let events = store.load(Cursor::START).await?;
/// assert_eq!(events[0].stream_version, 1);
/// # Ok::<(), synckit::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    hub: Hub,
    batch_size: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("events", &state.events.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::with_batch_size(DEFAULT_BATCH_SIZE)
    }

    /// An empty store whose loads and catch-ups read pages of `batch_size`
    /// events (at least 1).
    pub fn with_batch_size(batch_size: usize) -> Self {
        MemoryStore {
            state: Arc::default(),
            hub: Hub::new(),
            batch_size: batch_size.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below validates first and then only pushes, so a
        // panic cannot leave a half-written batch behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.lock();
        if state.closed {
            return Err(Error::StoreClosed);
        }
        Ok(state)
    }

    fn append_locked(
        state: &mut State,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        if let Some(existing) = idempotent_replay(events.iter(), |id| {
            state.by_id.get(id).map(|&i| &state.events[i])
        })? {
            return Ok(existing);
        }
        if let Some(first) = events.first() {
            expected.check(
                &first.aggregate_id,
                state.streams.get(&first.aggregate_id).copied(),
            )?;
        }
        let now = Utc::now();
        let mut recorded = Vec::with_capacity(events.len());
        let mut streams: HashMap<&str, u64> = HashMap::new();
        let mut version = state.events.len() as u64;
        for event in &events {
            let current = streams
                .get(event.aggregate_id.as_str())
                .copied()
                .or_else(|| state.streams.get(&event.aggregate_id).copied())
                .unwrap_or(0);
            streams.insert(&event.aggregate_id, current + 1);
            version += 1;
            recorded.push(event.clone().into_recorded(version, current + 1, now));
        }
        for (aggregate_id, stream_version) in streams {
            state
                .streams
                .insert(aggregate_id.to_owned(), stream_version);
        }
        for event in &recorded {
            let index = state.events.len();
            state.by_id.insert(event.id.clone(), index);
            state
                .by_stream
                .entry(event.aggregate_id.clone())
                .or_default()
                .push(index);
            state.events.push(event.clone());
        }
        Ok(recorded)
    }
}

impl MemoryStore {
    /// Up to `limit` events after `after` that pass `filter`, and the head
    /// they were read under.
    fn read_scanned(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> Result<(Vec<Recorded>, Cursor)> {
        let state = self.open()?;
        // Versions are 1-based and dense, so `after` is also an index.
        let start = usize::try_from(after.version())
            .unwrap_or(usize::MAX)
            .min(state.events.len());
        let events = state.events[start..]
            .iter()
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        Ok((events, Cursor::new(state.events.len() as u64)))
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>> {
        validate::check_append(expected, &events)?;
        let recorded = {
            let mut state = self.open()?;
            Self::append_locked(&mut state, expected, events)?
        };
        for event in &recorded {
            self.hub.notify(&event.aggregate_id, &event.event_type);
        }
        Ok(recorded)
    }

    async fn read(&self, filter: &Filter, after: Cursor, limit: usize) -> Result<Vec<Recorded>> {
        Ok(self.read_scanned(filter, after, limit)?.0)
    }

    async fn read_page(
        &self,
        filter: &Filter,
        after: Cursor,
        limit: usize,
    ) -> Result<TypedPage<Value>> {
        let (rows, scanned) = self.read_scanned(filter, after, limit)?;
        let page = TypedPage::from_rows(rows, Recorded::cursor, |_| 0, Ok);
        Ok(page.with_scanned(scanned))
    }

    async fn latest_version(&self) -> Result<Cursor> {
        Ok(Cursor::new(self.open()?.events.len() as u64))
    }

    async fn stream_version(&self, aggregate_id: &str) -> Result<Option<u64>> {
        Ok(self.open()?.streams.get(aggregate_id).copied())
    }

    async fn close(&self) -> Result<()> {
        crate::store::lease::give_back_all(self).await;
        self.lock().closed = true;
        self.hub.close();
        Ok(())
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    async fn get(&self, id: &str) -> Result<Recorded> {
        let state = self.open()?;
        state
            .by_id
            .get(id)
            .map(|&i| state.events[i].clone())
            .ok_or_else(|| Error::EventNotFound { id: id.to_owned() })
    }

    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>> {
        validate::check_aggregate_id(aggregate_id)?;
        let state = self.open()?;
        let Some(indexes) = state.by_stream.get(aggregate_id) else {
            return Ok(Vec::new());
        };
        // Stream versions are 1-based and dense, so `after` is an index.
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(indexes.len());
        Ok(indexes[start..]
            .iter()
            .take(limit)
            .map(|&i| state.events[i].clone())
            .collect())
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<StoredSnapshot>> {
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        Ok(self.open()?.snapshots.get(&key).cloned())
    }

    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<()> {
        let mut state = self.open()?;
        let key = (
            snapshot.aggregate_type.clone(),
            snapshot.aggregate_id.clone(),
        );
        let newer = state.snapshots.get(&key).is_none_or(|old| {
            snapshot.stream_version >= old.stream_version
                || snapshot.schema_version != old.schema_version
        });
        if newer {
            state.snapshots.insert(key, snapshot);
        }
        Ok(())
    }

    async fn delete_snapshots(&self, aggregate_type: &str) -> Result<u64> {
        let mut state = self.open()?;
        let before = state.snapshots.len();
        state
            .snapshots
            .retain(|(kind, _), _| kind != aggregate_type);
        Ok((before - state.snapshots.len()) as u64)
    }
}

impl SubscriptionSource for MemoryStore {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Cursor>> {
        Ok(self.open()?.checkpoints.get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, position: Cursor) -> Result<()> {
        self.open()?.checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    /// In memory a lease never expires (its holder lives as long as the
    /// store): it is held until given back.
    async fn acquire_lease(&self, key: &LeaseKey, _ttl: Duration) -> Result<Option<u64>> {
        let mut state = self.open()?;
        let lease = state
            .leases
            .entry((key.name.clone(), key.part))
            .or_insert_with(|| MemoryLease {
                owner: key.owner.clone(),
                token: 1,
                released: false,
            });
        if lease.owner == key.owner && !lease.released {
            return Ok(Some(lease.token));
        }
        if !lease.released {
            return Ok(None);
        }
        lease.owner = key.owner.clone();
        lease.token += 1;
        lease.released = false;
        Ok(Some(lease.token))
    }

    async fn release_lease(&self, key: &LeaseKey, token: u64) -> Result<()> {
        let mut state = self.lock();
        if let Some(lease) = state.leases.get_mut(&(key.name.clone(), key.part))
            && lease.owner == key.owner
            && lease.token == token
        {
            lease.released = true;
        }
        Ok(())
    }

    async fn save_leased_checkpoint(
        &self,
        key: &LeaseKey,
        token: u64,
        position: Cursor,
    ) -> Result<bool> {
        let mut state = self.open()?;
        let holds = state
            .leases
            .get(&(key.name.clone(), key.part))
            .is_some_and(|l| l.owner == key.owner && l.token == token && !l.released);
        if holds {
            state.checkpoints.insert(key.name.clone(), position);
        }
        Ok(holds)
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>> {
        Ok(self
            .open()?
            .parked
            .values()
            .filter(|p| subscription.is_none_or(|s| s == p.subscription))
            .cloned()
            .collect())
    }

    async fn skip_parked(&self, subscription: &str, version: u64) -> Result<bool> {
        Ok(self
            .open()?
            .parked
            .remove(&(subscription.to_owned(), version))
            .is_some())
    }

    async fn park_event(&self, event: ParkedEvent) -> Result<()> {
        self.open()?
            .parked
            .entry((event.subscription.clone(), event.version))
            .or_insert(event);
        Ok(())
    }

    async fn set_parked(
        &self,
        subscription: &str,
        version: u64,
        status: ParkedStatus,
        error: Option<(&str, u32)>,
        only_from: Option<ParkedStatus>,
    ) -> Result<bool> {
        let mut state = self.open()?;
        let Some(parked) = state.parked.get_mut(&(subscription.to_owned(), version)) else {
            return Ok(false);
        };
        if only_from.is_some_and(|from| from != parked.status) {
            return Ok(false);
        }
        parked.status = status;
        if let Some((message, attempts)) = error {
            parked.error = message.to_owned();
            parked.attempts = attempts;
        }
        Ok(true)
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<LiveLease>> {
        let state = self.open()?;
        let mut live: Vec<LiveLease> = state
            .leases
            .iter()
            .filter(|((name, _), lease)| name.starts_with(prefix) && !lease.released)
            .map(|((name, part), lease)| LiveLease {
                name: name.clone(),
                part: *part,
                owner: lease.owner.clone(),
                token: lease.token,
                expires_in: Duration::MAX,
            })
            .collect();
        live.sort_by(|a, b| (&a.name, a.part).cmp(&(&b.name, b.part)));
        Ok(live)
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<(String, Cursor)>> {
        let state = self.open()?;
        let mut found: Vec<(String, Cursor)> = state
            .checkpoints
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, position)| (name.clone(), *position))
            .collect();
        found.sort();
        Ok(found)
    }
}
