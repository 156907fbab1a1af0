//! Hash trees over (key, hash of the stored state), kept up to date on every local write, so
//! two replicas can find the keys on which they differ by exchanging a few hashes instead of
//! their data.
//!
//! A key is filed under the tree of its partition *and its bucket's `n`* ([`TreeId`]): the
//! nodes that replicate a partition's keys of `n = 2` are fewer than those of `n = 3`, and
//! anti-entropy compares a tree only with nodes that should hold all of it.
//!
//! Shape: each partition has [`LEAVES`] leaves, a key's leaf chosen by its hash. A leaf's hash
//! is the XOR of `h(key, state hash)` over its keys, so replacing one key's state is O(1): XOR
//! the old item out and the new one in. Leaves are grouped [`FANOUT`] to a *group*; a group's
//! hash is the XOR of its leaves. An exchange compares the [`GROUPS`] group hashes, then the
//! leaves of differing groups, then the key digests of differing leaves.

use std::collections::BTreeMap;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::ring::Ring;

pub const LEAVES: usize = 256;
pub const FANOUT: usize = 16;
pub const GROUPS: usize = LEAVES / FANOUT;

/// The hash of a stored state, as trees and digests carry it.
pub fn state_hash(encoded: &[u8]) -> u64 {
    xxh3_64(encoded)
}

fn leaf_of(storage_key: &[u8]) -> usize {
    (xxh3_64(storage_key) >> 56) as usize % LEAVES
}

fn item(storage_key: &[u8], hash: u64) -> u64 {
    let mut h = Xxh3::new();
    h.update(storage_key);
    h.update(&hash.to_le_bytes());
    h.digest()
}

/// One tree: a partition's keys of the buckets with replication factor `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TreeId {
    pub partition: u32,
    pub n: u8,
}

/// Which tree a key is filed under: the ring's partition of it, and its bucket's `n`.
#[derive(Debug, Clone)]
pub struct Filing {
    ring: Ring,
    default_n: u8,
    bucket_n: BTreeMap<String, u8>,
}

impl Filing {
    pub fn new(ring: Ring, default_n: u8, bucket_n: BTreeMap<String, u8>) -> Filing {
        Filing {
            ring,
            default_n,
            bucket_n,
        }
    }

    /// The `n` of every bucket whose `n` is not the default's.
    pub fn bucket_n(&self) -> &BTreeMap<String, u8> {
        &self.bucket_n
    }

    /// The same filing with other bucket `n`s (set over the API).
    pub fn with_bucket_n(&self, bucket_n: BTreeMap<String, u8>) -> Filing {
        Filing {
            bucket_n,
            ..self.clone()
        }
    }

    pub fn tree_of(&self, bucket: &str, key: &str) -> TreeId {
        TreeId {
            partition: self.ring.partition(bucket.as_bytes(), key.as_bytes()),
            n: self.bucket_n.get(bucket).copied().unwrap_or(self.default_n),
        }
    }
}

#[derive(Default)]
struct Leaf {
    hash: u64,
    keys: BTreeMap<Vec<u8>, u64>,
}

struct Tree {
    leaves: Vec<Leaf>,
}

impl Tree {
    fn new() -> Self {
        Tree {
            leaves: (0..LEAVES).map(|_| Leaf::default()).collect(),
        }
    }
}

/// The trees this node stores keys in, each behind its own shard lock so writes to different
/// partitions do not contend.
#[derive(Default)]
pub struct Trees {
    trees: DashMap<TreeId, Tree>,
}

impl Trees {
    /// Records that `storage_key` of tree `id` now has a state hashing to `hash` (or is gone).
    pub fn update(&self, id: TreeId, storage_key: &[u8], hash: Option<u64>) {
        let mut tree = self.trees.entry(id).or_insert_with(Tree::new);
        let leaf = &mut tree.leaves[leaf_of(storage_key)];
        let old = match (hash, leaf.keys.get_mut(storage_key)) {
            // Most writes are to keys the tree holds already: no key copy for those.
            (Some(h), Some(slot)) => Some(std::mem::replace(slot, h)),
            (Some(h), None) => leaf.keys.insert(storage_key.to_vec(), h),
            (None, _) => leaf.keys.remove(storage_key),
        };
        if let Some(old) = old {
            leaf.hash ^= item(storage_key, old);
        }
        if let Some(new) = hash {
            leaf.hash ^= item(storage_key, new);
        }
    }

    /// Moves `storage_key` from tree `from` to tree `to` (its bucket's `n` changed).
    pub fn refile(&self, from: TreeId, to: TreeId, storage_key: &[u8]) {
        let hash = self.trees.get(&from).and_then(|t| {
            t.leaves[leaf_of(storage_key)]
                .keys
                .get(storage_key)
                .copied()
        });
        if let Some(hash) = hash {
            self.update(from, storage_key, None);
            self.update(to, storage_key, Some(hash));
        }
    }

