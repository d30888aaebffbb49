//! Consumer groups: one durable subscription shared by members in any
//! number of processes on one database, its events divided into
//! partitions by aggregate id, each partition owned by one live member.
//!
//! Everything a group keeps is a lease or a checkpoint (the tables of the
//! leases migration), under names in a namespace of its own:
//!
//! - `synckit.group:{group}:member:{member}`, part = the partition count:
//!   a member's liveness, renewed by its heartbeat. The live members are
//!   the group's members; the count is the group's definition, and a
//!   member started with another count is refused.
//! - `synckit.group:{group}:{partition}`, part 0: the lease of one
//!   partition (its fencing token checked by every save) and, under the
//!   same name, its checkpoint.
//!
//! Each member, every third of the lease's time to live (and whenever a
//! partition is lost or given back on its store), takes its fair share:
//! with `n` live members ranked by id, `partitions / n`, one more for the
//! first `partitions % n` ranks, preferring the partitions `p` with
//! `p % n` equal to its rank, so that members that agree on who is alive
//! do not compete. A member over
//! its share gives the extra partitions back between two events (after
//! the last one it handled is saved), so a joining member gets its share
//! within one lease period. A member that dies loses its partitions when
//! their leases expire.
//!
//! A member reads the subscription once, from the lowest checkpoint of the
//! partitions it owns, and hands out the events of those partitions only.
//! When it takes a partition whose checkpoint is behind what it has
//! already handled, it reads again from there, and hands out only that
//! partition's events until it is back where it was.

// Without the runtime (wasm32, derive only) a group cannot run; the
// names and the shared state stay for the reports.
#![cfg_attr(not(feature = "runtime"), allow(dead_code))]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::store::SubscriptionSource;
use crate::store::lease::Lease;
#[cfg(feature = "runtime")]
use crate::store::lease::{self, Held, LeaseKey};
#[cfg(feature = "runtime")]
use crate::store::page::PageRow;
#[cfg(feature = "runtime")]
use crate::store::signal::Signal;

/// Where every group's names start.
pub(crate) const NAMESPACE: &str = "synckit.group:";

/// The most partitions a group may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// The longest group name, in bytes: its lease names stay within the
/// tables' 255 bytes.
pub const MAX_GROUP_NAME_LEN: usize = 128;

/// A consumer group's definition: its name and how many partitions its
/// events are divided into ([`Start::Group`](crate::Start::Group)).
///
/// The partition of an event is the FNV-1a 64-bit hash of its aggregate
/// id's UTF-8 bytes, modulo the partition count ([`Group::partition_of`]),
/// so every member, in any process or version, agrees on it. A stored
/// event that cannot be decoded belongs to the partition of its event id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Group {
    /// The group's name: 1 to 128 bytes, without `:` or NUL.
    pub name: String,
    /// How many partitions: 1 to 4096, the same for every member.
    pub partitions: u32,
}

impl Group {
    /// A group definition (checked when a member subscribes).
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Group {
            name: name.into(),
            partitions,
        }
    }

    /// The partition an aggregate's events belong to.
    ///
    /// ```
    /// use synckit::Group;
    ///
    /// let group = Group::new("projector", 8);
    /// assert!(group.partition_of("account-1") < 8);
    /// assert_eq!(group.partition_of("account-1"), group.partition_of("account-1"));
    /// ```
    pub fn partition_of(&self, aggregate_id: &str) -> u32 {
        partition_of(aggregate_id, self.partitions)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > MAX_GROUP_NAME_LEN
            || name.contains('\0')
            || name.contains(':')
        {
            return Err(Error::invalid(
                "group name",
                format!("must be 1 to {MAX_GROUP_NAME_LEN} bytes without ':' or NUL characters"),
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(Error::invalid(
                "group partitions",
                format!("must be 1 to {MAX_PARTITIONS}, not {}", self.partitions),
            ));
        }
        Ok(())
    }
}

/// FNV-1a, 64 bits, modulo `partitions`. Written here rather than taken
/// from a hashing crate: the partition of every stored aggregate must
/// never change with a dependency's version, and this is the whole
/// algorithm.
fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below `partitions`, a u32: the fallback is unreachable.
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or_default()
}

