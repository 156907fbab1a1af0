//! Coordinating a write as a replica of its key: apply it locally, then run a [`Round`] over
//! the key's primaries with the fallbacks as stand-ins. A primary is sent the new state to
//! merge (`Sync`); a stand-in keeps it as a hint for the primary it stands in for (`Hint`).
//! This node's own slot is its local fsync, which runs alongside the others' writes.

use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use super::quorum::By;
use super::round::{Attempt, Outcome, Round};
use super::{Coordinator, Placement};
use crate::config::Conflict;
use crate::rpc::{self, Failure, PutOutcome, PutRequest, Request, Response};

/// One attempt's answer: its id, whether it stored the state (`None`: no answer in time, so
/// it may yet), and how long a remote one took.
type Answer = (usize, Option<bool>, Option<Duration>);

impl Coordinator {
    /// Coordinates a write as a replica of its key: apply locally, replicate, count.
    pub async fn coordinate_put(&self, request: PutRequest) -> Result<PutOutcome, Failure> {
        let props = self.config.bucket(&request.bucket);
        if props.conflict == Conflict::Lww {
            let verdict = self.skew.verdict();
            if verdict.out_of_bounds {
                return Err(Failure::ClockSkew {
                    offset_ms: verdict.offset_ms,
                });
            }
        }
        let Placement {
            primaries,
            fallbacks,
            next,
        } = self.placement(&request.bucket, &request.key);
        // During a membership change the write must also reach `w` of the next ring's
        // primaries; those that are not primaries now are sent it alongside.
        let newcomers: Vec<String> = next
            .iter()
            .flatten()
            .filter(|n| !primaries.contains(n))
            .cloned()
            .collect();
        let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
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
        let encoded = state.encode();
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
                    inflight.push(self.store_on(&request, &encoded, a, deadline));
                }
            }
        };
        send(round.start(Instant::now(), &down), &mut inflight);
        let mut extra: FuturesUnordered<BoxFuture<'static, (String, bool)>> = newcomers
            .iter()
            .map(|node| self.sync_to(node, &request, &encoded, deadline))
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
        deadline: Instant,
    ) -> BoxFuture<'static, (String, bool)> {
        let message = Request::Sync {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            state: state.to_vec(),
        };
        let (net, node) = (self.net.clone(), node.to_owned());
        async move {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let answer = rpc::call(&net, &node, &message, timeout).await;
            let ok = matches!(answer, Ok(Response::Synced(Ok(()))));
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
        deadline: Instant,
    ) -> BoxFuture<'static, Answer> {
        let message = match attempt.by {
            By::Primary => Request::Sync {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                state: state.to_vec(),
            },
            By::Fallback => Request::Hint {
                owner: attempt.owner.clone(),
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                state: state.to_vec(),
            },
        };
        let net = self.net.clone();
        async move {
            let started = Instant::now();
            let timeout = deadline.saturating_duration_since(started);
            let stored = match rpc::call(&net, &attempt.node, &message, timeout).await {
                Ok(Response::Synced(Ok(()))) => Some(true),
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
