//! One outgoing connection to a peer: the handshake, a writer task that batches frames into
//! few syscalls, and a reader task that hands each response to the call waiting for its id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::frame::{self, Frame, Hello, Kind, PROTOCOL_VERSION};
use super::{Dialer, Identity, NetError};

/// Frames queued for a connection's writer before senders wait.
const WRITE_QUEUE: usize = 4096;

pub struct Conn {
    peer: String,
    tx: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    closed: AtomicBool,
    /// When the first request went out that nothing has come back after: a link that
    /// drops packets keeps its TCP connection open, and after it heals TCP's retransmission
    /// backoff can leave it silent for seconds more, so a silent connection is redialed.
    quiet_since: Mutex<Option<Instant>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Conn {
    /// Dials `addr`, exchanges hellos, and starts the reader and writer tasks. `expected`
    /// is the node that must answer (`None`: whoever listens there, for a join).
    pub(super) async fn connect(
        dialer: &dyn Dialer,
        addr: SocketAddr,
        expected: Option<&str>,
        me: &Identity,
    ) -> Result<Arc<Conn>, String> {
        let stream = dialer.dial(addr).await.map_err(|e| e.to_string())?;
        let (r, w) = tokio::io::split(stream);
        let mut reader = FramedRead::new(r, frame::codec());
        let mut writer = FramedWrite::new(w, frame::codec());
        let hello = Hello {
            node_id: me.node_id.clone(),
            cluster_hash: me.cluster_hash,
            protocol: PROTOCOL_VERSION,
        };
        writer
            .send(hello.frame().encode())
            .await
            .map_err(|e| e.to_string())?;
        let answer = match reader.next().await {
            Some(Ok(raw)) => Frame::decode(raw).and_then(|f| Hello::from_frame(&f)),
            Some(Err(e)) => return Err(e.to_string()),
            None => {
                return Err("the peer closed the connection during the handshake \
                            (different cluster settings? see its log)"
                    .into())
            }
        };
        let Some(answer) = answer else {
            return Err("the peer answered the handshake with garbage".into());
        };
        if let Some(expected) = expected.filter(|e| *e != answer.node_id) {
            return Err(format!(
                "expected node {expected} at {addr}, found {}",
                answer.node_id
            ));
        }
        let expected = answer.node_id.as_str();
        if me.cluster_hash != super::JOINING && answer.cluster_hash != me.cluster_hash {
            return Err(format!(
                "peer has different cluster settings (hash {:x}, ours {:x})",
                answer.cluster_hash, me.cluster_hash
            ));
        }
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let conn = Arc::new(Conn {
            peer: expected.to_owned(),
            tx,
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            quiet_since: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        let writer = tokio::spawn(write_frames(writer, rx)).abort_handle();
        let reader = tokio::spawn(conn.clone().read_responses(reader)).abort_handle();
        conn.tasks.lock().extend([writer, reader]);
        tracing::debug!(peer = expected, %addr, "connected to peer");
        Ok(conn)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Whether a request has waited longer than `after` with nothing at all coming back.
    pub fn is_silent(&self, after: Duration) -> bool {
        self.quiet_since.lock().is_some_and(|t| t.elapsed() > after)
    }

    /// Drops the connection: its calls fail as disconnected, its socket is closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.pending.lock().clear();
    }

    pub(super) async fn request(&self, id: u64, body: Bytes) -> Result<Bytes, NetError> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let frame = Frame {
            kind: Kind::Request,
            id,
            body,
        };
        // Removes the pending entry whether we return normally or are cancelled by a timeout.
        let _forget = Forget { conn: self, id };
        self.quiet_since.lock().get_or_insert_with(Instant::now);
        if self.tx.send(frame.encode()).await.is_err() {
            return Err(NetError::Disconnected(self.peer.clone()));
        }
        rx.await
            .map_err(|_| NetError::Disconnected(self.peer.clone()))
    }

    async fn read_responses<R: AsyncRead + Unpin>(
        self: Arc<Self>,
        mut reader: FramedRead<R, LengthDelimitedCodec>,
    ) {
        while let Some(Ok(raw)) = reader.next().await {
            *self.quiet_since.lock() = None;
            match Frame::decode(raw) {
                Some(f) if f.kind == Kind::Response => {
                    if let Some(waiter) = self.pending.lock().remove(&f.id) {
                        let _ = waiter.send(f.body);
                    }
                }
                _ => {
                    tracing::warn!(peer = %self.peer, "peer sent a malformed frame; disconnecting");
                    break;
                }
            }
        }
        self.closed.store(true, Ordering::Release);
        // Dropping the senders tells every waiting call that the connection is gone.
        self.pending.lock().clear();
        tracing::debug!(peer = %self.peer, "connection to peer closed");
    }
}

struct Forget<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.pending.lock().remove(&self.id);
    }
}

/// Writes queued frames, taking every frame already queued before flushing, so a busy
/// connection sends many frames per syscall.
pub(super) async fn write_frames<W: AsyncWrite + Unpin, T: Into<Bytes>>(
    mut writer: FramedWrite<W, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<T>,
) {
    while let Some(first) = rx.recv().await {
        if writer.feed(first.into()).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if writer.feed(more.into()).await.is_err() {
                return;
            }
        }
        // Let the tasks that are about to send run first, so that their frames share this
        // write: a busy node makes far fewer write syscalls for a few microseconds of delay.
        tokio::task::yield_now().await;
        while let Ok(more) = rx.try_recv() {
            if writer.feed(more.into()).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            return;
        }
    }
}
