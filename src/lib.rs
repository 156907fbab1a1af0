//! quorumkv: a Dynamo-style leaderless key-value store.
//!
//! # Layout
//! Data flows one way, top to bottom; each module's doc says what it owns.
//! - [`causal`]: dotted version vectors, last-write-wins clocks, context tokens (pure code).
//! - [`storage`]: the local, durable Bitcask-style log of one node.
//! - [`bench`]: built-in load generators behind `quorumkv bench`.

pub mod bench;
pub mod causal;
pub mod config;
pub mod ring;
pub mod storage;
