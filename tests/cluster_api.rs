//! The HTTP API of API.md against a real 3-node cluster: every endpoint and status code, the
//! DDIA shopping cart through different coordinators, and bad input of every kind.

mod support;

use reqwest::{Method, StatusCode};
use support::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddia_shopping_cart_through_different_coordinators() {
    let c = TestCluster::start(3).await;
    // w=all: the siblings each step names are those on its coordinator, which must already
    // hold the step before; with w=2 the third replica may still be applying it.
    let cart = "/kv/carts/ddia?return_body=true&w=all";
    // 1. Client 1 adds milk through n1.
    let a1 = c.put(0, cart, None, "milk").await;
    assert_eq!(a1.status, StatusCode::OK);
    assert_eq!(a1.values(), ["milk"]);
    // 2. Client 2 adds eggs through n2, without a context: a sibling.
    let a2 = c.put(1, cart, None, "eggs").await;
    assert_eq!(a2.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(a2.values(), ["eggs", "milk"]);
    // 3. Client 1 writes [milk, flour] with its context through n3: replaces milk only.
    let a3 = c.put(2, cart, a1.context.as_deref(), "milk,flour").await;
    assert_eq!(a3.values(), ["eggs", "milk,flour"]);
    // 4. Client 2 merges what it saw and adds ham, through n1.
    let a4 = c.put(0, cart, a2.context.as_deref(), "eggs,milk,ham").await;
    assert_eq!(a4.values(), ["eggs,milk,ham", "milk,flour"]);
    // 5. Client 1 merges and adds bacon, through n2.
    let a5 = c
        .put(1, cart, a3.context.as_deref(), "milk,flour,eggs,bacon")
        .await;
    assert_eq!(a5.values(), ["eggs,milk,ham", "milk,flour,eggs,bacon"]);
    // A read shows both siblings; writing their union with its context merges them.
    let read = c.get(2, "/kv/carts/ddia?r=all").await;
    assert_eq!(read.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(read.values(), a5.values());
    let merged = c
        .put(
            0,
            cart,
            read.context.as_deref(),
            "milk,flour,eggs,bacon,ham",
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK);
    assert_eq!(merged.values(), ["milk,flour,eggs,bacon,ham"]);
    for i in 0..3 {
        assert_eq!(
            c.get(i, "/kv/carts/ddia?r=all").await.values(),
            ["milk,flour,eggs,bacon,ham"]
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kv_status_code() {
    let c = TestCluster::start(3).await;
    // 404 for a key never written, without a context.
    let missing = c.get(0, "/kv/b/missing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "not_found");
    assert!(missing.context.is_none());
    // 204 for a plain PUT; 200 with the stored content type and a context for the GET.
    let put = c
        .request(0, Method::PUT, "/kv/b/k", None, Some(b"hello"))
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let got = c.get(1, "/kv/b/k").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "hello");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    let ctx = got.context.clone().expect("context");
    // 300 with the API.md JSON shape after a concurrent (context-less) write.
    c.put(2, "/kv/b/k", None, "world").await;
    let siblings = c.get(0, "/kv/b/k").await;
    assert_eq!(siblings.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(siblings.content_type.as_deref(), Some("application/json"));
    let first = &siblings.json()["siblings"][0];
    assert!(first["value"].is_string() && first["content_type"] == "text/plain");
    assert!(first["modified_ms"].as_u64().is_some());
    // A DELETE with the context of the 300 removes both; GET is 404 with a context.
    let del = c
        .request(
            1,
            Method::DELETE,
            "/kv/b/k",
            siblings.context.as_deref(),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let gone = c.get(2, "/kv/b/k?r=all").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        gone.context.is_some(),
        "a known tombstone still yields a context"
    );
    // An old context is still a valid token: the write it makes is concurrent with the delete.
    let revived = c
        .put(0, "/kv/b/k?return_body=true", Some(&ctx), "again")
        .await;
    assert_eq!(revived.values(), ["again"]);
    // Values that are not UTF-8 come back as value_base64 among siblings.
    c.request(0, Method::PUT, "/kv/b/bin", None, Some(&[0xff, 0xfe]))
        .await;
    c.request(1, Method::PUT, "/kv/b/bin", None, Some(&[0xfd]))
        .await;
    let bin = c.get(2, "/kv/b/bin").await;
    assert_eq!(bin.status, StatusCode::MULTIPLE_CHOICES);
    assert!(bin.json()["siblings"][0]["value_base64"].is_string());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_without_a_context_deletes_what_the_read_sees() {
    let c = TestCluster::start(3).await;
    // Two siblings, then a context-less DELETE through a third node: both are gone.
    c.put(0, "/kv/carts/alice", None, "apple").await;
    c.put(1, "/kv/carts/alice", None, "pear").await;
    assert_eq!(
        c.get(2, "/kv/carts/alice?r=all").await.status,
        StatusCode::MULTIPLE_CHOICES
    );
    let del = c
        .request(2, Method::DELETE, "/kv/carts/alice?r=all", None, None)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    for i in 0..3 {
        let got = c.get(i, "/kv/carts/alice?r=all").await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "through n{}", i + 1);
    }
    // A write after the delete, without its context, is not superseded by it.
    c.put(0, "/kv/carts/alice", None, "plum").await;
    assert_eq!(c.get(1, "/kv/carts/alice?r=all").await.values(), ["plum"]);
    // Nothing stored: still a 204, and the key stays missing.
    let nothing = c
        .request(1, Method::DELETE, "/kv/carts/nobody", None, None)
        .await;
    assert_eq!(nothing.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(0, "/kv/carts/nobody").await.status,
        StatusCode::NOT_FOUND
    );
    // lww buckets need no read: the delete is stamped after the value it replaces.
    c.put(0, "/kv/sessions/s9", None, "token").await;
    let del = c
        .request(1, Method::DELETE, "/kv/sessions/s9", None, None)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(2, "/kv/sessions/s9?r=all").await.status,
        StatusCode::NOT_FOUND
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_buckets_never_show_siblings() {
    let c = TestCluster::start(3).await;
    c.put(0, "/kv/sessions/s1", None, "first").await;
    let second = c
        .put(1, "/kv/sessions/s1?return_body=true", None, "second")
        .await;
    assert_eq!(second.status, StatusCode::OK);
    let got = c.get(2, "/kv/sessions/s1?r=all").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "second");
    let resp = c
        .client
        .get(c.url(2, "/kv/sessions/s1"))
        .send()
        .await
        .expect("get");
    let ts: u64 = resp
        .headers()
        .get("x-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Timestamp");
    assert!(ts > 1_600_000_000_000);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let c = TestCluster::start(3).await;
    let health = c.get(1, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "ok", "node_id": "n2", "pid": std::process::id()})
    );

    let ring = c.get(0, "/admin/ring").await.json();
    assert_eq!(ring["ring_size"], 64);
    assert_eq!(ring["partitions"].as_array().map(Vec::len), Some(64));
    assert!(ring["ownership_spread"].as_u64() <= Some(1));

    let pl = c.get(2, "/admin/preflist/carts/alice").await.json();
    let nodes: Vec<String> = serde_json::from_value(pl["nodes"].clone()).expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert!(pl["partition"].as_u64() < Some(64));
    // Every node computes the same preference list.
    assert_eq!(c.get(0, "/admin/preflist/carts/alice").await.json(), pl);

    c.put(0, "/kv/carts/alice?w=all", None, "milk").await;
    let replica = c.get(1, "/admin/replica/carts/alice").await;
    assert_eq!(replica.status, StatusCode::OK);
    let body = replica.json();
    assert_eq!(body["siblings"][0]["value"], "milk");
    assert_eq!(body["tombstone"], false);
    assert!(body["context"].is_string());
    assert_eq!(
        c.get(1, "/admin/replica/carts/nobody").await.status,
        StatusCode::NOT_FOUND
    );

    let status = c.get(0, "/admin/status").await.json();
    assert_eq!(status["node_id"], "n1");
    assert_eq!(status["peers"].as_array().map(Vec::len), Some(2));
    assert!(status["storage"]["keys"].as_u64() >= Some(1));
    c.shutdown().await;
}

/// method, path, context header, body, expected status, expected error word.
type BadCase<'a> = (
    Method,
    String,
    Option<&'a str>,
    Option<Vec<u8>>,
    StatusCode,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_json_error_and_the_node_keeps_serving() {
    let c = TestCluster::start(3).await;
    let long_key = "k".repeat(256);
    let huge_token = "A".repeat(10_000);
    let cases: Vec<BadCase> = vec![
        (
            Method::GET,
            "/kv/b/k?r=0".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_knob",
        ),
        (
            Method::GET,
            "/kv/b/k?r=4".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_knob",
        ),
        (
            Method::GET,
            "/kv/b/k?w=two".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_knob",
        ),
        (
            Method::GET,
            "/kv/b/k?colour=red".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_knob",
        ),
        (
            Method::GET,
            "/kv/b/k?timeout_ms=0".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_knob",
        ),
        (
            Method::PUT,
            "/kv/b/k?return_body=yes".into(),
            None,
            Some(b"v".to_vec()),
            StatusCode::BAD_REQUEST,
            "bad_knob",
        ),
        (
            Method::GET,
            format!("/kv/b/{long_key}"),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/kv/b/%FF%FE".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/kv/a%2Fb/k".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_bucket",
        ),
        (
            Method::GET,
            "/kv/b/%00".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::PUT,
            "/kv/b/k".into(),
            Some("garbage!"),
            Some(b"v".to_vec()),
            StatusCode::BAD_REQUEST,
            "bad_context",
        ),
        (
            Method::PUT,
            "/kv/b/k".into(),
            Some("AAAA"),
            Some(b"v".to_vec()),
            StatusCode::BAD_REQUEST,
            "bad_context",
        ),
        (
            Method::DELETE,
            "/kv/b/k".into(),
            Some(huge_token.as_str()),
            None,
            StatusCode::BAD_REQUEST,
            "bad_context",
        ),
        (
            Method::PUT,
            "/kv/b/k".into(),
            None,
            Some(vec![b'x'; 1024 * 1024 + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
        ),
        (
            Method::GET,
            "/nowhere".into(),
            None,
            None,
            StatusCode::NOT_FOUND,
            "no_such_endpoint",
        ),
        (
            Method::POST,
            "/kv/b/k".into(),
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, ctx, body, status, error) in cases {
        let a = c
            .request(0, method.clone(), &path, ctx, body.as_deref())
            .await;
        let shown: String = path.chars().take(40).collect();
        assert_eq!(a.status, status, "{method} {shown}: {}", a.text());
        assert_eq!(a.json()["error"], error, "{method} {shown}");
        assert!(a.json()["message"].is_string(), "{method} {shown}");
    }
    // A token of one key is refused on another.
    let a = c.put(0, "/kv/b/one?return_body=true", None, "v").await;
    let on_other = c.put(0, "/kv/b/two", a.context.as_deref(), "v").await;
    assert_eq!(on_other.status, StatusCode::BAD_REQUEST);
    assert_eq!(on_other.json()["error"], "bad_context");
    // The largest value is accepted.
    let max = vec![b'x'; 1024 * 1024];
    let big = c
        .request(1, Method::PUT, "/kv/b/big", None, Some(&max))
        .await;
    assert_eq!(big.status, StatusCode::NO_CONTENT);
    assert_eq!(c.get(2, "/kv/b/big").await.body.len(), max.len());
    // Garbage on the peer port: the connection is closed and the node keeps serving.
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 64][..],
        &[0, 0, 0, 9, 1, 2, 3][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(c.configs[0].peer_addr)
            .await
            .expect("connect");
        s.write_all(garbage).await.expect("write");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the node closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "closed, nothing answered");
    }
    assert_eq!(c.get(0, "/health").await.status, StatusCode::OK);
    let after = c.put(1, "/kv/b/after?w=all", None, "ok").await;
    assert_eq!(after.status, StatusCode::NO_CONTENT);
    c.shutdown().await;
}
