//! What a node does as one of a key's replicas: read-merge-write the key's state under a
//! per-key lock, through the storage engine.
//!
//! # Actor identity
//! A replica's writes are version-vector events of its *actor*, `<node id>.<epoch>`. The epoch
//! changes whenever the node may have forgotten events it handed out: a wiped data directory, or
//! a start after a crash (an unsynced tail may be gone). Otherwise a restarted node could issue
//! a dot it had already used, other replicas would take the new write for one they already have,
//! and it would be silently dropped (Riak's `kv679_dataloss`). A clean shutdown writes a marker
//! after the final fsync; only a start that finds it keeps the epoch, so clocks do not grow on
//! every orderly restart.
//!
//! # A record that fails its checksum
//! It is a missing record, never served: the replica logs and counts it, deletes the key from
//! its own storage (so read repair and anti-entropy bring it back from the other replicas),
//! and draws a new epoch, since the lost state may have held this actor's latest dots and a
//! dot minted again from an older state would be silently dropped elsewhere (kv679 again).
//! A write that runs into it is refused once with [`ReplicaError::Corrupt`], so the
//! coordinator has it coordinated by a replica that can read the key; reads see "missing".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::causal::{
    Actor, DvvSet, Hlc, KeyState, LwwRegister, Sibling, SiblingLimits, VersionVector, WallClock,
};
use crate::config::Conflict;
use crate::rpc::{Failure, WriteOp};
use crate::storage::{Options, Pending, Storage, StorageError};

/// Per-key locks are striped: this many mutexes, chosen by key hash.
const LOCK_STRIPES: usize = 1024;
const EPOCH_FILE: &str = "EPOCH";
const CLEAN_FILE: &str = "CLEAN_SHUTDOWN";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored state of {bucket}/{key} does not decode: {reason}")]
    Corrupt {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("write refused: {count} siblings would exceed the limit of {max}")]
    TooManySiblings { count: usize, max: usize },
    #[error("the key's state would be {bytes} bytes, over the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("identity file: {0}")]
    Identity(std::io::Error),
}

impl From<ReplicaError> for Failure {
    fn from(e: ReplicaError) -> Failure {
        match e {
            ReplicaError::TooManySiblings { count, max } => Failure::TooManySiblings { count, max },
            ReplicaError::TooLarge { bytes, max } => Failure::TooLarge { bytes, max },
            ReplicaError::Storage(StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::StorageFull =>
            {
                Failure::NoSpace(io.to_string())
            }
            e @ (ReplicaError::Corrupt { .. }
            | ReplicaError::Storage(StorageError::Corrupt { .. })) => {
                Failure::Corrupt(e.to_string())
            }
            other => Failure::Internal(other.to_string()),
        }
    }
}

/// Bounds a replica enforces on what it stores and adopts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub siblings: SiblingLimits,
    /// A timestamp further ahead of the wall clock than this is not adopted (see `causal::lww`).
    pub max_clock_offset_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            siblings: SiblingLimits::default(),
            max_clock_offset_ms: crate::config::DEFAULT_MAX_CLOCK_OFFSET_MS,
        }
    }
}

pub struct Replica {
    storage: Storage,
    /// Changes when the node may have lost its own dots: see the module doc.
    actor: RwLock<Actor>,
    node_id: String,
    dir: PathBuf,
    locks: Stripes,
    hints: Hints,
    hlc: Hlc,
    clock: Arc<dyn WallClock>,
    limits: SiblingLimits,
    /// Largest encoded state of one key (all siblings together).
    max_state_bytes: usize,
    /// Which tree each key is filed under; held for reading from a key's filing to its tree
    /// update, so that a change of a bucket's `n` (`refile`) moves every key once.
    filing: RwLock<Filing>,
    trees: Trees,
    /// Keys whose state may be tombstones only: the reaper's candidates, kept by every write
    /// so that reaping does not read every key. Open reads no value, so a tree's tombstones
    /// stored before the start join the set on its first reaping walk (`walked`).
    tombstones: dashmap::DashSet<Vec<u8>>,
    walked: parking_lot::Mutex<BTreeSet<TreeId>>,
    /// Records found damaged since start.
    corrupt_records: AtomicU64,
    /// Stamps too far ahead of the wall clock that were not adopted, since start.
    skewed_stamps: AtomicU64,
}

