//! The internode transport: request/response over one persistent connection per peer.
//!
//! Knows nothing of what the messages mean: a call sends opaque bytes to a peer and returns
//! the opaque bytes it answered. Many calls share one connection, told apart by request ids,
//! so a node never waits behind another request's round trip (frames in [`frame`]).
//!
//! - Connections are dialed on first use, with `TCP_NODELAY` (Nagle's algorithm would hold
//!   small frames back for up to 40 ms), and redialed after failures with exponential backoff;
//!   while backing off, calls to the peer fail at once instead of waiting for a timeout. A
//!   peer that connects to us is evidently back, so its backoff ends there: a restarted node
//!   is called again as soon as its first heartbeat arrives, not when a backoff runs out.
//! - The handshake exchanges node ids and a hash of the cluster settings; a peer with other
//!   settings is refused with a log line saying so.
//! - Every call has a deadline. Frames are bounded in size; a peer that sends anything but
//!   well-formed frames is disconnected, and nothing worse happens. A connection on which
//!   nothing has come back for [`SILENT_AFTER`] while a call waited is dropped and redialed:
//!   a link that dropped packets recovers on a fresh connection, not at TCP's retransmission
//!   backoff.
//! - Sockets come from a [`Dialer`] and a [`Listener`], and [`Faults`] can cut or delay
//!   messages to chosen peers: the seams for fault-injection tests and, later, a deterministic
//!   network simulation.

mod conn;
mod faults;
pub mod frame;
mod noise;
mod secure;
mod server;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

pub use conn::Conn;
pub use faults::{Faults, Rule};
pub use secure::{NoiseDialer, NoiseListener};
pub use server::{serve, OnHello};

/// How long dialing plus the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest wait before redialing a peer that failed.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a connection may leave a request without any frame coming back before it is
/// redialed (heartbeats cross every connection ten times a second).
pub const SILENT_AFTER: Duration = Duration::from_secs(2);

/// A byte stream to a peer.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Opens connections to peers.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Stream>>>;
}

/// Accepts connections from peers.
pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Stream>, SocketAddr)>>;
}

impl Listener for tokio::net::TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Stream>, SocketAddr)>> {
        Box::pin(async move {
            let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as Box<dyn Stream>, addr))
        })
    }
}

/// Plain TCP with `TCP_NODELAY`, from a chosen source address if one is set.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpDialer {
    source: Option<std::net::IpAddr>,
}

impl TcpDialer {
    /// Dials from `ip` (the node's own peer address), so peers and firewalls see the
    /// connection come from the address the node is known by; any address if unspecified.
    pub fn from_ip(ip: std::net::IpAddr) -> TcpDialer {
        TcpDialer {
            source: (!ip.is_unspecified()).then_some(ip),
        }
    }
}

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        let source = self.source;
        Box::pin(async move {
            let stream = match source {
                Some(ip) if ip.is_ipv4() == addr.is_ipv4() => {
                    let socket = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await?
                }
                _ => tokio::net::TcpStream::connect(addr).await?,
            };
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Stream>)
        })
    }
}

/// Answers the requests peers send: the replica service.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: &str, request: Bytes) -> BoxFuture<'static, Bytes>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("peer {0} is not a cluster member")]
    UnknownPeer(String),
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error("peer {0} did not answer in time")]
    Timeout(String),
    #[error("connection to peer {0} was lost")]
    Disconnected(String),
}

/// Who this node is, as the handshake tells peers.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub cluster_hash: u64,
    /// Every member's id: a peer whose hello names anyone else is refused, unless it says
    /// it is joining ([`JOINING`] for its settings hash). Kept current as members change.
    pub members: Arc<parking_lot::RwLock<std::collections::BTreeSet<String>>>,
}

/// The settings hash a node sends before it has joined: it knows no cluster's settings yet.
pub const JOINING: u64 = 0;

impl Identity {
    pub fn new(
        node_id: impl Into<String>,
        cluster_hash: u64,
        members: impl IntoIterator<Item = String>,
    ) -> Identity {
        let identity = Identity {
            node_id: node_id.into(),
            cluster_hash,
            members: Arc::default(),
        };
        identity.set_members(members);
        identity
    }

    pub fn is_member(&self, id: &str) -> bool {
        self.members.read().contains(id)
    }

    pub fn set_members(&self, members: impl IntoIterator<Item = String>) {
        *self.members.write() = members.into_iter().collect();
    }
}

struct Peer {
    id: String,
    addr: SocketAddr,
    state: tokio::sync::Mutex<PeerState>,
}

