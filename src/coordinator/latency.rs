//! How long answers from peers usually take, and from that the *suspect delay*: how long a
//! request waits for a replica before it also asks a stand-in (`round`). One figure for all
//! peers, not one per peer: a peer that turns slow must not become its own yardstick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// The suspect delay is never shorter: below it a busy node would hedge ordinary requests.
pub const SUSPECT_FLOOR: Duration = Duration::from_millis(25);
/// Nor longer: past it a hung replica costs clients more than a hint costs us.
pub const SUSPECT_CEILING: Duration = Duration::from_millis(400);
/// The delay is this many times the recent 99th percentile.
const P99_FACTOR: u64 = 2;
/// Answers remembered, and how often the percentile is recomputed.
const WINDOW: usize = 512;
const RECOMPUTE_EVERY: usize = 64;

pub struct Latencies {
    samples: Mutex<Samples>,
    /// The current suspect delay in microseconds, read without the lock.
    suspect_us: AtomicU64,
}

struct Samples {
    ring: Vec<u32>,
    next: usize,
    since_recompute: usize,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            samples: Mutex::new(Samples {
                ring: Vec::with_capacity(WINDOW),
                next: 0,
                since_recompute: 0,
            }),
            suspect_us: AtomicU64::new(SUSPECT_FLOOR.as_micros() as u64),
        }
    }
}

impl Latencies {
    /// Records how long one answer took.
    pub fn record(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u32;
        let mut s = self.samples.lock();
        if s.ring.len() < WINDOW {
            s.ring.push(us);
        } else {
            let at = s.next;
            s.ring[at] = us;
        }
        s.next = (s.next + 1) % WINDOW;
        s.since_recompute += 1;
        if s.since_recompute >= RECOMPUTE_EVERY {
            s.since_recompute = 0;
            let mut sorted = s.ring.clone();
            drop(s);
            sorted.sort_unstable();
            let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
            let delay = Duration::from_micros(u64::from(p99) * P99_FACTOR)
                .clamp(SUSPECT_FLOOR, SUSPECT_CEILING);
            self.suspect_us
                .store(delay.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// How long to wait for a replica before asking a stand-in as well.
    pub fn suspect_after(&self) -> Duration {
        Duration::from_micros(self.suspect_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_follows_the_tail_within_its_bounds() {
        let l = Latencies::default();
        assert_eq!(l.suspect_after(), SUSPECT_FLOOR);
        for _ in 0..WINDOW {
            l.record(Duration::from_millis(40));
        }
        assert_eq!(l.suspect_after(), Duration::from_millis(80));
        for _ in 0..WINDOW {
            l.record(Duration::from_secs(3));
        }
        assert_eq!(l.suspect_after(), SUSPECT_CEILING);
        for _ in 0..WINDOW {
            l.record(Duration::from_micros(300));
        }
        assert_eq!(l.suspect_after(), SUSPECT_FLOOR);
    }
}
