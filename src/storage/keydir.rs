//! The in-memory index: every live key → where its newest record lies.
//!
//! Sized for millions of keys: a key of up to [`INLINE_KEY_LEN`] bytes lives inside the map's
//! slot with no heap allocation of its own, and a whole slot (key and entry) is 48 bytes.
//! Sequence numbers are deliberately not kept here: only recovery needs them, and it reads
//! them from the records themselves. The value's hash is: the replica's hash trees are built
//! from it at open and its anti-entropy digests read it, so neither has to read a value nor
//! keep a second copy of the keys.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use dashmap::DashMap;

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

impl Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for KeyBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
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

pub type Keydir = DashMap<KeyBytes, Entry>;

/// Shards of the keydir. A walk of the keydir (anti-entropy digests, handoff, reaping) holds
/// one shard's read lock at a time, and an append waiting for that shard holds the writer
/// lock meanwhile: with 1,024 shards a shard of a 10M-key keydir is ~10k keys, ~1 ms to walk,
/// where dashmap's default (4 per core) made it 1.25M keys and stalled every write ~100 ms.
const SHARDS: usize = 1024;

/// An empty keydir with room for `capacity` keys.
pub fn with_capacity(capacity: usize) -> Keydir {
    DashMap::with_capacity_and_hasher_and_shard_amount(capacity, Default::default(), SHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_stays_small() {
        assert_eq!(std::mem::size_of::<KeyBytes>(), 24);
        assert_eq!(std::mem::size_of::<(KeyBytes, Entry)>(), 48);
    }

    #[test]
    fn inline_and_heap_keys_look_up_by_slice() {
        let map = with_capacity(0);
        let short = b"short".to_vec();
        let long = vec![7u8; 100];
        let e = Entry {
            segment: 2,
            offset: 3,
            len: 4,
            hash: 5,
        };
        map.insert(KeyBytes::new(&short), e);
        map.insert(KeyBytes::new(&long), e);
        assert!(map.contains_key(short.as_slice()));
        assert!(map.contains_key(long.as_slice()));
        assert!(!map.contains_key(b"other".as_slice()));
    }
}
