//! Partition handoff during a membership change (`meta::state` says when): this node, as an
//! old replica of a partition whose replica set gains nodes, streams what it holds of the
//! partition to the newcomers — in batches, under a byte-rate limit — and reports
//! `HandedOff` through the metadata leader. Writes meanwhile go to both replica sets
//! (`write`), so the newcomers miss nothing the stream does not carry. Once the next ring is
//! in force, the node forgets the keys it no longer replicates.
//!
//! A partition is the unit of resumption: one not yet reported is streamed again from its
//! start after a crash of either side (merging is idempotent), and a receiver that fails is
//! retried every [`RETRY`].
//!
//! Before it streams or forgets for a ring version, a node raises its fence to it
//! (`fence`): what it admitted under older rings has landed, and it takes nothing placed
//! under them from then on, so a coordinator that applied the change later cannot slip a
//! write in behind the stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Coordinator;
use crate::meta::{Command, View};
use crate::replica::merkle::TreeId;
use crate::replica::split_storage_key;
use crate::ring::Ring;
use crate::rpc::{self, Blob, Request, Response};

/// How soon a failed partition is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Most bytes of states in one batch.
const BATCH_BYTES: usize = 256 * 1024;
/// Most keys in one batch.
const BATCH_KEYS: usize = 256;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What one partition's stream moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub keys: u64,
    pub bytes: u64,
}

/// Streams, reports and forgets as the metadata changes, until dropped.
pub async fn run(coordinator: Arc<Coordinator>, bytes_per_sec: u64) {
    let mut views = coordinator.metadata().subscribe();
    let mut reported: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut fenced_version = 0;
    let mut forgot_version = 0;
    let limit = Limiter::new(bytes_per_sec);
    loop {
        let view = views.borrow_and_update().clone();
        let version = view.meta.ring_version;
        if version != fenced_version {
            coordinator.fence().raise(version).await;
            fenced_version = version;
        }
        if view.meta.transition.is_some() {
            hand_off(&coordinator, &view, &mut reported, &limit).await;
        } else if forgot_version != version && !view.provisional {
            match forget_foreign(&coordinator, &view, &reported, &limit).await {
                Ok(forgot) => {
                    if forgot > 0 {
                        tracing::info!(
                            forgot,
                            ring_version = version,
                            "forgot keys this node no longer replicates"
                        );
                    }
                    forgot_version = version;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand over or forget moved keys; retrying")
                }
            }
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Streams every pending partition this node is a sender of, and reports each.
async fn hand_off(
    coordinator: &Coordinator,
    view: &View,
    reported: &mut BTreeSet<(u64, u32)>,
    limit: &Limiter,
) {
    let (Some(t), Some(next)) = (&view.meta.transition, &view.next) else {
        return;
    };
    let me = coordinator.me().to_owned();
    let version = view.meta.ring_version;
    for (&p, senders) in &t.pending {
        if !senders.contains(&me) || reported.contains(&(version, p)) {
            continue;
        }
        let started = Instant::now();
        match stream_partition(coordinator, view, next, p, limit).await {
            Ok(moved) => {
                let command = Command::HandedOff {
                    ring_version: version,
                    partition: p,
                    node: me.clone(),
                };
                match coordinator.metadata().propose(command).await {
                    Ok(()) => {
                        reported.insert((version, p));
                        tracing::info!(
                            partition = p,
                            keys = moved.keys,
                            bytes = moved.bytes,
                            ms = started.elapsed().as_millis() as u64,
                            ring_version = version,
                            "partition handed off"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "handed off, but could not report it; retrying")
                    }
                }
            }
            // The others go on: one receiver that is away must not hold up the rest.
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "partition handoff failed; retrying")
            }
        }
    }
}

/// Sends this node's copy of partition `p` to each node that replicates it under `next`
/// but not under the ring in force, each key to the newcomers its bucket's `n` reaches.
pub async fn stream_partition(
    coordinator: &Coordinator,
    view: &View,
    next: &Ring,
    p: u32,
    limit: &Limiter,
) -> Result<Moved, String> {
    let max_n = usize::from(view.meta.max_n);
    let before = view.ring.preference_list(p, max_n);
    let newcomers: Vec<String> = next
        .preference_list(p, max_n)
        .into_iter()
        .filter(|n| !before.contains(n))
        .map(str::to_owned)
        .collect();
    if let Some(away) = newcomers.iter().find(|n| coordinator.liveness().is_down(n)) {
        return Err(format!(
            "{away} looks down; its partitions wait until it is back"
        ));
    }
    let mut out = Outbox::new(coordinator, p, limit);
    for skey in coordinator.keys_filed(move |t| t.partition == p).await? {
        let Some((bucket, key)) = split_storage_key(&skey) else {
            continue;
        };
        // A damaged copy is skipped: the other old replicas send theirs.
        let Ok(Some(state)) = coordinator.replica().read(&bucket, &key) else {
            continue;
        };
        let n = usize::from(coordinator.bucket(&bucket).n);
        let reaches = next.preference_list(p, n);
        let encoded = state.encode();
        for to in newcomers.iter().filter(|to| reaches.contains(&to.as_str())) {
            out.add(to, &bucket, &key, &encoded).await?;
        }
    }
    out.flush().await
}

#[derive(Default)]
struct Batch {
    items: Vec<(String, String, Blob)>,
    bytes: usize,
}

/// Key states of one partition on their way to other nodes: a batch per node, sent when
/// full and at the end, under the rate limit.
struct Outbox<'a> {
    coordinator: &'a Coordinator,
    partition: u32,
    limit: &'a Limiter,
    batches: BTreeMap<String, Batch>,
    moved: Moved,
}