/// The name of partition `part`'s lease and checkpoint.
pub(crate) fn partition_name(group: &str, part: u32) -> String {
    format!("{NAMESPACE}{group}:{part}")
}

fn members_prefix(group: &str) -> String {
    format!("{NAMESPACE}{group}:member:")
}

/// What a group's names say: `(group, Some(partition))` for a partition,
/// `(group, None)` for a member (with its id).
pub(crate) enum Parsed<'a> {
    Partition(&'a str, u32),
    Member(&'a str),
}

pub(crate) fn parse(name: &str) -> Option<Parsed<'_>> {
    let rest = name.strip_prefix(NAMESPACE)?;
    let (group, tail) = rest.split_once(':')?;
    if tail.starts_with("member:") {
        return Some(Parsed::Member(group));
    }
    tail.parse().ok().map(|part| Parsed::Partition(group, part))
}

/// One owned partition as the checkpoint saves see it.
struct Part {
    lease: Arc<Lease>,
    /// Every event of this partition up to here has been handed out
    /// (beyond it, up to [`Shared::processed`], too).
    floor: u64,
    /// The checkpoint as last saved.
    saved: u64,
}

#[derive(Default)]
pub(crate) struct Shared {
    parts: BTreeMap<u32, Part>,
    /// The version of the last row the member has handed out or passed
    /// over, or of the last position it reported.
    processed: u64,
    /// The last event handed out, and its partition.
    last: Option<(u64, u32)>,
    /// The partition count.
    count: u32,
    /// The stored checkpoints may differ from what the member holds (a
    /// transaction whose outcome is unknown): read them again.
    reload: bool,
    /// Wakes the member's reader.
    wake: Option<Arc<crate::store::signal::Signal>>,
}

/// A member's state, shared by its reader and its checkpoint saves.
#[derive(Clone, Default)]
pub(crate) struct Partitions(Arc<Mutex<Shared>>);

impl Partitions {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partitions owned now.
    pub(crate) fn owned(&self) -> Vec<u32> {
        self.lock().parts.keys().copied().collect()
    }

    /// The partition of an aggregate in this group.
    pub(crate) fn partition_of(&self, aggregate_id: &str) -> u32 {
        partition_of(aggregate_id, self.lock().count)
    }

    /// The checkpoint saves that record what the member has handled up to
    /// `position`: of the partitions `only` (every owned one when `None`),
    /// each at `position` or as far as it is known to be covered, when
    /// that is past its saved checkpoint.
    pub(crate) fn plan(
        &self,
        position: Cursor,
        only: Option<&[u32]>,
    ) -> Vec<(u32, Arc<Lease>, u64)> {
        let version = position.version();
        let shared = self.lock();
        shared
            .parts
            .iter()
            .filter(|(p, _)| only.is_none_or(|o| o.contains(p)))
            .filter_map(|(p, part)| {
                let at = version.min(part.floor.max(shared.processed));
                (at > part.saved).then(|| (*p, part.lease.clone(), at))
            })
            .collect()
    }

    /// Records partition `p`'s checkpoint as saved at `at`.
    pub(crate) fn mark_saved(&self, p: u32, at: u64) {
        if let Some(part) = self.lock().parts.get_mut(&p) {
            part.saved = part.saved.max(at);
        }
    }

    /// Asks the member to read its partitions' checkpoints again, and to
    /// read on from the lowest.
    pub(crate) fn request_reload(&self) {
        let mut shared = self.lock();
        shared.reload = true;
        if let Some(wake) = &shared.wake {
            wake.raise();
        }
    }

