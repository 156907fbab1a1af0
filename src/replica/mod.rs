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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::causal::{
    Actor, DvvSet, Hlc, KeyState, LwwRegister, Sibling, SiblingLimits, VersionVector, WallClock,
};
use crate::config::Conflict;
use crate::ring::Ring;
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
    #[error("replicas disagree on the bucket's conflict mode")]
    ModeMismatch,
    #[error("identity file: {0}")]
    Identity(std::io::Error),
}

impl From<ReplicaError> for Failure {
    fn from(e: ReplicaError) -> Failure {
        match e {
            ReplicaError::TooManySiblings { count, max } => Failure::TooManySiblings { count, max },
            ReplicaError::TooLarge { bytes, max } => Failure::TooLarge { bytes, max },
            other => Failure::Internal(other.to_string()),
        }
    }
}

pub struct Replica {
    storage: Storage,
    actor: Actor,
    dir: PathBuf,
    locks: Stripes,
    hints: Hints,
    hlc: Hlc,
    clock: Arc<dyn WallClock>,
    limits: SiblingLimits,
    /// Largest encoded state of one key (all siblings together).
    max_state_bytes: usize,
    /// Maps keys to partitions for the trees.
    ring: Ring,
    trees: Trees,
}

impl Replica {
    /// Opens the replica's storage under `dir` and settles its actor identity; `random` draws
    /// a new epoch when one is needed.
    #[allow(clippy::too_many_arguments)] // each is a distinct, injected dependency
    pub fn open(
        dir: &Path,
        node_id: &str,
        options: Options,
        ring: Ring,
        clock: Arc<dyn WallClock>,
        random: &dyn Fn() -> u64,
        limits: SiblingLimits,
    ) -> Result<Replica, ReplicaError> {
        std::fs::create_dir_all(dir).map_err(ReplicaError::Identity)?;
        let max_state_bytes = options.max_value_bytes;
        let storage = Storage::open(dir.join("storage"), options.clone())?;
        let hints = Hints::open(&dir.join("hints"), options)?;
        for key in &storage.recovery_report().suspect_keys {
            tracing::warn!(key = %String::from_utf8_lossy(key), "stored key damaged; it needs repair from another replica");
        }
        let trees = Trees::default();
        for skey in storage.keys() {
            let (Some((bucket, key)), Ok(Some(bytes))) =
                (split_storage_key(&skey), storage.get(&skey))
            else {
                continue;
            };
            let partition = ring.partition(bucket.as_bytes(), key.as_bytes());
            trees.update(partition, &skey, Some(merkle::state_hash(&bytes)));
        }
        let epoch = settle_epoch(dir, random).map_err(ReplicaError::Identity)?;
        let actor = Actor::new(format!("{node_id}.{epoch}"));
        tracing::info!(%actor, "replica open");
        Ok(Replica {
            storage,
            actor,
            dir: dir.to_path_buf(),
            locks: Stripes::new(),
            hints,
            hlc: Hlc::new(),
            clock,
            limits,
            max_state_bytes,
            ring,
            trees,
        })
    }

    /// The hash trees over this node's keys, per partition.
    pub fn trees(&self) -> &Trees {
        &self.trees
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
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

    /// This replica's state of a key.
    pub fn read(&self, bucket: &str, key: &str) -> Result<Option<KeyState>, ReplicaError> {
        let stored = self.storage.get(&storage_key(bucket, key))?;
        stored
            .map(|bytes| {
                KeyState::decode(&bytes).map_err(|e| ReplicaError::Corrupt {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
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
    ) -> Result<(KeyState, Pending), ReplicaError> {
        let skey = storage_key(bucket, key);
        let _guard = self.lock(&skey).await;
        let current = self.read(bucket, key)?;
        let now = self.clock.now_ms();
        let sibling = match op {
            WriteOp::Put { data, content_type } => Sibling::value(data, content_type, now),
            WriteOp::Delete => Sibling::tombstone(now),
        };
        let next = match (conflict, current) {
            (Conflict::Siblings, None) => self.update(&DvvSet::new(), context, sibling)?,
            (Conflict::Siblings, Some(KeyState::Siblings(set))) => {
                self.update(&set, context, sibling)?
            }
            (Conflict::Lww, current) => {
                if let Some(KeyState::Lww(reg)) = &current {
                    self.hlc.observe(reg.timestamp);
                } else if current.is_some() {
                    return Err(ReplicaError::ModeMismatch);
                }
                KeyState::Lww(LwwRegister {
                    timestamp: self.hlc.now(&*self.clock),
                    node: self.actor.clone(),
                    value: sibling,
                })
            }
            (Conflict::Siblings, Some(KeyState::Lww(_))) => return Err(ReplicaError::ModeMismatch),
        };
        let pending = self.store(bucket, key, &skey, &next)?;
        Ok((next, pending))
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
        self.storage.delete_async(&skey).await?;
        let partition = self.ring.partition(bucket.as_bytes(), key.as_bytes());
        self.trees.update(partition, &skey, None);
        Ok(true)
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
                self.hlc.observe(reg.timestamp);
            }
            let current = self.read(bucket, key)?;
            let merged = match &current {
                None => remote.clone(),
                Some(current) => current
                    .merge(remote)
                    .map_err(|_| ReplicaError::ModeMismatch)?,
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

    fn update(
        &self,
        set: &DvvSet<Sibling>,
        context: &VersionVector,
        sibling: Sibling,
    ) -> Result<KeyState, ReplicaError> {
        set.update_limited(context, sibling, &self.actor, self.limits)
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
        let pending = self.storage.put_deferred(skey, &bytes)?;
        let partition = self.ring.partition(bucket.as_bytes(), key.as_bytes());
        self.trees
            .update(partition, skey, Some(merkle::state_hash(&bytes)));
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
use merkle::Trees;

#[cfg(test)]
mod tests;
