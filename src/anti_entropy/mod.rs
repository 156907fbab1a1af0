//! Anti-entropy: replicas that missed writes converge without anyone reading the data.
//!
//! Every `[anti_entropy] interval_ms`, this node walks the hash trees (`replica::merkle`) it
//! replicates — one per partition and bucket `n` in use, so a tree is only compared with nodes
//! that should hold all of it — and compares each with that of another live replica, taking
//! the other replicas in turn: the 16 group hashes first (an identical partition costs one
//! round trip of ~150 bytes), then the leaves of differing groups, then the key digests of
//! differing leaves. Each key whose hashes differ is read on both sides, merged with `sync`,
//! and the merge written back wherever it is newer. Trees are spread evenly over the
//! interval, and repairs go one key at a time, so the exchange never crowds out client traffic.
//! The same walk reaps expired tombstones (`reaper`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::causal::WallClock;
use crate::coordinator::Coordinator;
use crate::replica::merkle::{TreeId, FANOUT, GROUPS};
use crate::replica::split_storage_key;
use crate::rpc::{self, Request, Response};

mod reaper;

/// How long one step of an exchange may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The last exchange of one partition.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// The `n` of the buckets whose keys were compared.
    pub n: u8,
    pub peer: String,
    pub finished_ms: u64,
    pub keys_repaired: u64,
    pub bytes: u64,
}

/// Progress, for `/admin/status`.
#[derive(Default)]
pub struct Stats {
    exchanges: AtomicU64,
    keys_repaired: AtomicU64,
    tombstones_reaped: AtomicU64,
    last: Mutex<BTreeMap<u32, Exchange>>,
}

impl Stats {
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    pub fn keys_repaired(&self) -> u64 {
        self.keys_repaired.load(Ordering::Relaxed)
    }

