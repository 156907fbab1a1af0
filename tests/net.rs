//! The internode transport on real sockets: multiplexed calls, deadlines, the handshake's
//! refusal of a peer with other cluster settings, reconnection, and injected faults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use quorumkv::net::{serve, Faults, Handler, Identity, Net, NetError, TcpDialer};
use tokio::net::TcpListener;

/// Echoes the request back, after sleeping as many milliseconds as its first byte says.
struct SlowEcho;

impl Handler for SlowEcho {
    fn handle(&self, _from: &str, request: Bytes) -> BoxFuture<'static, Bytes> {
        Box::pin(async move {
            let ms = request.first().copied().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
            request
        })
    }
}

fn identity(id: &str, hash: u64) -> Identity {
    Identity::new(id, hash, ["client".to_owned(), "server".to_owned()])
}

async fn server(hash: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    server_at("127.0.0.1:0".parse().expect("addr"), hash).await
}

/// The echo server on `addr` (a port just given up, to bring a server back).
async fn server_at(addr: SocketAddr, hash: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(serve(
        listener,
        identity("server", hash),
        Arc::new(SlowEcho),
        Arc::new(|_: &str| {}),
    ));
    (addr, task)
}

fn client(addr: SocketAddr, hash: u64) -> Net {
    Net::new(
        identity("client", hash),
        [("server".to_owned(), addr)],
        Arc::new(Faults::default()),
        Arc::new(TcpDialer::default()),
    )
}

#[tokio::test]
async fn calls_share_a_connection_and_answer_out_of_order() {
    let (addr, _server) = server(7).await;
    let net = Arc::new(client(addr, 7));
    let slow = {
        let net = net.clone();
        tokio::spawn(async move {
            net.call(
                "server",
                Bytes::from_static(&[200, 1]),
                Duration::from_secs(5),
            )
            .await
        })
    };
    // The fast call finishes while the slow one is still in flight on the same connection.
    let fast = net
        .call(
            "server",
            Bytes::from_static(&[0, 2]),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(fast, Ok(Bytes::from_static(&[0, 2])));
    assert!(!slow.is_finished());
    assert_eq!(slow.await.expect("join"), Ok(Bytes::from_static(&[200, 1])));
}

#[tokio::test]
async fn a_call_past_its_deadline_times_out_and_the_connection_stays_usable() {
    let (addr, _server) = server(7).await;
    let net = client(addr, 7);
    let late = net
        .call(
            "server",
            Bytes::from_static(&[250]),
            Duration::from_millis(20),
        )
        .await;
    assert_eq!(late, Err(NetError::Timeout("server".into())));
    let next = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert_eq!(next, Ok(Bytes::from_static(&[0])));
}

#[tokio::test]
async fn a_peer_with_other_cluster_settings_is_refused() {
    let (addr, _server) = server(7).await;
    let net = client(addr, 8);
    let refused = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(
        matches!(&refused, Err(NetError::Unreachable { reason, .. }) if reason.contains("handshake")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn calls_fail_fast_while_a_peer_is_down_and_succeed_once_it_is_back() {
    let (addr, server_task) = server(7).await;
    let net = client(addr, 7);
    let ok = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(ok.is_ok());
    server_task.abort();
    let _ = server_task.await;
    let down = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(down.is_err(), "{down:?}");
    // Back on the same port: the client redials (after its backoff) and calls succeed again.
    let _server = server_at(addr, 7).await;
    let r = answered_within(&net, Duration::from_secs(10), Duration::from_secs(1)).await;
    assert!(r.is_ok(), "never reconnected: {r:?}");
}

/// Calls (each within `each`) until one is answered or `within` has passed; the last result.
async fn answered_within(net: &Net, within: Duration, each: Duration) -> Result<Bytes, NetError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = net.call("server", Bytes::from_static(&[0]), each).await;
        if r.is_ok() || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_peer_that_says_hello_is_called_again_without_waiting_out_the_backoff() {
    let (addr, server_task) = server(7).await;
    let net = client(addr, 7);
    server_task.abort();
    let _ = server_task.await;
    let down = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    let failed_at = std::time::Instant::now();
    assert!(down.is_err(), "{down:?}");
    let _server = server_at(addr, 7).await;
    let backing_off = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    // The first backoff is 100 ms; only a machine stalled that long could see otherwise.
    if failed_at.elapsed() < Duration::from_millis(80) {
        assert!(
            matches!(&backing_off, Err(NetError::Unreachable { reason, .. }) if reason.contains("reconnecting")),
            "{backing_off:?}"
        );
    }
    // What the server side reports when the peer dials us: it is back.
    net.heard_from("server");
    let back = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(back.is_ok(), "{back:?}");
}

#[tokio::test]
async fn injected_faults_cut_and_delay_messages() {
    let (addr, _server) = server(7).await;
    let faults = Arc::new(Faults::default());
    let net = Net::new(
        identity("client", 7),
        [("server".to_owned(), addr)],
        faults.clone(),
        Arc::new(TcpDialer::default()),
    );
    faults.cut("server");
    let cut = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(matches!(cut, Err(NetError::Unreachable { .. })));
    faults.heal("server");
    faults.delay("server", Duration::from_millis(300));
    let delayed = net
        .call(
            "server",
            Bytes::from_static(&[0]),
            Duration::from_millis(100),
        )
        .await;
    assert_eq!(delayed, Err(NetError::Timeout("server".into())));
    faults.heal_all();
    let fine = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(fine.is_ok());
    assert_eq!(
        net.call("nobody", Bytes::new(), Duration::from_secs(1))
            .await,
        Err(NetError::UnknownPeer("nobody".into()))
    );
}

/// A TCP relay to `server` that can go silent: once `mute` is set, what the server sends on
/// connections opened so far is read and dropped, as a link dropping packets would (the
/// connection stays open). Returns its address and how many connections it has accepted.
async fn muting_relay(
    server: SocketAddr,
    mute: Arc<std::sync::atomic::AtomicBool>,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            // Connections accepted after the mute are not muted: the link has healed for them.
            let muted_from_start = mute.load(Ordering::SeqCst);
            let mute = mute.clone();
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(server).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut uw).await });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = ur.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let dropped = !muted_from_start && mute.load(Ordering::SeqCst);
                    if !dropped && cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_that_goes_silent_is_redialed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (server_addr, _server) = server(7).await;
    let mute = Arc::new(AtomicBool::new(false));
    let (relay, accepted) = muting_relay(server_addr, mute.clone()).await;
    let net = client(relay, 7);
    let first = net
        .call("server", Bytes::from_static(&[0]), Duration::from_secs(5))
        .await;
    assert!(first.is_ok(), "{first:?}");
    mute.store(true, Ordering::SeqCst);
    let lost = net
        .call(
            "server",
            Bytes::from_static(&[0]),
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(lost, Err(NetError::Timeout("server".into())));
    // The old connection will never answer again; only a fresh one can.
    let within = quorumkv::net::SILENT_AFTER * 4;
    let r = answered_within(&net, within, Duration::from_millis(500)).await;
    assert!(r.is_ok(), "a silent connection was never redialed: {r:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one redial");
}
