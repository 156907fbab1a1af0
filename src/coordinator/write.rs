//! Coordinating a write as a replica of its key: apply it locally, then run a [`Round`] over
//! the key's primaries with the fallbacks as stand-ins. A primary is sent the new state to
//! merge (`Sync`); a stand-in keeps it as a hint for the primary it stands in for (`Hint`).
//! This node's own slot is its local fsync, which runs alongside the others' writes.
//!
//! Each replicated state carries the ring version it was placed under. A replica that has
//! acted on a newer ring refuses it (`fence`); the write is then placed again under the
//! newer ring once this node has it (its write id keeps it applied once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use super::quorum::By;
use super::round::{Attempt, Outcome, Round};
use super::{Coordinator, Placement};
use crate::config::Conflict;
use crate::rpc::{self, Failure, PutOutcome, PutRequest, Request, Response};

/// Where a placement's replicated states go out under: its ring version, the write's
/// deadline, and where a replica's refusal for a newer ring is noted.
#[derive(Clone)]
struct Target {
    ring_version: u64,
    deadline: Instant,
    refused_for: Arc<AtomicU64>,
}

/// One attempt's answer: its id, whether it stored the state (`None`: no answer in time, so
/// it may yet), and how long a remote one took.
type Answer = (usize, Option<bool>, Option<Duration>);

impl Coordinator {
    /// Coordinates a write as a replica of its key: apply locally, replicate, count.
    pub async fn coordinate_put(&self, request: PutRequest) -> Result<PutOutcome, Failure> {
        let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
        loop {
            let refused_for = Arc::new(AtomicU64::new(0));
            let result = self.place_put(&request, deadline, &refused_for).await;
            let newer = refused_for.load(Ordering::Relaxed);
            match result {
                Err(Failure::Insufficient { .. }) if newer > 0 => {
                    let caught_up = self
                        .metadata()
                        .wait_for_view(deadline.into(), |v| v.meta.ring_version >= newer)
                        .await;
                    if !caught_up {
                        return Err(Failure::StaleRing {
                            ring_version: newer,
                        });
                    }
                    tracing::debug!(
                        ring_version = newer,
                        "placing a write again under a newer ring"
                    );
                }
                other => return other,
            }
        }
    }

