//! The client listener's limits: a huge `Content-Length` is refused before the body is read
//! (and `Expect: 100-continue` gets the refusal, not a go-ahead); slowloris and idle
//! connections are closed once the header timeout passes; over-long targets and headers get
//! JSON errors; past the connection cap a connection is told so and closed.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use quorumkv::api::server::HEADER_TIMEOUT;
use support::TestCluster;

/// Sends `head` (and nothing more) and returns what the node answers, read until it closes
/// or `wait` passes.
fn exchange(addr: std::net::SocketAddr, head: &str, wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn closed(s: &TcpStream) -> bool {
    let mut byte = [0; 1];
    s.set_nonblocking(true).expect("nonblocking");
    let mut reader = s;
    match reader.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_get_json_refusals_at_once() {
    let c = TestCluster::start(3).await;
    let addr = c.configs[0].http_addr;
    let (huge, oversized_expect, long_uri, big_headers) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let huge = exchange(
            addr,
            "PUT /kv/b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000000\r\n\r\nabc",
            Duration::from_secs(5),
        );
        let took = started.elapsed();
        let expect = exchange(
            addr,
            "PUT /kv/b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\nexpect: 100-continue\r\n\r\n",
            Duration::from_secs(5),
        );
        let long = exchange(
            addr,
            &format!("GET /kv/b/{} HTTP/1.1\r\nhost: x\r\n\r\n", "k".repeat(9000)),
            Duration::from_secs(5),
        );
        let headers = exchange(
            addr,
            &format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "v".repeat(40_000)),
            Duration::from_secs(5),
        );
        ((huge, took), expect, long, headers)
    })
    .await
    .expect("client thread");
    let (huge, took) = huge;
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("\"error\":\"value_too_large\""), "{huge}");
    assert!(took < Duration::from_secs(2), "413 after {took:?}");
    assert!(
        oversized_expect.starts_with("HTTP/1.1 413"),
        "{oversized_expect}"
    );
    assert!(
        !oversized_expect.contains("100 Continue"),
        "{oversized_expect}"
    );
    assert!(long_uri.starts_with("HTTP/1.1 414"), "{long_uri}");
    assert!(
        long_uri.contains("\"error\":\"uri_too_long\""),
        "{long_uri}"
    );
    assert!(big_headers.starts_with("HTTP/1.1 431"), "{big_headers}");
    assert!(
        big_headers.contains("\"error\":\"headers_too_large\""),
        "{big_headers}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let c = TestCluster::start_with(3, |config| config.http.max_connections = 100).await;
    let addr = c.configs[0].http_addr;
    let outcome = tokio::task::spawn_blocking(move || {
        // Slowloris: a header line started, never finished.
        let slow: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /health HTTP/1.1\r\nx-slow: ")
                    .expect("write");
                s
            })
            .collect();
        // Idle: one request answered, then nothing.
        let idle: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                    .expect("write");
                let mut buf = [0; 512];
                let _ = s.read(&mut buf).expect("answer");
                s
            })
            .collect();
        // 30 more, 10 past the cap of 100: those are told so and closed.
        let extra: Vec<TcpStream> = (0..30)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        let over: Vec<String> = extra
            .into_iter()
            .map(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
            })
            .collect();
        let opened = Instant::now();
        let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(3);
        loop {
            let open = slow
                .iter()
                .chain(idle.iter())
                .filter(|s| !closed(s))
                .count();
            if open == 0 {
                return (Some(opened.elapsed()), over);
            }
            if Instant::now() > deadline {
                return (None, over);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("client thread");
    let (all_closed, over) = outcome;
    let refused = over
        .iter()
        .filter(|a| a.contains("\"error\":\"too_many_connections\""))
        .count();
    eprintln!("slow and idle connections all closed after {all_closed:?}; {refused} of 30 over the cap refused");
    assert!(refused >= 10, "connections over the cap: {over:?}");
    assert!(
        all_closed.is_some(),
        "slow or idle connections outlived the header timeout ({HEADER_TIMEOUT:?})"
    );
    // The node still serves.
    assert_eq!(c.get(0, "/health").await.status, reqwest::StatusCode::OK);
    c.shutdown().await;
}
