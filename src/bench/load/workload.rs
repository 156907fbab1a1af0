//! What each client does next: the operation mix (YCSB A/B/C/W, or read-modify-write) and
//! which key it touches (uniform or scrambled zipfian).

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

/// The standard mixes, named as YCSB names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 50% reads, 50% blind updates.
    A,
    /// 95% reads, 5% blind updates.
    B,
    /// Reads only.
    C,
    /// Blind writes only.
    W,
    /// Read the key, then write it back with the context the read returned (no siblings pile up).
    Rmw,
}

impl Workload {
    /// Share of operations that are reads (for `rmw`, every operation is a read then a write).
    fn read_share(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::W => 0.0,
            Workload::Rmw => 0.0,
        }
    }

    /// Blind writes need a last-write-wins bucket; a read-modify-write carries contexts and so
    /// shows off the siblings bucket.
    pub fn default_bucket(self) -> &'static str {
        match self {
            Workload::Rmw => "siblings",
            _ => "sessions",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    Uniform,
    /// YCSB's scrambled zipfian: a few keys are hot, and the hot keys are spread over the ring.
    Zipfian,
}

/// One operation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read(u64),
    Update(u64),
    ReadModifyWrite(u64),
}

/// A client's own source of operations (each client has its own, so no lock is shared).
pub struct Generator {
    workload: Workload,
    keys: u64,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
}

impl Generator {
    pub fn new(
        workload: Workload,
        dist: KeyDist,
        keys: u64,
        zipf_exponent: f64,
        seed: u64,
    ) -> Result<Self, String> {
        if keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        let zipf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipfian => Some(
                Zipf::new(keys as f64, zipf_exponent)
                    .map_err(|e| format!("--zipf-exponent {zipf_exponent}: {e}"))?,
            ),
        };
        Ok(Generator {
            workload,
            keys,
            rng: SmallRng::seed_from_u64(seed),
            zipf,
        })
    }

    pub fn next_op(&mut self) -> Op {
        let key = self.next_key();
        if self.workload == Workload::Rmw {
            return Op::ReadModifyWrite(key);
        }
        if self.rng.random::<f64>() < self.workload.read_share() {
            Op::Read(key)
        } else {
            Op::Update(key)
        }
    }

    fn next_key(&mut self) -> u64 {
        match &self.zipf {
            None => self.rng.random_range(0..self.keys),
            Some(zipf) => {
                // Rank 1 is the hottest; hashing the rank scatters hot keys over partitions.
                let rank = zipf.sample(&mut self.rng) as u64;
                xxhash_rust::xxh3::xxh3_64(&rank.to_le_bytes()) % self.keys
            }
        }
    }
}

pub fn key_name(key: u64) -> String {
    format!("k{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(workload: Workload) -> usize {
        let mut g = Generator::new(workload, KeyDist::Uniform, 100, 0.99, 7).unwrap();
        (0..10_000)
            .filter(|_| matches!(g.next_op(), Op::Read(_)))
            .count()
    }

    #[test]
    fn mixes_follow_their_read_share() {
        assert!((4_500..5_500).contains(&reads(Workload::A)));
        assert!((9_300..9_700).contains(&reads(Workload::B)));
        assert_eq!(reads(Workload::C), 10_000);
        assert_eq!(reads(Workload::W), 0);
    }

    #[test]
    fn keys_stay_in_range_and_zipfian_has_hot_keys() {
        let mut g = Generator::new(Workload::C, KeyDist::Zipfian, 1_000, 0.99, 7).unwrap();
        let mut counts = vec![0u32; 1_000];
        for _ in 0..100_000 {
            let Op::Read(k) = g.next_op() else {
                panic!("workload C only reads")
            };
            counts[k as usize] += 1;
        }
        counts.sort_unstable();
        let hottest = counts[999];
        // Uniform would give every key about 100 hits; zipfian's hottest key gets thousands.
        assert!(hottest > 5_000, "hottest key had {hottest} hits");
    }

    #[test]
    fn zero_keys_is_refused() {
        assert!(Generator::new(Workload::A, KeyDist::Uniform, 0, 0.99, 1).is_err());
    }
}
