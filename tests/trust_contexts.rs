//! Causal contexts are minted by the cluster: a forged, truncated, replayed (another key's) or
//! bloated `X-Causal-Context` is `400 bad_context`, and the key stays readable and writable
//! through every node, before and after a restart.

mod support;

use quorumkv::causal::token::{self, ContextKey};
use quorumkv::causal::{Actor, VersionVector};
use reqwest::{Method, StatusCode};
use support::TestCluster;

async fn readable_and_writable(c: &TestCluster, round: &str) {
    for i in 0..c.size() {
        let got = c.get(i, "/kv/carts/k?r=all").await;
        assert!(
            got.status == StatusCode::OK || got.status == StatusCode::MULTIPLE_CHOICES,
            "{round}: read through n{}: {} {}",
            i + 1,
            got.status,
            got.text()
        );
        let put = c
            .put(
                i,
                "/kv/carts/k?w=all",
                got.context.as_deref(),
                &format!("v{i}"),
            )
            .await;
        assert_eq!(
            put.status,
            StatusCode::NO_CONTENT,
            "{round}: write through n{}: {}",
            i + 1,
            put.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_the_cluster_did_not_issue_is_refused_and_breaks_nothing() {
    let mut c = TestCluster::start(3).await;
    c.all_up().await;
    c.put(0, "/kv/carts/k", None, "first").await;
    c.put(0, "/kv/carts/other", None, "x").await;
    let read = c.get(1, "/kv/carts/k?r=all").await;
    let genuine = read.context.clone().expect("a context");
    let others = c.get(1, "/kv/carts/other").await.context.expect("context");
    let actor = c.status(0).await["actor"]
        .as_str()
        .expect("actor")
        .to_owned();
    // What a client could mint before tokens were authenticated: the coordinator's own actor
    // at the largest counter, and 700 made-up actors.
    let huge: VersionVector = [(Actor::new(actor), u64::MAX)].into_iter().collect();
    let forged = token::encode(&ContextKey::new([0; 32]), b"carts", b"k", &huge);
    let many: VersionVector = (0..700)
        .map(|i| (Actor::new(format!("ghost{i:03}.1")), 1))
        .collect();
    let bloated = token::encode(&ContextKey::new([0; 32]), b"carts", b"k", &many);
    let cases = [
        ("forged", forged),
        ("truncated", genuine[..genuine.len() - 5].to_owned()),
        ("replayed from another key", others),
        ("bloated", bloated),
        (
            "over the length limit",
            "A".repeat(token::MAX_TOKEN_LEN + 1),
        ),
    ];
    for (what, bad) in &cases {
        for method in [Method::PUT, Method::DELETE] {
            let body = (method == Method::PUT).then_some(b"evil".as_slice());
            let answer = c
                .request(0, method.clone(), "/kv/carts/k", Some(bad), body)
                .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what} {method}");
            assert_eq!(answer.json()["error"], "bad_context", "{what} {method}");
        }
    }
    readable_and_writable(&c, "after the bad contexts").await;
    for i in 0..c.size() {
        c.restart(i, true).await;
    }
    c.all_up().await;
    readable_and_writable(&c, "after a crash and restart of every node").await;
    // The genuine context of the first read still works (it covers less than the state now).
    let later = c.put(2, "/kv/carts/k", Some(&genuine), "late").await;
    assert_eq!(later.status, StatusCode::NO_CONTENT, "{}", later.text());
    c.shutdown().await;
}
