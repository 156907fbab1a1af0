//! Tombstone reaping: a key whose state is nothing but tombstones is removed once the grace
//! period since the delete has passed and every primary replica holds exactly that state.
//! Removing it earlier, or while some replica still held an older value, would let anti-entropy
//! copy the old value back (a resurrection). Only the partition's first primary reaps, so
//! replicas do not race each other.
//!
//! Candidates come from `Replica::tombstone_candidates`, so a pass reads only the keys whose
//! state may be tombstones. A tree not walked since the start is walked first, in the
//! background and paced ([`Walks`]); it is reaped on a later pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::coordinator::Coordinator;
use crate::replica::merkle::TreeId;
use crate::replica::split_storage_key;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The first walk of a tree reads this many keys at a time, then pauses for [`WALK_PAUSE`]:
/// at most 5,000 reads a second, so a node with millions of keys is not crowded out by it
/// after a start (at 50,000 a second, 10M keys cost clients 40% of their throughput for a
/// minute). Reaping is not urgent: tombstones wait out a grace period anyway, and those
/// written since the start are known without a walk.
const WALK_BATCH: usize = 500;
const WALK_PAUSE: Duration = Duration::from_millis(100);

/// The first walks of trees since the start, one at a time, off the exchange loop: at its
/// pace a walk of a tree with millions of keys takes minutes, and exchanges (a catch-up, say)
/// must not wait for it. Dropping this stops them.
#[derive(Default)]
pub struct Walks {
    tasks: JoinSet<()>,
    /// Trees queued or being walked.
    pending: Arc<Mutex<HashSet<TreeId>>>,
    /// Held by the walk under way.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Walks {
    /// Queues the walk of `tree` unless it is queued or running.
    fn start(&mut self, c: &Arc<Coordinator>, tree: TreeId) {
        while self.tasks.try_join_next().is_some() {}
        if !self.pending.lock().insert(tree) {
            return;
        }
        let (c, pending, turn) = (c.clone(), self.pending.clone(), self.turn.clone());
        self.tasks.spawn(async move {
            // One walk at a time (tokio's mutex is fair: in the order queued).
            let _turn = turn.lock_owned().await;
            walk(&c, tree).await;
            pending.lock().remove(&tree);
        });
    }
}

/// Reaps the expired tombstones of one tree; returns how many keys it removed here.
pub async fn reap_tree(
    c: &Arc<Coordinator>,
    walks: &mut Walks,
    tree: TreeId,
    grace_ms: u64,
    now_ms: u64,
) -> u64 {
    let mut reaped = 0;
    let Some(candidates) = c.replica().tombstone_candidates(tree) else {
        walks.start(c, tree);
        return 0;
    };
    for skey in candidates {
        let Some((bucket, key)) = split_storage_key(&skey) else {
            continue;
        };
        let Ok(Some(state)) = c.replica().read(&bucket, &key) else {
            continue;
        };
        let expired = state
            .tombstone_only_since()
            .is_some_and(|deleted| deleted.saturating_add(grace_ms) <= now_ms);
        if !expired {
            continue;
        }
        let (_, primaries) = c.preference_list(&bucket, &key);
        let reader = c.reader(&bucket, &key);
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut everywhere = true;
        for node in &primaries {
            everywhere &= matches!(reader.read(node, deadline).await, Ok(Some(s)) if s == state);
        }
        if !everywhere {
            continue;
        }
        for node in &primaries {
            if reader.reap(node, &state, CALL_TIMEOUT).await.is_ok() && node == c.me() {
                reaped += 1;
            }
        }
    }
    reaped
}

/// The first pass over a tree since start: open reads no values, so the tree's tombstones
/// stored before it are found by reading its keys once, paced.
async fn walk(c: &Coordinator, tree: TreeId) {
    let Ok(keys) = c.keys_filed(move |t| t == tree).await else {
        return;
    };
    for batch in keys.chunks(WALK_BATCH) {
        let (replica, batch) = (c.replica().clone(), batch.to_vec());
        if tokio::task::spawn_blocking(move || replica.walk_for_tombstones(&batch))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(WALK_PAUSE).await;
    }
    c.replica().walked(tree);
}