impl Replica {
    /// Opens the replica's storage under `dir` and settles its actor identity; `random` draws
    /// a new epoch when one is needed.
    #[allow(clippy::too_many_arguments)] // each is a distinct, injected dependency
    pub fn open(
        dir: &Path,
        node_id: &str,
        options: Options,
        filing: Filing,
        clock: Arc<dyn WallClock>,
        random: &dyn Fn() -> u64,
        limits: Limits,
    ) -> Result<Replica, ReplicaError> {
        std::fs::create_dir_all(dir).map_err(ReplicaError::Identity)?;
        let max_state_bytes = options.max_value_bytes;
        // The hash trees are built from the keydir's hashes as open fills it (no value is
        // read), each shard's keys while the shard is in cache, on open's threads.
        let (storage, parts) = Storage::open_visiting(
            dir.join("storage"),
            options.clone(),
            TreesPart::default,
            |part, skey, hash| {
                if let Some(tree) = filing.tree_of_storage_key(skey) {
                    part.add(tree, skey, hash);
                }
            },
        )?;
        let combined = Instant::now();
        let trees = Trees::combine(parts);
        tracing::info!(
            keys = storage.stats().keys,
            ms = combined.elapsed().as_millis() as u64,
            "hash trees combined"
        );
        let hints = Hints::open(&dir.join("hints"), options)?;
        for key in &storage.recovery_report().suspect_keys {
            tracing::warn!(key = %String::from_utf8_lossy(key), "stored key damaged; it needs repair from another replica");
        }
        let epoch = settle_epoch(dir, random).map_err(ReplicaError::Identity)?;
        let actor = Actor::new(format!("{node_id}.{epoch}"));
        tracing::info!(%actor, "replica open");
        Ok(Replica {
            storage,
            actor: RwLock::new(actor),
            node_id: node_id.to_owned(),
            dir: dir.to_path_buf(),
            locks: Stripes::new(),
            hints,
            hlc: Hlc::new(limits.max_clock_offset_ms),
            clock,
            limits: limits.siblings,
            max_state_bytes,
            filing: RwLock::new(filing),
            trees,
            tombstones: Default::default(),
            walked: Default::default(),
            corrupt_records: AtomicU64::new(0),
            skewed_stamps: AtomicU64::new(0),
        })
    }

