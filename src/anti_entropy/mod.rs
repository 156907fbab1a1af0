//! Anti-entropy: replicas that missed writes converge without anyone reading the data.
//!
//! Every `[anti_entropy] interval_ms`, this node walks the hash trees (`replica::merkle`) it
//! replicates — one per partition and bucket `n` in use, so a tree is only compared with nodes
//! that should hold all of it — and compares each with that of another live replica, taking
//! the other replicas in turn: the 16 group hashes first (an identical partition costs one
//! round trip of ~150 bytes), then the leaves of all differing groups in one round trip (twice,
//! [`SETTLE`] apart: a leaf that differs only by writes in flight is left alone), then the key
//! digests of differing leaves, batched: the peer answers whole leaves up to
//! [`DIGEST_BATCH`] keys per round trip. Digests come from the keydir (no value is read), so
//! an exchange costs in proportion to the difference, plus one keydir walk per batch.
//! Differing keys are repaired [`REPAIR_BATCH`] at a time: one round trip fetches the peer's
//! states, each is merged with this node's (`sync`), and one round trip pushes the merges the
//! peer lacks. Repairs are held to `repair_bytes_per_sec`, and trees are spread evenly over
//! the interval, so a large catch-up does not crowd out client traffic. The same walk reaps
//! expired tombstones (`reaper`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::causal::{KeyState, WallClock};
use crate::coordinator::transfer::Limiter;
use crate::coordinator::Coordinator;
use crate::replica::merkle::{TreeId, FANOUT, GROUPS};
use crate::replica::split_storage_key;
use crate::rpc::{self, Blob, Request, Response};

mod reaper;

/// How long one step of an exchange may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per digest batch: the peer answers whole leaves up to about this many keys.
const DIGEST_BATCH: u32 = 32_768;
/// How long a leaf's difference must hold before it is repaired (see `exchange`).
const SETTLE: Duration = Duration::from_millis(200);
/// Keys per repair round trip (one fetch of the peer's states, one push of the merges).
const REPAIR_BATCH: usize = 256;

