//! Client tokens: every endpoint answers 401 without a valid token and 403 without the grant,
//! as the grant table says (a matrix over endpoints x tokens).

mod support;

use quorumkv::api::auth::new_token;
use reqwest::{Method, StatusCode};
use support::TestCluster;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Allowed,
    Unauthenticated,
    Forbidden,
}
use Expect::{Allowed, Forbidden, Unauthenticated};

/// A tokens file in `dir` granting each holder its grants; the tokens by holder name, then
/// "none" (no token) and "bogus" (one the file does not hold).
fn tokens_file(
    dir: &std::path::Path,
    holders: &[(&'static str, &str)],
) -> (std::path::PathBuf, Vec<(&'static str, Option<String>)>) {
    let mut file = String::new();
    let mut tokens = Vec::new();
    for (name, grants) in holders {
        let (token, hash) = new_token().expect("token");
        file.push_str(&format!(
            "[[token]]\nname = \"{name}\"\nblake3 = \"{hash}\"\ngrants = {grants}\n\n"
        ));
        tokens.push((*name, Some(token)));
    }
    tokens.push(("none", None));
    tokens.push(("bogus", Some("qkv_not_a_token".to_owned())));
    let path = dir.join("tokens.toml");
    std::fs::write(&path, file).expect("tokens file");
    (path, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_grant_table_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let holders = [
        ("reader", r#"{ carts = ["read"] }"#),
        ("writer", r#"{ carts = ["read", "write"] }"#),
        ("ops", r#"{ "*" = ["admin"] }"#),
        ("elsewhere", r#"{ sessions = ["read", "write", "admin"] }"#),
    ];
    let (path, tokens) = tokens_file(dir.path(), &holders);
    let c = TestCluster::start_with(3, |config| {
        config.security.tokens_file = Some(path.clone());
    })
    .await;

    let endpoints = [
        (Method::GET, "/kv/carts/k"),
        (Method::PUT, "/kv/carts/k"),
        (Method::DELETE, "/kv/carts/k"),
        (Method::GET, "/admin/replica/carts/k"),
        (Method::GET, "/admin/status"),
        (Method::GET, "/metrics"),
        (Method::GET, "/health"),
    ];
    // Rows: the tokens above, in order; columns: the endpoints.
    let table = [
        (
            "reader",
            [
                Allowed, Forbidden, Forbidden, Forbidden, Forbidden, Forbidden, Allowed,
            ],
        ),
        (
            "writer",
            [
                Allowed, Allowed, Allowed, Forbidden, Forbidden, Forbidden, Allowed,
            ],
        ),
        (
            "ops",
            [
                Forbidden, Forbidden, Forbidden, Allowed, Allowed, Allowed, Allowed,
            ],
        ),
        (
            "elsewhere",
            [
                Forbidden, Forbidden, Forbidden, Forbidden, Forbidden, Forbidden, Allowed,
            ],
        ),
        (
            "none",
            [
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Allowed,
            ],
        ),
        (
            "bogus",
            [
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Allowed,
            ],
        ),
    ];
    let mut mismatches = Vec::new();
    for (name, row) in &table {
        let token = tokens
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, t)| t.clone());
        for ((method, path), expected) in endpoints.iter().zip(row) {
            let mut request = c.client.request(method.clone(), c.url(1, path));
            if let Some(t) = &token {
                request = request.bearer_auth(t);
            }
            if *method == Method::PUT {
                request = request.header("content-type", "text/plain").body("v");
            }
            let answer = request.send().await.expect("request");
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            let got = match status {
                StatusCode::UNAUTHORIZED => Unauthenticated,
                StatusCode::FORBIDDEN => Forbidden,
                _ => Allowed,
            };
            let word_ok = match got {
                Unauthenticated => body.contains("\"error\":\"unauthenticated\""),
                Forbidden => body.contains("\"error\":\"forbidden\""),
                Allowed => true,
            };
            if got != *expected || !word_ok {
                mismatches.push(format!("{name} {method} {path}: {status} {body}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    c.shutdown().await;
}

/// The Riak surface takes the same tokens, as HTTP basic auth (the password is the token),
/// with the same grants: objects need read/write on the bucket, property changes admin on it,
/// the bucket listing admin on `*`; `/ping` is open and `/stats` takes any valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_riak_surface_takes_basic_auth_against_the_same_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let holders = [
        ("reader", r#"{ carts = ["read"] }"#),
        ("writer", r#"{ carts = ["read", "write"] }"#),
        ("ops", r#"{ "*" = ["admin"] }"#),
    ];
    let (path, tokens) = tokens_file(dir.path(), &holders);
    let c = TestCluster::start_with(3, |config| {
        config.security.tokens_file = Some(path.clone());
    })
    .await;
    let endpoints = [
        (Method::GET, "/buckets/carts/keys/k"),
        (Method::PUT, "/types/default/buckets/carts/keys/k"),
        (Method::PUT, "/buckets/carts/props"),
        (Method::GET, "/buckets?buckets=true"),
        (Method::GET, "/stats"),
        (Method::GET, "/ping"),
    ];
    let table = [
        (
            "reader",
            [Allowed, Forbidden, Forbidden, Forbidden, Allowed, Allowed],
        ),
        (
            "writer",
            [Allowed, Allowed, Forbidden, Forbidden, Allowed, Allowed],
        ),
        (
            "ops",
            [Forbidden, Forbidden, Allowed, Allowed, Allowed, Allowed],
        ),
        (
            "none",
            [
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Allowed,
            ],
        ),
        (
            "bogus",
            [
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Unauthenticated,
                Allowed,
            ],
        ),
    ];
    let mut mismatches = Vec::new();
    for (name, row) in &table {
        let token = tokens
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, t)| t.clone());
        for ((method, path), expected) in endpoints.iter().zip(row) {
            let mut request = c.client.request(method.clone(), c.url(0, path));
            if let Some(t) = &token {
                request = request.basic_auth("riakuser", Some(t));
            }
            if *method == Method::PUT {
                let body = if path.ends_with("props") {
                    r#"{"props":{"allow_mult":true}}"#
                } else {
                    "v"
                };
                request = request
                    .header("content-type", "application/json")
                    .body(body);
            }
            let status = request.send().await.expect("request").status();
            let got = match status {
                StatusCode::UNAUTHORIZED => Unauthenticated,
                StatusCode::FORBIDDEN => Forbidden,
                _ => Allowed,
            };
            if got != *expected {
                mismatches.push(format!("{name} {method} {path}: {status}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    c.shutdown().await;
}