#[derive(Default)]
struct PeerState {
    conn: Option<Arc<Conn>>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The client side: calls to peers.
pub struct Net {
    identity: Identity,
    /// Grows as members join (`add_peer`); a peer's address can change with a replace.
    peers: parking_lot::RwLock<HashMap<String, Arc<Peer>>>,
    faults: Arc<Faults>,
    dialer: Arc<dyn Dialer>,
    next_id: AtomicU64,
    /// Bytes of requests sent and of answers received by this node's calls.
    sent: AtomicU64,
    received: AtomicU64,
}

impl Net {
    pub fn new(
        identity: Identity,
        peers: impl IntoIterator<Item = (String, SocketAddr)>,
        faults: Arc<Faults>,
        dialer: Arc<dyn Dialer>,
    ) -> Net {
        let peers = peers
            .into_iter()
            .map(|(id, addr)| {
                let peer = Peer {
                    id: id.clone(),
                    addr,
                    state: tokio::sync::Mutex::new(PeerState::default()),
                };
                (id, Arc::new(peer))
            })
            .collect();
        Net {
            identity,
            peers: parking_lot::RwLock::new(peers),
            faults,
            dialer,
            next_id: AtomicU64::new(1),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// Bytes of requests sent and of answers received over internode calls since start.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Learns (or updates) where `id` listens; calls to it may go out from now on.
    pub fn add_peer(&self, id: &str, addr: SocketAddr) {
        if id == self.identity.node_id {
            return;
        }
        let mut peers = self.peers.write();
        if peers.get(id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let peer = Peer {
            id: id.to_owned(),
            addr,
            state: tokio::sync::Mutex::new(PeerState::default()),
        };
        peers.insert(id.to_owned(), Arc::new(peer));
    }

    fn peer(&self, id: &str) -> Option<Arc<Peer>> {
        self.peers.read().get(id).cloned()
    }

    /// Whether the peer's connection is currently up (for status pages).
    pub async fn connected(&self, peer: &str) -> bool {
        match self.peer(peer) {
            Some(p) => p
                .state
                .lock()
                .await
                .conn
                .as_ref()
                .is_some_and(|c| !c.is_closed()),
            None => false,
        }
    }

    /// Notes that `peer` just completed a handshake with our server: it is listening again,
    /// so the next call to it dials at once instead of waiting out a backoff.
    pub fn heard_from(&self, peer: &str) {
        let Some(p) = self.peer(peer) else {
            return;
        };
        // Only a pending backoff is cleared; a live connection is left alone. If the lock is
        // busy, a call is dialing right now and the hint is not needed.
        if let Ok(mut state) = p.state.try_lock() {
            state.retry_at = None;
        };
    }

    /// Sends `request` to `peer` and waits up to `timeout` for its answer.
    pub async fn call(
        &self,
        peer: &str,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        let rule = self.faults.rule(peer);
        if rule.cut {
            return Err(NetError::Unreachable {
                peer: peer.to_owned(),
                reason: "cut by fault injection".into(),
            });
        }
        let p = self
            .peer(peer)
            .ok_or_else(|| NetError::UnknownPeer(peer.to_owned()))?;
        let attempt = async {
            if let Some(delay) = rule.delay {
                tokio::time::sleep(delay).await;
            }
            let conn = self.connection(&p).await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.sent.fetch_add(request.len() as u64, Ordering::Relaxed);
            let answer = conn.request(id, request).await?;
            self.received
                .fetch_add(answer.len() as u64, Ordering::Relaxed);
            Ok(answer)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(NetError::Timeout(peer.to_owned())))
    }

    /// One request over a connection of its own to whoever listens at `addr` (a node that
    /// is joining knows only an address), answered within `timeout`.
    pub async fn call_addr(
        &self,
        addr: SocketAddr,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        let unreachable = |reason: String| NetError::Unreachable {
            peer: addr.to_string(),
            reason,
        };
        let attempt = async {
            let conn = Conn::connect(&*self.dialer, addr, None, &self.identity)
                .await
                .map_err(unreachable)?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            conn.request(id, request).await
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(NetError::Timeout(addr.to_string())))
    }

    async fn connection(&self, peer: &Peer) -> Result<Arc<Conn>, NetError> {
        let mut state = peer.state.lock().await;
        if let Some(conn) = state.conn.as_ref().filter(|c| !c.is_closed()) {
            if !conn.is_silent(SILENT_AFTER) {
                return Ok(conn.clone());
            }
            tracing::warn!(peer = %peer.id, "nothing came back on the connection to peer for {SILENT_AFTER:?}; redialing");
            conn.close();
            state.conn = None;
        }
        if let Some(at) = state.retry_at.filter(|at| Instant::now() < *at) {
            return Err(NetError::Unreachable {
                peer: peer.id.clone(),
                reason: format!(
                    "reconnecting after {} failures, next attempt in {} ms",
                    state.failures,
                    at.saturating_duration_since(Instant::now()).as_millis()
                ),
            });
        }
        let dialed = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Conn::connect(&*self.dialer, peer.addr, Some(&peer.id), &self.identity),
        )
        .await
        .unwrap_or_else(|_| Err("dial and handshake timed out".into()));
        match dialed {
            Ok(conn) => {
                if state.failures > 0 {
                    tracing::info!(peer = %peer.id, "reconnected to peer");
                }
                state.failures = 0;
                state.retry_at = None;
                state.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(reason) => {
                if state.failures == 0 {
                    tracing::warn!(peer = %peer.id, addr = %peer.addr, %reason, "cannot connect to peer");
                }
                state.failures = state.failures.saturating_add(1);
                let backoff = BACKOFF_MIN
                    .saturating_mul(1 << state.failures.min(16))
                    .min(BACKOFF_MAX);
                state.retry_at = Some(Instant::now() + backoff);
                state.conn = None;
                Err(NetError::Unreachable {
                    peer: peer.id.clone(),
                    reason,
                })
            }
        }
    }
}