    pub fn tombstones_reaped(&self) -> u64 {
        self.tombstones_reaped.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> BTreeMap<u32, Exchange> {
        self.last.lock().clone()
    }
}

/// Runs exchanges until dropped.
pub async fn run(
    coordinator: Arc<Coordinator>,
    stats: Arc<Stats>,
    clock: Arc<dyn WallClock>,
    interval: Duration,
    tombstone_grace: Duration,
) {
    let me = coordinator.me().to_owned();
    let mut round: usize = 0;
    loop {
        // The ring in force and the buckets' `n`s, taken afresh each pass: membership changes
        // move partitions, and a bucket's `n` can be set over the API.
        let ring = coordinator.view().ring.clone();
        let factors = coordinator.replication_factors();
        // (tree, the other replicas, whether this node is its first primary and so reaps it)
        let trees: Vec<(TreeId, Vec<String>, bool)> = (0..ring.ring_size())
            .flat_map(|p| factors.iter().map(move |&n| TreeId { partition: p, n }))
            .filter_map(|tree| {
                let replicas = ring.preference_list(tree.partition, usize::from(tree.n));
                replicas.contains(&me.as_str()).then(|| {
                    let first = replicas.first() == Some(&me.as_str());
                    let others = replicas
                        .into_iter()
                        .filter(|r| *r != me)
                        .map(str::to_owned)
                        .collect();
                    (tree, others, first)
                })
            })
            .collect();
        if trees.is_empty() {
            tokio::time::sleep(interval).await;
            continue;
        }
        let spacing = interval / trees.len() as u32;
        for (tree, others, reaps) in &trees {
            let partition = &tree.partition;
            tokio::time::sleep(spacing).await;
            if *reaps {
                let grace = tombstone_grace.as_millis() as u64;
                let reaped = reaper::reap_tree(&coordinator, *tree, grace, clock.now_ms()).await;
                if reaped > 0 {
                    stats.tombstones_reaped.fetch_add(reaped, Ordering::Relaxed);
                    tracing::debug!(partition, reaped, "tombstones reaped");
                }
            }
            let live: Vec<&String> = others
                .iter()
                .filter(|o| !coordinator.liveness().is_down(o))
                .collect();
            let Some(peer) = live.get(round % live.len().max(1)) else {
                continue;
            };
            match exchange(&coordinator, *tree, peer).await {
                Ok(done) => {
                    stats.exchanges.fetch_add(1, Ordering::Relaxed);
                    stats
                        .keys_repaired
                        .fetch_add(done.keys_repaired, Ordering::Relaxed);
                    if done.keys_repaired > 0 {
                        tracing::info!(partition, %peer, keys = done.keys_repaired, "anti-entropy repaired keys");
                    }
                    let finished_ms = clock.now_ms();
                    stats.last.lock().insert(
                        *partition,
                        Exchange {
                            finished_ms,
                            ..done
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!(partition, %peer, error = %e, "anti-entropy exchange failed")
                }
            }
        }
        round = round.wrapping_add(1);
    }
}

/// One exchange of a tree with `peer`.
async fn exchange(c: &Coordinator, tree: TreeId, peer: &str) -> Result<Exchange, String> {
    let mut bytes = 0u64;
    let trees = c.replica().trees();
    let theirs = hashes(c, peer, Request::AeGroups { tree }, &mut bytes).await?;
    let ours = trees.groups(tree);
    let mut leaves = Vec::new();
    for group in (0..GROUPS).filter(|&g| theirs.get(g) != ours.get(g)) {
        let request = Request::AeLeaves {
            tree,
            group: group as u32,
        };
        let theirs = hashes(c, peer, request, &mut bytes).await?;
        let ours = trees.leaves(tree, group);
        leaves.extend(
            (0..FANOUT)
                .filter(|&l| theirs.get(l) != ours.get(l))
                .map(|l| group * FANOUT + l),
        );
    }
    let mut keys_repaired = 0;
    for leaf in leaves {
        let request = Request::AeDigests {
            tree,
            leaf: leaf as u32,
        };
        let theirs: HashMap<Vec<u8>, u64> = match call(c, peer, request, &mut bytes).await? {
            Response::Digests(d) => d.into_iter().collect(),
            _ => return Err("unexpected answer to a digest request".into()),
        };
        let ours: HashMap<Vec<u8>, u64> = trees.digests(tree, leaf).into_iter().collect();
        let differing = theirs
            .iter()
            .filter(|(k, h)| ours.get(*k) != Some(h))
            .map(|(k, _)| k)
            .chain(ours.keys().filter(|k| !theirs.contains_key(*k)));
        for skey in differing {
            if repair(c, peer, skey).await {
                keys_repaired += 1;
            }
        }
    }
    Ok(Exchange {
        n: tree.n,
        peer: peer.to_owned(),
        finished_ms: 0,
        keys_repaired,
        bytes,
    })
}

/// Brings one key to the merge of both sides' states; true if either side changed.
async fn repair(c: &Coordinator, peer: &str, skey: &[u8]) -> bool {
    let Some((bucket, key)) = split_storage_key(skey) else {
        return false;
    };
    let reader = c.reader(&bucket, &key);
    let deadline = Instant::now() + CALL_TIMEOUT;
    let (Ok(ours), Ok(theirs)) = (
        reader.read(c.me(), deadline).await,
        reader.read(peer, deadline).await,
    ) else {
        return false;
    };
    let merged = match (&ours, &theirs) {
        (Some(a), Some(b)) => a.merge(b),
        (Some(a), None) | (None, Some(a)) => a.clone(),
        (None, None) => return false,
    };
    let mut changed = false;
    for (node, state) in [(c.me(), &ours), (peer, &theirs)] {
        if state.as_ref() != Some(&merged) {
            changed |= reader.push(node, &merged, CALL_TIMEOUT).await.is_ok();
        }
    }
    changed
}

async fn call(
    c: &Coordinator,
    peer: &str,
    request: Request,
    bytes: &mut u64,
) -> Result<Response, String> {
    let (response, moved) = rpc::call_measured(c.net(), peer, &request, CALL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    *bytes += moved;
    Ok(response)
}

async fn hashes(
    c: &Coordinator,
    peer: &str,
    request: Request,
    bytes: &mut u64,
) -> Result<Vec<u64>, String> {
    match call(c, peer, request, bytes).await? {
        Response::Hashes(h) => Ok(h),
        _ => Err("unexpected answer to a hash request".into()),
    }
}
