//! Forwarding a client write to a replica of its key that coordinates it. One [`Round`] slot
//! with the other primaries as stand-ins: if the first has not answered within the suspect
//! delay, or refuses (a full disk, a damaged record, a bad clock, its own quorum failure), the
//! next one is asked as well, and the first good answer is the client's. The request's write
//! id makes the hedge safe: a replica that sees it applied already does not apply it again,
//! and two coordinators that both applied it show it as one value.

use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use super::round::{Attempt, Outcome, Round};
use super::Coordinator;
use crate::rpc::{self, Failure, PutOutcome, PutRequest, Request, Response};

/// A forwarded write waits this much longer than the coordinating replica's own deadline, so
/// the replica's precise answer (say, a 503 with its ack count) arrives before we give up.
const FORWARD_MARGIN: Duration = Duration::from_millis(200);

/// An attempt's id, its coordinator's answer (`None`: none in time, so it may yet succeed),
/// and how long it took.
type Answer = (usize, Option<Result<PutOutcome, Failure>>, Duration);

impl Coordinator {
    /// Has one of `primaries` coordinate the write; `earlier` is why this node could not.
    pub(super) async fn forward_put(
        &self,
        mut primaries: Vec<String>,
        request: PutRequest,
        client_deadline: Instant,
        earlier: Option<Failure>,
    ) -> Result<PutOutcome, Failure> {
        let needed = request.w.max(request.pw);
        // Live primaries first; convicted ones only as a last resort (the detector may be wrong).
        primaries.sort_by_key(|node| self.is_down(node));
        if primaries.is_empty() {
            return Err(earlier.unwrap_or(Failure::Insufficient {
                needed,
                acked: 0,
                pending: 0,
            }));
        }
        let first = primaries.remove(0);
        let mut round = Round::new(
            vec![first],
            primaries,
            1,
            0,
            self.forward_latency.suspect_after(),
        );
        let deadline = client_deadline + FORWARD_MARGIN;
        // Convicted primaries were sorted last; the round still tries them when nobody else is left.
        let down = |_: &str| false;
        let mut inflight: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
        let send = |attempts: Vec<Attempt>, inflight: &mut FuturesUnordered<_>| {
            for a in attempts {
                inflight.push(self.forward_to(a, &request, client_deadline, deadline));
            }
        };
        send(round.start(Instant::now(), &down), &mut inflight);
        let mut failures: Vec<Failure> = earlier.into_iter().collect();
        let mut won = None;
        let outcome = loop {
            if let Some(outcome) = round.outcome() {
                break outcome;
            }
            let wake = round.next_tick().map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                Some((id, Some(answer), took)) = inflight.next() => {
                    let ok = answer.is_ok();
                    match answer {
                        Ok(outcome) => {
                            self.forward_latency.record(took);
                            won = Some(outcome);
                        }
                        Err(f) if !f.is_replica_fault() => return Err(f),
                        Err(f) => failures.push(f),
                    }
                    send(round.answer(id, ok, Instant::now(), &down), &mut inflight);
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
        match (outcome, won) {
            (Outcome::Met { .. }, Some(outcome)) => Ok(outcome),
            (_, _) => Err(summarise(needed, failures, inflight.len() as u8)),
        }
    }

    fn forward_to(
        &self,
        attempt: Attempt,
        request: &PutRequest,
        client_deadline: Instant,
        deadline: Instant,
    ) -> BoxFuture<'static, Answer> {
        let started = Instant::now();
        // A hedge starts late; its coordinator must answer within the client's deadline.
        let mut request = request.clone();
        request.timeout_ms = client_deadline
            .saturating_duration_since(started)
            .as_millis()
            .max(1) as u64;
        let message = Request::Put(request);
        let net = self.net.clone();
        async move {
            let timeout = deadline.saturating_duration_since(started);
            let answer = match rpc::call(&net, &attempt.node, &message, timeout).await {
                Ok(Response::Put(result)) => Some(result),
                Ok(_) => Some(Err(Failure::Internal(format!(
                    "unexpected answer to a forwarded write from {}",
                    attempt.node
                )))),
                // Silence is not a refusal: that coordinator may still apply it.
                Err(e) if e.is_timeout() => None,
                Err(e) => {
                    tracing::debug!(peer = %attempt.node, error = %e, "cannot forward write");
                    Some(Err(Failure::Internal(e.to_string())))
                }
            };
            (attempt.id, answer, started.elapsed())
        }
        .boxed()
    }
}

/// What the client is told when no coordinator succeeded: out of space if that is all that
/// was wrong; otherwise how many replicas are known to hold the write, and how many answers
/// were still outstanding (so the write may still land).
fn summarise(needed: u8, failures: Vec<Failure>, unanswered: u8) -> Failure {
    if unanswered == 0 {
        if let Some(Failure::NoSpace(reason)) = failures
            .iter()
            .all(|f| matches!(f, Failure::NoSpace(_)))
            .then(|| failures.first().cloned())
            .flatten()
        {
            return Failure::NoSpace(reason);
        }
    }
    let (acked, pending) = failures.iter().fold((0, unanswered), |(a, p), f| match f {
        Failure::Insufficient { acked, pending, .. } => (a.max(*acked), p.saturating_add(*pending)),
        _ => (a, p),
    });
    Failure::Insufficient {
        needed,
        acked,
        pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_disks_everywhere_make_insufficient_storage() {
        let full = || Failure::NoSpace("disk full".into());
        assert!(matches!(
            summarise(2, vec![full(), full()], 0),
            Failure::NoSpace(_)
        ));
        assert!(matches!(
            summarise(2, vec![full(), full()], 1),
            Failure::Insufficient { pending: 1, .. }
        ));
        let mixed = summarise(
            2,
            vec![
                full(),
                Failure::Insufficient {
                    needed: 2,
                    acked: 1,
                    pending: 1,
                },
            ],
            0,
        );
        assert_eq!(
            mixed,
            Failure::Insufficient {
                needed: 2,
                acked: 1,
                pending: 1
            }
        );
    }
}
