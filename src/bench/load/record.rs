//! Latency and outcome bookkeeping: one `Recorder` per client (no shared lock on the hot path),
//! merged at the end; plus a shared per-second timeline for the latency-over-time plot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Latencies are recorded in microseconds, up to a minute (anything slower is clamped).
const MAX_MICROS: u64 = 60_000_000;

/// The kinds of request a client makes, each with its own histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Read,
    Update,
    /// A whole read-modify-write: the GET and the PUT that follows it.
    ReadModifyWrite,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Update => "update",
            Kind::ReadModifyWrite => "rmw",
        }
    }
}

/// How a request ended: an HTTP status, or a transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Status(u16),
    Transport,
}

impl Outcome {
    pub fn is_error(self) -> bool {
        match self {
            // 404 is an ordinary answer for a read of a key nobody wrote.
            Outcome::Status(s) => !(200..300).contains(&s) && s != 300 && s != 404,
            Outcome::Transport => true,
        }
    }

    pub fn label(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Transport => "transport".into(),
        }
    }
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; a failure here is a programming error.
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("valid histogram bounds")
}

/// One client's figures.
pub struct Recorder {
    pub latency: BTreeMap<Kind, Histogram<u64>>,
    pub outcomes: BTreeMap<Outcome, u64>,
}

impl Recorder {
    /// Allocates every histogram up front: created on first use, 64 clients' histograms
    /// (~130 KB each) were zeroed all at once as the run started, and showed up as a stall.
    pub fn new() -> Self {
        Recorder {
            latency: [Kind::Read, Kind::Update, Kind::ReadModifyWrite]
                .into_iter()
                .map(|kind| (kind, histogram(3)))
                .collect(),
            outcomes: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, kind: Kind, outcome: Outcome, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.latency
            .entry(kind)
            .or_insert_with(|| histogram(3))
            .saturating_record(micros);
        *self.outcomes.entry(outcome).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: Recorder) {
        for (kind, h) in other.latency {
            let mine = self.latency.entry(kind).or_insert_with(|| histogram(3));
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.add(&h);
        }
        for (outcome, n) in other.outcomes {
            *self.outcomes.entry(outcome).or_insert(0) += n;
        }
    }

    /// Every kind's latencies together.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = histogram(3);
        for h in self.latency.values() {
            let _ = all.add(h);
        }
        all
    }
}

/// Per-second operation counts and latency (two significant figures is plenty for a plot),
/// shared by the clients; plus a live completed-operations counter for the progress line.
pub struct Timeline {
    seconds: Mutex<Vec<Histogram<u64>>>,
    pub completed: AtomicU64,
}

impl Timeline {
    /// `seconds`: how long the run is expected to last (more are added if it runs longer).
    pub fn new(seconds: usize) -> Self {
        Timeline {
            seconds: Mutex::new((0..=seconds).map(|_| histogram(2)).collect()),
            completed: AtomicU64::new(0),
        }
    }

    pub fn record(&self, since_start: Duration, latency: Duration) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        let second = since_start.as_secs() as usize;
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        let mut seconds = self.seconds.lock();
        while seconds.len() <= second {
            seconds.push(histogram(2));
        }
        seconds[second].saturating_record(micros);
    }

    /// The seconds that saw operations, up to the last one that did.
    pub fn into_seconds(self) -> Vec<Histogram<u64>> {
        let mut seconds = self.seconds.into_inner();
        while seconds.last().is_some_and(|h| h.is_empty()) {
            seconds.pop();
        }
        seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_latencies() {
        let mut a = Recorder::new();
        a.record(Kind::Read, Outcome::Status(200), Duration::from_millis(1));
        let mut b = Recorder::new();
        b.record(Kind::Read, Outcome::Status(503), Duration::from_millis(9));
        b.record(Kind::Update, Outcome::Transport, Duration::from_millis(2));
        a.merge(b);
        assert_eq!(a.latency[&Kind::Read].len(), 2);
        assert!(a.latency[&Kind::ReadModifyWrite].is_empty());
        let max = a.latency[&Kind::Read].max();
        assert!((9_000..9_010).contains(&max), "max {max} µs");
        assert_eq!(a.outcomes[&Outcome::Status(503)], 1);
        assert_eq!(a.all().len(), 3);
    }

    #[test]
    fn only_failures_count_as_errors() {
        assert!(!Outcome::Status(204).is_error());
        assert!(!Outcome::Status(300).is_error());
        assert!(!Outcome::Status(404).is_error());
        assert!(Outcome::Status(503).is_error());
        assert!(Outcome::Status(400).is_error());
        assert!(Outcome::Transport.is_error());
    }
}
