//! Tombstone reaping: a key whose state is nothing but tombstones is removed once the grace
//! period since the delete has passed and every primary replica holds exactly that state.
//! Removing it earlier, or while some replica still held an older value, would let anti-entropy
//! copy the old value back (a resurrection). Only the partition's first primary reaps, so
//! replicas do not race each other.
//!
//! Candidates come from `Replica::tombstone_candidates`, so a pass reads only the keys whose
//! state may be tombstones, not the whole tree (but for the first pass after a start).

use std::time::{Duration, Instant};

use crate::coordinator::Coordinator;
use crate::replica::merkle::TreeId;
use crate::replica::split_storage_key;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The first walk of a tree reads this many keys at a time, then pauses for [`WALK_PAUSE`]:
/// at most 50,000 reads a second, so a node with millions of keys is not crowded out by it
/// after a start. Reaping is not urgent (tombstones wait out a grace period anyway).
const WALK_BATCH: usize = 1000;
const WALK_PAUSE: Duration = Duration::from_millis(20);

/// Reaps the expired tombstones of one tree; returns how many keys it removed here.
pub async fn reap_tree(c: &Coordinator, tree: TreeId, grace_ms: u64, now_ms: u64) -> u64 {
    let mut reaped = 0;
    let candidates = match c.replica().tombstone_candidates(tree) {
        Some(keys) => keys,
        None => walk(c, tree).await,
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
/// stored before it are found by reading its keys once, paced. Returns the candidates.
async fn walk(c: &Coordinator, tree: TreeId) -> Vec<Vec<u8>> {
    let Ok(keys) = c.keys_filed(move |t| t == tree).await else {
        return Vec::new();
    };
    for batch in keys.chunks(WALK_BATCH) {
        let (replica, batch) = (c.replica().clone(), batch.to_vec());
        if tokio::task::spawn_blocking(move || replica.walk_for_tombstones(&batch))
            .await
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::sleep(WALK_PAUSE).await;
    }
    c.replica().walked(tree);
    c.replica().tombstone_candidates(tree).unwrap_or_default()
}
