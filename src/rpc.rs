//! The messages nodes exchange over [`crate::net`], encoded with postcard, and [`call`], the one
//! typed way to send one: the transport carries opaque bytes; the coordinator sends requests
//! and the replica service answers them.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::causal::{Actor, VersionVector};
use crate::net::{Net, NetError};
use crate::replica::merkle::TreeId;

/// Why a call got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("peer {0} answered with something that does not decode")]
    Undecodable(String),
}

impl CallError {
    /// Silence, not a refusal: the request may still take effect there.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Net(NetError::Timeout(_)))
    }
}

/// Sends `request` to `peer` and decodes its answer, within `timeout`.
pub async fn call(
    net: &Net,
    peer: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    call_measured(net, peer, request, timeout)
        .await
        .map(|(response, _)| response)
}

/// [`call`], also returning the bytes it moved (request and answer).
pub async fn call_measured(
    net: &Net,
    peer: &str,
    request: &Request,
    timeout: Duration,
) -> Result<(Response, u64), CallError> {
    let body = Bytes::from(encode(request));
    let sent = body.len() as u64;
    let raw = net.call(peer, body, timeout).await?;
    let response = decode(&raw).ok_or_else(|| CallError::Undecodable(peer.to_owned()))?;
    Ok((response, sent + raw.len() as u64))
}

/// What a client write does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        content_type: String,
        /// The Riak surface's metadata (`Sibling::meta`); empty from `/kv`.
        meta: Vec<(String, String)>,
    },
    Delete,
}

/// A client write forwarded to a replica of the key, which coordinates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub bucket: String,
    pub key: String,
    /// The client's causal context, as (actor, counter) pairs.
    pub context: Vec<(String, u64)>,
    pub op: WriteOp,
    /// Drawn once per client request, so a hedged or retried write is applied once.
    pub write_id: u64,
    pub w: u8,
    pub pw: u8,
    pub timeout_ms: u64,
}

impl PutRequest {
    pub fn context(&self) -> VersionVector {
        self.context
            .iter()
            .map(|(a, n)| (Actor::new(a.clone()), *n))
            .collect()
    }
}

pub fn context_pairs(context: &VersionVector) -> Vec<(String, u64)> {
    context
        .iter()
        .map(|(a, n)| (a.as_str().to_owned(), n))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Put(PutRequest),
    /// Merge this encoded state into your copy of the key; the sender placed it under
    /// `ring_version` (a replica past that version refuses it: `coordinator::fence`).
    Sync {
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        ring_version: u64,
    },
    /// Send your copy of the key.
    Read {
        bucket: String,
        key: String,
    },
    /// A heartbeat for the failure detector, with the sender's wall-clock time.
    Ping {
        wall_ms: u64,
    },
    /// Keep this encoded state for `owner`, which could not take it (sloppy quorum).
    Hint {
        owner: String,
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// Delete the key if your state of it is exactly this tombstone state (reaping).
    Reap {
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// Anti-entropy: the group hashes of one hash tree.
    AeGroups {
        tree: TreeId,
    },
    /// Anti-entropy: the leaf hashes of these groups, `FANOUT` per group in the order asked.
    AeLeaves {
        tree: TreeId,
        groups: Vec<u32>,
    },
    /// Anti-entropy: the (storage key, state hash) pairs of these leaves: whole leaves, a
    /// prefix of those asked, stopping before `max_keys` would be passed (one leaf at least).
    AeDigests {
        tree: TreeId,
        leaves: Vec<u32>,
        max_keys: u32,
    },
    /// Anti-entropy: your encoded states of these keys (`None` where you hold nothing).
    AeFetch {
        keys: Vec<(String, String)>,
    },
    /// Partition handoff: merge these states (bucket, key, encoded state) into yours.
    Transfer {
        partition: u32,
        items: Vec<(String, String, Blob)>,
    },
    /// Cluster metadata (`meta::network`), as JSON.
    Meta(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A listing's share of a coverage plan: the live keys of `bucket` (with `None`, the
    /// buckets that have one) in these partitions.
    List {
        bucket: Option<String>,
        partitions: Vec<u32>,
    },
}

/// Why a replica could not do what was asked; mapped to an HTTP status by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The client's fault: retrying elsewhere will not help.
    TooManySiblings {
        count: usize,
        max: usize,
    },
    TooLarge {
        bytes: usize,
        max: usize,
    },
    /// Fewer than needed stored it in time; `pending` replicas had not answered, so the write
    /// may still land on them.
    Insufficient {
        needed: u8,
        acked: u8,
        pending: u8,
    },
    /// The replica's disk is full (ENOSPC).
    NoSpace(String),
    /// The replica cannot read its stored state of the key; it was dropped for repair.
    Corrupt(String),
    /// The node's clock is too far from its peers' to stamp `lww` writes.
    ClockSkew {
        offset_ms: i64,
    },
    /// The write was placed under an older ring than the replica has acted on; placed again
    /// under `ring_version`, it goes where it must.
    StaleRing {
        ring_version: u64,
    },
    /// Anything else that went wrong on the replica.
    Internal(String),
}

impl Failure {
    /// Whether another replica may do what this one could not (the request itself is fine).
    pub fn is_replica_fault(&self) -> bool {
        !matches!(
            self,
            Failure::TooManySiblings { .. } | Failure::TooLarge { .. }
        )
    }
}

/// The result of a coordinated write: the state after it, and how many replicas stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOutcome {
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    pub acked: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Put(Result<PutOutcome, Failure>),
    Synced(Result<(), Failure>),
    /// The replica's encoded state, or `None` if it holds nothing for the key.
    State(Result<Option<Blob>, Failure>),
    /// The answer to a ping, with the answerer's wall-clock time.
    Pong {
        wall_ms: u64,
    },
    Hashes(Vec<u64>),
    Digests(Vec<crate::replica::Digests>),
    States(Vec<Option<Blob>>),
    Meta(#[serde(with = "serde_bytes")] Vec<u8>),
    Names(Result<Vec<String>, Failure>),
}

/// Bytes that serialize as one length-prefixed run (not element by element, as `Vec<u8>`
/// otherwise does), where serde's field attributes cannot reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain data types into a Vec cannot fail.
    postcard::to_allocvec(message).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}
