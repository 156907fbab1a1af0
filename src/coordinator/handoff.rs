//! Hinted handoff: every `[handoff] interval_ms`, offer each hint this node holds to its owner
//! if the failure detector has not convicted it; delete the hint once the owner acknowledged.
//! Hints are durable, so handoff resumes after a restart of either side. A hint whose owner
//! no longer replicates the key (a membership change moved it) goes to the key's replicas
//! under the ring in force instead.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use super::Coordinator;

/// Hints offered at once.
const CONCURRENCY: usize = 16;
/// How long one offer may take.
const OFFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Offers hints to their owners every `interval`, until dropped.
pub async fn run(coordinator: Arc<Coordinator>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let hints = coordinator.replica.hints().all();
        let due = hints
            .into_iter()
            .filter(|(hint, _)| !coordinator.liveness.is_down(&hint.owner));
        let before = coordinator.hints_delivered.load(Ordering::Relaxed);
        stream::iter(due)
            .for_each_concurrent(CONCURRENCY, |(hint, state)| {
                let coordinator = coordinator.clone();
                async move {
                    let reader = coordinator.reader(&hint.bucket, &hint.key);
                    let mut taken = true;
                    for to in coordinator.hint_targets(&hint.owner, &hint.bucket, &hint.key) {
                        taken &= reader.push(&to, &state, OFFER_TIMEOUT).await.is_ok();
                    }
                    if !taken {
                        return;
                    }
                    match coordinator.replica.hints().delivered(&hint, &state).await {
                        Ok(true) => {
                            coordinator.hints_delivered.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(owner = %hint.owner, "hint handed off");
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(owner = %hint.owner, error = %e, "could not drop a delivered hint"),
                    }
                }
            })
            .await;
        let delivered = coordinator.hints_delivered.load(Ordering::Relaxed) - before;
        if delivered > 0 {
            tracing::info!(delivered, "handed off hints to their owners");
        }
    }
}
