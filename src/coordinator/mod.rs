//! Get, put and delete across a key's replicas.
//!
//! - **PUT/DELETE**: the write must be coordinated by a replica of the key, since the new
//!   version-vector event is that replica's. If this node is not one, it forwards the write to
//!   the first primary that answers. The coordinating replica applies `update` with its own
//!   actor, appends the result, and sends the new state to the other replicas (while its own
//!   fsync runs), which `sync` it
//!   into theirs; a primary that is down or refuses is stood in for by a fallback holding a hint
//!   (`replicate`). It answers once `w` replicas (at least `pw` of them primaries) stored it;
//!   replication to the rest goes on in the background.
//! - **GET**: asks every primary for its state, answers with the `sync` of the first `r`
//!   answers (at least `pr` from primaries). "Not found" is an answer. Then read repair
//!   (`read_repair`) waits briefly for the other answers and brings stale replicas up to date.
//!
//! Quorum arithmetic is [`quorum::Tally`]; this module only feeds it.

pub mod handoff;
pub mod quorum;
mod read_repair;
mod replicate;
mod service;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::causal::{KeyState, VersionVector};
use crate::cluster::Liveness;
use crate::config::Config;
use crate::net::Net;
use crate::replica::Replica;
use crate::ring::Ring;
use crate::rpc::{self, Failure, PutOutcome, PutRequest, Request, Response, WriteOp};
use quorum::{By, Progress, Tally};

pub use service::Service;

/// After answering a read, how long read repair waits for the replicas that had not answered.
const READ_REPAIR_WAIT: Duration = Duration::from_secs(1);

/// A forwarded write waits this much longer than the coordinating replica's own deadline, so
/// the replica's precise answer (say, a 503 with its ack count) arrives before we give up.
const FORWARD_MARGIN: Duration = Duration::from_millis(200);

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
    config: Arc<Config>,
    ring: Ring,
    replica: Arc<Replica>,
    net: Arc<Net>,
    liveness: Arc<Liveness>,
    read_repairs: Arc<AtomicU64>,
    hints_delivered: AtomicU64,
}

