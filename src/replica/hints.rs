//! Hints: writes this node holds for another node that was unreachable when they were made
//! (sloppy quorum), kept durably apart from this node's own data until handed off.
//!
//! One hint per (owner, bucket, key), in a storage engine of its own under `<data_dir>/hints`;
//! a second hint for the same key merges into the first, so a hint is always the newest state
//! this node was asked to keep. A hint is deleted only after the owner acknowledged it, and only
//! if nothing newer was merged into it meanwhile.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{storage_key, ReplicaError, Stripes};
use crate::causal::KeyState;
use crate::storage::{Options, Storage};

pub struct Hints {
    storage: Storage,
    locks: Stripes,
    stored: AtomicU64,
}

/// Where a hint belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintKey {
    pub owner: String,
    pub bucket: String,
    pub key: String,
}

impl HintKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.owner.len() as u8];
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&storage_key(&self.bucket, &self.key));
        out
    }

    fn decode(raw: &[u8]) -> Option<HintKey> {
        let (&owner_len, rest) = raw.split_first()?;
        let owner = rest.get(..owner_len as usize)?;
        let rest = &rest[owner_len as usize..];
        let (&bucket_len, rest) = rest.split_first()?;
        let bucket = rest.get(..bucket_len as usize)?;
        let key = &rest[bucket_len as usize..];
        Some(HintKey {
            owner: String::from_utf8(owner.to_vec()).ok()?,
            bucket: String::from_utf8(bucket.to_vec()).ok()?,
            key: String::from_utf8(key.to_vec()).ok()?,
        })
    }
}

impl Hints {
    pub fn open(dir: &Path, options: Options) -> Result<Hints, ReplicaError> {
        Ok(Hints {
            storage: Storage::open(dir, options)?,
            locks: Stripes::new(),
            stored: AtomicU64::new(0),
        })
    }

    pub fn sync(&self) -> Result<(), ReplicaError> {
        Ok(self.storage.sync()?)
    }

    /// Keeps `state` for `hint.owner`, merged with any hint already held for the key.
    pub async fn store(&self, hint: &HintKey, state: &KeyState) -> Result<(), ReplicaError> {
        let raw = hint.encode();
        let _guard = self.locks.lock(&raw).await;
        let merged = match self.read(&raw)? {
            Some(held) => held.merge(state),
            None => state.clone(),
        };
        self.storage.put_async(&raw, &merged.encode()).await?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many hints this node has stored for other nodes since start.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Every hint held, with its state.
    pub fn all(&self) -> Vec<(HintKey, KeyState)> {
        self.storage
            .keys()
            .into_iter()
            .filter_map(|raw| {
                let hint = HintKey::decode(&raw)?;
                let state = self.read(&raw).ok()??;
                Some((hint, state))
            })
            .collect()
    }

    /// How many hints are held for each owner.
    pub fn pending(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for raw in self.storage.keys() {
            if let Some(hint) = HintKey::decode(&raw) {
                *counts.entry(hint.owner).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Drops a hint its owner has acknowledged, unless a newer state was merged in since
    /// `delivered` was read (that one is delivered next round).
    pub async fn delivered(
        &self,
        hint: &HintKey,
        delivered: &KeyState,
    ) -> Result<bool, ReplicaError> {
        let raw = hint.encode();
        let _guard = self.locks.lock(&raw).await;
        if self.read(&raw)?.as_ref() != Some(delivered) {
            return Ok(false);
        }
        self.storage.delete_async(&raw).await?;
        Ok(true)
    }

    fn read(&self, raw: &[u8]) -> Result<Option<KeyState>, ReplicaError> {
        self.storage
            .get(raw)?
            .map(|bytes| {
                KeyState::decode(&bytes).map_err(|e| ReplicaError::Corrupt {
                    bucket: String::new(),
                    key: format!("hint {:?}", HintKey::decode(raw)),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_keys_round_trip() {
        let k = HintKey {
            owner: "n3".into(),
            bucket: "carts".into(),
            key: "alice/1".into(),
        };
        assert_eq!(HintKey::decode(&k.encode()), Some(k));
        assert_eq!(HintKey::decode(&[9, 1]), None);
    }
}
