//! A grow-only cart under chaos: clients add items by read-merge-write while nodes are cut off,
//! crash and restart at random for 30 seconds. After healing, the merged cart must hold every
//! acknowledged add.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::TestCluster;
use tokio::sync::RwLock;

const NODES: usize = 5;
const CLIENTS: usize = 4;
const CHAOS: Duration = Duration::from_secs(30);
const CART: &str = "/kv/carts/chaos";

/// Every item in every sibling the answer shows.
fn items(answer: &support::Answer) -> BTreeSet<String> {
    answer
        .values()
        .iter()
        .flat_map(|v| v.split(',').filter(|i| !i.is_empty()).map(str::to_owned))
        .collect()
}

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    crashes: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grow_only_cart_keeps_every_acknowledged_add_through_chaos() {
    let cluster = TestCluster::start_with(NODES, |c| {
        c.anti_entropy.interval_ms = 1000;
        c.handoff.interval_ms = 200;
    })
    .await;
    let cluster = Arc::new(RwLock::new(cluster));
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (cluster, stop, counts) = (cluster.clone(), stop.clone(), counts.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(client as u64);
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    n += 1;
                    let node = rng.usize(..NODES);
                    let c = cluster.read().await;
                    let read = c.get(node, &format!("{CART}?r=2&timeout_ms=1000")).await;
                    if !matches!(
                        read.status,
                        StatusCode::OK | StatusCode::MULTIPLE_CHOICES | StatusCode::NOT_FOUND
                    ) {
                        continue;
                    }
                    let item = format!("c{client}-{n}");
                    let mut cart = items(&read);
                    cart.insert(item.clone());
                    let value = cart.into_iter().collect::<Vec<_>>().join(",");
                    counts.attempts.fetch_add(1, Ordering::Relaxed);
                    let path = format!("{CART}?w=2&timeout_ms=1000");
                    let write = c.put(node, &path, read.context.as_deref(), &value).await;
                    if write.status == StatusCode::NO_CONTENT {
                        counts.acked.fetch_add(1, Ordering::Relaxed);
                        acked.push(item);
                    } else {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                acked
            })
        })
        .collect();

    let chaos = {
        let (cluster, counts) = (cluster.clone(), counts.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(42);
            let started = Instant::now();
            while started.elapsed() < CHAOS {
                let victim = rng.usize(..NODES);
                if rng.bool() {
                    cluster.read().await.cut_off(victim);
                    counts.cuts.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(rng.u64(300..2000))).await;
                    cluster.read().await.heal();
                } else {
                    cluster.write().await.restart(victim, true).await;
                    counts.crashes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(100..1000))).await;
            }
        })
    };
    chaos.await.expect("chaos");
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for client in clients {
        acked.extend(client.await.expect("client"));
    }

    let c = cluster.read().await;
    c.heal();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = BTreeSet::new();
    let converged = loop {
        let read = c.get(0, &format!("{CART}?r=all")).await;
        if read.status == StatusCode::OK || read.status == StatusCode::MULTIPLE_CHOICES {
            last = items(&read);
        }
        if acked.is_subset(&last) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost: Vec<&String> = acked.difference(&last).collect();
    eprintln!(
        "chaos: {} attempts, {} acknowledged, {} refused; {} cuts, {} crash-restarts; \
         merged cart holds {} items ({} acknowledged ones missing)",
        counts.attempts.load(Ordering::Relaxed),
        acked.len(),
        counts.refused.load(Ordering::Relaxed),
        counts.cuts.load(Ordering::Relaxed),
        counts.crashes.load(Ordering::Relaxed),
        last.len(),
        lost.len(),
    );
    assert!(converged, "acknowledged adds lost: {lost:?}");
    assert!(
        acked.len() > 50,
        "the workload made too little progress to mean anything"
    );
}
