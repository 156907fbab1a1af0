//! The in-memory index: every live key → where its newest record lies.
//!
//! Sized for millions of keys: a key of up to [`INLINE_KEY_LEN`] bytes lives inside the map's
//! slot with no heap allocation of its own, and a whole slot (key and entry) is 48 bytes.
//! Sequence numbers are deliberately not kept here: only recovery needs them, and it reads
//! them from the records themselves. The value's hash is: the replica's hash trees are built
//! from it at open and its anti-entropy digests read it, so neither has to read a value nor
//! keep a second copy of the keys.

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashTable;
use parking_lot::RwLock;

/// Keys up to this length are stored inline in the map slot.
pub const INLINE_KEY_LEN: usize = 22;

/// Where the newest record of a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    /// [`value_hash`] of the record's value.
    pub hash: u64,
}

/// The hash of a stored value that the keydir keeps (xxh3, stable across versions).
pub fn value_hash(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

impl Entry {
    /// Whether this entry points at the given record position.
    pub fn is_at(&self, segment: u32, offset: u32) -> bool {
        self.segment == segment && self.offset == offset
    }
}

/// A key as the keydir owns it: inline when short, boxed otherwise. Hashes and compares as the
/// byte slice it holds, so lookups take a plain `&[u8]`.
#[derive(Clone)]
pub enum KeyBytes {
    Inline { len: u8, buf: [u8; INLINE_KEY_LEN] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    pub fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY_LEN {
            let mut buf = [0; INLINE_KEY_LEN];
            buf[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                buf,
            }
        } else {
            KeyBytes::Heap(key.into())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, buf } => &buf[..*len as usize],
            KeyBytes::Heap(b) => b,
        }
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}

/// Shards of the keydir, each a table behind its own lock. A walk of the keydir (anti-entropy
/// digests, handoff, reaping) holds one shard's read lock at a time, and an append waiting
/// for that shard holds the writer lock meanwhile: with 1,024 shards a shard of a 10M-key
/// keydir is ~10k keys, ~1 ms to walk (4 shards per core stalled every write ~100 ms).
const SHARD_BITS: u32 = 10;
pub const SHARDS: usize = 1 << SHARD_BITS;

type Slot = (KeyBytes, Entry);

/// Live key → newest record, in [`SHARDS`] tables. One hash per operation picks the shard and
/// the slot: SipHash keyed per process (keys are the clients' choice, so a hash they could
/// predict would let them make every lookup a collision chain).
pub struct Keydir {
    shards: Box<[RwLock<HashTable<Slot>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Keydir {
    /// An empty keydir with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Keydir {
        let per_shard = capacity.div_ceil(SHARDS);
        Keydir {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashTable::with_capacity(per_shard)))
                .collect(),
            hasher: Default::default(),
        }
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard a hash belongs to. Not its top 7 bits: the table tags slots with those.
    pub fn shard_of(hash: u64) -> usize {
        ((hash << 7) >> (64 - SHARD_BITS)) as usize
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<Slot>> {
        &self.shards[Self::shard_of(hash)]
    }

    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        shard.find(hash, |s| s.0.as_slice() == key).map(|s| s.1)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Points `key` at `entry`; returns the entry it replaced.
    pub fn insert(&self, key: &[u8], entry: Entry) -> Option<Entry> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        ShardMut {
            table: &mut shard,
            hasher: &self.hasher,
        }
        .insert(hash, key, entry)
    }

    /// Forgets `key`; returns the entry it had.
    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        ShardMut {
            table: &mut shard,
            hasher: &self.hasher,
        }
        .remove(hash, key)
    }

    /// Lets `change` edit the entry of `key` in place, under its shard's lock; false if the
    /// key is absent or `change` declined (returned false).
    pub fn modify(&self, key: &[u8], change: impl FnOnce(&mut Entry) -> bool) -> bool {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        shard
            .find_mut(hash, |s| s.0.as_slice() == key)
            .is_some_and(|s| change(&mut s.1))
    }

    /// Calls `f` with every live key and entry of the shards in `shards`, holding one shard's
    /// read lock at a time.
    pub fn for_each_in(&self, shards: Range<usize>, mut f: impl FnMut(&[u8], &Entry)) {
        for shard in &self.shards[shards] {
            for (key, entry) in shard.read().iter() {
                f(key.as_slice(), entry);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Every shard, to fill without locks while nothing else can see the keydir (open builds
    /// each shard in one go, on several threads).
    pub fn shards_mut(&mut self) -> Vec<ShardMut<'_>> {
        let hasher = &self.hasher;
        self.shards
            .iter_mut()
            .map(|s| ShardMut {
                table: s.get_mut(),
                hasher,
            })
            .collect()
    }
}

/// One shard's table, borrowed for writing; operations take the key's [`Keydir::hash`].
pub struct ShardMut<'a> {
    table: &'a mut HashTable<Slot>,
    hasher: &'a std::collections::hash_map::RandomState,
}

impl ShardMut<'_> {
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Entry> {
        self.table
            .find(hash, |s| s.0.as_slice() == key)
            .map(|s| s.1)
    }

    pub fn insert(&mut self, hash: u64, key: &[u8], entry: Entry) -> Option<Entry> {
        if let Some(slot) = self.table.find_mut(hash, |s| s.0.as_slice() == key) {
            return Some(std::mem::replace(&mut slot.1, entry));
        }
        let hasher = self.hasher;
        self.table
            .insert_unique(hash, (KeyBytes::new(key), entry), |s| {
                hasher.hash_one(s.0.as_slice())
            });
        None
    }

    /// Calls `f` with every key and entry of the shard.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &Entry)) {
        for (key, entry) in self.table.iter() {
            f(key.as_slice(), entry);
        }
    }

    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Entry> {
        let found = self
            .table
            .find_entry(hash, |s| s.0.as_slice() == key)
            .ok()?;
        Some(found.remove().0 .1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_stays_small() {
        assert_eq!(std::mem::size_of::<KeyBytes>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }

    #[test]
    fn inline_and_heap_keys_look_up_by_slice() {
        let map = Keydir::with_capacity(0);
        let short = b"short".to_vec();
        let long = vec![7u8; 100];
        let e = Entry {
            segment: 2,
            offset: 3,
            len: 4,
            hash: 5,
        };
        assert_eq!(map.insert(&short, e), None);
        assert_eq!(map.insert(&long, e), None);
        let moved = Entry { offset: 9, ..e };
        assert_eq!(map.insert(&long, moved), Some(e));
        assert_eq!(map.get(&short), Some(e));
        assert_eq!(map.get(&long), Some(moved));
        assert!(!map.contains_key(b"other"));
        assert_eq!(map.len(), 2);
        assert!(!map.modify(b"other", |_| true));
        assert!(!map.modify(&short, |_| false));
        assert!(map.modify(&short, |e| {
            e.len = 8;
            true
        }));
        assert_eq!(map.get(&short).map(|e| e.len), Some(8));
        assert_eq!(map.remove(&short), Some(Entry { len: 8, ..e }));
        assert_eq!(map.remove(&short), None);
        let mut seen = Vec::new();
        map.for_each_in(0..SHARDS, |k, _| seen.push(k.to_vec()));
        assert_eq!(seen, vec![long.clone()]);
    }

    #[test]
    fn keys_spread_over_all_shards() {
        let map = Keydir::with_capacity(0);
        let mut used = vec![0u32; SHARDS];
        for i in 0..SHARDS * 64 {
            used[Keydir::shard_of(map.hash(format!("key{i}").as_bytes()))] += 1;
        }
        // 64 a shard on average; a shard selection that ignored bits would leave some empty.
        assert!(used.iter().all(|&n| n > 16), "{:?}", used.iter().min());
    }
}
