//! How far this node's wall clock is from its peers', from the times heartbeats carry.
//!
//! Each ping answer carries the peer's wall-clock time; the peer's offset is estimated as
//! `peer time − (sent + received) / 2`, off by at most half the round trip (NTP's estimate).
//! Only a peer's latest estimate is kept.
//!
//! This node's clock is *out of bounds* when more than half of its peers (of all it has, not
//! only those measured yet) are off by more than `max_offset_ms` in the same direction: a majority that agrees with itself
//! and not with us means the odd one out is us (CockroachDB reasons the same way). A single
//! peer that is off is logged and shown, but does not stop this node. While out of bounds the
//! coordinator refuses to stamp `lww` writes, so a write acknowledged through a sound node
//! cannot lose to one stamped by a bad clock.

use std::collections::HashMap;

use parking_lot::Mutex;

#[derive(Debug)]
pub struct Skew {
    max_offset_ms: u64,
    /// How many peers this node has (follows the membership).
    peer_count: std::sync::atomic::AtomicUsize,
    /// Peer id → its clock minus ours, in ms (latest estimate).
    offsets: Mutex<HashMap<String, i64>>,
}

/// This node's clock as judged against its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Median of (our clock − peer's clock) over the peers measured; 0 with none.
    pub offset_ms: i64,
    pub out_of_bounds: bool,
}

impl Skew {
    pub fn new(max_offset_ms: u64, peer_count: usize) -> Self {
        Skew {
            max_offset_ms,
            peer_count: std::sync::atomic::AtomicUsize::new(peer_count),
            offsets: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_peer_count(&self, peers: usize) {
        self.peer_count
            .store(peers, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// Takes one heartbeat: sent at `sent_ms` and answered at `received_ms` by our clock,
    /// stamped `peer_ms` by the peer's. Returns the peer's estimated offset.
    pub fn measured(&self, peer: &str, sent_ms: u64, received_ms: u64, peer_ms: u64) -> i64 {
        let midpoint = (i128::from(sent_ms) + i128::from(received_ms)) / 2;
        let offset =
            (i128::from(peer_ms) - midpoint).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        self.offsets.lock().insert(peer.to_owned(), offset);
        offset
    }

    /// Each measured peer's offset (its clock minus ours), by id.
    pub fn peers(&self) -> HashMap<String, i64> {
        self.offsets.lock().clone()
    }

    /// Whether `offset` (a peer's) is beyond the bound.
    pub fn too_far(&self, offset_ms: i64) -> bool {
        offset_ms.unsigned_abs() > self.max_offset_ms
    }

    pub fn verdict(&self) -> Verdict {
        let offsets = self.offsets.lock();
        if offsets.is_empty() {
            return Verdict {
                offset_ms: 0,
                out_of_bounds: false,
            };
        }
        let mut ours: Vec<i64> = offsets.values().map(|o| o.saturating_neg()).collect();
        ours.sort_unstable();
        let median = ours[ours.len() / 2];
        let bound = self.max_offset_ms as i64;
        let ahead = ours.iter().filter(|&&o| o > bound).count();
        let behind = ours.iter().filter(|&&o| o < -bound).count();
        Verdict {
            offset_ms: median,
            out_of_bounds: ahead.max(behind) * 2
                > self.peer_count.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn the_estimate_takes_the_round_trip_midpoint() {
        let s = Skew::new(500, 2);
        assert_eq!(s.measured("n2", 1_000, 1_010, 1_105), 100);
        assert_eq!(s.measured("n2", 1_000, 1_010, 905), -100);
    }

    #[test]
    fn a_node_whose_clock_disagrees_with_the_majority_is_out_of_bounds() {
        // We are an hour fast: both peers read an hour behind us.
        let fast = Skew::new(500, 2);
        fast.measured("n1", HOUR + 10, HOUR + 12, 11);
        assert!(
            !fast.verdict().out_of_bounds,
            "one of two peers is not a majority"
        );
        fast.measured("n2", HOUR + 10, HOUR + 12, 12);
        let v = fast.verdict();
        assert!(v.out_of_bounds);
        assert!((v.offset_ms - HOUR as i64).abs() < 10, "{v:?}");
    }

    #[test]
    fn one_bad_peer_does_not_put_a_sound_node_out_of_bounds() {
        let sound = Skew::new(500, 2);
        sound.measured("n2", 10, 12, 11);
        sound.measured("n3", 10, 12, HOUR + 11);
        assert!(!sound.verdict().out_of_bounds);
        assert!(sound.too_far(sound.peers()["n3"]));
        assert!(!sound.too_far(sound.peers()["n2"]));
    }

    #[test]
    fn with_nothing_measured_the_clock_is_trusted_and_small_offsets_pass() {
        let s = Skew::new(500, 2);
        assert!(!s.verdict().out_of_bounds);
        s.measured("n2", 1_000, 1_002, 1_400);
        assert!(!s.verdict().out_of_bounds);
    }
}