    /// How many damaged records this replica has found (and dropped) since start.
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt_records.load(Ordering::Relaxed)
    }

    /// How many timestamps beyond the clock-offset bound were seen (and not adopted).
    pub fn skewed_stamps(&self) -> u64 {
        self.skewed_stamps.load(Ordering::Relaxed)
    }

    /// The hash trees over this node's keys, per partition.
    pub fn trees(&self) -> &Trees {
        &self.trees
    }

    pub fn actor(&self) -> Actor {
        self.actor.read().clone()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Writes held here for other nodes.
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// Marks a clean shutdown: everything is synced, so the next start may keep the epoch.
    pub fn close(&self) -> Result<(), ReplicaError> {
        self.storage.sync()?;
        self.hints.sync()?;
        write_synced(&self.dir.join(CLEAN_FILE), b"").map_err(ReplicaError::Identity)
    }

    /// This replica's state of a key; a damaged record reads as missing (and is dropped).
    pub fn read(&self, bucket: &str, key: &str) -> Result<Option<KeyState>, ReplicaError> {
        match self.read_checked(bucket, key) {
            Err(ReplicaError::Corrupt { .. }) => Ok(None),
            other => other,
        }
    }

    /// This replica's state of a key, or `Corrupt` the first time a damaged record is met
    /// (it is dropped then: the next read finds the key missing).
    fn read_checked(&self, bucket: &str, key: &str) -> Result<Option<KeyState>, ReplicaError> {
        let skey = storage_key(bucket, key);
        let reason = match self.storage.get(&skey) {
            Ok(None) => return Ok(None),
            Ok(Some(bytes)) => match KeyState::decode(&bytes) {
                Ok(state) => return Ok(Some(state)),
                Err(e) => format!("stored state does not decode: {e}"),
            },
            Err(StorageError::Corrupt { segment, offset }) => {
                format!("record in segment {segment} at offset {offset} fails its checksum")
            }
            Err(e) => return Err(e.into()),
        };
        self.drop_damaged(bucket, key, &skey, &reason)?;
        Err(ReplicaError::Corrupt {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason,
        })
    }

    /// Forgets a key whose record is damaged and renews the actor (see the module doc).
    fn drop_damaged(
        &self,
        bucket: &str,
        key: &str,
        skey: &[u8],
        reason: &str,
    ) -> Result<(), ReplicaError> {
        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
        // Not waited for: a tombstone lost to a crash leaves the damaged record, found again.
        drop(self.remove(skey)?);
        let epoch = format!("{:08x}", fastrand::u32(..));
        write_synced(&self.dir.join(EPOCH_FILE), epoch.as_bytes())
            .map_err(ReplicaError::Identity)?;
        let actor = Actor::new(format!("{}.{epoch}", self.node_id));
        tracing::error!(%bucket, %key, %reason, new_actor = %actor,
            "damaged record dropped; the key will be repaired from the other replicas");
        *self.actor.write() = actor;
        Ok(())
    }

    /// Applies a client write as a new event of this replica and appends the result; the
    /// returned `Pending` says when it is durable (the key's lock is already released).
    pub async fn coordinate(
        &self,
        bucket: &str,
        key: &str,
        conflict: Conflict,
        context: &VersionVector,
        op: WriteOp,
        write_id: u64,
    ) -> Result<(KeyState, Pending), ReplicaError> {
        let skey = storage_key(bucket, key);
        let _guard = self.lock(&skey).await;
        let current = self.read_checked(bucket, key)?;
        if let Some(state) = current.as_ref().filter(|s| s.holds_write(write_id)) {
            // This request was applied here already (a retry, or a hedge that reached us
            // after the other coordinator's replication): do not apply it twice.
            return Ok((state.clone(), self.storage.pending_all()));
        }
        let now = self.clock.now_ms();
        let sibling = match op {
            WriteOp::Put {
                data,
                content_type,
                meta,
            } => Sibling::value(data, content_type, now).with_meta(meta),
            WriteOp::Delete => Sibling::tombstone(now),
        }
        .with_write_id(write_id);
        let actor = self.actor();
        let next = match (conflict, current) {
            (Conflict::Siblings, None) => self.update(&DvvSet::new(), context, sibling, &actor)?,
            (Conflict::Siblings, Some(KeyState::Siblings(set))) => {
                self.update(&set, context, sibling, &actor)?
            }
            (Conflict::Lww, current) => {
                // A state kept under siblings (the bucket's mode changed) is superseded, as
                // the latest write in an lww bucket supersedes everything: stamped after it,
                // so that replicas still holding it take this write (`KeyState::merge`).
                let mut sibling = sibling;
                if let Some(old @ KeyState::Siblings(_)) = &current {
                    sibling.modified_ms = sibling.modified_ms.max(old.latest_ms() + 1);
                }
                let timestamp = match &current {
                    Some(KeyState::Lww(reg)) => self.stamp_after(reg),
                    Some(KeyState::Siblings(_)) | None => self.hlc.now(&*self.clock),
                };
                KeyState::Lww(LwwRegister {
                    timestamp,
                    node: actor,
                    value: sibling,
                })
            }
            (Conflict::Siblings, Some(KeyState::Lww(reg))) => {
                // The bucket changed to siblings: the lww value stays, as a sibling of this
                // write (an lww read's context is empty, so no client write covers it).
                let kept = DvvSet::new().update(&VersionVector::new(), reg.value, &actor);
                self.update(&kept, context, sibling, &actor)?
            }
        };
        let pending = self.store(bucket, key, &skey, &next)?;
        Ok((next, pending))
    }

    /// The live keys of `bucket` (with `None`: the buckets with a live key) in `partitions`,
    /// a coverage plan's share of a listing. Walks the keydir and reads the listed bucket's
    /// states, so that deleted keys are left out: blocking, and as costly as Riak warns.
    pub fn list(
        &self,
        bucket: Option<&str>,
        partitions: &BTreeSet<u32>,
    ) -> Result<Vec<String>, ReplicaError> {
        let filing = self.filing.read().clone();
        let mut found = BTreeSet::new();
        for skey in self.storage.keys() {
            let Some((b, k)) = split_storage_key(&skey) else {
                continue;
            };
            let wanted = match bucket {
                Some(want) => want == b,
                None => !found.contains(&b),
            };
            if !wanted || !partitions.contains(&filing.tree_of(&b, &k).partition) {
                continue;
            }
            // A damaged record is not listed; it is being repaired.
            let live = matches!(self.read(&b, &k), Ok(Some(s)) if !s.live_values().is_empty());
            if live {
                found.insert(if bucket.is_some() { k } else { b });
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Deletes a key from storage and its tree; the caller waits for durability.
    fn remove(&self, skey: &[u8]) -> Result<Pending, ReplicaError> {
        // The filing is held across the write, so a `refile` sees the key in its old tree or
        // files it under the new one, never half.
        let filing = self.filing.read();
        let (pending, replaced) = self.storage.delete_deferred(skey)?;
        if let Some(tree) = filing.tree_of_storage_key(skey) {
            self.trees.update(tree, skey, replaced, None);
        }
        self.tombstones.remove(skey);
        Ok(pending)
    }

    /// The keys of `tree` whose state may be tombstones only; `None` until the tree has been
    /// walked since start ([`Replica::walk_for_tombstones`], then [`Replica::walked`]).
    pub fn tombstone_candidates(&self, tree: TreeId) -> Option<Vec<Vec<u8>>> {
        if !self.walked.lock().contains(&tree) {
            return None;
        }
        let filing = self.filing.read().clone();
        Some(
            self.tombstones
                .iter()
                .filter(|k| filing.tree_of_storage_key(k.key()) == Some(tree))
                .map(|k| k.key().clone())
                .collect(),
        )
    }

    /// Reads these keys and takes those whose state is tombstones only as reaping candidates
    /// (blocking: one read each).
    pub fn walk_for_tombstones(&self, keys: &[Vec<u8>]) {
        for skey in keys {
            let tombstone = split_storage_key(skey)
                .and_then(|(b, k)| self.read(&b, &k).ok().flatten())
                .is_some_and(|s| s.tombstone_only_since().is_some());
            if tombstone {
                self.tombstones.insert(skey.clone());
            }
        }
    }

    /// Every key of `tree` stored before the start has been through `walk_for_tombstones`.
    pub fn walked(&self, tree: TreeId) {
        self.walked.lock().insert(tree);
    }

    /// The (storage key, state hash) digests of some leaves of a tree, whole leaves in the
    /// order asked, stopping before `max_keys` would be passed (one leaf at least). One walk
    /// of the keydir, reading no value.
    pub fn digests(&self, tree: TreeId, leaves: &[u32], max_keys: usize) -> Vec<Digests> {
        // Indexed by leaf: this runs once per key of the keydir.
        let mut wanted = vec![false; merkle::LEAVES];
        for &leaf in leaves {
            if let Some(w) = wanted.get_mut(leaf as usize) {
                *w = true;
            }
        }
        let mut found: Vec<Vec<(Vec<u8>, u64)>> = vec![Vec::new(); merkle::LEAVES];
        let filing = self.filing.read().clone();
        self.storage.for_each_hash(|skey, hash| {
            let leaf = merkle::leaf_of(skey);
            if wanted[leaf] && filing.tree_of_storage_key(skey) == Some(tree) {
                found[leaf].push((skey.to_vec(), hash));
            }
        });
        let mut out = Vec::new();
        let mut total = 0;
        for &leaf in leaves {
            let Some(keys) = found.get_mut(leaf as usize).map(std::mem::take) else {
                continue;
            };
            if !out.is_empty() && total + keys.len() > max_keys {
                break;
            }
            total += keys.len();
            out.push((leaf, keys));
        }
        out
    }

    /// The storage keys filed under the trees `which` picks. One walk of the keydir.
    pub fn keys_filed(&self, which: impl Fn(TreeId) -> bool) -> Vec<Vec<u8>> {
        let filing = self.filing.read().clone();
        let mut keys = Vec::new();
        self.storage.for_each_hash(|skey, _| {
            if filing.tree_of_storage_key(skey).is_some_and(&which) {
                keys.push(skey.to_vec());
            }
        });
        keys
    }

    /// Files the keys of buckets whose `n` changed under their new trees, so anti-entropy
    /// compares them with the replicas of their new `n`.
    pub fn refile(&self, bucket_n: BTreeMap<String, u8>) {
        let mut filing = self.filing.write();
        if *filing.bucket_n() == bucket_n {
            return;
        }
        let next = filing.with_bucket_n(bucket_n);
        let mut moved = 0u64;
        // Writers hold the filing for reading across their keydir swap and tree update, so
        // with it held for writing the keydir and the trees agree key by key.
        self.storage.for_each_hash(|skey, hash| {
            let (from, to) = (
                filing.tree_of_storage_key(skey),
                next.tree_of_storage_key(skey),
            );
            if let (Some(from), Some(to)) = (from, to) {
                if from == to {
                    return;
                }
                self.trees.update(from, skey, Some(hash), None);
                self.trees.update(to, skey, None, Some(hash));
                moved += 1;
            }
        });
        tracing::info!(
            keys = moved,
            "a bucket's n changed; its keys are filed under their new hash trees"
        );
        *filing = next;
    }

    /// Removes the key if its state is still exactly `expected` (a tombstone every replica was
    /// seen to hold); returns whether it did.
    pub async fn reap(
        &self,
        bucket: &str,
        key: &str,
        expected: &KeyState,
    ) -> Result<bool, ReplicaError> {
        let skey = storage_key(bucket, key);
        let _guard = self.lock(&skey).await;
        if self.read(bucket, key)?.as_ref() != Some(expected) {
            return Ok(false);
        }
        self.remove(&skey)?.durable().await?;
        Ok(true)
    }

    /// Forgets the key: this node no longer replicates it (its partition moved to other nodes,
    /// which hold it). Not a delete: no tombstone, nothing for other replicas to learn.
    pub async fn forget(&self, skey: &[u8]) -> Result<(), ReplicaError> {
        let _guard = self.lock(skey).await;
        self.remove(skey)?.durable().await?;
        Ok(())
    }

    /// Merges a state from another replica into this one's; stores it if anything changed.
    pub async fn sync(
        &self,
        bucket: &str,
        key: &str,
        remote: &KeyState,
    ) -> Result<KeyState, ReplicaError> {
        let skey = storage_key(bucket, key);
        let (state, pending) = {
            let _guard = self.lock(&skey).await;
            if let KeyState::Lww(reg) = remote {
                self.observe(reg);
            }
            let current = self.read(bucket, key)?;
            let merged = match &current {
                None => remote.clone(),
                Some(current) => current.merge(remote),
            };
            if current.as_ref() == Some(&merged) {
                (merged, self.storage.pending_all())
            } else {
                let pending = self.store(bucket, key, &skey, &merged)?;
                (merged, pending)
            }
        };
        // The lock is released before the wait for the fsync: the next write to the key can
        // build on this one and share its fsync. A state already held may have been appended
        // by a write still waiting for its fsync, so that case waits for the log too.
        pending.durable().await?;
        Ok(state)
    }

    /// A stamp for a write replacing `reg`: above it, without dragging the clock past the
    /// offset bound.
    fn stamp_after(&self, reg: &LwwRegister<Sibling>) -> crate::causal::Timestamp {
        let (stamp, adopted) = self.hlc.after(reg.timestamp, &*self.clock);
        if !adopted {
            self.not_adopted(reg);
        }
        stamp
    }

    /// Takes a seen stamp into the clock if it is within the bound.
    fn observe(&self, reg: &LwwRegister<Sibling>) {
        if !self.hlc.observe(reg.timestamp, &*self.clock) {
            self.not_adopted(reg);
        }
    }

    /// Counts (and now and then logs) a stamp beyond the clock-offset bound.
    fn not_adopted(&self, reg: &LwwRegister<Sibling>) {
        let ahead_ms = reg
            .timestamp
            .physical_ms
            .saturating_sub(self.clock.now_ms());
        if self
            .skewed_stamps
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1000)
        {
            tracing::warn!(written_by = %reg.node, ahead_ms,
                "a write stamped beyond the clock-offset bound; not adopted into this node's clock");
        }
    }

    fn update(
        &self,
        set: &DvvSet<Sibling>,
        context: &VersionVector,
        sibling: Sibling,
        actor: &Actor,
    ) -> Result<KeyState, ReplicaError> {
        set.update_limited(context, sibling, actor, self.limits)
            .map(KeyState::Siblings)
            .map_err(
                |crate::causal::CausalError::TooManySiblings { count, max }| {
                    ReplicaError::TooManySiblings { count, max }
                },
            )
    }

    /// Appends the state and updates the hash tree; the caller waits for durability.
    fn store(
        &self,
        bucket: &str,
        key: &str,
        skey: &[u8],
        state: &KeyState,
    ) -> Result<Pending, ReplicaError> {
        let bytes = state.encode();
        if bytes.len() > self.max_state_bytes {
            return Err(ReplicaError::TooLarge {
                bytes: bytes.len(),
                max: self.max_state_bytes,
            });
        }
        let filing = self.filing.read();
        let (pending, replaced) = self.storage.put_deferred(skey, &bytes)?;
        let tree = filing.tree_of(bucket, key);
        self.trees
            .update(tree, skey, replaced, Some(merkle::state_hash(&bytes)));
        if state.tombstone_only_since().is_some() {
            self.tombstones.insert(skey.to_vec());
        } else if !self.tombstones.is_empty() {
            self.tombstones.remove(skey);
        }
        Ok(pending)
    }

    async fn lock(&self, skey: &[u8]) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks.lock(skey).await
    }
}

/// Per-key locks, striped: a fixed set of mutexes chosen by key hash.
pub struct Stripes(Vec<tokio::sync::Mutex<()>>);

impl Stripes {
    pub fn new() -> Self {
        Stripes(
            (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }

    pub async fn lock(&self, key: &[u8]) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = xxhash_rust::xxh3::xxh3_64(key) as usize % LOCK_STRIPES;
        self.0[stripe].lock().await
    }
}

impl Default for Stripes {
    fn default() -> Self {
        Stripes::new()
    }
}

/// The (bucket, key) of a storage key.
pub fn split_storage_key(skey: &[u8]) -> Option<(String, String)> {
    let (&bucket_len, rest) = skey.split_first()?;
    let bucket = rest.get(..bucket_len as usize)?;
    let key = &rest[bucket_len as usize..];
    Some((
        String::from_utf8(bucket.to_vec()).ok()?,
        String::from_utf8(key.to_vec()).ok()?,
    ))
}

/// The storage key of (bucket, key): the bucket's length, the bucket, then the key, so no two
/// pairs share a storage key.
pub fn storage_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bucket.len() + key.len());
    out.push(bucket.len() as u8);
    out.extend_from_slice(bucket.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// Keeps the epoch after a clean shutdown; otherwise draws a new one and persists it before
/// any write can use it.
fn settle_epoch(dir: &Path, random: &dyn Fn() -> u64) -> std::io::Result<String> {
    let epoch_path = dir.join(EPOCH_FILE);
    let clean_path = dir.join(CLEAN_FILE);
    let kept = match std::fs::read_to_string(&epoch_path) {
        Ok(epoch) if clean_path.exists() && valid_epoch(epoch.trim()) => {
            Some(epoch.trim().to_owned())
        }
        _ => None,
    };
    let epoch = match kept {
        Some(epoch) => epoch,
        None => {
            let epoch = format!("{:08x}", random() as u32);
            write_synced(&epoch_path, epoch.as_bytes())?;
            tracing::info!(%epoch, "new replica epoch (fresh data directory or unclean shutdown)");
            epoch
        }
    };
    match std::fs::remove_file(&clean_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(epoch)
}

fn valid_epoch(epoch: &str) -> bool {
    epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_hexdigit())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

mod hints;
pub mod merkle;

pub use hints::{HintKey, Hints};
use merkle::{Filing, TreeId, Trees, TreesPart};

/// One leaf's digests: the leaf, and its (storage key, state hash) pairs.
pub type Digests = (u32, Vec<(Vec<u8>, u64)>);

#[cfg(test)]
mod tests;
