//! Who is up, as this node sees it: a heartbeat to every peer every [`HEARTBEAT_INTERVAL`],
//! judged by a phi accrual failure detector (Hayashibara et al., 2004; as Cassandra and Akka
//! use it).
//!
//! Instead of a fixed timeout, the detector learns how regularly each peer answers and turns
//! the silence since its last heartbeat into a suspicion level φ: with the exponential
//! approximation, φ = (time since last heartbeat / mean interval) · log10(e). A peer is down
//! once φ passes [`PHI_THRESHOLD`]: with heartbeats every 100 ms that is about 1.8 s of silence,
//! longer for a peer whose heartbeats have been irregular. The coordinator reads this view to
//! skip dead replicas instead of waiting for their timeouts.
//!
//! Heartbeats also carry each side's wall-clock time, from which [`skew`] judges how far this
//! node's clock is from its peers'.

pub mod skew;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::causal::WallClock;
use crate::net::Net;
use crate::rpc::{self, Request, Response};
use skew::Skew;

pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Suspicion above which a peer counts as down (Cassandra's default `phi_convict_threshold`).
pub const PHI_THRESHOLD: f64 = 8.0;
/// Heartbeat intervals remembered per peer.
const WINDOW: usize = 100;
/// Intervals are taken as at least this long, so a burst of quick answers does not make the
/// detector jumpy.
const MIN_INTERVAL: Duration = HEARTBEAT_INTERVAL;

struct Health {
    intervals: VecDeque<Duration>,
    /// Sum of `intervals`, kept as they come and go: `is_down` runs on every request.
    total: Duration,
    /// When the last heartbeat came (at start: when we started listening).
    last: Instant,
    /// Wall-clock time of the last heartbeat, for operators; `None` until the first.
    last_wall_ms: Option<u64>,
    up: bool,
}

impl Health {
    fn phi(&self, now: Instant) -> f64 {
        let mean = if self.intervals.is_empty() {
            MIN_INTERVAL
        } else {
            self.total / self.intervals.len() as u32
        }
        .max(MIN_INTERVAL);
        let silence = now.saturating_duration_since(self.last);
        silence.as_secs_f64() / mean.as_secs_f64() * std::f64::consts::LOG10_E
    }
}

/// A peer as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub id: String,
    pub up: bool,
    pub phi: f64,
    pub last_heard_ms: Option<u64>,
}

pub struct Liveness {
    /// Follows the membership (`set_peers`).
    peers: parking_lot::RwLock<HashMap<String, Arc<Mutex<Health>>>>,
    clock: Arc<dyn WallClock>,
}

fn unheard() -> Arc<Mutex<Health>> {
    Arc::new(Mutex::new(Health {
        intervals: VecDeque::with_capacity(WINDOW),
        total: Duration::ZERO,
        last: Instant::now(),
        last_wall_ms: None,
        up: false,
    }))
}

impl Liveness {
    /// Every peer starts unheard, its silence counted from now.
    pub fn new(peers: impl IntoIterator<Item = String>, clock: Arc<dyn WallClock>) -> Self {
        let peers = peers.into_iter().map(|id| (id, unheard())).collect();
        Liveness {
            peers: parking_lot::RwLock::new(peers),
            clock,
        }
    }

    /// The peers to watch from now on: new ones start unheard, those no longer listed are
    /// forgotten, the rest keep their history.
    pub fn set_peers(&self, ids: impl IntoIterator<Item = String>) {
        let ids: std::collections::BTreeSet<String> = ids.into_iter().collect();
        let mut peers = self.peers.write();
        peers.retain(|id, _| ids.contains(id));
        for id in ids {
            peers.entry(id).or_insert_with(unheard);
        }
    }

    fn health(&self, peer: &str) -> Option<Arc<Mutex<Health>>> {
        self.peers.read().get(peer).cloned()
    }

    fn all(&self) -> Vec<(String, Arc<Mutex<Health>>)> {
        let peers = self.peers.read();
        peers
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect()
    }

    /// This node's wall-clock time, as heartbeats carry it.
    pub fn wall_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records a heartbeat from `peer`.
    pub fn heard(&self, peer: &str, now: Instant) {
        let Some(h) = self.health(peer) else {
            return;
        };
        let mut h = h.lock();
        if h.last_wall_ms.is_some() {
            if h.intervals.len() == WINDOW {
                if let Some(oldest) = h.intervals.pop_front() {
                    h.total -= oldest;
                }
            }
            let interval = now.saturating_duration_since(h.last);
            h.intervals.push_back(interval);
            h.total += interval;
        }
        h.last = now;
        h.last_wall_ms = Some(self.clock.now_ms());
    }

    /// Whether the detector has convicted `peer`: heard from before, silent too long since.
    /// A peer never heard from is not convicted (it may still be starting): calls to it are
    /// tried, and fail fast if nothing listens. Unknown peers count as down.
    pub fn is_down(&self, peer: &str) -> bool {
        self.health(peer).is_none_or(|h| {
            let h = h.lock();
            h.last_wall_ms.is_some() && h.phi(Instant::now()) >= PHI_THRESHOLD
        })
    }

