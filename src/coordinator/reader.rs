//! A client of one key's replicas, local or remote: read, push (merge) or reap a state there.
//! Anti-entropy, the reaper, read repair and the internode service reach replicas through it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::causal::KeyState;
use crate::net::Net;
use crate::replica::Replica;
use crate::rpc::{self, Failure, Request, Response};

/// One key's replicas, read or repaired: locally for this node, over the network otherwise.
/// Owns what it needs, so reads and repairs can run as tasks of their own.
pub(crate) struct Reader {
    me: String,
    net: Arc<Net>,
    replica: Arc<Replica>,
    bucket: String,
    key: String,
    /// The ring version the pushes are placed under.
    ring_version: u64,
}

impl Reader {
    pub(crate) fn new(
        me: String,
        net: Arc<Net>,
        replica: Arc<Replica>,
        (bucket, key): (&str, &str),
        ring_version: u64,
    ) -> Reader {
        Reader {
            me,
            net,
            replica,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            ring_version,
        }
    }

    pub(crate) async fn read(
        &self,
        node: &str,
        deadline: Instant,
    ) -> Result<Option<KeyState>, Failure> {
        if node == self.me {
            return self
                .replica
                .read(&self.bucket, &self.key)
                .map_err(Failure::from);
        }
        let request = Request::Read {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.ask(node, &request, timeout).await? {
            Response::State(Ok(Some(bytes))) => KeyState::decode(&bytes.0)
                .map(Some)
                .map_err(|e| Failure::Internal(e.to_string())),
            Response::State(Ok(None)) => Ok(None),
            Response::State(Err(f)) => Err(f),
            _ => Err(Failure::Internal(format!("unexpected answer from {node}"))),
        }
    }

    /// Asks the node to delete the key if its state is exactly `state` (tombstone reaping).
    pub(crate) async fn reap(
        &self,
        node: &str,
        state: &KeyState,
        timeout: Duration,
    ) -> Result<(), Failure> {
        if node == self.me {
            return match self.replica.reap(&self.bucket, &self.key, state).await? {
                true => Ok(()),
                false => Err(Failure::Internal("the key changed; not reaped".into())),
            };
        }
        let request = Request::Reap {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            state: state.encode(),
        };
        self.ask_synced(node, &request, timeout).await
    }

    /// Merges `state` into the node's copy of the key.
    pub(crate) async fn push(
        &self,
        node: &str,
        state: &KeyState,
        timeout: Duration,
    ) -> Result<(), Failure> {
        if node == self.me {
            self.replica.sync(&self.bucket, &self.key, state).await?;
            return Ok(());
        }
        let request = Request::Sync {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            state: state.encode(),
            ring_version: self.ring_version,
        };
        self.ask_synced(node, &request, timeout).await
    }

    async fn ask(
        &self,
        node: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        rpc::call(&self.net, node, request, timeout)
            .await
            .map_err(|e| Failure::Internal(e.to_string()))
    }

    /// Sends a request answered with `Synced`, and returns that answer.
    async fn ask_synced(
        &self,
        node: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<(), Failure> {
        match self.ask(node, request, timeout).await? {
            Response::Synced(result) => result,
            _ => Err(Failure::Internal(format!("unexpected answer from {node}"))),
        }
    }
}