    /// One placement of the write: apply locally, replicate, count. A replica's refusal for
    /// a stale ring is noted in `refused_for` (the newest version a replica named).
    async fn place_put(
        &self,
        request: &PutRequest,
        deadline: Instant,
        refused_for: &Arc<AtomicU64>,
    ) -> Result<PutOutcome, Failure> {
        let props = self.bucket(&request.bucket);
        if props.conflict == Conflict::Lww {
            let verdict = self.skew.verdict();
            if verdict.out_of_bounds {
                return Err(Failure::ClockSkew {
                    offset_ms: verdict.offset_ms,
                });
            }
        }
        // The fence held from the placement to the local append: the stream of a change this
        // node acts on starts after the append, or the placement is the change's already.
        let fence = self.fence().hold().await;
        let Placement {
            primaries,
            fallbacks,
            next,
            ring_version,
        } = self.placement(&request.bucket, &request.key);
        // During a membership change the write must also reach `w` of the next ring's
        // primaries; those that are not primaries now are sent it alongside.
        let newcomers: Vec<String> = next
            .iter()
            .flatten()
            .filter(|n| !primaries.contains(n))
            .cloned()
            .collect();
        let (state, local) = self
            .replica
            .coordinate(
                &request.bucket,
                &request.key,
                props.conflict,
                &request.context(),
                request.op.clone(),
                request.write_id,
            )
            .await?;
        drop(fence);
        let encoded = state.encode();
        let to = Target {
            ring_version,
            deadline,
            refused_for: refused_for.clone(),
        };
        let mut round = Round::new(
            primaries,
            fallbacks,
            request.w.max(request.pw),
            request.pw,
            self.replica_latency.suspect_after(),
        );
        let down = |node: &str| self.is_down(node);
        let mut local = Some(local);
        let mut inflight: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
        let mut send = |attempts: Vec<Attempt>, inflight: &mut FuturesUnordered<_>| {
            for a in attempts {
                if a.node == self.me {
                    // Our own slot: the append is done, its fsync is what we wait for.
                    let Some(pending) = local.take() else {
                        continue;
                    };
                    inflight.push(
                        async move { (a.id, Some(pending.durable().await.is_ok()), None) }.boxed(),
                    );
                } else {
                    inflight.push(self.store_on(request, &encoded, a, &to));
                }
            }
        };
        send(round.start(Instant::now(), &down), &mut inflight);
        let mut extra: FuturesUnordered<BoxFuture<'static, (String, bool)>> = newcomers
            .iter()
            .map(|node| self.sync_to(node, request, &encoded, &to))
            .collect();
        let outcome = loop {
            if let Some(outcome) = round.outcome() {
                break outcome;
            }
            let wake = round.next_tick().map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                Some((id, ok, took)) = inflight.next() => {
                    if let Some(took) = took {
                        self.replica_latency.record(took);
                    }
                    if let Some(ok) = ok {
                        send(round.answer(id, ok, Instant::now(), &down), &mut inflight);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break round.expire();
                    }
                    send(round.tick(now, &down), &mut inflight);
                }
            }
        };
        let outcome = match (outcome, &next) {
            (Outcome::Met { acked }, Some(next)) => {
                let need = request.w.min(next.len() as u8);
                let mut stored: Vec<String> = Vec::new();
                let counted = |round: &Round, stored: &[String]| {
                    let by_round = round
                        .acked_primaries()
                        .filter(|p| next.iter().any(|n| n == p));
                    (by_round.count() + stored.len()) as u8
                };
                while counted(&round, &stored) < need {
                    tokio::select! {
                        Some((node, ok)) = extra.next() => if ok { stored.push(node) },
                        Some((id, Some(ok), _)) = inflight.next() => {
                            send(round.answer(id, ok, Instant::now(), &down), &mut inflight);
                        }
                        () = tokio::time::sleep_until(deadline.into()) => break,
                        else => break,
                    }
                }
                let acked_next = counted(&round, &stored);
                if acked_next >= need {
                    Outcome::Met { acked }
                } else {
                    Outcome::Failed {
                        needed: need,
                        acked: acked_next,
                        pending: extra.len() as u8,
                    }
                }
            }
            (outcome, _) => outcome,
        };
        if !inflight.is_empty() || !extra.is_empty() {
            // Replication to the rest completes after we have answered.
            tokio::spawn(async move {
                while inflight.next().await.is_some() {}
                while extra.next().await.is_some() {}
            });
        }
        match outcome {
            Outcome::Met { acked } => Ok(PutOutcome {
                state: encoded,
                acked,
            }),
            Outcome::Failed {
                needed,
                acked,
                pending,
            } => Err(Failure::Insufficient {
                needed,
                acked,
                pending,
            }),
        }
    }

    /// Sends the state to a node that is a primary under the next ring only.
    fn sync_to(
        &self,
        node: &str,
        request: &PutRequest,
        state: &[u8],
        to: &Target,
    ) -> BoxFuture<'static, (String, bool)> {
        let message = Request::Sync {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            state: state.to_vec(),
            ring_version: to.ring_version,
        };
        let (net, node, to) = (self.net.clone(), node.to_owned(), to.clone());
        async move {
            let timeout = to.deadline.saturating_duration_since(Instant::now());
            let answer = rpc::call(&net, &node, &message, timeout).await;
            let ok = matches!(answer, Ok(Response::Synced(Ok(()))));
            if let Ok(Response::Synced(Err(Failure::StaleRing { ring_version }))) = answer {
                to.refused_for.fetch_max(ring_version, Ordering::Relaxed);
            }
            (node, ok)
        }
        .boxed()
    }

    /// Sends the state to a primary to merge, or to a stand-in to hold as a hint.
    fn store_on(
        &self,
        request: &PutRequest,
        state: &[u8],
        attempt: Attempt,
        to: &Target,
    ) -> BoxFuture<'static, Answer> {
        let message = match attempt.by {
            By::Primary => Request::Sync {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                state: state.to_vec(),
                ring_version: to.ring_version,
            },
            By::Fallback => Request::Hint {
                owner: attempt.owner.clone(),
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                state: state.to_vec(),
            },
        };
        let (net, to) = (self.net.clone(), to.clone());
        async move {
            let started = Instant::now();
            let timeout = to.deadline.saturating_duration_since(started);
            let stored = match rpc::call(&net, &attempt.node, &message, timeout).await {
                Ok(Response::Synced(Ok(()))) => Some(true),
                Ok(Response::Synced(Err(Failure::StaleRing { ring_version }))) => {
                    to.refused_for.fetch_max(ring_version, Ordering::Relaxed);
                    Some(false)
                }
                Ok(other) => {
                    tracing::debug!(peer = %attempt.node, answer = ?other, "replica did not store the write");
                    Some(false)
                }
                // Silence is not a refusal: the write may still land there.
                Err(e) if e.is_timeout() => None,
                Err(e) => {
                    tracing::debug!(peer = %attempt.node, error = %e, "replication failed");
                    Some(false)
                }
            };
            if stored == Some(true) && attempt.by == By::Fallback {
                tracing::debug!(primary = %attempt.owner, fallback = %attempt.node, "write stored as a hint");
            }
            let took = (stored == Some(true)).then(|| started.elapsed());
            (attempt.id, stored, took)
        }
        .boxed()
    }
}