    pub fn view(&self) -> Vec<PeerView> {
        let now = Instant::now();
        let mut views: Vec<PeerView> = self
            .all()
            .into_iter()
            .map(|(id, h)| {
                let h = h.lock();
                let phi = h.phi(now);
                PeerView {
                    id,
                    up: h.last_wall_ms.is_some() && phi < PHI_THRESHOLD,
                    phi,
                    last_heard_ms: h.last_wall_ms,
                }
            })
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// Logs each peer whose state changed since the last call.
    fn log_transitions(&self) {
        let now = Instant::now();
        for (id, h) in self.all() {
            let mut h = h.lock();
            let up = h.last_wall_ms.is_some() && h.phi(now) < PHI_THRESHOLD;
            if up != h.up {
                h.up = up;
                if up {
                    tracing::info!(peer = %id, "peer is up");
                } else {
                    tracing::warn!(peer = %id, "peer is down (no heartbeat)");
                }
            }
        }
    }
}

/// Pings every peer every [`HEARTBEAT_INTERVAL`] until dropped, feeding `liveness` and
/// `skew`.
pub async fn heartbeat(net: Arc<Net>, liveness: Arc<Liveness>, skew: Arc<Skew>) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out_of_bounds = false;
    loop {
        tick.tick().await;
        for (peer, _) in liveness.all() {
            let (net, liveness, skew) = (net.clone(), liveness.clone(), skew.clone());
            tokio::spawn(async move {
                let sent_ms = liveness.clock.now_ms();
                let ping = Request::Ping { wall_ms: sent_ms };
                let answer = rpc::call(&net, &peer, &ping, HEARTBEAT_INTERVAL * 10).await;
                if let Ok(Response::Pong { wall_ms }) = answer {
                    liveness.heard(&peer, Instant::now());
                    let before = skew.peers().get(&peer).copied();
                    let offset = skew.measured(&peer, sent_ms, liveness.clock.now_ms(), wall_ms);
                    if skew.too_far(offset) && !before.is_some_and(|b| skew.too_far(b)) {
                        tracing::warn!(%peer, offset_ms = offset, max_offset_ms = skew.max_offset_ms(),
                            "peer's clock is off from ours by more than the bound");
                    }
                }
            });
        }
        liveness.log_transitions();
        let verdict = skew.verdict();
        if verdict.out_of_bounds != out_of_bounds {
            out_of_bounds = verdict.out_of_bounds;
            if out_of_bounds {
                tracing::error!(offset_ms = verdict.offset_ms, max_offset_ms = skew.max_offset_ms(),
                    "this node's clock is off from most peers' by more than the bound; it refuses to coordinate lww writes until it is back");
            } else {
                tracing::info!(
                    offset_ms = verdict.offset_ms,
                    "this node's clock is back within bounds"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::SystemClock;

    #[test]
    fn silence_raises_phi_until_the_peer_is_down() {
        let l = Liveness::new(["n2".to_owned()], Arc::new(SystemClock));
        let t0 = Instant::now();
        for i in 0..20 {
            l.heard("n2", t0 + HEARTBEAT_INTERVAL * i);
        }
        let last = t0 + HEARTBEAT_INTERVAL * 19;
        let health = l.health("n2").expect("n2");
        let h = health.lock();
        assert!(h.phi(last + Duration::from_millis(100)) < 1.0);
        assert!(h.phi(last + Duration::from_millis(1000)) < PHI_THRESHOLD);
        assert!(h.phi(last + Duration::from_millis(2000)) >= PHI_THRESHOLD);
    }

    #[test]
    fn irregular_heartbeats_make_the_detector_more_patient() {
        let l = Liveness::new(["n2".to_owned()], Arc::new(SystemClock));
        let t0 = Instant::now();
        for i in 0..20 {
            l.heard("n2", t0 + Duration::from_millis(500) * i);
        }
        let last = t0 + Duration::from_millis(500) * 19;
        // Two seconds of silence convict a peer heard every 100 ms, not one heard every 500.
        assert!(
            l.health("n2")
                .expect("n2")
                .lock()
                .phi(last + Duration::from_secs(2))
                < PHI_THRESHOLD
        );
    }

    #[test]
    fn only_the_last_window_of_heartbeats_counts() {
        let l = Liveness::new(["n2".to_owned()], Arc::new(SystemClock));
        let mut at = Instant::now();
        l.heard("n2", at);
        for gap in [Duration::from_secs(1), HEARTBEAT_INTERVAL] {
            for _ in 0..WINDOW {
                at += gap;
                l.heard("n2", at);
            }
        }
        // The slow second-long intervals have left the window: the peer is judged by the
        // regular ones again, so two seconds of silence convict it.
        assert!(
            l.health("n2")
                .expect("n2")
                .lock()
                .phi(at + Duration::from_secs(2))
                >= PHI_THRESHOLD
        );
    }

    #[test]
    fn unknown_peers_are_down_and_unheard_ones_are_not_convicted() {
        let l = Liveness::new(["n2".to_owned()], Arc::new(SystemClock));
        assert!(l.is_down("nobody"));
        assert!(!l.is_down("n2"));
        assert!(!l.view()[0].up, "shown as down until first heard");
    }
}
