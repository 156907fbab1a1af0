//! The cluster under faults: nodes cut off at the transport seam, concurrent writers on one
//! key, nodes crashed, restarted and wiped.

mod support;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use support::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_needs_every_replica_while_a_quorum_does_not() {
    let c = TestCluster::start(3).await;
    c.cut_off(2);
    // n=3 on 3 nodes: every key has all three as primaries, so n3 is always one of them.
    let w_all = c.put(0, "/kv/b/k?w=all", None, "v").await;
    assert_eq!(w_all.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = w_all.json();
    assert_eq!(body["error"], "insufficient_replicas");
    assert_eq!(
        (body["needed"].as_u64(), body["acked"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        c.put(0, "/kv/b/k?w=2", None, "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.put(1, "/kv/b/k?pw=3", None, "v").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r_all = c.get(1, "/kv/b/k?r=all").await;
    assert_eq!(r_all.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r_all.json()["needed"], 3);
    assert_eq!(
        c.get(1, "/kv/b/k?r=2").await.status,
        StatusCode::MULTIPLE_CHOICES
    );
    // The cut-off node itself cannot reach a quorum either.
    assert_eq!(
        c.put(2, "/kv/b/k", None, "v").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    c.heal();
    wait_until_up(&c, 0, "n3").await;
    let healed = c.put(0, "/kv/b/k2?w=all", None, "v").await;
    assert_eq!(healed.status, StatusCode::NO_CONTENT);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pw_is_refused_when_a_primary_is_down() {
    let c = TestCluster::start(5).await;
    let preflist = c.get(0, "/admin/preflist/carts/pw").await.json();
    let nodes: Vec<String> = serde_json::from_value(preflist["nodes"].clone()).expect("nodes");
    let index = |id: &str| {
        c.configs
            .iter()
            .position(|cfg| cfg.node_id == id)
            .expect("member")
    };
    let down = index(&nodes[2]);
    let coordinator = (0..5).find(|&i| i != down).expect("another node");
    c.cut_off(down);
    let refused = c.put(coordinator, "/kv/carts/pw?pw=3", None, "v").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    // Two primaries and a fallback stored it: the fallback counts toward w, not toward pw.
    assert_eq!(refused.json()["acked"], 3);
    let accepted = c.put(coordinator, "/kv/carts/pw?w=2&pw=2", None, "v").await;
    assert_eq!(accepted.status, StatusCode::NO_CONTENT);
    // A node outside the preference list forwards the write to a live primary.
    let outsider = (0..5)
        .find(|&i| !nodes.contains(&c.configs[i].node_id))
        .expect("a non-replica");
    let forwarded = c
        .put(outsider, "/kv/carts/pw?return_body=true", None, "fwd")
        .await;
    assert_eq!(
        forwarded.status,
        StatusCode::MULTIPLE_CHOICES,
        "{}",
        forwarded.text()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blind_writers_never_lose_an_acknowledged_value() {
    let c = std::sync::Arc::new(TestCluster::start(3).await);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..6 {
                    let value = format!("w{w}-{i}");
                    let a = c
                        .put((w + i) % 3, "/kv/carts/contended", None, &value)
                        .await;
                    if a.status == StatusCode::NO_CONTENT {
                        acked.push(value);
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert_eq!(
        acked.len(),
        48,
        "a healthy cluster acknowledges every write"
    );
    let read = c.get(1, "/kv/carts/contended?r=all").await;
    let shown: BTreeSet<String> = read.values().into_iter().collect();
    assert_eq!(shown, acked);
    if let Ok(c) = std::sync::Arc::try_unwrap(c) {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_everything_it_acknowledged() {
    let mut c = TestCluster::start(3).await;
    for i in 0..100 {
        let a = c
            .put(
                i % 3,
                &format!("/kv/b/key-{i}?w=all"),
                None,
                &format!("v{i}"),
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }
    let before = actor_of(&c, 1).await;
    c.restart(1, false).await;
    assert_eq!(
        actor_of(&c, 1).await,
        before,
        "a clean restart keeps the actor"
    );
    c.restart(1, true).await;
    assert_ne!(actor_of(&c, 1).await, before, "a crash draws a new epoch");
    for i in 0..100 {
        let a = c.get(1, &format!("/admin/replica/b/key-{i}")).await;
        assert_eq!(a.status, StatusCode::OK, "key-{i}");
        assert_eq!(a.json()["siblings"][0]["value"], format!("v{i}"));
    }
    c.shutdown().await;
}

/// Riak's kv679_dataloss at cluster level: a node loses its data and writes again; its new
/// write must not be mistaken for the old one it replicated before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_does_not_lose_its_new_writes() {
    let mut c = TestCluster::start(3).await;
    assert_eq!(
        c.put(0, "/kv/b/k?w=all", None, "before").await.status,
        StatusCode::NO_CONTENT
    );
    c.crash_and_wipe(0).await;
    assert_eq!(
        c.put(0, "/kv/b/k?w=all", None, "after").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(1, "/kv/b/k?r=all").await.values(),
        ["after", "before"]
    );
    c.shutdown().await;
}

async fn actor_of(c: &TestCluster, i: usize) -> Option<String> {
    c.get(i, "/admin/status").await.json()["actor"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_read_with_r_all_repairs_a_replica_that_missed_a_write() {
    let c = TestCluster::start_with(3, no_anti_entropy).await;
    c.cut_off(2);
    assert_eq!(
        c.put(0, "/kv/b/missed?w=2", None, "v").await.status,
        StatusCode::NO_CONTENT
    );
    c.heal();
    assert_eq!(
        c.get(2, "/admin/replica/b/missed").await.status,
        StatusCode::NOT_FOUND
    );
    let read = c.get(0, "/kv/b/missed?r=all").await;
    assert_eq!(read.status, StatusCode::OK);
    let repaired = c
        .eventually(std::time::Duration::from_secs(10), || async {
            c.get(2, "/admin/replica/b/missed").await.status == StatusCode::OK
        })
        .await;
    assert!(repaired, "n3 never received the value");
    assert_eq!(
        c.get(2, "/admin/replica/b/missed").await.json()["siblings"][0]["value"],
        "v"
    );
    let counted = c
        .eventually(std::time::Duration::from_secs(10), || async {
            c.get(0, "/admin/status").await.json()["read_repairs"].as_u64() >= Some(1)
        })
        .await;
    assert!(counted, "the repair was not counted");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_detected_down_and_skipped_then_up_again() {
    let c = TestCluster::start(3).await;
    let limit = std::time::Duration::from_secs(15);
    assert!(
        c.eventually(limit, || async {
            peer_status(&c, 0, "n3").await.as_deref() == Some("up")
        })
        .await
    );
    // Messages to n3 now hang rather than fail: only the detector can tell it is gone.
    for i in 0..2 {
        c.node(i)
            .faults()
            .delay("n3", std::time::Duration::from_secs(120));
    }
    assert!(
        c.eventually(limit, || async {
            peer_status(&c, 0, "n3").await.as_deref() == Some("down")
        })
        .await,
        "n3 never detected down"
    );
    // A request that could wait a minute for n3 is answered at once instead.
    let put = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.put(0, "/kv/b/skip?w=all&timeout_ms=60000", None, "v"),
    )
    .await
    .expect("answered without waiting for the dead replica");
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(put.json()["acked"], 2);
    let get = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.get(1, "/kv/b/skip?r=2&timeout_ms=60000"),
    )
    .await
    .expect("answered without waiting for the dead replica");
    assert_eq!(get.status, StatusCode::OK);
    c.heal();
    assert!(
        c.eventually(limit, || async {
            peer_status(&c, 0, "n3").await.as_deref() == Some("up")
        })
        .await,
        "n3 never came back up"
    );
    c.shutdown().await;
}

/// How node `i` sees `peer` in its /admin/status: "up" or "down".
async fn peer_status(c: &TestCluster, i: usize, peer: &str) -> Option<String> {
    let status = c.get(i, "/admin/status").await.json();
    status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["id"] == peer).cloned())
        .and_then(|p| p["status"].as_str().map(str::to_owned))
}

/// Waits until node `i`'s failure detector sees `peer` up (after a heal, a peer the detector had
/// convicted is skipped until its next heartbeat).
async fn wait_until_up(c: &TestCluster, i: usize, peer: &str) {
    let up = c
        .eventually(std::time::Duration::from_secs(15), || async {
            peer_status(c, i, peer).await.as_deref() == Some("up")
        })
        .await;
    assert!(up, "{peer} not seen up by node {i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_holds_a_hint_for_a_cut_off_primary_and_hands_it_off() {
    let mut c = TestCluster::start_with(5, no_anti_entropy).await;
    let placement = c.get(0, "/admin/preflist/carts/hinted").await.json();
    let primaries: Vec<String> = serde_json::from_value(placement["nodes"].clone()).expect("nodes");
    let index = |id: &str| {
        c.configs
            .iter()
            .position(|cfg| cfg.node_id == id)
            .expect("member")
    };
    let (coordinator, down) = (index(&primaries[0]), index(&primaries[2]));
    c.cut_off(down);
    // w=3 succeeds through a fallback; pw=3 is refused.
    let w3 = c
        .put(coordinator, "/kv/carts/hinted?w=3", None, "kept")
        .await;
    assert_eq!(w3.status, StatusCode::NO_CONTENT, "{}", w3.text());
    let pw3 = c
        .put(coordinator, "/kv/carts/hinted?pw=3", None, "refused")
        .await;
    assert_eq!(pw3.status, StatusCode::SERVICE_UNAVAILABLE);
    let down_id = primaries[2].clone();
    let mut holders = Vec::new();
    for i in 0..5 {
        if pending_hints(&c, i, &down_id).await > 0 {
            holders.push(i);
        }
    }
    assert_eq!(holders.len(), 1, "exactly one fallback holds the hint");
    assert!(!primaries.contains(&c.configs[holders[0]].node_id));
    // Hints survive a restart of the node holding them.
    c.restart(holders[0], true).await;
    assert_eq!(pending_hints(&c, holders[0], &down_id).await, 1);
    c.heal();
    // Without any read, the primary gets the value and the hint is dropped.
    let limit = std::time::Duration::from_secs(20);
    let handed_off = c
        .eventually(limit, || async {
            c.get(down, "/admin/replica/carts/hinted").await.status == StatusCode::OK
        })
        .await;
    assert!(handed_off, "the primary never received the hinted write");
    let held = c.get(down, "/admin/replica/carts/hinted").await.json();
    let values: Vec<&str> = held["siblings"]
        .as_array()
        .map(|s| s.iter().filter_map(|v| v["value"].as_str()).collect())
        .unwrap_or_default();
    // The refused pw=3 write still reached two primaries and the fallback, as API.md warns.
    assert_eq!(values, ["kept", "refused"]);
    let dropped = c
        .eventually(limit, || async {
            pending_hints(&c, holders[0], &down_id).await == 0
        })
        .await;
    assert!(dropped, "the delivered hint was not dropped");
    c.shutdown().await;
}

/// How many hints node `i` holds for `owner`, from its /admin/status.
async fn pending_hints(c: &TestCluster, i: usize, owner: &str) -> u64 {
    let status = c.get(i, "/admin/status").await.json();
    status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["id"] == owner).cloned())
        .and_then(|p| p["pending_hints"].as_u64())
        .unwrap_or(0)
}

/// So that only the mechanism under test can heal a replica.
fn no_anti_entropy(config: &mut quorumkv::config::Config) {
    config.anti_entropy.enabled = false;
}
