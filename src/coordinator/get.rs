//! A client read: ask every primary, answer with the merge of the first `r` answers (at
//! least `pr` from primaries), hand the rest to read repair. A replica that cannot answer (a
//! damaged record reads as missing there, so that is rare) counts as failed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::quorum::{By, Progress, Tally};
use super::{read_repair, Coordinator, Knobs};
use crate::causal::{KeyState, VersionVector};
use crate::config::Conflict;
use crate::rpc::Failure;

/// After answering a read, how long read repair waits for the replicas that had not answered.
const READ_REPAIR_WAIT: Duration = Duration::from_secs(1);

impl Coordinator {
    /// The context of what a read with `knobs` sees: what a delete without a context
    /// supersedes. Empty for `lww` buckets, whose writes need none.
    pub async fn visible_context(
        &self,
        bucket: &str,
        key: &str,
        knobs: Knobs,
    ) -> Result<VersionVector, Failure> {
        if self.bucket(bucket).conflict == Conflict::Lww {
            return Ok(VersionVector::new());
        }
        let state = self.get(bucket, key, knobs).await?;
        Ok(state.map(|s| s.context()).unwrap_or_default())
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
                let me = node == self.me;
                async move {
                    let started = Instant::now();
                    let state = if down {
                        Err(Failure::Internal(format!("{node} is down")))
                    } else {
                        reader.read(&node, deadline).await
                    };
                    let took = (!me && state.is_ok()).then(|| started.elapsed());
                    (node, state, took)
                }
            })
            .collect();
        let mut repair = read_repair::Repair::default();
        while !tally.settled() {
            match tokio::time::timeout_at(deadline.into(), answers.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some((node, Ok(state), took))) => {
                    if let Some(took) = took {
                        self.replica_latency.record(took);
                    }
                    repair.answer(node, state);
                    tally.ack(By::Primary);
                }
                Ok(Some((node, Err(e), _))) => {
                    tracing::debug!(peer = %node, error = ?e, "read failed");
                    tally.fail();
                }
            }
        }
        if tally.progress() != Progress::Met {
            return Err(Failure::Insufficient {
                needed: tally.needed(),
                acked: tally.acked(),
                pending: answers.len() as u8,
            });
        }
        let merged = repair.merged().cloned();
        let repairs = self.read_repairs.clone();
        let late = answers.map(|(node, state, _)| (node, state));
        tokio::spawn(async move {
            let repaired = repair.finish(late, &reader, READ_REPAIR_WAIT).await;
            repairs.fetch_add(repaired, Ordering::Relaxed);
        });
        Ok(merged)
    }
}
