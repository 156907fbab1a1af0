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
    assert!(
        caught_up,
        "n3 holds {} of {KEYS} keys",
        stored_keys(&c, 2).await
    );
    eprintln!(
        "n3 converged on {KEYS} missed keys {:.1} s after healing",
        started.elapsed().as_secs_f64()
    );
    // Once identical, an exchange repairs nothing and costs one round of group hashes. Read
    // from exchanges that all began after a whole pass repaired nothing: one that overlapped
    // the repairs (leaves differing, then digests already equal) is not of identical data.
    let all_idle_after = |since_ms: u64| {
        let c = c.clone();
        async move {
            let status = c.get(2, "/admin/anti-entropy").await.json();
            status["partitions"].as_array().is_some_and(|parts| {
                !parts.is_empty()
                    && parts.iter().all(|e| {
                        e["keys_repaired"] == 0
                            && e["finished_ms"].as_u64().is_some_and(|f| f > since_ms)
                    })
            })
        }
    };
    let idle = c
        .eventually(Duration::from_secs(30), || all_idle_after(0))
        .await;
    let settled_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let idle = idle
        && c.eventually(Duration::from_secs(30), || {
            all_idle_after(settled_ms + 1000)
        })
        .await;
    assert!(idle, "no idle exchange recorded");
    let status = c.get(2, "/admin/anti-entropy").await.json();
    let parts = status["partitions"].as_array().cloned().unwrap_or_default();
    let idle_bytes: Vec<u64> = parts
        .iter()
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

fn pairs_bucket(config: &mut quorumkv::config::Config) {
    fast_anti_entropy(config);
    let pairs = quorumkv::config::BucketOverride {
        n: Some(2),
        ..Default::default()
    };
    config.buckets.insert("pairs".into(), pairs);
}

/// The indices of the nodes of `key`'s preference list ("bucket/key"), as node 0 sees it.
async fn preflist(c: &TestCluster, key: &str) -> Vec<usize> {
    let pl = c.get(0, &format!("/admin/preflist/{key}")).await.json();
    pl["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .map(|id| id[1..].parse::<usize>().expect("node index") - 1)
        .collect()
}

/// A bucket with a smaller `n` than the default is healed among its own replicas only:
/// anti-entropy never copies its keys to a node outside their preference list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_keeps_a_smaller_n_bucket_on_its_own_replicas() {
    let c = TestCluster::start_with(3, pairs_bucket).await;
    let mut keys = Vec::new();
    for k in 0..40 {
        let key = format!("pairs/k{k}");
        let nodes = preflist(&c, &key).await;
        assert_eq!(nodes.len(), 2, "{key}: {nodes:?}");
        let outside = (0..3).find(|i| !nodes.contains(i)).expect("a node outside");
        keys.push((key, nodes[0], outside));
    }
    for (key, first, _) in &keys {
        let put = c.put(*first, &format!("/kv/{key}?w=2"), None, "v").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT, "{key}");
    }
    // Every node runs many exchanges; none may carry a pair key to its third node.
    wait_rounds(&c, &[0, 1, 2], 3 * 64).await;
    for (key, _, outside) in &keys {
        let r = c.get(*outside, &format!("/admin/replica/{key}")).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{key} copied to n{}",
            outside + 1
        );
    }
    c.shutdown().await;
}

fn reap_at_once(config: &mut quorumkv::config::Config) {
    config.anti_entropy.interval_ms = 300;
    config.anti_entropy.tombstone_grace_ms = 0;
}

