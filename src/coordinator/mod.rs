//! Get, put and delete across a key's replicas.
//!
//! - **PUT/DELETE**: the write must be coordinated by a replica of the key, since the new
//!   version-vector event is that replica's. A node that is not one forwards it (`forward`),
//!   hedging to the next primary when the first is slow, refuses, or cannot read or store
//!   the key. The coordinating replica applies `update` with its own actor, appends the
//!   result, and sends the new state to the other replicas while its own fsync runs (`write`):
//!   a primary that is down, refuses or is slow is stood in for by a fallback holding a hint.
//!   It answers once `w` replicas (at least `pw` of them primaries) stored it; replication to
//!   the rest goes on in the background. Each client write carries an id drawn here, so a
//!   write that two coordinators applied is one write, not two siblings.
//! - **GET**: asks every primary for its state, answers with the `sync` of the first `r`
//!   answers (at least `pr` from primaries). "Not found" is an answer. Then read repair
//!   (`read_repair`) waits briefly for the other answers and brings stale replicas up to date.
//!
//! Whom to ask and when a request is decided is [`round::Round`], a state machine without
//! I/O; quorum arithmetic is [`quorum::Tally`]. The files here are the shells that feed them.

mod fence;
mod forward;
mod get;
pub mod handoff;
pub mod latency;
pub mod listing;
pub mod quorum;
mod read_repair;
mod reader;
pub mod round;
mod service;
pub mod transfer;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::causal::{KeyState, VersionVector};
use crate::cluster::skew::Skew;
use crate::cluster::Liveness;
use crate::config::{BucketProps, Config};
use crate::meta::{Metadata, View};
use crate::net::Net;
use crate::replica::Replica;
use crate::rpc::{self, Failure, PutRequest, WriteOp};
use fence::Fence;
use latency::Latencies;

pub(crate) use reader::Reader;
pub use service::Service;

/// Per-request knobs, already validated against the bucket's `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    pub r: u8,
    pub w: u8,
    pub pr: u8,
    pub pw: u8,
    pub timeout: Duration,
}

pub struct Coordinator {
    me: String,
    /// The ring in force comes from here, per request.
    metadata: Arc<Metadata>,
    replica: Arc<Replica>,
    net: Arc<Net>,
    liveness: Arc<Liveness>,
    skew: Arc<Skew>,
    /// How long replicas take to answer a read or a replicated write.
    replica_latency: Latencies,
    /// How long a forwarded write takes, coordination and replication included.
    forward_latency: Latencies,
    read_repairs: Arc<AtomicU64>,
    hints_delivered: AtomicU64,
    fence: Fence,
}

impl Coordinator {
    pub fn new(
        config: Arc<Config>,
        metadata: Arc<Metadata>,
        replica: Arc<Replica>,
        net: Arc<Net>,
        liveness: Arc<Liveness>,
        skew: Arc<Skew>,
    ) -> Self {
        Coordinator {
            me: config.node_id.clone(),
            metadata,
            replica,
            net,
            liveness,
            skew,
            replica_latency: Latencies::default(),
            forward_latency: Latencies::default(),
            read_repairs: Arc::new(AtomicU64::new(0)),
            hints_delivered: AtomicU64::new(0),
            fence: Fence::default(),
        }
    }

    /// The cluster metadata in force on this node (members, ring, transition).
    pub fn view(&self) -> Arc<View> {
        self.metadata.view()
    }

    /// The ring-version fence of this node's replica.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    pub fn metadata(&self) -> &Arc<Metadata> {
        &self.metadata
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Every bucket `n` in use (the default's and the buckets' own).
    pub fn replication_factors(&self) -> std::collections::BTreeSet<u8> {
        let view = self.view();
        view.meta
            .bucket_n()
            .into_values()
            .chain([view.meta.defaults.n])
            .collect()
    }

