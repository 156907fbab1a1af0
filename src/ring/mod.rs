//! The consistent-hash ring: (bucket, key) → partition → the nodes that hold it.
//!
//! A key hashes (xxh3, stable across versions and machines) onto one of `ring_size`
//! partitions, taking the hash's top bits. Each partition has an owner; a first ring deals
//! them to the members in id order, round robin, so ownership differs by at most one partition
//! between nodes, and later rings come from [`claim`], which moves as few partitions as it
//! can. A partition's preference list is its owner followed by the owners of the next
//! partitions, skipping nodes already listed, until `n` distinct nodes are found; the
//! remaining nodes, in the same walk order, are its fallbacks. So a preference list always
//! names distinct nodes, whatever the assignment.

pub mod claim;

use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// A ring: the owner of every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Owner of each partition, by index.
    owners: Vec<String>,
    /// The distinct owners, sorted.
    members: Vec<String>,
    ring_size: u32,
    bits: u32,
}

/// How many partitions each node owns (first place in the preference list).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ownership {
    pub node: String,
    pub partitions: u32,
}

impl Ring {
    /// The first ring of a cluster: partitions dealt round robin in id order. `ring_size`
    /// must be a power of two and at least the number of members (the config checks both).
    pub fn new(members: Vec<String>, ring_size: u32) -> Ring {
        Ring::from_owners(round_robin(members, ring_size))
    }

    /// A ring with the given owner of each partition; their number must be a power of two.
    pub fn from_owners(owners: Vec<String>) -> Ring {
        let mut members = owners.clone();
        members.sort();
        members.dedup();
        let ring_size = owners.len() as u32;
        Ring {
            owners,
            members,
            ring_size,
            bits: ring_size.trailing_zeros(),
        }
    }

    pub fn owners(&self) -> &[String] {
        &self.owners
    }

    /// The nodes that own at least one partition, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn ring_size(&self) -> u32 {
        self.ring_size
    }

    pub fn partition(&self, bucket: &[u8], key: &[u8]) -> u32 {
        let hash = xxh3_of(&[&(bucket.len() as u32).to_le_bytes(), bucket, key]);
        if self.bits == 0 {
            0
        } else {
            (hash >> (64 - self.bits)) as u32
        }
    }

    /// The node that owns a partition.
    pub fn owner(&self, partition: u32) -> &str {
        self.owners
            .get(partition as usize)
            .map_or("", String::as_str)
    }

    /// Every member, in the order a partition's walk meets them: the first `n` are its
    /// preference list, the rest its fallbacks in order.
    pub fn walk(&self, partition: u32) -> Vec<&str> {
        let mut nodes: Vec<&str> = Vec::with_capacity(self.members.len());
        for step in 0..self.ring_size {
            let node = self.owner((partition + step) % self.ring_size);
            if !nodes.contains(&node) {
                nodes.push(node);
                if nodes.len() == self.members.len() {
                    break;
                }
            }
        }
        nodes
    }

    /// The `n` primary replicas of a partition, in order.
    pub fn preference_list(&self, partition: u32, n: usize) -> Vec<&str> {
        let mut walk = self.walk(partition);
        walk.truncate(n);
        walk
    }

    pub fn ownership(&self) -> Vec<Ownership> {
        self.members
            .iter()
            .map(|node| Ownership {
                node: node.clone(),
                partitions: self.owners.iter().filter(|o| *o == node).count() as u32,
            })
            .collect()
    }
}

/// Partitions dealt to `members` in id order, round robin.
pub fn round_robin(mut members: Vec<String>, ring_size: u32) -> Vec<String> {
    members.sort();
    members.dedup();
    if members.is_empty() {
        return Vec::new();
    }
    (0..ring_size as usize)
        .map(|p| members[p % members.len()].clone())
        .collect()
}

/// xxh3 of the concatenation of `parts`: the value a streaming `Xxh3` fed them in turn gives,
/// without its ~600-byte state when they fit a stack buffer (the hash trees are built by
/// hashing every key twice this way at start).
pub fn xxh3_of(parts: &[&[u8]]) -> u64 {
    const SHORT: usize = 256;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= SHORT {
        let mut buf = [0u8; SHORT];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        return xxh3_64(&buf[..at]);
    }
    let mut h = Xxh3::new();
    for p in parts {
        h.update(p);
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_of_parts_is_the_streaming_hash_of_their_concatenation() {
        let bytes: Vec<u8> = (0..700u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in (0..300).chain([511, 700]) {
            for cut in [0, len / 3, len] {
                let (a, b) = bytes[..len].split_at(cut);
                let mut streaming = Xxh3::new();
                streaming.update(a);
                streaming.update(b);
                assert_eq!(xxh3_of(&[a, b]), streaming.digest(), "len {len} cut {cut}");
            }
        }
    }

    fn ring(members: usize, ring_size: u32) -> Ring {
        Ring::new((1..=members).map(|i| format!("n{i}")).collect(), ring_size)
    }

    #[test]
    fn preference_lists_have_n_distinct_nodes_and_fallbacks_complete_the_cluster() {
        for members in 1..=7 {
            let r = ring(members, 64);
            for p in 0..64 {
                let walk = r.walk(p);
                assert_eq!(walk.len(), members);
                let mut sorted = walk.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), members, "partition {p}: {walk:?}");
                assert_eq!(r.preference_list(p, 3.min(members)), walk[..3.min(members)]);
            }
        }
    }

    #[test]
    fn ownership_is_balanced_to_one_partition() {
        for members in 1..=7 {
            let counts: Vec<u32> = ring(members, 64)
                .ownership()
                .iter()
                .map(|o| o.partitions)
                .collect();
            let spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
            assert!(spread <= 1, "{members} members: {counts:?}");
        }
    }

    #[test]
    fn keys_spread_over_partitions_and_hash_stably() {
        let r = ring(3, 64);
        let mut hits = [0u32; 64];
        for i in 0..64_000 {
            hits[r.partition(b"bucket", format!("key-{i}").as_bytes()) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (700..1300).contains(&h)), "{hits:?}");
        // Pinned so a change of hash (which would move every key) cannot slip in unnoticed.
        assert_eq!(r.partition(b"carts", b"alice"), 17);
        assert_ne!(r.partition(b"ab", b"c"), r.partition(b"a", b"bc"));
    }
}
