//! Anti-entropy: replicas converge without reads, and an exchange between identical replicas
//! moves almost nothing.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::TestCluster;

const KEYS: usize = 10_000;

fn fast_anti_entropy(config: &mut quorumkv::config::Config) {
    config.anti_entropy.interval_ms = 500;
}

async fn stored_keys(c: &TestCluster, i: usize) -> u64 {
    c.get(i, "/admin/status").await.json()["storage"]["keys"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_10000_writes_catches_up_without_reads() {
    let c = Arc::new(TestCluster::start_with(3, fast_anti_entropy).await);
    c.cut_off(2);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for k in (w..KEYS).step_by(16) {
                    let a = c.put(k % 2, &format!("/kv/b/key-{k}"), None, "v").await;
                    assert_eq!(a.status, StatusCode::NO_CONTENT, "key-{k}");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(stored_keys(&c, 2).await, 0);
    c.heal();
    let started = Instant::now();
    let caught_up = c
        .eventually(Duration::from_secs(120), || async {
            stored_keys(&c, 2).await == KEYS as u64
        })
        .await;
    assert!(caught_up, "n3 holds {} of {KEYS} keys", stored_keys(&c, 2).await);
    eprintln!(
        "n3 converged on {KEYS} missed keys {:.1} s after healing",
        started.elapsed().as_secs_f64()
    );
    // Once identical, an exchange repairs nothing and costs one round of group hashes.
    let idle = c
        .eventually(Duration::from_secs(30), || async {
            let status = c.get(2, "/admin/status").await.json();
            let last = &status["anti_entropy"]["last_exchange_per_partition"];
            last.as_object().is_some_and(|parts| {
                parts.values().any(|e| e["keys_repaired"] == 0)
            })
        })
        .await;
    assert!(idle, "no idle exchange recorded");
    let status = c.get(2, "/admin/status").await.json();
    let parts = status["anti_entropy"]["last_exchange_per_partition"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let idle_bytes: Vec<u64> = parts
        .values()
        .filter(|e| e["keys_repaired"] == 0)
        .filter_map(|e| e["bytes"].as_u64())
        .collect();
    let worst = idle_bytes.iter().max().copied().unwrap_or(0);
    eprintln!("bytes moved by an exchange of identical partitions: at most {worst}");
    assert!(worst > 0 && worst <= 4096, "{worst} bytes");
    if let Ok(c) = Arc::try_unwrap(c) {
        c.shutdown().await;
    }
}
