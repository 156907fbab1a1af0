//! The Riak-compatible surface against a real 3-node cluster, for what the Riak client's own
//! suite (scripts/riak-client-tests.sh) does not pin down: allow_mult and blind writes, the
//! quorum knobs, 503 and n_val through it, siblings shared with `/kv`, listings, conditional
//! requests, and a node killed midway.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use support::TestCluster;

/// What a Riak request got back.
struct Got {
    status: StatusCode,
    vclock: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn riak(
    c: &TestCluster,
    i: usize,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Got {
    let mut req = c.client.request(method, c.url(i, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body.to_owned());
    }
    let resp = req.send().await.expect("request");
    let headers = resp.headers().clone();
    Got {
        status: resp.status(),
        vclock: headers
            .get("x-riak-vclock")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers,
        body: resp.text().await.expect("body"),
    }
}

async fn set_props(c: &TestCluster, bucket: &str, props: &str) {
    let got = riak(
        c,
        0,
        Method::PUT,
        &format!("/buckets/{bucket}/props"),
        &[("content-type", "application/json")],
        Some(&format!("{{\"props\":{props}}}")),
    )
    .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT, "{}", got.body);
}

/// The values of a `300 multipart/mixed` answer (or of a 200), sorted.
fn values(got: &Got) -> Vec<String> {
    let mut out: Vec<String> = match got.status {
        StatusCode::OK => vec![got.body.clone()],
        StatusCode::MULTIPLE_CHOICES => {
            let ct = got.headers["content-type"].to_str().expect("ascii");
            let boundary = ct.split("boundary=").nth(1).expect("boundary");
            got.body
                .split(&format!("\r\n--{boundary}"))
                .filter_map(|part| part.split_once("\r\n\r\n").map(|(_, v)| v.to_owned()))
                .collect()
        }
        _ => Vec::new(),
    };
    out.sort();
    out
}

const MULTIPART: (&str, &str) = ("accept", "multipart/mixed, */*;q=0.5");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_writes_overwrite_without_allow_mult_and_become_siblings_with_it() {
    let c = TestCluster::start(3).await;
    set_props(&c, "plain", r#"{"allow_mult":false}"#).await;
    set_props(&c, "multi", r#"{"allow_mult":true}"#).await;
    for bucket in ["plain", "multi"] {
        for v in ["first", "second"] {
            let path = format!("/buckets/{bucket}/keys/k");
            let got = riak(
                &c,
                1,
                Method::PUT,
                &path,
                &[("content-type", "text/plain")],
                Some(v),
            )
            .await;
            assert_eq!(got.status, StatusCode::NO_CONTENT, "{}", got.body);
        }
    }
    let plain = riak(
        &c,
        2,
        Method::GET,
        "/buckets/plain/keys/k?r=all",
        &[MULTIPART],
        None,
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.body, "second");
    let multi = riak(
        &c,
        2,
        Method::GET,
        "/buckets/multi/keys/k?r=all",
        &[MULTIPART],
        None,
    )
    .await;
    assert_eq!(multi.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(values(&multi), ["first", "second"]);
    // Without multipart/mixed in Accept, the vtags are listed.
    let listed = riak(
        &c,
        2,
        Method::GET,
        "/buckets/multi/keys/k",
        &[("accept", "*/*")],
        None,
    )
    .await;
    assert_eq!(listed.status, StatusCode::MULTIPLE_CHOICES);
    assert!(listed.body.starts_with("Siblings:\n"), "{}", listed.body);
    assert_eq!(listed.body.lines().count(), 3);
    // Every node reads the properties set through n1 from the metadata.
    for i in 0..3 {
        let props = riak(&c, i, Method::GET, "/buckets/multi/props", &[], None).await;
        let props: serde_json::Value = serde_json::from_str(&props.body).expect("json");
        assert_eq!(props["props"]["allow_mult"], true, "node {i}");
    }
    // Writing back the vclock of the siblings resolves them.
    let vclock = multi.vclock.expect("vclock");
    let resolved = riak(
        &c,
        0,
        Method::PUT,
        "/buckets/multi/keys/k?returnbody=true",
        &[("content-type", "text/plain"), ("x-riak-vclock", &vclock)],
        Some("both"),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::OK);
    assert_eq!(resolved.body, "both");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_knobs_503_and_n_val_take_effect_through_the_riak_surface() {
    let c = TestCluster::start(3).await;
    c.all_up().await;
    // n_val = 1: one replica holds the key, the others never get it.
    set_props(&c, "single", r#"{"n_val":1}"#).await;
    let got = riak(
        &c,
        0,
        Method::PUT,
        "/buckets/single/keys/k?w=1",
        &[("content-type", "text/plain")],
        Some("v"),
    )
    .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT, "{}", got.body);
    let owners = c.preflist("single", "k").await;
    assert_eq!(owners.len(), 1);
    for i in 0..3 {
        let held = c.get(i, "/admin/replica/single/k").await.status;
        let expected = if i == owners[0] {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(held, expected, "node {i}");
    }
    // r above n_val is the client's mistake: a 400 with Riak's plain text.
    let bad = riak(&c, 0, Method::GET, "/buckets/single/keys/k?r=2", &[], None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers["content-type"], "text/plain");
    // A props change that cannot hold is refused, not applied.
    let refused = riak(
        &c,
        0,
        Method::PUT,
        "/buckets/single/props",
        &[("content-type", "application/json")],
        Some(r#"{"props":{"n_val":9}}"#),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    // pw = all with one primary cut off: 503, and the body says why.
    let primaries = c.preflist("b", "k").await;
    c.cut_off(primaries[2]);
    let path = "/buckets/b/keys/k?pw=all&timeout=1000";
    let coordinator = primaries[0];
    let unavailable = riak(
        &c,
        coordinator,
        Method::PUT,
        path,
        &[("content-type", "text/plain")],
        Some("v"),
    )
    .await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        unavailable.body.contains("replicas"),
        "{}",
        unavailable.body
    );
    let written = riak(
        &c,
        coordinator,
        Method::PUT,
        "/buckets/b/keys/k?w=2&returnbody=true",
        &[("content-type", "text/plain")],
        Some("v2"),
    )
    .await;
    assert!(
        matches!(
            written.status,
            StatusCode::OK | StatusCode::MULTIPLE_CHOICES
        ),
        "{}",
        written.body
    );
    c.heal();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_made_through_kv_show_through_buckets_and_back() {
    let c = TestCluster::start(3).await;
    // Two blind writes through /kv: siblings (carts default to siblings).
    assert_eq!(
        c.put(0, "/kv/carts/c", None, "milk").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.put(1, "/kv/carts/c", None, "eggs").await.status,
        StatusCode::NO_CONTENT
    );
    let got = riak(
        &c,
        2,
        Method::GET,
        "/types/default/buckets/carts/keys/c?r=all",
        &[MULTIPART],
        None,
    )
    .await;
    assert_eq!(got.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(values(&got), ["eggs", "milk"]);
    // The merge written through Riak with its vclock, with metadata: /kv sees one value.
    let vclock = got.vclock.expect("vclock");
    let merged = riak(
        &c,
        0,
        Method::PUT,
        "/buckets/carts/keys/c",
        &[
            ("content-type", "text/plain"),
            ("x-riak-vclock", &vclock),
            ("x-riak-meta-by", "riak"),
        ],
        Some("eggs,milk"),
    )
    .await;
    assert_eq!(merged.status, StatusCode::NO_CONTENT, "{}", merged.body);
    let native = c.get(1, "/kv/carts/c?r=all").await;
    assert_eq!(native.values(), ["eggs,milk"]);
    // And a /kv context written back through /kv after a Riak blind write merges both.
    riak(
        &c,
        2,
        Method::PUT,
        "/buckets/carts/keys/c",
        &[("content-type", "text/plain")],
        Some("ham"),
    )
    .await;
    let both = c.get(0, "/kv/carts/c?r=all").await;
    assert_eq!(both.values(), ["eggs,milk", "ham"]);
    let again = riak(
        &c,
        1,
        Method::GET,
        "/buckets/carts/keys/c?r=all",
        &[MULTIPART],
        None,
    )
    .await;
    assert_eq!(values(&again), ["eggs,milk", "ham"]);
    // The metadata stays with its value and comes back through Riak.
    assert!(
        again.body.contains("x-riak-meta-by: riak"),
        "{}",
        again.body
    );
    // A bad vclock is a 400, never ignored.
    let bad = riak(
        &c,
        0,
        Method::PUT,
        "/buckets/carts/keys/c",
        &[
            ("content-type", "text/plain"),
            ("x-riak-vclock", "bm90IGEgdG9rZW4="),
        ],
        Some("x"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_new_keys_and_listings() {
    let c = TestCluster::start(3).await;
    let created = riak(
        &c,
        0,
        Method::POST,
        "/buckets/l/keys?returnbody=true",
        &[("content-type", "text/plain")],
        Some("new"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let location = created.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with("/buckets/l/keys/"), "{location}");
    let etag = created.headers["etag"].to_str().expect("ascii").to_owned();
    // 304 for what the client has, 412 for a create over an existing key.
    let same = riak(
        &c,
        1,
        Method::GET,
        &location,
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    let exists = riak(
        &c,
        1,
        Method::PUT,
        &location,
        &[("if-none-match", "*"), ("content-type", "text/plain")],
        Some("x"),
    )
    .await;
    assert_eq!(exists.status, StatusCode::PRECONDITION_FAILED);
    let head = riak(&c, 2, Method::HEAD, &location, &[], None).await;
    assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(head.headers["etag"], etag.as_str());
    for k in ["a", "b", "gone"] {
        riak(
            &c,
            0,
            Method::PUT,
            &format!("/buckets/l/keys/{k}"),
            &[("content-type", "text/plain")],
            Some("v"),
        )
        .await;
    }
    assert_eq!(
        riak(&c, 0, Method::DELETE, "/buckets/l/keys/gone", &[], None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        riak(&c, 0, Method::DELETE, "/buckets/l/keys/never", &[], None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let new_key = location.rsplit('/').next().expect("key").to_owned();
    let mut expected = vec!["a".to_owned(), "b".to_owned(), new_key];
    expected.sort();
    let listed = riak(&c, 1, Method::GET, "/buckets/l/keys?keys=true", &[], None).await;
    let keys: serde_json::Value = serde_json::from_str(&listed.body).expect("json");
    let mut keys: Vec<String> = serde_json::from_value(keys["keys"].clone()).expect("keys");
    keys.sort();
    assert_eq!(keys, expected, "the deleted key is not listed");
    // Streamed: one JSON object per node's share, none empty, the same keys in all.
    let streamed = riak(&c, 2, Method::GET, "/buckets/l/keys?keys=stream", &[], None).await;
    let mut all = Vec::new();
    for chunk in streamed.body.split_inclusive('}') {
        let part: serde_json::Value = serde_json::from_str(chunk).expect("a json object");
        let keys = part["keys"].as_array().expect("keys").clone();
        assert!(!keys.is_empty());
        all.extend(
            keys.into_iter()
                .map(|k| k.as_str().unwrap_or("").to_owned()),
        );
    }
    all.sort();
    assert_eq!(all, expected);
    let buckets = riak(&c, 0, Method::GET, "/buckets?buckets=true", &[], None).await;
    assert!(buckets.body.contains("\"l\""), "{}", buckets.body);
    assert_eq!(
        riak(&c, 0, Method::GET, "/buckets/l/keys", &[], None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        riak(
            &c,
            0,
            Method::GET,
            "/types/maps/buckets/l/keys/a",
            &[],
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let stats = riak(&c, 0, Method::GET, "/stats", &[], None).await;
    let stats: serde_json::Value = serde_json::from_str(&stats.body).expect("json");
    assert!(stats["riak_kv_version"]
        .as_str()
        .is_some_and(|v| v >= "1.4"));
    assert_eq!(
        riak(&c, 0, Method::GET, "/ping", &[], None).await.body,
        "OK"
    );
    c.shutdown().await;
}

/// Read-modify-write through the Riak surface while a node is killed: every acknowledged
/// update is read back from the survivors, and listing still covers every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_midway_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(3).await;
    c.all_up().await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut acked: std::collections::BTreeMap<String, String> = Default::default();
    for round in 0..6 {
        if round == 3 {
            c.kill(2).await;
        }
        for k in &keys {
            let path = format!("/buckets/rmw/keys/{k}");
            let node = round % 2;
            let read = riak(&c, node, Method::GET, &path, &[MULTIPART], None).await;
            let mut headers = vec![("content-type", "text/plain")];
            let vclock = read.vclock.clone().unwrap_or_default();
            if !vclock.is_empty() {
                headers.push(("x-riak-vclock", &vclock));
            }
            let value = format!("{k}-{round}");
            let put = riak(
                &c,
                node,
                Method::PUT,
                &format!("{path}?w=2&timeout=2000"),
                &headers,
                Some(&value),
            )
            .await;
            if put.status == StatusCode::NO_CONTENT {
                acked.insert(k.clone(), value);
            } else {
                assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{}", put.body);
            }
        }
    }
    assert!(
        acked.len() == keys.len(),
        "every key was written at least once"
    );
    for (k, value) in &acked {
        let got = riak(
            &c,
            1,
            Method::GET,
            &format!("/buckets/rmw/keys/{k}?r=2"),
            &[MULTIPART],
            None,
        )
        .await;
        assert!(
            values(&got).contains(value),
            "{k}: {value} acknowledged, read {:?}",
            values(&got)
        );
    }
    let listed = c
        .eventually(Duration::from_secs(10), || async {
            let got = riak(&c, 0, Method::GET, "/buckets/rmw/keys?keys=true", &[], None).await;
            got.status == StatusCode::OK
                && keys.iter().all(|k| got.body.contains(&format!("\"{k}\"")))
        })
        .await;
    assert!(listed, "listing with a node down covers every key");
    c.shutdown().await;
}
