//! Last-write-wins registers for `conflict = "lww"` buckets, stamped by a hybrid logical clock.
//!
//! LWW loses concurrent writes by design: of two writes that did not see each other, the one
//! with the lower timestamp is silently dropped. It suits data where that is acceptable
//! (sessions, caches); carts belong in `siblings` buckets.
//!
//! The hybrid logical clock (Kulkarni et al., 2014) is physical milliseconds plus a logical
//! counter. It never goes backwards: when the wall clock steps back, or lags a timestamp this
//! node has seen, the clock stays at the highest physical time known and counts up the logical
//! part. So a node's later write always beats its earlier ones, whatever its wall clock does.
//! Ties between nodes are broken by node id, so every replica picks the same winner.
//!
//! # Clock skew
//! A clock that only moves forward can be dragged: one node an hour fast stamps its writes an
//! hour ahead, and every node that adopted those stamps would stay an hour ahead for every key,
//! long after the bad clock was fixed. So the clock adopts a seen timestamp only when it is at
//! most `max_offset_ms` ahead of the local wall clock (CockroachDB's `--max-offset`). A write
//! that replaces a stored state still gets a stamp above that state's ([`Hlc::after`]), so a
//! write that saw an earlier one always wins over it, but the excess stays with that key.
//! What is left to lose: a write that did not see a concurrent, skewed one (a node that is
//! fast by less than the bound, or before it is found out) loses to it. Nodes that find their
//! own clock out of bounds stop coordinating `lww` writes (see `cluster::skew`).

use parking_lot::Mutex;

use super::dvvset::Actor;

/// A hybrid logical clock reading. Orders by physical time, then logical counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub physical_ms: u64,
    pub logical: u32,
}

/// Where a node reads wall-clock time; injected so tests and simulations control it.
pub trait WallClock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// One node's hybrid logical clock.
#[derive(Debug)]
pub struct Hlc {
    last: Mutex<Timestamp>,
    /// How far ahead of the wall clock a seen timestamp may be and still be adopted.
    max_offset_ms: u64,
}

impl Hlc {
    pub fn new(max_offset_ms: u64) -> Self {
        Hlc {
            last: Mutex::new(Timestamp::default()),
            max_offset_ms,
        }
    }

    /// A timestamp greater than every one this clock issued or observed.
    pub fn now(&self, wall: &dyn WallClock) -> Timestamp {
        let wall_ms = wall.now_ms();
        let mut last = self.last.lock();
        *last = if wall_ms > last.physical_ms {
            Timestamp {
                physical_ms: wall_ms,
                logical: 0,
            }
        } else {
            tick(*last)
        };
        *last
    }

    /// Takes in a timestamp seen elsewhere (a stored or replicated write), so the next `now`
    /// is greater than it, unless it is further ahead of `wall` than the bound allows; returns
    /// whether it was adopted.
    pub fn observe(&self, seen: Timestamp, wall: &dyn WallClock) -> bool {
        if seen.physical_ms > wall.now_ms().saturating_add(self.max_offset_ms) {
            return false;
        }
        let mut last = self.last.lock();
        *last = (*last).max(seen);
        true
    }

    /// A timestamp for a write that replaces one stamped `current`: above it, and above
    /// everything this clock issued. `current` is adopted only within the bound; beyond it
    /// this one write is stamped just above `current`, and the clock is left where it was.
    /// Also returns whether `current` was adopted.
    pub fn after(&self, current: Timestamp, wall: &dyn WallClock) -> (Timestamp, bool) {
        let adopted = self.observe(current, wall);
        let now = self.now(wall);
        let stamp = if adopted || now > current {
            now
        } else {
            tick(current)
        };
        (stamp, adopted)
    }
}

fn tick(t: Timestamp) -> Timestamp {
    match t.logical.checked_add(1) {
        Some(logical) => Timestamp {
            physical_ms: t.physical_ms,
            logical,
        },
        None => Timestamp {
            physical_ms: t.physical_ms + 1,
            logical: 0,
        },
    }
}

/// A value with the timestamp and node of the write that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwRegister<V> {
    pub timestamp: Timestamp,
    pub node: Actor,
    pub value: V,
}

