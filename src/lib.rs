//! quorumkv: a Dynamo-style leaderless key-value store.
//!
//! # Layout
//! Data flows one way, top to bottom; each module's doc says what it owns.
//! - [`api`]: the HTTP API (axum): parsing, validation, JSON errors.
//! - [`coordinator`]: get/put/delete across a key's replicas, quorum counting, read repair,
//!   sloppy quorum and hinted handoff.
//! - [`anti_entropy`]: background Merkle-tree exchanges between replicas.
//! - [`replica`]: one node's copy of a key: read-merge-write under a per-key lock.
//! - [`cluster`]: which peers are up (heartbeats, phi accrual detector).
//! - [`net`]: the internode transport; [`rpc`]: the messages it carries.
//! - [`ring`]: (bucket, key) → partition → preference list.
//! - [`causal`]: dotted version vectors, last-write-wins clocks, context tokens (pure code).
//! - [`storage`]: the local, durable Bitcask-style log of one node.
//! - [`config`], [`node`], [`cli`]: the TOML file, wiring a node together, the command line.
//! - [`bench`]: built-in load generators behind `quorumkv bench`.
//!
//! `api` → `coordinator` → (`replica` | `net` → a peer's `replica`) → `storage`.

pub mod anti_entropy;
pub mod api;
pub mod bench;
pub mod causal;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod meta;
pub mod net;
pub mod node;
pub mod parallel;
pub mod replica;
pub mod ring;
pub mod rpc;
pub mod secret;
pub mod storage;
