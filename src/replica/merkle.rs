//! Per-partition hash trees over (key, hash of the stored state), kept up to date on every
//! local write, so two replicas can find the keys on which they differ by exchanging a few
//! hashes instead of their data.
//!
//! Shape: each partition has [`LEAVES`] leaves, a key's leaf chosen by its hash. A leaf's hash
//! is the XOR of `h(key, state hash)` over its keys, so replacing one key's state is O(1): XOR
//! the old item out and the new one in. Leaves are grouped [`FANOUT`] to a *group*; a group's
//! hash is the XOR of its leaves. An exchange compares the [`GROUPS`] group hashes, then the
//! leaves of differing groups, then the key digests of differing leaves.

use std::collections::BTreeMap;

use dashmap::DashMap;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

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

/// The trees of every partition this node stores keys of, each behind its own shard lock so
/// writes to different partitions do not contend.
#[derive(Default)]
pub struct Trees {
    partitions: DashMap<u32, Tree>,
}

impl Trees {
    /// Records that `storage_key` of `partition` now has a state hashing to `hash` (or is gone).
    pub fn update(&self, partition: u32, storage_key: &[u8], hash: Option<u64>) {
        let mut tree = self.partitions.entry(partition).or_insert_with(Tree::new);
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

    /// The [`GROUPS`] group hashes of a partition (all zero if it holds nothing).
    pub fn groups(&self, partition: u32) -> Vec<u64> {
        match self.partitions.get(&partition) {
            None => vec![0; GROUPS],
            Some(tree) => tree
                .leaves
                .chunks(FANOUT)
                .map(|group| group.iter().fold(0, |acc, l| acc ^ l.hash))
                .collect(),
        }
    }

    /// The [`FANOUT`] leaf hashes of one group.
    pub fn leaves(&self, partition: u32, group: usize) -> Vec<u64> {
        match (self.partitions.get(&partition), group < GROUPS) {
            (Some(tree), true) => tree.leaves[group * FANOUT..(group + 1) * FANOUT]
                .iter()
                .map(|l| l.hash)
                .collect(),
            _ => vec![0; FANOUT],
        }
    }

    /// The (storage key, state hash) pairs of one leaf.
    pub fn digests(&self, partition: u32, leaf: usize) -> Vec<(Vec<u8>, u64)> {
        match (self.partitions.get(&partition), leaf < LEAVES) {
            (Some(tree), true) => tree.leaves[leaf]
                .keys
                .iter()
                .map(|(k, h)| (k.clone(), *h))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_of_the_same_content_agree_whatever_the_write_order() {
        let (a, b) = (Trees::default(), Trees::default());
        for i in 0..500u32 {
            a.update(1, format!("k{i}").as_bytes(), Some(u64::from(i)));
        }
        for i in (0..500u32).rev() {
            b.update(1, format!("k{i}").as_bytes(), Some(999));
            b.update(1, format!("k{i}").as_bytes(), Some(u64::from(i)));
        }
        assert_eq!(a.groups(1), b.groups(1));
        b.update(1, b"k7", Some(8));
        let differing: Vec<usize> = (0..GROUPS)
            .filter(|&g| a.groups(1)[g] != b.groups(1)[g])
            .collect();
        assert_eq!(differing.len(), 1);
        let g = differing[0];
        let leaf = (0..FANOUT)
            .find(|&l| a.leaves(1, g)[l] != b.leaves(1, g)[l])
            .map(|l| g * FANOUT + l)
            .expect("a differing leaf");
        let only_in_b: Vec<_> = b
            .digests(1, leaf)
            .into_iter()
            .filter(|d| !a.digests(1, leaf).contains(d))
            .collect();
        assert_eq!(only_in_b, vec![(b"k7".to_vec(), 8)]);
        b.update(1, b"k7", Some(7));
        assert_eq!(a.groups(1), b.groups(1));
        b.update(1, b"k7", None);
        assert_ne!(a.groups(1), b.groups(1));
    }
}