impl<V: Clone> LwwRegister<V> {
    /// The winner of two writes: highest timestamp, then highest node id. Commutative,
    /// associative and idempotent, so replicas converge whatever the delivery order.
    pub fn merge(&self, other: &LwwRegister<V>) -> LwwRegister<V> {
        if (other.timestamp, &other.node) > (self.timestamp, &self.node) {
            other.clone()
        } else {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct FakeClock(AtomicU64);

    impl WallClock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_wall_clock_jump_backwards_does_not_reorder_a_nodes_writes() {
        let clock = FakeClock(AtomicU64::new(10_000));
        let hlc = Hlc::new(500);
        let node = Actor::new("n1");
        let first = LwwRegister {
            timestamp: hlc.now(&clock),
            node: node.clone(),
            value: "old",
        };
        clock.0.store(5_000, Ordering::Relaxed); // NTP steps the clock back
        let second = LwwRegister {
            timestamp: hlc.now(&clock),
            node,
            value: "new",
        };
        assert!(second.timestamp > first.timestamp);
        assert_eq!(first.merge(&second).value, "new");
        assert_eq!(second.merge(&first).value, "new");
    }

    #[test]
    fn observed_timestamps_push_the_clock_forward() {
        let clock = FakeClock(AtomicU64::new(100));
        let hlc = Hlc::new(1_000);
        let remote = Timestamp {
            physical_ms: 900,
            logical: 7,
        };
        assert!(hlc.observe(remote, &clock));
        assert!(hlc.now(&clock) > remote);
    }

    #[test]
    fn a_timestamp_beyond_the_bound_is_not_adopted_but_is_still_beaten_by_its_successor() {
        let clock = FakeClock(AtomicU64::new(10_000));
        let hlc = Hlc::new(500);
        let skewed = Timestamp {
            physical_ms: 10_000 + 3_600_000,
            logical: 0,
        };
        assert!(!hlc.observe(skewed, &clock));
        let (replacing, adopted) = hlc.after(skewed, &clock);
        assert!(!adopted);
        assert!(
            replacing > skewed,
            "a write that saw the skewed one beats it"
        );
        // The clock itself stayed with the wall clock: other keys are not dragged ahead.
        let other = hlc.now(&clock);
        assert!(
            other.physical_ms < 10_000 + 500,
            "clock dragged to {other:?}"
        );
        // Within the bound it is adopted as before.
        let near = Timestamp {
            physical_ms: 10_400,
            logical: 3,
        };
        let expected = Timestamp {
            physical_ms: 10_400,
            logical: 4,
        };
        assert_eq!(hlc.after(near, &clock), (expected, true));
    }

    fn write() -> impl Strategy<Value = LwwRegister<u32>> {
        (0..5u64, 0..3u32, 0..3u8, any::<u32>()).prop_map(|(ms, logical, node, value)| {
            LwwRegister {
                timestamp: Timestamp {
                    physical_ms: ms,
                    logical,
                },
                node: Actor::new(format!("n{node}")),
                value,
            }
        })
    }

    proptest! {
        /// Every replica folding the same writes in its own order ends with the same winner.
        #[test]
        fn any_delivery_order_converges(
            writes in proptest::collection::vec(write(), 1..12),
            seed in any::<u64>(),
        ) {
            // Distinct (timestamp, node) per write, as the clock guarantees for real writes.
            let mut writes = writes;
            writes.sort_by(|a, b| (a.timestamp, &a.node).cmp(&(b.timestamp, &b.node)));
            writes.dedup_by(|a, b| (a.timestamp, &a.node) == (b.timestamp, &b.node));
            let fold = |order: &[LwwRegister<u32>]| {
                order[1..].iter().fold(order[0].clone(), |acc, w| acc.merge(w))
            };
            let expected = fold(&writes);
            let mut rng = fastrand::Rng::with_seed(seed);
            for _ in 0..5 {
                let mut shuffled = writes.clone();
                rng.shuffle(&mut shuffled);
                prop_assert_eq!(fold(&shuffled), expected.clone());
            }
        }
    }
}
