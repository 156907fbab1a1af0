//! quorumkv: a Dynamo-style leaderless key-value store.
//!
//! # Layout
//! Data flows one way, top to bottom; each module's doc says what it owns.
//! - [`storage`]: the local, durable Bitcask-style log of one node.

pub mod storage;
