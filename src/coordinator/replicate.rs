//! Write fan-out with a sloppy quorum: the coordinating replica sends the new state to each
//! other primary; when a primary is down or does not take it, the next live fallback node
//! (in the ring's walk order after the preference list) stores it as a hint for that primary.
//! A fallback's ack counts toward `w`, never toward `pw`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::quorum::By;
use crate::cluster::Liveness;
use crate::net::Net;
use crate::rpc::{self, Request, Response};

pub(super) struct Fanout {
    pub net: Arc<Net>,
    pub liveness: Arc<Liveness>,
    pub bucket: String,
    pub key: String,
    pub state: Vec<u8>,
    /// Nodes after the preference list, in order; each stands in for at most one primary.
    pub fallbacks: Vec<String>,
    pub next_fallback: AtomicUsize,
}

impl Fanout {
    /// Gets the state stored for `primary`: on the primary itself, or as a hint on a fallback.
    /// Returns who stored it, or `None` if nobody could before `deadline`.
    pub async fn replicate(self: Arc<Self>, primary: String, deadline: Instant) -> Option<By> {
        if !self.liveness.is_down(&primary) {
            let sync = Request::Sync {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                state: self.state.clone(),
            };
            if self.send(&primary, &sync, deadline).await {
                return Some(By::Primary);
            }
        }
        let hint = Request::Hint {
            owner: primary.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            state: self.state.clone(),
        };
        loop {
            let i = self.next_fallback.fetch_add(1, Ordering::Relaxed);
            let fallback = self.fallbacks.get(i)?;
            if self.liveness.is_down(fallback) {
                continue;
            }
            if self.send(fallback, &hint, deadline).await {
                tracing::debug!(%primary, %fallback, "write stored as a hint");
                return Some(By::Fallback);
            }
        }
    }

    async fn send(&self, node: &str, request: &Request, deadline: Instant) -> bool {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self
            .net
            .call(node, Bytes::from(rpc::encode(request)), timeout)
            .await
        {
            Ok(raw) => matches!(rpc::decode(&raw), Some(Response::Synced(Ok(())))),
            Err(e) => {
                tracing::debug!(peer = %node, error = %e, "replication failed");
                false
            }
        }
    }
}