    /// The [`GROUPS`] group hashes of a tree (all zero if it holds nothing).
    pub fn groups(&self, id: TreeId) -> Vec<u64> {
        match self.trees.get(&id) {
            None => vec![0; GROUPS],
            Some(tree) => tree
                .leaves
                .chunks(FANOUT)
                .map(|group| group.iter().fold(0, |acc, l| acc ^ l.hash))
                .collect(),
        }
    }

    /// The [`FANOUT`] leaf hashes of one group.
    pub fn leaves(&self, id: TreeId, group: usize) -> Vec<u64> {
        match (self.trees.get(&id), group < GROUPS) {
            (Some(tree), true) => tree.leaves[group * FANOUT..(group + 1) * FANOUT]
                .iter()
                .map(|l| l.hash)
                .collect(),
            _ => vec![0; FANOUT],
        }
    }

    /// The (storage key, state hash) pairs of one leaf.
    pub fn digests(&self, id: TreeId, leaf: usize) -> Vec<(Vec<u8>, u64)> {
        match (self.trees.get(&id), leaf < LEAVES) {
            (Some(tree), true) => tree.leaves[leaf]
                .keys
                .iter()
                .map(|(k, h)| (k.clone(), *h))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The storage keys of one leaf of every tree of `partition`, whatever their `n`.
    pub fn partition_keys(&self, partition: u32, leaf: usize) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        if leaf >= LEAVES {
            return keys;
        }
        for tree in self.trees.iter().filter(|t| t.key().partition == partition) {
            keys.extend(tree.leaves[leaf].keys.keys().cloned());
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: TreeId = TreeId { partition: 1, n: 3 };

    #[test]
    fn trees_of_the_same_content_agree_whatever_the_write_order() {
        let (a, b) = (Trees::default(), Trees::default());
        for i in 0..500u32 {
            a.update(T1, format!("k{i}").as_bytes(), Some(u64::from(i)));
        }
        for i in (0..500u32).rev() {
            b.update(T1, format!("k{i}").as_bytes(), Some(999));
            b.update(T1, format!("k{i}").as_bytes(), Some(u64::from(i)));
        }
        assert_eq!(a.groups(T1), b.groups(T1));
        b.update(T1, b"k7", Some(8));
        let differing: Vec<usize> = (0..GROUPS)
            .filter(|&g| a.groups(T1)[g] != b.groups(T1)[g])
            .collect();
        assert_eq!(differing.len(), 1);
        let g = differing[0];
        let leaf = (0..FANOUT)
            .find(|&l| a.leaves(T1, g)[l] != b.leaves(T1, g)[l])
            .map(|l| g * FANOUT + l)
            .expect("a differing leaf");
        let only_in_b: Vec<_> = b
            .digests(T1, leaf)
            .into_iter()
            .filter(|d| !a.digests(T1, leaf).contains(d))
            .collect();
        assert_eq!(only_in_b, vec![(b"k7".to_vec(), 8)]);
        b.update(T1, b"k7", Some(7));
        assert_eq!(a.groups(T1), b.groups(T1));
        b.update(T1, b"k7", None);
        assert_ne!(a.groups(T1), b.groups(T1));
    }

    #[test]
    fn keys_are_filed_by_partition_and_bucket_n() {
        let ring = Ring::new(vec!["a".into()], 8);
        let filing = Filing::new(ring.clone(), 3, [("pairs".to_owned(), 2)].into());
        let p = ring.partition(b"pairs", b"k");
        assert_eq!(filing.tree_of("pairs", "k"), TreeId { partition: p, n: 2 });
        let q = ring.partition(b"other", b"k");
        assert_eq!(filing.tree_of("other", "k"), TreeId { partition: q, n: 3 });
        let trees = Trees::default();
        trees.update(filing.tree_of("pairs", "k"), b"pairs/k", Some(1));
        trees.update(TreeId { partition: p, n: 3 }, b"x/y", Some(1));
        let mut all: Vec<Vec<u8>> = (0..LEAVES)
            .flat_map(|l| trees.partition_keys(p, l))
            .collect();
        all.sort();
        assert_eq!(all, vec![b"pairs/k".to_vec(), b"x/y".to_vec()]);
        assert_eq!(
            trees
                .digests(TreeId { partition: p, n: 2 }, leaf_of(b"x/y"))
                .len(),
            usize::from(leaf_of(b"x/y") == leaf_of(b"pairs/k"))
        );
    }
}