impl Coordinator {
    pub fn new(
        config: Arc<Config>,
        ring: Ring,
        replica: Arc<Replica>,
        net: Arc<Net>,
        liveness: Arc<Liveness>,
    ) -> Self {
        Coordinator {
            me: config.node_id.clone(),
            config,
            ring,
            replica,
            net,
            liveness,
            read_repairs: Arc::new(AtomicU64::new(0)),
            hints_delivered: AtomicU64::new(0),
        }
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The largest `n` of any bucket: how many nodes replicate a partition at most.
    pub fn max_n(&self) -> usize {
        let c = &self.config;
        c.buckets
            .values()
            .filter_map(|b| b.n)
            .chain([c.defaults.n])
            .max()
            .map_or(1, usize::from)
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    pub fn net(&self) -> &Arc<Net> {
        &self.net
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Whether the failure detector has convicted `node` (this node never is).
    fn is_down(&self, node: &str) -> bool {
        node != self.me && self.liveness.is_down(node)
    }

    /// The key's primary replicas and then its fallback nodes, each in order.
    fn placement(&self, bucket: &str, key: &str) -> (Vec<String>, Vec<String>) {
        let n = usize::from(self.config.bucket(bucket).n);
        let partition = self.ring.partition(bucket.as_bytes(), key.as_bytes());
        let mut walk: Vec<String> = self
            .ring
            .walk(partition)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let fallbacks = walk.split_off(n.min(walk.len()));
        (walk, fallbacks)
    }

    /// The key's partition and its primary replicas, in order.
    pub fn preference_list(&self, bucket: &str, key: &str) -> (u32, Vec<String>) {
        let n = usize::from(self.config.bucket(bucket).n);
        let partition = self.ring.partition(bucket.as_bytes(), key.as_bytes());
        let nodes = self
            .ring
            .preference_list(partition, n)
            .into_iter()
            .map(str::to_owned)
            .collect();
        (partition, nodes)
    }

    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        knobs: Knobs,
    ) -> Result<Option<KeyState>, Failure> {
        let (_, primaries) = self.preference_list(bucket, key);
        let deadline = Instant::now() + knobs.timeout;
        let need = knobs.r.max(knobs.pr);
        let mut tally = Tally::new(need, knobs.pr, primaries.len() as u8);
        // The reads run inside this request's task (no task per replica); the ones still
        // running when we answer are handed to read repair, which lets them finish.
        let reader = Arc::new(self.reader(bucket, key));
        let mut answers: FuturesUnordered<_> = primaries
            .into_iter()
            .map(|node| {
                let reader = reader.clone();
                let down = self.is_down(&node);
                async move {
                    let state = if down {
                        Err(Failure::Internal(format!("{node} is down")))
                    } else {
                        reader.read(&node, deadline).await
                    };
                    (node, state)
                }
            })
            .collect();
        let mut repair = read_repair::Repair::default();
        while !tally.settled() {
            match tokio::time::timeout_at(deadline.into(), answers.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some((node, Ok(state)))) => {
                    repair
                        .answer(node, state)
                        .map_err(|e| Failure::Internal(e.to_string()))?;
                    tally.ack(By::Primary);
                }
                Ok(Some((_, Err(_)))) => {
                    tally.fail();
                }
            }
        }
        if tally.progress() != Progress::Met {
            return Err(Failure::Insufficient {
                needed: tally.needed(),
                acked: tally.acked(),
            });
        }
        let merged = repair.merged().cloned();
        let repairs = self.read_repairs.clone();
        tokio::spawn(async move {
            let repaired = repair.finish(answers, &reader, READ_REPAIR_WAIT).await;
            repairs.fetch_add(repaired, Ordering::Relaxed);
        });
        Ok(merged)
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
        Reader {
            me: self.me.clone(),
            net: self.net.clone(),
            replica: self.replica.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
    }

    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        context: &VersionVector,
        op: WriteOp,
        knobs: Knobs,
    ) -> Result<KeyState, Failure> {
        let request = PutRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            context: rpc::context_pairs(context),
            op,
            w: knobs.w,
            pw: knobs.pw,
            timeout_ms: knobs.timeout.as_millis() as u64,
        };
        let (_, primaries) = self.preference_list(bucket, key);
        let outcome = if primaries.contains(&self.me) {
            self.coordinate_put(request).await?
        } else {
            self.forward_put(&primaries, request, knobs).await?
        };
        KeyState::decode(&outcome.state).map_err(|e| Failure::Internal(e.to_string()))
    }

    async fn forward_put(
        &self,
        primaries: &[String],
        request: PutRequest,
        knobs: Knobs,
    ) -> Result<PutOutcome, Failure> {
        let deadline = Instant::now() + knobs.timeout + FORWARD_MARGIN;
        let body = Bytes::from(rpc::encode(&Request::Put(request)));
        // Live primaries first; convicted ones only as a last resort (the detector may be wrong).
        let mut order: Vec<&String> = primaries.iter().collect();
        order.sort_by_key(|node| self.is_down(node));
        for node in order {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.net.call(node, body.clone(), left).await {
                Ok(raw) => match rpc::decode::<Response>(&raw) {
                    Some(Response::Put(result)) => return result,
                    _ => tracing::warn!(peer = %node, "unexpected answer to a forwarded write"),
                },
                Err(e) => tracing::debug!(peer = %node, error = %e, "cannot forward write"),
            }
        }
        Err(Failure::Insufficient {
            needed: knobs.w.max(knobs.pw),
            acked: 0,
        })
    }