    /// A bucket's settings in force: the metadata's (the config's, and what the API set).
    pub fn bucket(&self, bucket: &str) -> BucketProps {
        self.view().meta.bucket(bucket)
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The storage keys filed under the trees `which` picks: a walk of the whole keydir, so
    /// off the async workers.
    pub async fn keys_filed(
        &self,
        which: impl Fn(crate::replica::merkle::TreeId) -> bool + Send + 'static,
    ) -> Result<Vec<Vec<u8>>, String> {
        let replica = self.replica.clone();
        tokio::task::spawn_blocking(move || replica.keys_filed(which))
            .await
            .map_err(|e| e.to_string())
    }

    pub fn net(&self) -> &Arc<Net> {
        &self.net
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    pub fn skew(&self) -> &Arc<Skew> {
        &self.skew
    }

    /// The current suspect delays: (replica answers, forwarded writes).
    pub fn suspect_delays(&self) -> (Duration, Duration) {
        (
            self.replica_latency.suspect_after(),
            self.forward_latency.suspect_after(),
        )
    }

    /// Whether the failure detector has convicted `node` (this node never is).
    fn is_down(&self, node: &str) -> bool {
        node != self.me && self.liveness.is_down(node)
    }

    /// Where a write of the key goes, all from one view of the metadata (so a change that
    /// commits meanwhile cannot pair one ring's primaries with another's newcomers).
    fn placement(&self, bucket: &str, key: &str) -> Placement {
        let n = usize::from(self.bucket(bucket).n);
        let view = self.view();
        let partition = view.ring.partition(bucket.as_bytes(), key.as_bytes());
        let mut walk: Vec<String> = view
            .ring
            .walk(partition)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let fallbacks = walk.split_off(n.min(walk.len()));
        Placement {
            primaries: walk,
            fallbacks,
            next: next_primaries(&view, bucket, key, n),
            ring_version: view.meta.ring_version,
        }
    }

    /// Where a hint meant for `owner` goes: to the owner while it replicates the key, else to
    /// the key's primaries now (and under the next ring, during a change).
    pub(crate) fn hint_targets(&self, owner: &str, bucket: &str, key: &str) -> Vec<String> {
        let Placement {
            primaries: mut targets,
            next,
            ..
        } = self.placement(bucket, key);
        for n in next.unwrap_or_default() {
            if !targets.contains(&n) {
                targets.push(n);
            }
        }
        if targets.iter().any(|t| t == owner) {
            vec![owner.to_owned()]
        } else {
            targets
        }
    }

    /// The key's partition and its primary replicas, in order.
    pub fn preference_list(&self, bucket: &str, key: &str) -> (u32, Vec<String>) {
        let n = usize::from(self.bucket(bucket).n);
        let view = self.view();
        let partition = view.ring.partition(bucket.as_bytes(), key.as_bytes());
        let nodes = view
            .ring
            .preference_list(partition, n)
            .into_iter()
            .map(str::to_owned)
            .collect();
        (partition, nodes)
    }

    /// How many hints this node has handed off to their owners since start.
    pub fn hints_delivered(&self) -> u64 {
        self.hints_delivered.load(Ordering::Relaxed)
    }

    /// How many replicas read repair has brought up to date since start.
    pub fn read_repairs(&self) -> u64 {
        self.read_repairs.load(Ordering::Relaxed)
    }

    pub(crate) fn reader(&self, bucket: &str, key: &str) -> Reader {
        Reader::new(
            self.me.clone(),
            self.net.clone(),
            self.replica.clone(),
            (bucket, key),
            self.view().meta.ring_version,
        )
    }

    /// A client write: coordinated here if this node is a replica of the key and can take
    /// it, forwarded to the other primaries otherwise.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        context: &VersionVector,
        op: WriteOp,
        knobs: Knobs,
    ) -> Result<KeyState, Failure> {
        let deadline = Instant::now() + knobs.timeout;
        let request = PutRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            context: rpc::context_pairs(context),
            op,
            write_id: fastrand::u64(1..),
            w: knobs.w,
            pw: knobs.pw,
            timeout_ms: knobs.timeout.as_millis() as u64,
        };
        let (_, mut primaries) = self.preference_list(bucket, key);
        let mut local_failure = None;
        if let Some(at) = primaries.iter().position(|p| *p == self.me) {
            match self.coordinate_put(request.clone()).await {
                Ok(outcome) => return decode_outcome(&outcome.state),
                // This replica could not apply it; the others may.
                Err(
                    f @ (Failure::NoSpace(_) | Failure::Corrupt(_) | Failure::ClockSkew { .. }),
                ) => {
                    tracing::debug!(%bucket, %key, failure = ?f, "cannot coordinate here; forwarding");
                    local_failure = Some(f);
                    primaries.remove(at);
                }
                Err(f) => return Err(f),
            }
        }
        let outcome = self
            .forward_put(primaries, request, deadline, local_failure)
            .await?;
        decode_outcome(&outcome.state)
    }
}

fn decode_outcome(state: &[u8]) -> Result<KeyState, Failure> {
    KeyState::decode(state).map_err(|e| Failure::Internal(e.to_string()))
}

/// A key's replicas for one write.
struct Placement {
    /// Its primary replicas, then its fallback nodes, each in order.
    primaries: Vec<String>,
    fallbacks: Vec<String>,
    /// During a membership change, its primaries under the next ring (a write must reach `w`
    /// of them too); `None` otherwise.
    next: Option<Vec<String>>,
    /// The version of the ring (and next ring) these come from.
    ring_version: u64,
}

fn next_primaries(view: &View, bucket: &str, key: &str, n: usize) -> Option<Vec<String>> {
    let next = view.next.as_ref()?;
    let partition = next.partition(bucket.as_bytes(), key.as_bytes());
    Some(
        next.preference_list(partition, n)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    )
}
