//! Cluster metadata — members and their states, the ring with its version, bucket
//! properties — kept by consensus: the data plane is leaderless, the control plane is not.
//!
//! `state` is the metadata (`buckets`: the bucket properties set over the API) and its commands as plain data; `store` keeps openraft's log,
//! vote and snapshots in the data directory; `network` carries openraft's messages over the
//! authenticated internode transport; `raft` wires them into a running [`raft::Metadata`].

pub mod buckets;
pub mod network;
pub mod raft;
pub mod state;
mod store;

pub use raft::{ask_to_join, Metadata, ProposeError};
pub use state::{ClusterMeta, Command, MemberInfo, MemberState, Refusal, Transition};
pub use store::Store;

use crate::ring::Ring;

/// The metadata in force on a node, with its rings built once for the request path.
#[derive(Debug, Clone)]
pub struct View {
    pub meta: ClusterMeta,
    pub ring: Ring,
    /// The ring a running transition moves to.
    pub next: Option<Ring>,
    /// Not yet from the log: a first member's config or a joiner's answer, used until the
    /// log's own arrives.
    pub provisional: bool,
}

impl View {
    pub fn new(meta: ClusterMeta, provisional: bool) -> View {
        View {
            ring: meta.ring(),
            next: meta.next_ring(),
            meta,
            provisional,
        }
    }
}