impl<'a> Outbox<'a> {
    fn new(coordinator: &'a Coordinator, partition: u32, limit: &'a Limiter) -> Outbox<'a> {
        Outbox {
            coordinator,
            partition,
            limit,
            batches: BTreeMap::new(),
            moved: Moved::default(),
        }
    }

    async fn add(&mut self, to: &str, bucket: &str, key: &str, state: &[u8]) -> Result<(), String> {
        let batch = self.batches.entry(to.to_owned()).or_default();
        batch.bytes += state.len();
        batch
            .items
            .push((bucket.to_owned(), key.to_owned(), Blob(state.to_vec())));
        if batch.items.len() >= BATCH_KEYS || batch.bytes >= BATCH_BYTES {
            let batch = std::mem::take(batch);
            self.send(to, batch).await?;
        }
        Ok(())
    }

    /// Sends what is left; returns what the whole partition moved.
    async fn flush(mut self) -> Result<Moved, String> {
        for (to, batch) in std::mem::take(&mut self.batches) {
            if !batch.items.is_empty() {
                self.send(&to, batch).await?;
            }
        }
        Ok(self.moved)
    }

    async fn send(&mut self, to: &str, batch: Batch) -> Result<(), String> {
        let keys = batch.items.len() as u64;
        let request = Request::Transfer {
            partition: self.partition,
            items: batch.items,
        };
        match rpc::call_measured(self.coordinator.net(), to, &request, CALL_TIMEOUT).await {
            Ok((Response::Synced(Ok(())), bytes)) => {
                self.moved.keys += keys;
                self.moved.bytes += bytes;
                self.limit.spend(bytes).await;
                Ok(())
            }
            Ok((other, _)) => Err(format!("{to} did not take the batch: {other:?}")),
            Err(e) => Err(format!("cannot send to {to}: {e}")),
        }
    }
}

/// Forgets every stored key whose preference list under the ring in force leaves this node
/// out; returns how many. Keys of a partition this node did not hand off itself in the change
/// that just committed (it was excused as dead, or restarted since) are first sent to their
/// replicas now: they may hold writes nobody else has.
async fn forget_foreign(
    coordinator: &Coordinator,
    view: &View,
    reported: &BTreeSet<(u64, u32)>,
    limit: &Limiter,
) -> Result<u64, String> {
    let me = coordinator.me();
    let handed_version = view.meta.ring_version.saturating_sub(1);
    // The trees (partition, n) whose preference list leaves this node out: none at all when
    // every node replicates everything, and then the keydir is not walked.
    let factors = coordinator.replication_factors();
    let foreign_trees: BTreeSet<TreeId> = (0..view.meta.ring_size)
        .flat_map(|partition| factors.iter().map(move |&n| TreeId { partition, n }))
        .filter(|t| {
            !view
                .ring
                .preference_list(t.partition, usize::from(t.n))
                .contains(&me)
        })
        .collect();
    if foreign_trees.is_empty() {
        return Ok(0);
    }
    let keys = coordinator
        .keys_filed(move |t| foreign_trees.contains(&t))
        .await?;
    let mut by_partition: BTreeMap<u32, Vec<(Vec<u8>, String, String)>> = BTreeMap::new();
    for skey in keys {
        let Some((bucket, key)) = split_storage_key(&skey) else {
            continue;
        };
        let p = view.ring.partition(bucket.as_bytes(), key.as_bytes());
        by_partition.entry(p).or_default().push((skey, bucket, key));
    }
    let mut forgot = 0;
    for (p, foreign) in by_partition {
        let push_first = !reported.contains(&(handed_version, p));
        if push_first && !foreign.is_empty() {
            let mut out = Outbox::new(coordinator, p, limit);
            for (_, bucket, key) in &foreign {
                let Ok(Some(state)) = coordinator.replica().read(bucket, key) else {
                    continue;
                };
                let encoded = state.encode();
                let n = usize::from(coordinator.bucket(bucket).n);
                for to in view.ring.preference_list(p, n) {
                    out.add(to, bucket, key, &encoded).await?;
                }
            }
            out.flush().await?;
        }
        for (skey, _, _) in foreign {
            coordinator
                .replica()
                .forget(&skey)
                .await
                .map_err(|e| e.to_string())?;
            forgot += 1;
        }
    }
    Ok(forgot)
}

/// A byte-rate limit for the streams: each sender sleeps off what it sent ahead of the rate.
pub struct Limiter {
    bytes_per_sec: u64,
    state: parking_lot::Mutex<(Instant, u64)>,
}

impl Limiter {
    pub fn new(bytes_per_sec: u64) -> Limiter {
        Limiter {
            bytes_per_sec: bytes_per_sec.max(1),
            state: parking_lot::Mutex::new((Instant::now(), 0)),
        }
    }

    pub async fn spend(&self, bytes: u64) {
        let wait = {
            let mut s = self.state.lock();
            // A fresh window once the debt is a second in the past, so a pause is not saved
            // up as a burst.
            let paid = Duration::from_secs_f64(s.1 as f64 / self.bytes_per_sec as f64);
            if s.0.elapsed() > paid + Duration::from_secs(1) {
                *s = (Instant::now(), 0);
            }
            s.1 += bytes;
            let due = Duration::from_secs_f64(s.1 as f64 / self.bytes_per_sec as f64);
            due.saturating_sub(s.0.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
