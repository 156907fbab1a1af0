//! Gray failures on real processes: a primary hung with SIGSTOP (its sockets stay open and
//! nothing answers, as in a long GC pause or a stuck disk) and a node killed and restarted.
//! Each node runs as `quorumkv serve` on a loopback address of its own.

mod procs;

use std::time::{Duration, Instant};

use procs::{all_up, started, wait_until, Cluster};
use reqwest::StatusCode;

const NODES: usize = 5;

async fn preflist(http: &reqwest::Client, c: &Cluster, bucket: &str, key: &str) -> Vec<usize> {
    let bytes = http
        .get(c.url(0, &format!("/admin/preflist/{bucket}/{key}")))
        .send()
        .await
        .expect("preflist")
        .bytes()
        .await
        .expect("preflist body");
    let list: serde_json::Value = serde_json::from_slice(&bytes).expect("preflist json");
    list["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|id| {
            let id = id.as_str().expect("node id");
            id.trim_start_matches('n').parse::<usize>().expect("nN") - 1
        })
        .collect()
}

/// Sends one request and returns its status and how long the answer took.
async fn timed(request: reqwest::RequestBuilder) -> (Option<StatusCode>, Duration, String) {
    let t = Instant::now();
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            (Some(status), t.elapsed(), body)
        }
        Err(e) => (None, t.elapsed(), e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_process_is_routed_around_through_every_node_within_a_second() {
    let mut c = Cluster::start(73, NODES);
    let http = started(&c).await;
    let key = "hung";
    let primaries = preflist(&http, &c, "carts", key).await;
    let first = primaries[0];
    // Warm every node's view of its peers' latencies, as a running cluster has.
    for i in 0..NODES {
        for round in 0..5 {
            let path = format!("/kv/carts/warm-{i}-{round}");
            let r = http.put(c.url(i, &path)).body("x").send().await;
            assert!(r.is_ok_and(|r| r.status().is_success()));
        }
    }

    c.signal(first, "-STOP");
    // All at once, so every answer comes before the failure detector could convict.
    let others: Vec<usize> = (0..NODES).filter(|&i| i != first).collect();
    let puts = others.iter().map(|&i| {
        timed(
            http.put(c.url(i, &format!("/kv/carts/{key}?w=2&timeout_ms=3000")))
                .header("content-type", "text/plain")
                .body(format!("via-n{}", i + 1)),
        )
    });
    let puts = futures::future::join_all(puts).await;
    let gets = others
        .iter()
        .map(|&i| timed(http.get(c.url(i, &format!("/kv/carts/{key}?r=2&timeout_ms=3000")))));
    let gets = futures::future::join_all(gets).await;
    let all = timed(
        http.put(c.url(others[0], &format!("/kv/carts/{key}?w=3&timeout_ms=3000")))
            .header("content-type", "text/plain")
            .body("w3"),
    )
    .await;
    c.signal(first, "-CONT");

    for ((status, took, body), i) in puts.iter().zip(&others) {
        eprintln!("put w=2 via n{}: {status:?} in {took:?}", i + 1);
        assert!(
            status.is_some_and(|s| s.is_success()) && *took < Duration::from_secs(1),
            "put w=2 through n{} with primary n{} hung: {status:?} after {took:?}: {body}",
            i + 1,
            first + 1
        );
    }
    for ((status, took, body), i) in gets.iter().zip(&others) {
        eprintln!("get r=2 via n{}: {status:?} in {took:?}", i + 1);
        let ok = status.is_some_and(|s| s.is_success() || s == StatusCode::MULTIPLE_CHOICES);
        assert!(
            ok && *took < Duration::from_secs(1),
            "get r=2 through n{} with primary n{} hung: {status:?} after {took:?}: {body}",
            i + 1,
            first + 1
        );
    }
    let (status, took, body) = all;
    assert!(
        status.is_some_and(|s| s.is_success()),
        "w=3 with one primary hung must be taken by a fallback: {status:?} after {took:?}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_called_again_as_soon_as_it_is_back() {
    let mut c = Cluster::start(74, NODES);
    let http = started(&c).await;
    let key = "restart";
    let primaries = preflist(&http, &c, "carts", key).await;
    let victim = primaries[1];
    c.crash(victim);
    // Down long enough for every peer's redial backoff to reach its ceiling (2 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.spawn(victim);
    let health = c.url(victim, "/health");
    let answering = wait_until(Duration::from_secs(10), async || {
        http.get(&health).send().await.is_ok()
    })
    .await;
    assert!(answering, "the restarted node never answered");
    let back = Instant::now();
    let up = wait_until(Duration::from_secs(10), async || all_up(&http, &c).await).await;
    let took = back.elapsed();
    eprintln!("every node saw every other up {took:?} after the restarted node answered");
    assert!(up, "the cluster did not see the restarted node again");
    // A backoff of 2 s would keep some peer from calling it for most of that time.
    assert!(
        took < Duration::from_secs(1),
        "peers waited out their backoff: {took:?}"
    );
    // Every primary is needed: the restarted one must be reachable through every node.
    for i in 0..NODES {
        let (status, took, body) = timed(
            http.put(c.url(i, &format!("/kv/carts/{key}?pw=3&timeout_ms=2000")))
                .header("content-type", "text/plain")
                .body(format!("via-n{}", i + 1)),
        )
        .await;
        assert!(
            status.is_some_and(|s| s.is_success()),
            "pw=3 through n{} after n{} restarted: {status:?} after {took:?}: {body}",
            i + 1,
            victim + 1
        );
    }
}