    /// Saves what the member has handled up to `position`: the partition
    /// of the event just handed out when `position` is that event, else
    /// every owned partition. `Err(LeaseLost)` when the event's own
    /// partition has passed to another member (another partition found
    /// lost is dropped at the member's next step).
    pub(crate) async fn save<S: SubscriptionSource>(
        &self,
        store: &S,
        position: Cursor,
    ) -> Result<()> {
        let only = match self.lock().last {
            Some((at, part)) if at == position.version() => Some(part),
            _ => None,
        };
        let due = self.plan(position, only.as_ref().map(std::slice::from_ref));
        for (p, lease, at) in due {
            match lease.save(store, Cursor::new(at)).await {
                Ok(()) => self.mark_saved(p, at),
                // Another partition than the event's: dropped at the step.
                Err(Error::LeaseLost { .. }) if only != Some(p) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(feature = "runtime")]
/// A group member: the partitions it owns, its liveness lease, and when it
/// looks at the group again.
pub(crate) struct Member {
    group: Group,
    owner: String,
    /// The member's liveness lease; its time to live is every lease's.
    pub(crate) liveness: Arc<Lease>,
    alive: Option<Held>,
    held: BTreeMap<u32, Held>,
    pub(crate) partitions: Partitions,
    wake: Arc<Signal>,
    next_step: Option<tokio::time::Instant>,
    /// The last position reported at the head ([`Member::should_report`]).
    reported: u64,
}

/// What a step asks of the reader.
#[cfg(feature = "runtime")]
pub(crate) enum Step {
    /// Nothing: read on.
    Read,
    /// Read again from this position (a partition was taken whose
    /// checkpoint is behind what was handed out).
    Rewind(Cursor),
}

#[cfg(feature = "runtime")]
impl Member {
    pub(crate) fn new(group: Group, wake: Arc<Signal>) -> Self {
        let owner = lease::new_owner();
        let liveness = Lease::of(
            LeaseKey {
                name: format!("{}{owner}", members_prefix(&group.name)),
                part: group.partitions,
                owner: owner.clone(),
            },
            lease::DEFAULT_LEASE_TTL,
            wake.clone(),
        );
        let partitions = Partitions::default();
        partitions.lock().count = group.partitions;
        partitions.lock().wake = Some(wake.clone());
        Member {
            group,
            owner,
            liveness,
            alive: None,
            held: BTreeMap::new(),
            partitions,
            wake,
            next_step: None,
            reported: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.group.name
    }

    /// Whether the member owns no partition (it then reads nothing).
    pub(crate) fn is_idle(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether row `row` is this member's to hand out; records that the
    /// member has got past it either way.
    pub(crate) fn admit(&self, row: &PageRow) -> bool {
        let (version, key) = match row {
            Ok(event) => (event.version, event.aggregate_id.as_str()),
            Err(unreadable) => (unreadable.version, unreadable.id.as_str()),
        };
        let part = partition_of(key, self.group.partitions);
        let mut shared = self.partitions.lock();
        let mine = shared.parts.get(&part).is_some_and(|p| version > p.floor);
        shared.processed = shared.processed.max(version);
        if mine {
            shared.last = Some((version, part));
        }
        mine
    }

    /// Records that the member has read everything up to `position`.
    pub(crate) fn passed(&self, position: Cursor) {
        let mut shared = self.partitions.lock();
        shared.processed = shared.processed.max(position.version());
        // What is saved next is every partition, not the last event's.
        shared.last = None;
    }

    /// At the head, whether `position` should be reported so that every
    /// partition's checkpoint reaches it: once per position, while one of
    /// them is behind.
    pub(crate) fn should_report(&mut self, position: Cursor) -> bool {
        let version = position.version();
        if version <= self.reported {
            return false;
        }
        let behind = self
            .partitions
            .lock()
            .parts
            .values()
            .any(|p| p.saved < version);
        if behind {
            self.reported = version;
        }
        behind
    }

    /// Waits until the next step is due, a partition is lost, or a lease
    /// is given back on this store.
    pub(crate) async fn idle_wait<S: SubscriptionSource>(&mut self, store: &S) {
        let released = store.hub().lease_released();
        let deadline = self.next_step();
        let woken = tokio::time::timeout_at(
            deadline,
            futures::future::select(released, Box::pin(self.wake.wait())),
        )
        .await;
        if woken.is_ok() {
            // A partition may be free now: look at once.
            self.next_step = None;
        }
    }

    /// The deadline of the next step: when a reader waiting at the head
    /// should look at the group again.
    pub(crate) fn next_step(&self) -> tokio::time::Instant {
        self.next_step.unwrap_or_else(tokio::time::Instant::now)
    }

    /// Drops the partitions found lost; when a step is due, renews the
    /// member's liveness, gives back what is over its share and takes what
    /// it lacks.
    pub(crate) async fn step<S: SubscriptionSource>(&mut self, store: &S) -> Result<Step> {
        let lost: Vec<u32> = {
            let shared = self.partitions.lock();
            shared
                .parts
                .iter()
                .filter(|(_, p)| p.lease.is_lost())
                .map(|(p, _)| *p)
                .collect()
        };
        for p in lost {
            let part = self.partitions.lock().parts.remove(&p);
            if let (Some(held), Some(part)) = (self.held.remove(&p), part) {
                held.abandon(store.hub(), &part.lease);
            }
        }
        if self.partitions.lock().reload {
            return self.reload(store).await;
        }
        let now = tokio::time::Instant::now();
        if self.next_step.is_some_and(|at| now < at) && !self.liveness.is_lost() {
            return Ok(Step::Read);
        }
        let ttl = self.liveness.ttl();
        self.next_step = Some(now + lease::standby_retry(ttl));
        if self.alive.is_none() || self.liveness.is_lost() {
            if let Some(old) = self.alive.take() {
                old.abandon(store.hub(), &self.liveness);
            }
            self.alive = lease::try_acquire(store, &self.liveness).await?;
        }
        let members = store.live_leases(&members_prefix(&self.group.name)).await?;
        if let Some(other) = members.iter().find(|m| m.part != self.group.partitions) {
            return Err(Error::invalid(
                "group partitions",
                format!(
                    "group {} has {} partitions (member {}), this member was started with {}",
                    self.group.name, other.part, other.owner, self.group.partitions
                ),
            ));
        }
        let mut owners: Vec<&str> = members.iter().map(|m| m.owner.as_str()).collect();
        if !owners.contains(&self.owner.as_str()) {
            owners.push(&self.owner);
        }
        owners.sort_unstable();
        let count = u32::try_from(owners.len()).unwrap_or(u32::MAX);
        let rank = owners
            .iter()
            .position(|o| *o == self.owner)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        // Exact shares that add up to the partition count: the first
        // `partitions % count` members by rank take one more. A member at
        // its share does not look for more, so a lease that lapses for a
        // moment (a late renewal) is not taken from a live member.
        let partitions = self.group.partitions;
        let share = usize::try_from(partitions / count + u32::from(rank < partitions % count))
            .unwrap_or(usize::MAX);
        let preferred = |p: u32| p % count == rank;
        // Over the share: give back the partitions another member prefers,
        // highest first, each saved where this member has got to.
        while self.held.len() > share {
            let give = self
                .held
                .keys()
                .rev()
                .copied()
                .find(|p| !preferred(*p))
                .or_else(|| self.held.keys().next_back().copied());
            let Some(p) = give else { break };
            self.give_back(store, p).await?;
        }
        // Under it: take free partitions, preferred ones first.
        let was_idle = self.held.is_empty();
        let mut rewind = None::<u64>;
        let mut fresh = Vec::new();
        if self.held.len() < share {
            let mut candidates: Vec<u32> = (0..self.group.partitions)
                .filter(|p| !self.held.contains_key(p))
                .collect();
            candidates.sort_by_key(|p| !preferred(*p));
            for p in candidates {
                if self.held.len() >= share {
                    break;
                }
                let part_lease = Lease::of(
                    LeaseKey {
                        name: partition_name(&self.group.name, p),
                        part: 0,
                        owner: self.owner.clone(),
                    },
                    ttl,
                    self.wake.clone(),
                );
                let Some(held) = lease::try_acquire(store, &part_lease).await? else {
                    continue;
                };
                let start = match store.load_checkpoint(&part_lease.key.name).await {
                    Ok(position) => position.unwrap_or(Cursor::START).version(),
                    Err(error) => {
                        // Give it back (dropping `held`) and try later.
                        drop(held);
                        return Err(error);
                    }
                };
                tracing::info!(
                    group = %self.group.name,
                    member = %self.owner,
                    partition = p,
                    checkpoint = start,
                    "took a partition of the group"
                );
                let mut shared = self.partitions.lock();
                // An idle member reads from its first partitions' lowest
                // checkpoint, wherever it was.
                if was_idle || start < shared.processed {
                    rewind = Some(rewind.map_or(start, |r| r.min(start)));
                }
                shared.parts.insert(
                    p,
                    Part {
                        lease: part_lease,
                        floor: start,
                        saved: start,
                    },
                );
                drop(shared);
                self.held.insert(p, held);
                fresh.push(p);
            }
        }
        self.report_lag(store).await;
        Ok(match rewind {
            Some(to) => {
                let mut shared = self.partitions.lock();
                // The partitions owned before have everything up to where
                // the member had got: only the new ones read it again.
                let processed = shared.processed;
                for (p, part) in shared.parts.iter_mut() {
                    if !fresh.contains(p) {
                        part.floor = part.floor.max(processed);
                    }
                }
                shared.processed = to;
                Step::Rewind(Cursor::new(to))
            }
            None => Step::Read,
        })
    }

    /// Reads every owned partition's checkpoint again and reads on from
    /// the lowest.
    async fn reload<S: SubscriptionSource>(&mut self, store: &S) -> Result<Step> {
        let owned: Vec<(u32, String)> = {
            let shared = self.partitions.lock();
            shared
                .parts
                .iter()
                .map(|(p, part)| (*p, part.lease.key.name.clone()))
                .collect()
        };
        let mut stored = Vec::with_capacity(owned.len());
        for (p, name) in owned {
            let at = store.load_checkpoint(&name).await?;
            stored.push((p, at.unwrap_or(Cursor::START).version()));
        }
        let mut shared = self.partitions.lock();
        shared.reload = false;
        let mut lowest = None::<u64>;
        for (p, at) in stored {
            if let Some(part) = shared.parts.get_mut(&p) {
                part.floor = at;
                part.saved = at;
                lowest = Some(lowest.map_or(at, |l| l.min(at)));
            }
        }
        shared.last = None;
        Ok(match lowest {
            Some(to) => {
                shared.processed = to;
                Step::Rewind(Cursor::new(to))
            }
            None => Step::Read,
        })
    }

    /// Gives partition `p` back, after saving where this member got to.
    async fn give_back<S: SubscriptionSource>(&mut self, store: &S, p: u32) -> Result<()> {
        let due = {
            let shared = self.partitions.lock();
            shared.parts.get(&p).map(|part| {
                (
                    part.lease.clone(),
                    part.floor.max(shared.processed),
                    part.saved,
                )
            })
        };
        if let Some((part_lease, at, saved)) = due
            && at > saved
        {
            match part_lease.save(store, Cursor::new(at)).await {
                Ok(()) | Err(Error::LeaseLost { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        self.partitions.lock().parts.remove(&p);
        // Dropping the hold gives the lease back at once.
        self.held.remove(&p);
        tracing::info!(
            group = %self.group.name,
            member = %self.owner,
            partition = p,
            "gave a partition of the group back to rebalance"
        );
        Ok(())
    }

    /// Sets the `synckit_group_lag` gauge of each owned partition.
    async fn report_lag<S: SubscriptionSource>(&mut self, store: &S) {
        let Ok(head) = store.latest_version().await else {
            return;
        };
        let shared = self.partitions.lock();
        for (p, part) in &shared.parts {
            let at = part.floor.max(shared.processed);
            metrics::gauge!(
                "synckit_group_lag",
                "group" => self.group.name.clone(),
                "partition" => p.to_string(),
                "member" => self.owner.clone(),
            )
            .set(head.version().saturating_sub(at) as f64);
        }
    }
}

/// A consumer group as the database holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroup {
    /// The group's name.
    pub name: String,
    /// Its partition count, as its live members define it (else as many
    /// as have a checkpoint).
    pub partitions: u32,
    /// The live members, by id, with the partitions each owns.
    pub members: Vec<GroupMember>,
    /// Every partition: owner, checkpoint and lag.
    pub parts: Vec<GroupPartition>,
}

/// A live member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupMember {
    /// The member's id (one per subscription).
    pub id: String,
    /// The partitions it owns.
    pub partitions: Vec<u32>,
    /// How long its liveness lasts unless renewed.
    pub expires_in: Duration,
}

/// One partition of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupPartition {
    /// The partition number.
    pub partition: u32,
    /// The member that owns it now (`None`: nobody; a member under its
    /// share takes it at its next step).
    pub owner: Option<String>,
    /// Its stored checkpoint (`None`: never saved).
    pub position: Option<u64>,
    /// Versions between its checkpoint and the head readers see.
    pub lag: u64,
}

/// Every consumer group with a live member or a checkpoint in `store`.
pub(crate) async fn list<S: SubscriptionSource>(store: &S) -> Result<Vec<ConsumerGroup>> {
    let head = store.latest_version().await?.version();
    let leases = store.live_leases(NAMESPACE).await?;
    let checkpoints = store.list_checkpoints(NAMESPACE).await?;
    let mut groups: BTreeMap<String, ConsumerGroup> = BTreeMap::new();
    let entry = |groups: &mut BTreeMap<String, ConsumerGroup>, name: &str| {
        groups
            .entry(name.to_owned())
            .or_insert_with(|| ConsumerGroup {
                name: name.to_owned(),
                partitions: 0,
                members: Vec::new(),
                parts: Vec::new(),
            })
            .partitions
    };
    let mut owners: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut positions: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for live in &leases {
        match parse(&live.name) {
            Some(Parsed::Member(group)) => {
                entry(&mut groups, group);
                if let Some(g) = groups.get_mut(group) {
                    g.partitions = g.partitions.max(live.part);
                    g.members.push(GroupMember {
                        id: live.owner.clone(),
                        partitions: Vec::new(),
                        expires_in: live.expires_in,
                    });
                }
            }
            Some(Parsed::Partition(group, part)) => {
                entry(&mut groups, group);
                owners.insert((group.to_owned(), part), live.owner.clone());
            }
            None => {}
        }
    }
    for (name, position) in &checkpoints {
        if let Some(Parsed::Partition(group, part)) = parse(name) {
            entry(&mut groups, group);
            positions.insert((group.to_owned(), part), position.version());
        }
    }
    for group in groups.values_mut() {
        let known = owners
            .keys()
            .chain(positions.keys())
            .filter(|(g, _)| *g == group.name)
            .map(|(_, p)| p + 1)
            .max()
            .unwrap_or(0);
        if group.members.is_empty() {
            group.partitions = known;
        }
        for partition in 0..group.partitions.max(known) {
            let key = (group.name.clone(), partition);
            let owner = owners.get(&key).cloned();
            if let Some(member) = group
                .members
                .iter_mut()
                .find(|m| Some(&m.id) == owner.as_ref())
            {
                member.partitions.push(partition);
            }
            let position = positions.get(&key).copied();
            group.parts.push(GroupPartition {
                partition,
                owner,
                position,
                lag: head.saturating_sub(position.unwrap_or(0)),
            });
        }
    }
    Ok(groups.into_values().collect())
}