async fn exchanges(c: &TestCluster, i: usize) -> u64 {
    c.get(i, "/admin/status").await.json()["anti_entropy"]["exchanges"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until each of `nodes` has run `rounds` more exchanges than now.
async fn wait_rounds(c: &TestCluster, nodes: &[usize], rounds: u64) {
    let mut targets = Vec::new();
    for &i in nodes {
        targets.push((i, exchanges(c, i).await + rounds));
    }
    let done = c
        .eventually(Duration::from_secs(60), || async {
            let mut all = true;
            for &(i, target) in &targets {
                all &= exchanges(c, i).await >= target;
            }
            all
        })
        .await;
    assert!(done, "anti-entropy stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_made_while_a_replica_was_away_stays_deleted_and_is_reaped() {
    let c = TestCluster::start_with(3, reap_at_once).await;
    // A key whose reaper (its first primary) is n1, so that n3 can be away while n1 decides.
    let mut key = String::new();
    for k in 0..100 {
        if preflist(&c, &format!("b/gone-{k}")).await.first() == Some(&0) {
            key = format!("b/gone-{k}");
            break;
        }
    }
    assert!(!key.is_empty());
    let (kv, replica) = (format!("/kv/{key}"), format!("/admin/replica/{key}"));
    assert_eq!(
        c.put(0, &format!("{kv}?w=all"), None, "v").await.status,
        StatusCode::NO_CONTENT
    );
    let read = c.get(0, &format!("{kv}?r=all")).await;
    c.cut_off(2);
    let del = c
        .request(
            0,
            reqwest::Method::DELETE,
            &format!("{kv}?w=2"),
            read.context.as_deref(),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    // While n3 is away the tombstone cannot be reaped: n3 still holds the value.
    wait_rounds(&c, &[0, 1], 128).await;
    assert_eq!(c.get(0, &replica).await.json()["tombstone"], true);
    c.heal();
    // Anti-entropy brings the tombstone to n3, then every replica holds it and it is reaped.
    let reaped = c
        .eventually(Duration::from_secs(60), || async {
            let mut all = true;
            for i in 0..3 {
                all &= c.get(i, &replica).await.status == StatusCode::NOT_FOUND;
            }
            all
        })
        .await;
    assert!(reaped, "the tombstone was not reaped everywhere");
    // Many rounds later the value has not come back anywhere.
    wait_rounds(&c, &[0, 1, 2], 192).await;
    for i in 0..3 {
        assert_eq!(
            c.get(i, &format!("{kv}?r=all")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(c.get(i, &replica).await.status, StatusCode::NOT_FOUND);
    }
    c.shutdown().await;
}

/// Riak's kv679_tombstone ("doomstone"): a tombstone that reaches a replica late must not
/// erase values written after it, or concurrently with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_tombstone_never_erases_a_later_value() {
    let c = TestCluster::start_with(3, fast_anti_entropy).await;
    assert_eq!(
        c.put(0, "/kv/b/doom?w=all", None, "v1").await.status,
        StatusCode::NO_CONTENT
    );
    let v1 = c.get(0, "/kv/b/doom?r=all").await;
    c.cut_off(2);
    // n1 and n2 delete v1; n3, cut off, does not hear of it.
    let del = c
        .request(
            0,
            reqwest::Method::DELETE,
            "/kv/b/doom?w=2",
            v1.context.as_deref(),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    // A client that read v1 writes v2 through n3 alone: concurrent with the delete.
    let v2 = c
        .put(2, "/kv/b/doom?w=1", v1.context.as_deref(), "v2")
        .await;
    assert_eq!(v2.status, StatusCode::NO_CONTENT);
    // A client that saw the delete writes v3 through n1: after the tombstone.
    let gone = c.get(0, "/kv/b/doom?r=2").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let v3 = c
        .put(0, "/kv/b/doom?w=2", gone.context.as_deref(), "v3")
        .await;
    assert_eq!(v3.status, StatusCode::NO_CONTENT);
    c.heal();
    // The tombstone reaches n3 late (by anti-entropy): v2 and v3 both survive everywhere.
    let converged = c
        .eventually(Duration::from_secs(60), || async {
            let mut all = true;
            for i in 0..3 {
                let replica = c.get(i, "/admin/replica/b/doom").await.json();
                let values: Vec<&str> = replica["siblings"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|v| v["value"].as_str()).collect())
                    .unwrap_or_default();
                let mut values = values;
                values.sort();
                all &= values == ["v2", "v3"];
            }
            all
        })
        .await;
    assert!(converged, "replicas did not converge on v2 and v3");
    assert_eq!(c.get(1, "/kv/b/doom?r=all").await.values(), ["v2", "v3"]);
    c.shutdown().await;
}
