//! The peer port against strangers, on the real binary (each node a `quorumkv serve` process
//! whose links are encrypted under a cluster secret): floods before authentication cost the
//! node a bounded amount of memory (RSS measured), handshakes that never finish are closed
//! within the handshake deadline, and a wrong secret is refused with a log line that does not
//! give the secret away.

mod procs;

use std::io::{Read, Write};

use bytes::{BufMut, BytesMut};
use quorumkv::net::frame::{Frame, Hello, Kind, PROTOCOL_VERSION};
use quorumkv::net::Dialer;
use quorumkv::rpc::{self, Request};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

use procs::{started, wait_until, Cluster};
use quorumkv::net::{Faults, Identity, Net, NoiseDialer, TcpDialer};
use quorumkv::secret::ClusterSecret;

const NODES: usize = 3;
/// What the floods below may add to the node's resident memory.
const RSS_BOUND_MIB: u64 = 32;

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Whether the node has closed this connection (a read sees the end or a reset).
fn is_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0; 1];
    match (&*s).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the node sent bytes to a connection that never authenticated"),
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_peer_port_cost_little_and_learn_nothing() {
    let c = Cluster::start(76, NODES);
    let http = started(&c).await;
    let pid = c.pid(0).expect("n1 runs");
    let target = c.peer_addr(0);

    // A member's config with the wrong secret: refused, and the log says so without it.
    let secret_text = std::fs::read_to_string(c.secret_path()).expect("secret");
    let wrong = ClusterSecret::generate().expect("random");
    let net = Net::new(
        Identity::new("n2", 1, ["n1", "n2", "n3"].map(String::from)),
        [("n1".to_owned(), target)],
        Arc::new(Faults::default()),
        Arc::new(NoiseDialer::new(
            Arc::new(TcpDialer::default()),
            wrong.link_key(),
        )),
    );
    let refused = net
        .call(
            "n1",
            bytes::Bytes::from_static(b"x"),
            Duration::from_secs(3),
        )
        .await;
    assert!(refused.is_err());
    let logged = wait_until(Duration::from_secs(10), async || {
        std::fs::read_to_string(c.log(0))
            .unwrap_or_default()
            .contains("does not hold this cluster's secret")
    })
    .await;
    let log = std::fs::read_to_string(c.log(0)).unwrap_or_default();
    assert!(logged, "no refusal logged");
    assert!(
        !log.contains(secret_text.trim()),
        "the log shows the secret"
    );
    assert!(!log.contains(wrong.to_file_text().trim()));

    let before = rss_mib(pid);

    // 20 connections that announce a huge frame and push 48 MiB each, unauthenticated.
    let pushers: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(target) else {
                    return 0u64;
                };
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let chunk = vec![0xff; 64 * 1024];
                let mut sent = 0u64;
                while sent < 48 << 20 {
                    match s.write(&chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sent += n as u64,
                    }
                }
                sent
            })
        })
        .collect();
    let mut peak = before;
    while pushers.iter().any(|p| !p.is_finished()) {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushed: u64 = pushers.into_iter().map(|p| p.join().unwrap_or(0)).sum();
    eprintln!(
        "pre-auth flood: {} MiB offered over 20 connections; node RSS {before} -> peak {peak} MiB",
        pushed >> 20
    );
    assert!(
        peak <= before + RSS_BOUND_MIB,
        "RSS grew from {before} to {peak} MiB"
    );

    // 300 connections that never say anything: beyond the cap they are closed at once, the
    // rest when the handshake deadline passes.
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(target).ok())
        .collect();
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = idle.iter().filter(|s| is_closed(s)).count();
    // Members keep working meanwhile over the connections they hold.
    let put = http
        .put(c.url(1, "/kv/carts/during-flood?w=all"))
        .header("content-type", "text/plain")
        .body("fine")
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    let all_closed = wait_until(Duration::from_secs(8), async || idle.iter().all(is_closed)).await;
    eprintln!(
        "{} silent connections: {early} closed within 1 s, all closed within {:?}",
        idle.len(),
        opened.elapsed()
    );
    assert!(early >= idle.len() - 64, "only {early} closed at once");
    assert!(
        all_closed,
        "silent connections outlived the handshake deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_its_answers_pins_a_bounded_amount_of_memory() {
    let c = Cluster::start(77, NODES);
    let http = started(&c).await;
    let value = "v".repeat(512 * 1024);
    let put = http
        .put(c.url(0, "/kv/carts/big?w=all"))
        .header("content-type", "text/plain")
        .body(value)
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    let pid = c.pid(0).expect("n1 runs");
    let before = rss_mib(pid);
    let secret = ClusterSecret::load(&c.secret_path()).expect("secret");
    let config = quorumkv::config::Config::load(&c.config_path(0)).expect("config");
    let dialer = NoiseDialer::new(Arc::new(TcpDialer::default()), secret.link_key());
    let mut stream = dialer.dial(c.peer_addr(0)).await.expect("handshake");
    let frame = |f: Frame| {
        let body = f.encode();
        let mut out = BytesMut::with_capacity(4 + body.len());
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        out
    };
    let hello = Hello {
        node_id: "n2".into(),
        cluster_hash: config.cluster_hash(),
        protocol: PROTOCOL_VERSION,
    };
    let mut pipeline = frame(hello.frame());
    let read = rpc::encode(&Request::Read {
        bucket: "carts".into(),
        key: "big".into(),
    });
    for id in 1..=4000u64 {
        pipeline.extend_from_slice(&frame(Frame {
            kind: Kind::Request,
            id,
            body: read.clone().into(),
        }));
    }
    // The node stops reading once its in-flight bound is reached, so this write may never
    // finish: that is the back-pressure under test.
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.write_all(&pipeline)).await;
    let mut peak = before;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "4,000 pipelined reads of a 512 KiB value, answers never read: node RSS {before} -> peak {peak} MiB"
    );
    // 64 answers of 512 KiB, their encryption and socket buffers.
    assert!(peak <= before + 96, "RSS grew from {before} to {peak} MiB");
    // The node is fine meanwhile.
    let got = http
        .get(c.url(1, "/kv/carts/big"))
        .send()
        .await
        .expect("get");
    assert!(got.status().is_success());
    drop(stream);
}
