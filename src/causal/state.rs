//! The state of one key as a replica stores it, and how two replicas' states merge.

use super::dvvset::{DvvSet, VersionVector};
use super::lww::LwwRegister;
use super::value::Sibling;

/// Siblings under a DVVSet, or a last-write-wins register, depending on the bucket's
/// `conflict` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Siblings(DvvSet<Sibling>),
    Lww(LwwRegister<Sibling>),
}

impl KeyState {
    /// The merge used by replication and repair: `sync` for siblings, the later write for LWW.
    /// Commutative, associative and idempotent within one mode.
    ///
    /// States of different modes meet when a bucket's `conflict` setting changed while
    /// replicas held the key under the old one: the state with the later write wins (on a
    /// tie, siblings, which keep more; then the encoding), which every replica computes
    /// alike, so the replicas converge.
    pub fn merge(&self, other: &KeyState) -> KeyState {
        match (self, other) {
            (KeyState::Siblings(a), KeyState::Siblings(b)) => KeyState::Siblings(a.sync(b)),
            (KeyState::Lww(a), KeyState::Lww(b)) => KeyState::Lww(a.merge(b)),
            _ => {
                let rank = |s: &KeyState| {
                    (
                        s.latest_ms(),
                        matches!(s, KeyState::Siblings(_)),
                        s.encode(),
                    )
                };
                if rank(self) >= rank(other) {
                    self.clone()
                } else {
                    other.clone()
                }
            }
        }
    }

    /// When the latest of its values (or tombstones) was written.
    pub fn latest_ms(&self) -> u64 {
        match self {
            KeyState::Siblings(set) => set.values().map(|s| s.modified_ms).max().unwrap_or(0),
            KeyState::Lww(reg) => reg.value.modified_ms,
        }
    }

    /// The values a client sees, tombstones hidden.
    pub fn live_values(&self) -> Vec<&Sibling> {
        match self {
            KeyState::Siblings(set) => set.live_values().collect(),
            KeyState::Lww(reg) if reg.value.tombstone => Vec::new(),
            KeyState::Lww(reg) => vec![&reg.value],
        }
    }

    /// Whether client request `write_id` is among the current values (applied here already).
    pub fn holds_write(&self, write_id: u64) -> bool {
        match self {
            KeyState::Siblings(set) => set.holds_write(write_id),
            KeyState::Lww(reg) => write_id != 0 && reg.value.write_id == write_id,
        }
    }

    /// The context that covers every value of this state (empty for LWW, which needs none).
    pub fn context(&self) -> VersionVector {
        match self {
            KeyState::Siblings(set) => set.join(),
            KeyState::Lww(_) => VersionVector::new(),
        }
    }

    /// If the state is nothing but tombstones, the time of the latest delete.
    pub fn tombstone_only_since(&self) -> Option<u64> {
        match self {
            KeyState::Siblings(set) => {
                let mut values = set.values().peekable();
                values.peek()?;
                values.try_fold(0, |latest: u64, s| {
                    s.tombstone.then_some(latest.max(s.modified_ms))
                })
            }
            KeyState::Lww(reg) => reg.value.tombstone.then_some(reg.value.modified_ms),
        }
    }

    /// Whether the state holds a tombstone (alone or beside live values).
    pub fn has_tombstone(&self) -> bool {
        match self {
            KeyState::Siblings(set) => set.values().any(|s| s.tombstone),
            KeyState::Lww(reg) => reg.value.tombstone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Actor;

    #[test]
    fn only_states_of_nothing_but_tombstones_are_reapable() {
        let a = Actor::new("a");
        let put = DvvSet::new().update(
            &VersionVector::new(),
            Sibling::value(b"v".to_vec(), "t", 5),
            &a,
        );
        let deleted = put.update(&put.join(), Sibling::tombstone(9), &a);
        assert_eq!(KeyState::Siblings(put.clone()).tombstone_only_since(), None);
        assert_eq!(
            KeyState::Siblings(deleted.clone()).tombstone_only_since(),
            Some(9)
        );
        let concurrent = deleted.update(
            &VersionVector::new(),
            Sibling::value(b"w".to_vec(), "t", 7),
            &a,
        );
        assert_eq!(KeyState::Siblings(concurrent).tombstone_only_since(), None);
        assert_eq!(
            KeyState::Siblings(DvvSet::new()).tombstone_only_since(),
            None
        );
    }
}
