//! The messages nodes exchange over [`crate::net`], encoded with postcard. The transport carries
//! them as opaque bytes; the coordinator sends them and the replica service answers them.

use serde::{Deserialize, Serialize};

use crate::causal::{Actor, VersionVector};

/// What a client write does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        content_type: String,
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
    /// Merge this encoded state into your copy of the key.
    Sync {
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
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
    /// Anti-entropy: the group hashes of a partition's tree.
    AeGroups {
        partition: u32,
    },
    /// Anti-entropy: the leaf hashes of one group.
    AeLeaves {
        partition: u32,
        group: u32,
    },
    /// Anti-entropy: the (storage key, state hash) pairs of one leaf.
    AeDigests {
        partition: u32,
        leaf: u32,
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
    Digests(Vec<(Vec<u8>, u64)>),
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
