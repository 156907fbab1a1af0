//! What a key's state holds: siblings with their metadata, tombstones, and the cap on siblings.

use super::dvvset::{Actor, DvvSet, VersionVector};
use super::error::CausalError;

/// One value of a key as written by a client, or a tombstone left by a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub data: Vec<u8>,
    pub content_type: String,
    /// Wall-clock time of the write at the replica that applied it.
    pub modified_ms: u64,
    pub tombstone: bool,
    /// The client request that wrote it (0: unknown, as in data written before v2). A write
    /// hedged to a second coordinator, or retried, can be applied twice under two dots; the
    /// id lets both be shown, counted and merged as the one write they are.
    pub write_id: u64,
    /// What the Riak surface keeps with a value besides its bytes: user metadata, index
    /// entries and links, as (lower-case header name, value) pairs in the order written.
    /// The native API neither shows nor sets it.
    pub meta: Vec<(String, String)>,
}

impl Sibling {
    pub fn value(data: Vec<u8>, content_type: impl Into<String>, modified_ms: u64) -> Self {
        Sibling {
            data,
            content_type: content_type.into(),
            modified_ms,
            tombstone: false,
            write_id: 0,
            meta: Vec::new(),
        }
    }

    /// A delete: an ordinary causal write whose value is "nothing".
    pub fn tombstone(modified_ms: u64) -> Self {
        Sibling {
            data: Vec::new(),
            content_type: String::new(),
            modified_ms,
            tombstone: true,
            write_id: 0,
            meta: Vec::new(),
        }
    }

    /// The same sibling, marked as written by client request `write_id`.
    pub fn with_write_id(self, write_id: u64) -> Self {
        Sibling { write_id, ..self }
    }

    /// The same sibling, with the Riak surface's metadata.
    pub fn with_meta(self, meta: Vec<(String, String)>) -> Self {
        Sibling { meta, ..self }
    }

    /// Whether two siblings are the same client write applied under two dots.
    pub fn same_write(&self, other: &Sibling) -> bool {
        self.write_id != 0 && self.write_id == other.write_id
    }
}

/// How many siblings a key may accumulate. Siblings pile up when clients write without
/// sending back their context; past a point every read drags them all along, so production
/// stores warn early and then refuse the writes that would add more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiblingLimits {
    pub warn_at: usize,
    pub max: usize,
}

impl Default for SiblingLimits {
    fn default() -> Self {
        SiblingLimits {
            warn_at: 25,
            max: 100,
        }
    }
}

impl DvvSet<Sibling> {
    /// The values a client sees: tombstones hidden, and a write applied under two dots (a
    /// hedged or retried request) shown once.
    pub fn live_values(&self) -> impl Iterator<Item = &Sibling> {
        let all: Vec<&Sibling> = self.values().collect();
        all.clone()
            .into_iter()
            .enumerate()
            .filter(move |(i, s)| !s.tombstone && !all[..*i].iter().any(|e| e.same_write(s)))
            .map(|(_, s)| s)
    }

    /// Whether a value of the state was written by client request `write_id`.
    pub fn holds_write(&self, write_id: u64) -> bool {
        write_id != 0 && self.values().any(|s| s.write_id == write_id)
    }

    /// How many values repeat an earlier value's write (hedged writes applied twice).
    fn duplicate_writes(&self) -> usize {
        let all: Vec<&Sibling> = self.values().collect();
        (0..all.len())
            .filter(|&i| all[..i].iter().any(|e| e.same_write(all[i])))
            .count()
    }

    /// Whether a read finds nothing: no values, or only tombstones (whose context is still
    /// worth returning, so a later write supersedes the delete instead of racing it).
    pub fn is_not_found(&self) -> bool {
        self.live_values().next().is_none()
    }

    /// [`DvvSet::update`] for a client write, refused if it would leave more than
    /// `limits.max` siblings; logs a warning from `limits.warn_at` on.
    pub fn update_limited(
        &self,
        context: &VersionVector,
        value: Sibling,
        actor: &Actor,
        limits: SiblingLimits,
    ) -> Result<DvvSet<Sibling>, CausalError> {
        let next = self.update(context, value, actor);
        let count = next.values().count() - next.duplicate_writes();
        if count > limits.max {
            return Err(CausalError::TooManySiblings {
                count,
                max: limits.max,
            });
        }
        if count >= limits.warn_at {
            tracing::warn!(
                siblings = count,
                max = limits.max,
                "key is piling up siblings; clients should write back the causal context they read"
            );
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_tombstone_reads_as_not_found_but_keeps_its_context() {
        let n1 = Actor::new("n1");
        let put = DvvSet::new().update(
            &VersionVector::new(),
            Sibling::value(b"x".to_vec(), "text/plain", 1),
            &n1,
        );
        let deleted = put.update(&put.join(), Sibling::tombstone(2), &n1);
        assert!(deleted.is_not_found());
        assert_eq!(deleted.size(), 1);
        assert_eq!(deleted.join().get(&n1), 2);
    }

    #[test]
    fn a_delete_concurrent_with_a_put_leaves_the_put_visible() {
        let n1 = Actor::new("n1");
        let first = DvvSet::new().update(
            &VersionVector::new(),
            Sibling::value(b"a".to_vec(), "text/plain", 1),
            &n1,
        );
        let context = first.join();
        let put = first.update(
            &context,
            Sibling::value(b"b".to_vec(), "text/plain", 2),
            &n1,
        );
        let both = put.update(&context, Sibling::tombstone(3), &n1);
        let live: Vec<&[u8]> = both.live_values().map(|s| s.data.as_slice()).collect();
        assert_eq!(live, [b"b".as_slice()]);
        assert!(!both.is_not_found());
    }

    #[test]
    fn writes_past_the_sibling_cap_are_refused() {
        let n1 = Actor::new("n1");
        let limits = SiblingLimits { warn_at: 2, max: 3 };
        let blind = VersionVector::new();
        let mut state = DvvSet::new();
        for i in 0..3 {
            state = state
                .update_limited(&blind, Sibling::value(vec![i], "x", 0), &n1, limits)
                .expect("under the cap");
        }
        let refused = state.update_limited(&blind, Sibling::value(vec![9], "x", 0), &n1, limits);
        assert!(matches!(
            refused,
            Err(CausalError::TooManySiblings { count: 4, max: 3 })
        ));
        // A write with the context replaces them all and is accepted.
        let merged = state
            .update_limited(&state.join(), Sibling::value(vec![9], "x", 0), &n1, limits)
            .expect("merge");
        assert_eq!(merged.size(), 1);
    }
}
