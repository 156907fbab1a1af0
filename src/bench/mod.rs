//! Built-in benchmarks (`quorumkv bench ...`): load generators that report measured figures.
//! Speed is measured here, never asserted in tests.

pub mod ceiling;
pub mod fill;
pub mod load;
pub mod storage;