/// How often, and how fast, this node compares and repairs.
pub struct Pacing {
    pub interval: Duration,
    pub tombstone_grace: Duration,
    /// States fetched and pushed by repairs, in bytes per second.
    pub repair_bytes_per_sec: u64,
}

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
    pacing: Pacing,
) {
    let Pacing {
        interval,
        tombstone_grace,
        repair_bytes_per_sec,
    } = pacing;
    let limit = Limiter::new(repair_bytes_per_sec);
    let mut walks = reaper::Walks::default();
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
                let reaped =
                    reaper::reap_tree(&coordinator, &mut walks, *tree, grace, clock.now_ms()).await;
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
            match exchange(&coordinator, *tree, peer, &limit).await {
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
async fn exchange(
    c: &Coordinator,
    tree: TreeId,
    peer: &str,
    limit: &Limiter,
) -> Result<Exchange, String> {
    let mut bytes = 0u64;
    let trees = c.replica().trees();
    let theirs = hashes(c, peer, Request::AeGroups { tree }, &mut bytes).await?;
    let ours = trees.groups(tree);
    let groups: Vec<u32> = (0..GROUPS)
        .filter(|&g| theirs.get(g) != ours.get(g))
        .map(|g| g as u32)
        .collect();
    let mut leaves = Vec::new();
    if !groups.is_empty() {
        // Writes in flight make leaves differ for a moment; a leaf counts only if it differs
        // the same way twice, SETTLE apart, so a busy cluster does not walk its keydir for
        // differences that heal by themselves.
        let first = leaf_pairs(c, tree, peer, &groups, &mut bytes).await?;
        tokio::time::sleep(SETTLE).await;
        let second = leaf_pairs(c, tree, peer, &groups, &mut bytes).await?;
        leaves.extend(
            first
                .iter()
                .zip(&second)
                .filter(|((_, a), (_, b))| a.0 != a.1 && a == b)
                .map(|((leaf, _), _)| *leaf),
        );
    }
    let mut keys_repaired = 0;
    if !leaves.is_empty() {
        // This side's digests of every differing leaf in one walk of the keydir (at most
        // one tree's keys); the peer's come in batches.
        let replica = c.replica().clone();
        let wanted = leaves.clone();
        let ours = tokio::task::spawn_blocking(move || replica.digests(tree, &wanted, usize::MAX))
            .await
            .map_err(|e| e.to_string())?;
        let mut ours: HashMap<u32, HashMap<Vec<u8>, u64>> = ours
            .into_iter()
            .map(|(leaf, d)| (leaf, d.into_iter().collect()))
            .collect();
        let mut rest = &leaves[..];
        while !rest.is_empty() {
            let request = Request::AeDigests {
                tree,
                leaves: rest.to_vec(),
                max_keys: DIGEST_BATCH,
            };
            let answer = match call(c, peer, request, &mut bytes).await? {
                Response::Digests(d) => d,
                _ => return Err("unexpected answer to a digest request".into()),
            };
            let answered = answer.len();
            let in_order = answered > 0
                && answered <= rest.len()
                && answer.iter().zip(rest).all(|((l, _), want)| l == want);
            if !in_order {
                return Err("digests not for the leaves asked".into());
            }
            rest = &rest[answered..];
            let mut theirs: HashMap<Vec<u8>, u64> = HashMap::new();
            let mut differing = Vec::new();
            for (leaf, digests) in answer {
                let ours = ours.remove(&leaf).unwrap_or_default();
                let leaf: HashMap<Vec<u8>, u64> = digests.into_iter().collect();
                differing.extend(
                    leaf.iter()
                        .filter(|(k, h)| ours.get(*k) != Some(h))
                        .map(|(k, _)| k.clone())
                        .chain(ours.keys().filter(|k| !leaf.contains_key(*k)).cloned()),
                );
                theirs.extend(leaf);
            }
            for batch in differing.chunks(REPAIR_BATCH) {
                let before = bytes;
                keys_repaired +=
                    repair(c, tree.partition, peer, batch, &theirs, &mut bytes).await?;
                limit.spend(bytes - before).await;
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

/// (leaf, (our hash, their hash)) for every leaf of these groups.
async fn leaf_pairs(
    c: &Coordinator,
    tree: TreeId,
    peer: &str,
    groups: &[u32],
    bytes: &mut u64,
) -> Result<Vec<(u32, (u64, u64))>, String> {
    let request = Request::AeLeaves {
        tree,
        groups: groups.to_vec(),
    };
    let theirs = hashes(c, peer, request, bytes).await?;
    if theirs.len() != groups.len() * FANOUT {
        return Err("short answer to a leaf request".into());
    }
    let trees = c.replica().trees();
    let mut pairs = Vec::with_capacity(theirs.len());
    for (i, &group) in groups.iter().enumerate() {
        let ours = trees.leaves(tree, group as usize);
        for l in 0..FANOUT {
            pairs.push((
                group * FANOUT as u32 + l as u32,
                (ours[l], theirs[i * FANOUT + l]),
            ));
        }
    }
    Ok(pairs)
}

/// Brings a batch of keys to the merge of both sides' states: one round trip fetches the
/// peer's states (of the keys it has), one pushes the merges it lacks. Returns how many keys
/// changed on either side.
async fn repair(
    c: &Coordinator,
    partition: u32,
    peer: &str,
    keys: &[Vec<u8>],
    theirs: &HashMap<Vec<u8>, u64>,
    bytes: &mut u64,
) -> Result<u64, String> {
    let named: Vec<(Vec<u8>, String, String)> = keys
        .iter()
        .filter_map(|k| split_storage_key(k).map(|(b, key)| (k.clone(), b, key)))
        .collect();
    let fetch: Vec<(String, String)> = named
        .iter()
        .filter(|(k, _, _)| theirs.contains_key(k))
        .map(|(_, b, k)| (b.clone(), k.clone()))
        .collect();
    let mut fetched: HashMap<(String, String), KeyState> = HashMap::new();
    if !fetch.is_empty() {
        let request = Request::AeFetch {
            keys: fetch.clone(),
        };
        let states = match call(c, peer, request, bytes).await? {
            Response::States(s) if s.len() == fetch.len() => s,
            _ => return Err("unexpected answer to a fetch".into()),
        };
        for (name, state) in fetch.into_iter().zip(states) {
            // A state that does not decode is left out: the peer drops and repairs it.
            if let Some(state) = state.and_then(|b| KeyState::decode(&b.0).ok()) {
                fetched.insert(name, state);
            }
        }
    }
    let mut changed = 0;
    let mut push = Vec::new();
    let mut take = Vec::new();
    for (_, bucket, key) in named {
        let theirs = fetched.remove(&(bucket.clone(), key.clone()));
        let ours = c.replica().read(&bucket, &key).ok().flatten();
        let merged = match (&ours, &theirs) {
            (Some(a), Some(b)) => a.merge(b),
            (Some(a), None) | (None, Some(a)) => a.clone(),
            (None, None) => continue,
        };
        let pushed = theirs.as_ref() != Some(&merged);
        if pushed {
            push.push((bucket.clone(), key.clone(), Blob(merged.encode())));
        }
        match theirs.filter(|_| ours.as_ref() != Some(&merged)) {
            Some(theirs) => take.push((bucket, key, theirs, pushed)),
            None => changed += u64::from(pushed),
        }
    }
    // The batch's local merges at once, so they share their fsyncs (group commit).
    let taken = futures::future::join_all(take.iter().map(|(bucket, key, theirs, pushed)| async {
        c.replica().sync(bucket, key, theirs).await.is_ok() || *pushed
    }))
    .await;
    changed += taken.into_iter().filter(|&moved| moved).count() as u64;
    if !push.is_empty() {
        let request = Request::Transfer {
            partition,
            items: push,
        };
        match call(c, peer, request, bytes).await? {
            Response::Synced(Ok(())) => {}
            Response::Synced(Err(f)) => return Err(format!("peer refused repairs: {f:?}")),
            _ => return Err("unexpected answer to a repair push".into()),
        }
    }
    Ok(changed)
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
