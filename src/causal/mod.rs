//! Causality: what happens when writes race. Pure code, no I/O.
//!
//! - [`DvvSet`]: dotted version vector sets for `conflict = "siblings"` buckets. Concurrent
//!   writes become siblings; a write carrying the context of a read replaces exactly what that
//!   read returned (see `ARCHITECTURE.md` for the shopping-cart walk-through).
//! - [`LwwRegister`] and [`Hlc`]: last-write-wins for `conflict = "lww"` buckets, timestamped
//!   by a hybrid logical clock that never goes backwards.
//! - [`Sibling`]: a value with its metadata, or a tombstone; [`SiblingLimits`] caps them.
//! - [`token`]: the opaque `X-Causal-Context` token, authenticated by the cluster and bound
//!   to its key.
//! - [`KeyState`]: the versioned binary encoding of a key's state, for storage and the wire.
//!
//! Merge laws, relied on by read repair, hinted handoff and anti-entropy: `sync` and
//! `LwwRegister::merge` are commutative, associative and idempotent, so replicas that exchange
//! states in any order, any number of times, converge. The property tests in `tests/causal.rs`
//! check them.

mod codec;
mod dvvset;
mod error;
mod lww;
mod state;
pub mod token;
mod value;

pub use codec::MAX_NAME_LEN;
pub use dvvset::{Actor, DvvSet, VersionVector};
pub use error::{CausalError, DecodeError, TokenError};
pub use lww::{Hlc, LwwRegister, SystemClock, Timestamp, WallClock};
pub use state::KeyState;
pub use value::{Sibling, SiblingLimits};
