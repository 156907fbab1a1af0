//! Cluster metadata — members and their states, the ring with its version, bucket
//! properties — kept by consensus: the data plane is leaderless, the control plane is not.
//!
//! `state` is the metadata and its commands as plain data; `store` keeps openraft's log,
//! vote and snapshots in the data directory; `network` carries openraft's messages over the
//! authenticated internode transport; `raft` wires them into a running [`raft::Metadata`].

pub mod state;

pub use state::{ClusterMeta, Command, MemberInfo, MemberState, Refusal, Transition};
