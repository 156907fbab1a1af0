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

use std::collections::{BTreeMap, HashMap};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::ring::Ring;

pub const LEAVES: usize = 256;
pub const FANOUT: usize = 16;
pub const GROUPS: usize = LEAVES / FANOUT;

/// The hash of a stored state, as trees and digests carry it: the storage keydir's hash of
/// the encoded state, so trees can be built from the keydir without reading a value.
pub fn state_hash(encoded: &[u8]) -> u64 {
    crate::storage::value_hash(encoded)
}

/// The leaf of a storage key, in whichever tree it is filed.
pub fn leaf_of(storage_key: &[u8]) -> usize {
    (xxh3_64(storage_key) >> 56) as usize % LEAVES
}

fn item(storage_key: &[u8], hash: u64) -> u64 {
    crate::ring::xxh3_of(&[storage_key, &hash.to_le_bytes()])
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

    /// The tree of a storage key, without allocating (keydir scans call this per key).
    pub fn tree_of_storage_key(&self, storage_key: &[u8]) -> Option<TreeId> {
        let (&bucket_len, rest) = storage_key.split_first()?;
        let bucket = rest.get(..usize::from(bucket_len))?;
        let key = &rest[usize::from(bucket_len)..];
        let n = match self.bucket_n.is_empty() {
            true => self.default_n,
            false => std::str::from_utf8(bucket)
                .ok()
                .and_then(|b| self.bucket_n.get(b).copied())
                .unwrap_or(self.default_n),
        };
        Some(TreeId {
            partition: self.ring.partition(bucket, key),
            n,
        })
    }

    pub fn tree_of(&self, bucket: &str, key: &str) -> TreeId {
        TreeId {
            partition: self.ring.partition(bucket.as_bytes(), key.as_bytes()),
            n: self.bucket_n.get(bucket).copied().unwrap_or(self.default_n),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Leaf {
    hash: u64,
    /// Live keys filed here, so an exchange can size its digest batches.
    keys: u32,
}

/// Hashes only: the keys themselves are in the storage keydir (with their state hashes), so a
/// tree costs 4 KiB whatever it holds, and digests are read from the keydir (`Replica`).
struct Tree {
    leaves: Box<[Leaf; LEAVES]>,
}

impl Tree {
    fn new() -> Self {
        Tree {
            leaves: Box::new([Leaf::default(); LEAVES]),
        }
    }
}

/// One thread's share of the trees being built at open, in a map of its own.
#[derive(Default)]
pub struct TreesPart(HashMap<TreeId, Tree>);

impl TreesPart {
    /// Files a key's (tree, storage key, state hash).
    pub fn add(&mut self, id: TreeId, storage_key: &[u8], hash: u64) {
        let tree = self.0.entry(id).or_insert_with(Tree::new);
        let leaf = &mut tree.leaves[leaf_of(storage_key)];
        leaf.hash ^= item(storage_key, hash);
        leaf.keys += 1;
    }
}

/// The trees this node stores keys in, each behind its own shard lock so writes to different
/// partitions do not contend.
#[derive(Default)]
pub struct Trees {
    trees: DashMap<TreeId, Tree>,
}

impl Trees {
    /// The trees of every key, from the shares several threads built of them (XOR commutes,
    /// so the shares combine in any order, and no shard lock is taken per key).
    pub fn combine(parts: impl IntoIterator<Item = TreesPart>) -> Trees {
        let trees: DashMap<TreeId, Tree> = DashMap::new();
        for (id, part) in parts.into_iter().flat_map(|p| p.0) {
            let mut tree = trees.entry(id).or_insert_with(Tree::new);
            for (leaf, add) in tree.leaves.iter_mut().zip(part.leaves.iter()) {
                leaf.hash ^= add.hash;
                leaf.keys += add.keys;
            }
        }
        Trees { trees }
    }

    /// Records that `storage_key` of tree `id` went from state hash `old` to `new` (`None`:
    /// absent). XOR commutes, so racing updates of one key land in any order as long as each
    /// reports the exact state it replaced (the keydir's swap gives it).
    pub fn update(&self, id: TreeId, storage_key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        let mut tree = self.trees.entry(id).or_insert_with(Tree::new);
        let leaf = &mut tree.leaves[leaf_of(storage_key)];
        if let Some(old) = old {
            leaf.hash ^= item(storage_key, old);
            leaf.keys = leaf.keys.saturating_sub(1);
        }
        if let Some(new) = new {
            leaf.hash ^= item(storage_key, new);
            leaf.keys += 1;
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

    /// How many keys this node holds in one leaf.
    pub fn leaf_keys(&self, id: TreeId, leaf: usize) -> u32 {
        self.trees
            .get(&id)
            .and_then(|t| t.leaves.get(leaf).map(|l| l.keys))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: TreeId = TreeId { partition: 1, n: 3 };

    /// Applies writes to `trees` and to a model of the keydir, so each update names the
    /// exact state it replaced (as the keydir's swap does in the replica).
    fn write(trees: &Trees, model: &mut BTreeMap<Vec<u8>, u64>, key: &str, hash: Option<u64>) {
        let key = key.as_bytes().to_vec();
        let old = match hash {
            Some(h) => model.insert(key.clone(), h),
            None => model.remove(&key),
        };
        trees.update(T1, &key, old, hash);
    }

    #[test]
    fn trees_of_the_same_content_agree_whatever_the_write_order() {
        let (a, b) = (Trees::default(), Trees::default());
        let (mut ma, mut mb) = (BTreeMap::new(), BTreeMap::new());
        for i in 0..500u32 {
            write(&a, &mut ma, &format!("k{i}"), Some(u64::from(i)));
        }
        for i in (0..500u32).rev() {
            write(&b, &mut mb, &format!("k{i}"), Some(999));
            write(&b, &mut mb, &format!("k{i}"), Some(u64::from(i)));
        }
        assert_eq!(a.groups(T1), b.groups(T1));
        let total: u32 = (0..LEAVES).map(|l| b.leaf_keys(T1, l)).sum();
        assert_eq!(total, 500);
        write(&b, &mut mb, "k7", Some(8));
        let differing: Vec<usize> = (0..GROUPS)
            .filter(|&g| a.groups(T1)[g] != b.groups(T1)[g])
            .collect();
        assert_eq!(differing.len(), 1);
        let g = differing[0];
        let leaf = (0..FANOUT)
            .find(|&l| a.leaves(T1, g)[l] != b.leaves(T1, g)[l])
            .map(|l| g * FANOUT + l)
            .expect("a differing leaf");
        assert_eq!(leaf, leaf_of(b"k7"));
        write(&b, &mut mb, "k7", Some(7));
        assert_eq!(a.groups(T1), b.groups(T1));
        write(&b, &mut mb, "k7", None);
        assert_ne!(a.groups(T1), b.groups(T1));
        assert_eq!(b.leaf_keys(T1, leaf), a.leaf_keys(T1, leaf) - 1);
    }

    #[test]
    fn keys_are_filed_by_partition_and_bucket_n() {
        let ring = Ring::new(vec!["a".into()], 8);
        let filing = Filing::new(ring.clone(), 3, [("pairs".to_owned(), 2)].into());
        let p = ring.partition(b"pairs", b"k");
        assert_eq!(filing.tree_of("pairs", "k"), TreeId { partition: p, n: 2 });
        let q = ring.partition(b"other", b"k");
        assert_eq!(filing.tree_of("other", "k"), TreeId { partition: q, n: 3 });
        for (bucket, key) in [("pairs", "k"), ("other", "k"), ("", "x")] {
            let skey = crate::replica::storage_key(bucket, key);
            assert_eq!(
                filing.tree_of_storage_key(&skey),
                Some(filing.tree_of(bucket, key))
            );
        }
        assert_eq!(filing.tree_of_storage_key(&[9, b'a']), None);
    }
}
