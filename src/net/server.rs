//! The accept side: peers connect, say hello, and send requests that the [`Handler`] answers
//! concurrently; answers go back on the same connection as they finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::conn::write_frames;
use super::frame::{self, Frame, Hello, Kind, PROTOCOL_VERSION};
use super::{Handler, Identity, Listener, Stream};

/// A connection must say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests of one connection being handled or answered and not yet written, at most. At the
/// bound the connection is not read further (back-pressure on the peer), so what a peer that
/// never reads its answers can pin is this many answers.
pub const MAX_IN_FLIGHT: usize = 64;

/// An answer waiting for the writer, holding its request's in-flight slot until it is written.
struct Answer {
    frame: Bytes,
    _slot: OwnedSemaphorePermit,
}

impl From<Answer> for Bytes {
    fn from(answer: Answer) -> Bytes {
        answer.frame
    }
}

/// Told the id of each peer that completes a handshake (the client side uses it to stop
/// backing off from a peer that is evidently back).
pub type OnHello = Arc<dyn Fn(&str) + Send + Sync>;

/// Accepts peer connections until the returned future is dropped (which also drops every
/// connection it accepted).
pub async fn serve<L: Listener>(
    mut listener: L,
    me: Identity,
    handler: Arc<dyn Handler>,
    on_hello: OnHello,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    connections.spawn(serve_connection(stream, addr, me.clone(), handler.clone(), on_hello.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    stream: Box<dyn Stream>,
    addr: SocketAddr,
    me: Identity,
    handler: Arc<dyn Handler>,
    on_hello: OnHello,
) {
    let (r, w) = tokio::io::split(stream);
    let mut reader = FramedRead::new(r, frame::codec());
    let mut writer = FramedWrite::new(w, frame::codec());
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(raw))) => Frame::decode(raw).and_then(|f| Hello::from_frame(&f)),
        _ => None,
    };
    let Some(hello) = hello else {
        tracing::warn!(%addr, "closing a connection on the peer port that did not start with a valid hello");
        return;
    };
    let joining = hello.cluster_hash == super::JOINING;
    if (!joining && !me.is_member(&hello.node_id)) || hello.node_id == me.node_id {
        tracing::warn!(%addr, peer = %hello.node_id, "refusing peer: it names itself as a node that is not a member of this cluster");
        return;
    }
    if hello.protocol != PROTOCOL_VERSION || (!joining && hello.cluster_hash != me.cluster_hash) {
        tracing::warn!(
            %addr,
            peer = %hello.node_id,
            their_hash = format!("{:x}", hello.cluster_hash),
            our_hash = format!("{:x}", me.cluster_hash),
            their_protocol = hello.protocol,
            "refusing peer: its cluster settings or protocol differ from ours"
        );
        return;
    }
    let ours = Hello {
        node_id: me.node_id.clone(),
        cluster_hash: me.cluster_hash,
        protocol: PROTOCOL_VERSION,
    };
    if writer.send(ours.frame().encode()).await.is_err() {
        return;
    }
    on_hello(&hello.node_id);
    let (tx, rx) = mpsc::channel::<Answer>(MAX_IN_FLIGHT);
    let mut tasks = JoinSet::new();
    tasks.spawn(write_frames(writer, rx));
    let from: Arc<str> = hello.node_id.into();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(Ok(raw)) = reader.next().await else {
            break;
        };
        let Some(request) = Frame::decode(raw).filter(|f| f.kind == Kind::Request) else {
            tracing::warn!(%addr, peer = %from, "peer sent a malformed frame; disconnecting");
            return;
        };
        let (tx, handler, from) = (tx.clone(), handler.clone(), from.clone());
        tasks.spawn(async move {
            let body = handler.handle(&from, request.body).await;
            let response = Frame {
                kind: Kind::Response,
                id: request.id,
                body,
            };
            let _ = tx
                .send(Answer {
                    frame: response.encode(),
                    _slot: slot,
                })
                .await;
        });
        // Reap finished request tasks so a long-lived connection does not accumulate them.
        while tasks.try_join_next().is_some() {}
    }
}
