//! The [`Dialer`] and [`Listener`] of encrypted node links: plain sockets wrapped in the Noise
//! handshake of [`super::noise`].
//!
//! The accept side bounds what a stranger costs: handshakes run on tasks of their own (one
//! slow stranger never holds up the accept loop), at most [`MAX_UNAUTHENTICATED`] at a time,
//! each within [`HANDSHAKE_TIMEOUT`], reading at most a few hundred bytes. Refusals are logged
//! without anything that would help guess the secret, and at most every few seconds.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::noise::{self, LinkKey};
use super::{Dialer, Listener, Stream};

/// How long a connection may take to prove it holds the cluster secret.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that have not finished the handshake, at most; more are closed at once.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// At most one refusal log line per this interval (a flood must not fill the disk).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Dials with `inner`, then runs the handshake as the initiator.
pub struct NoiseDialer {
    inner: Arc<dyn Dialer>,
    key: LinkKey,
}

impl NoiseDialer {
    pub fn new(inner: Arc<dyn Dialer>, key: LinkKey) -> NoiseDialer {
        NoiseDialer { inner, key }
    }
}

impl Dialer for NoiseDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        let (dial, key) = (self.inner.dial(addr), self.key);
        Box::pin(async move {
            let stream = dial.await?;
            let secure = noise::initiate(stream, &key).await?;
            Ok(Box::new(secure) as Box<dyn Stream>)
        })
    }
}

/// Accepts TCP connections and hands on only those that complete the handshake.
pub struct NoiseListener {
    ready: mpsc::Receiver<(Box<dyn Stream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl NoiseListener {
    pub fn new(listener: tokio::net::TcpListener, key: LinkKey) -> NoiseListener {
        let (tx, ready) = mpsc::channel(MAX_UNAUTHENTICATED);
        let accepting = tokio::spawn(accept_loop(listener, key, tx));
        NoiseListener { ready, accepting }
    }
}

impl Drop for NoiseListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for NoiseListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Stream>, SocketAddr)>> {
        Box::pin(async move {
            self.ready
                .recv()
                .await
                .ok_or_else(|| io::Error::other("the peer listener stopped"))
        })
    }
}

/// Rate-limited warnings: the first refusal is logged, then one summary per [`LOG_EVERY`].
struct Refusals {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn note(&mut self, addr: SocketAddr, why: &str) {
        let due = self.last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if due {
            tracing::warn!(%addr, reason = why, refused_since_last_line = self.unlogged,
                "refused a connection on the peer port");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    key: LinkKey,
    ready: mpsc::Sender<(Box<dyn Stream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    let refusals = Arc::new(parking_lot::Mutex::new(Refusals {
        last_logged: None,
        unlogged: 0,
    }));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.lock().note(
                addr,
                "too many connections are still in their handshake; closed at once",
            );
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (ready, refusals) = (ready.clone(), refusals.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, noise::respond(stream, &key)).await {
                Ok(Ok(secure)) => {
                    let _ = ready
                        .send((Box::new(secure) as Box<dyn Stream>, addr))
                        .await;
                }
                Ok(Err(e)) => refusals.lock().note(addr, &e.to_string()),
                Err(_) => refusals
                    .lock()
                    .note(addr, "did not complete the handshake in time"),
            }
        });
    }
}