    /// Coordinates a write as a replica of its key: apply locally, replicate, count.
    pub async fn coordinate_put(&self, request: PutRequest) -> Result<PutOutcome, Failure> {
        let props = self.config.bucket(&request.bucket);
        let (primaries, fallbacks) = self.placement(&request.bucket, &request.key);
        let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
        let (state, local) = self
            .replica
            .coordinate(
                &request.bucket,
                &request.key,
                props.conflict,
                &request.context(),
                request.op.clone(),
            )
            .await?;
        let encoded = state.encode();
        let mut tally = Tally::new(request.w.max(request.pw), request.pw, primaries.len() as u8);

        let fanout = Arc::new(replicate::Fanout {
            net: self.net.clone(),
            liveness: self.liveness.clone(),
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            state: encoded.clone(),
            fallbacks,
            next_fallback: AtomicUsize::new(0),
        });
        // The local fsync and the other replicas' writes proceed together: one fsync round
        // per write instead of the local one and then the remote ones.
        let mut acks: FuturesUnordered<BoxFuture<'static, Option<By>>> = primaries
            .into_iter()
            .filter(|n| *n != self.me)
            .map(|node| fanout.clone().replicate(node, deadline).boxed())
            .collect();
        acks.push(async move { local.durable().await.ok().map(|()| By::Primary) }.boxed());
        while !tally.settled() {
            match tokio::time::timeout_at(deadline.into(), acks.next()).await {
                Ok(Some(Some(by))) => tally.ack(by),
                Ok(Some(None)) => tally.fail(),
                Ok(None) | Err(_) => break,
            };
        }
        if !acks.is_empty() {
            // Replication to the rest completes after we have answered.
            tokio::spawn(async move { while acks.next().await.is_some() {} });
        }
        if tally.progress() == Progress::Met {
            Ok(PutOutcome {
                state: encoded,
                acked: tally.acked(),
            })
        } else {
            Err(Failure::Insufficient {
                needed: tally.needed(),
                acked: tally.acked(),
            })
        }
    }
}

/// One key's replicas, read or repaired: locally for this node, over the network otherwise.
/// Owns what it needs, so reads and repairs can run as tasks of their own.
pub(crate) struct Reader {
    me: String,
    net: Arc<Net>,
    replica: Arc<Replica>,
    bucket: String,
    key: String,
}

impl Reader {
    pub(crate) async fn read(
        &self,
        node: &str,
        deadline: Instant,
    ) -> Result<Option<KeyState>, Failure> {
        if node == self.me {
            return self
                .replica
                .read(&self.bucket, &self.key)
                .map_err(Failure::from);
        }
        let request = Request::Read {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.ask(node, &request, timeout).await? {
            Response::State(Ok(Some(bytes))) => KeyState::decode(&bytes.0)
                .map(Some)
                .map_err(|e| Failure::Internal(e.to_string())),
            Response::State(Ok(None)) => Ok(None),
            Response::State(Err(f)) => Err(f),
            _ => Err(Failure::Internal(format!("unexpected answer from {node}"))),
        }
    }

    /// Asks the node to delete the key if its state is exactly `state` (tombstone reaping).
    pub(crate) async fn reap(
        &self,
        node: &str,
        state: &KeyState,
        timeout: Duration,
    ) -> Result<(), Failure> {
        if node == self.me {
            return match self.replica.reap(&self.bucket, &self.key, state).await? {
                true => Ok(()),
                false => Err(Failure::Internal("the key changed; not reaped".into())),
            };
        }
        let request = Request::Reap {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            state: state.encode(),
        };
        self.ask_synced(node, &request, timeout).await
    }

    /// Merges `state` into the node's copy of the key.
    pub(crate) async fn push(
        &self,
        node: &str,
        state: &KeyState,
        timeout: Duration,
    ) -> Result<(), Failure> {
        if node == self.me {
            self.replica.sync(&self.bucket, &self.key, state).await?;
            return Ok(());
        }
        let request = Request::Sync {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            state: state.encode(),
        };
        self.ask_synced(node, &request, timeout).await
    }

    async fn ask(
        &self,
        node: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let raw = self
            .net
            .call(node, Bytes::from(rpc::encode(request)), timeout)
            .await
            .map_err(|e| Failure::Internal(e.to_string()))?;
        rpc::decode(&raw)
            .ok_or_else(|| Failure::Internal(format!("undecodable answer from {node}")))
    }

    /// Sends a request answered with `Synced`, and returns that answer.
    async fn ask_synced(
        &self,
        node: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<(), Failure> {
        match self.ask(node, request, timeout).await? {
            Response::Synced(result) => result,
            _ => Err(Failure::Internal(format!("unexpected answer from {node}"))),
        }
    }
}
