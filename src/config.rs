//! The node's TOML configuration (API.md, "Config file"): parsed, validated with errors that
//! name the field, and resolved into per-bucket properties.
//!
//! Unknown keys are rejected, so a typo never silently falls back to a default. Every node of
//! a cluster must share `[cluster]`, `[defaults]` and `[buckets.*]`; [`Config::cluster_hash`]
//! fingerprints exactly those, and nodes compare it when they connect.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::{self, MergeTrigger, SyncPolicy};

/// Longest node id: it becomes part of every version vector entry.
pub const MAX_NODE_ID_LEN: usize = 64;
/// Most replicas a bucket may ask for.
pub const MAX_N: u8 = 16;
/// Most request-serving threads a node may be given.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Worker threads for each of `processes` processes sharing this machine: its cores split
/// between them, at least one each. More threads than cores only add context switches.
pub fn share_of_cores(processes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / processes.max(1)).max(1)
}

/// A configuration mistake, phrased for the operator and naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: String,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Threads that serve requests; one per core when absent. Nodes that share a machine
    /// (`quorumkv dev`) do better splitting its cores than each taking all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub defaults: BucketDefaults,
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketOverride>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub anti_entropy: AntiEntropyConfig,
    #[serde(default)]
    pub handoff: HandoffConfig,
    #[serde(default, skip_serializing_if = "SecurityConfig::is_default")]
    pub security: SecurityConfig,
    #[serde(default)]
    pub http: HttpConfig,
}

/// The client listener's limits (timeouts are fixed: `api::server`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Client connections at once; past it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// PEM certificate chain and private key: with both, the client API speaks only TLS
    /// (`quorumkv cert` makes a self-signed pair).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 768,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// For a node that joins, the cluster's own ring size is used.
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
    /// The first members of a cluster (v1). After the first start the cluster's metadata
    /// says who is a member; this list is then only where to find it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// For a node that joins a running cluster instead: peer addresses of any members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<SocketAddr>,
    /// How far apart nodes' wall clocks may be: a timestamp further ahead is not adopted, and
    /// a node off by more from most of its peers refuses to coordinate `lww` writes.
    #[serde(default = "default_max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
}

/// CockroachDB's default `--max-offset` is 500 ms; NTP keeps healthy hosts within a few.
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;

fn default_ring_size() -> u32 {
    64
}

fn default_max_clock_offset_ms() -> u64 {
    DEFAULT_MAX_CLOCK_OFFSET_MS
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: String,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

/// How many replicas must answer: a number, or one of the named levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    One,
    Quorum,
    All,
    N(u8),
}

impl Quorum {
    /// Parses `one`, `quorum`, `all` or a number; the number's range is checked by `resolve`.
    pub fn parse(s: &str) -> Option<Quorum> {
        match s {
            "one" => Some(Quorum::One),
            "quorum" => Some(Quorum::Quorum),
            "all" => Some(Quorum::All),
            _ => s.parse::<u8>().ok().map(Quorum::N),
        }
    }

    /// The number of replicas this means out of `n`, if it is within 1..=n.
    pub fn resolve(self, n: u8) -> Option<u8> {
        let k = match self {
            Quorum::One => 1,
            Quorum::Quorum => n / 2 + 1,
            Quorum::All => n,
            Quorum::N(k) => k,
        };
        (1..=n).contains(&k).then_some(k)
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::N(k) => write!(f, "{k}"),
        }
    }
}

/// Written as it is read: a number, or the level's name.
impl Serialize for Quorum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Quorum::N(k) => s.serialize_u8(*k),
            named => s.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let bad =
            || serde::de::Error::custom("expected a number or one of \"one\", \"quorum\", \"all\"");
        match Raw::deserialize(d)? {
            Raw::Number(k) => u8::try_from(k).map(Quorum::N).map_err(|_| bad()),
            Raw::Text(s) => Quorum::parse(&s).ok_or_else(bad),
        }
    }
}

/// How a bucket settles concurrent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    Siblings,
    Lww,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BucketDefaults {
    pub n: u8,
    pub r: Quorum,
    pub w: Quorum,
    pub conflict: Conflict,
}

impl Default for BucketDefaults {
    fn default() -> Self {
        BucketDefaults {
            n: 3,
            r: Quorum::Quorum,
            w: Quorum::Quorum,
            conflict: Conflict::Siblings,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BucketOverride {
    pub n: Option<u8>,
    pub r: Option<Quorum>,
    pub w: Option<Quorum>,
    pub conflict: Option<Conflict>,
}

/// A bucket's effective settings, with `r` and `w` resolved to numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketProps {
    pub n: u8,
    pub r: u8,
    pub w: u8,
    /// How many of the answers must come from primaries unless a request says (0: none).
    pub pr: u8,
    pub pw: u8,
    pub conflict: Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncSetting {
    Always,
    Interval,
    None,
}

/// A longer wait than this would hold acknowledgements back more than it saves.
const MAX_GROUP_COMMIT_DELAY_US: u64 = 100_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub sync: SyncSetting,
    /// With `sync = "interval"`: how often to fsync.
    pub sync_interval_ms: u64,
    /// With `sync = "always"`: how long to gather concurrent writes into one fsync, in µs
    /// (only when several writers wait; a lone writer is synced at once).
    pub group_commit_delay_us: u64,
    pub max_value_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync: SyncSetting::Always,
            sync_interval_ms: 1000,
            group_commit_delay_us: 1000,
            max_value_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiEntropyConfig {
    /// Switching it off leaves healing to read repair and hinted handoff (for tests, mostly).
    pub enabled: bool,
    pub interval_ms: u64,
    /// How long a delete's tombstone is kept, at least, before it may be reaped (once every
    /// replica holds it). Longer than any outage a hint must outlive.
    pub tombstone_grace_ms: u64,
    /// Repairs: bytes per second of states fetched and pushed, at most. The default keeps a
    /// catch-up's cost to clients within noise on a 2-core machine (1M keys: 7,014 keys/s);
    /// 1 MiB/s cost them 11%, 8 MiB/s 41%.
    pub repair_bytes_per_sec: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            enabled: true,
            interval_ms: 10_000,
            tombstone_grace_ms: 3_600_000,
            repair_bytes_per_sec: 512 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    pub interval_ms: u64,
    /// Partition handoff during membership changes: bytes per second this node streams.
    pub transfer_bytes_per_sec: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            interval_ms: 1000,
            transfer_bytes_per_sec: 32 * 1024 * 1024,
        }
    }
}

/// Who may talk to the node. Without a cluster secret, node links are plain TCP and causal
/// contexts are authenticated only against damage: fine on loopback, refused elsewhere unless
/// `insecure = true` says, in so many words, that the network is trusted.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The cluster secret's file (`quorumkv secret` makes one); every node holds the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Client tokens (hashed) and their grants (`quorumkv token` makes entries); without it
    /// every client may do everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl SecurityConfig {
    fn is_default(&self) -> bool {
        *self == SecurityConfig::default()
    }
}

/// Bucket and key names: 1–255 bytes of URL-path-safe UTF-8 (API.md).
pub const MAX_NAME_BYTES: usize = 255;

/// Why a bucket or key name is refused, or `None` if it is fine.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("must be at most 255 bytes")
    } else if name.chars().any(|c| c.is_control() || c == '/') {
        Some("must not contain '/' or control characters")
    } else {
        None
    }
}

impl Config {
    /// The configs of a local cluster with default settings and, as in API.md's example, a
    /// `sessions` bucket in LWW mode: one per member, data under `data_root/<id>` (what
    /// `quorumkv dev` and the tests run).
    pub fn local_cluster(members: Vec<Member>, data_root: &Path) -> Vec<Config> {
        let n = BucketDefaults::default().n.min(members.len() as u8);
        members
            .iter()
            .map(|m| Config {
                node_id: m.id.clone(),
                http_addr: m.http_addr,
                peer_addr: m.peer_addr,
                data_dir: data_root.join(&m.id),
                worker_threads: None,
                cluster: ClusterConfig {
                    ring_size: 64,
                    members: members.clone(),
                    join: Vec::new(),
                    max_clock_offset_ms: DEFAULT_MAX_CLOCK_OFFSET_MS,
                },
                defaults: BucketDefaults {
                    n,
                    ..BucketDefaults::default()
                },
                buckets: BTreeMap::from([(
                    "sessions".to_owned(),
                    BucketOverride {
                        conflict: Some(Conflict::Lww),
                        ..BucketOverride::default()
                    },
                )]),
                storage: StorageConfig::default(),
                anti_entropy: AntiEntropyConfig::default(),
                handoff: HandoffConfig::default(),
                security: SecurityConfig::default(),
                http: HttpConfig::default(),
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses TOML text; does not validate (flags may still override fields).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| invalid(e.message().to_owned() + &location(&e, text)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_node_id("node_id", &self.node_id)?;
        if let Some(t) = self.worker_threads {
            if t == 0 || t > MAX_WORKER_THREADS {
                return Err(invalid(format!(
                    "worker_threads must be between 1 and {MAX_WORKER_THREADS} (got {t})"
                )));
            }
        }
        let c = &self.cluster;
        if !c.ring_size.is_power_of_two() {
            return Err(invalid(format!(
                "ring_size must be a power of two (got {})",
                c.ring_size
            )));
        }
        if c.members.is_empty() && c.join.is_empty() {
            return Err(invalid(
                "cluster.members must list at least one node (or cluster.join name members to join)",
            ));
        }
        if !c.members.is_empty() && !c.join.is_empty() {
            return Err(invalid(
                "cluster.members and cluster.join exclude each other: a first member lists members, a joining node lists join",
            ));
        }
        if (c.ring_size as usize) < c.members.len() {
            return Err(invalid(
                "ring_size must be at least the number of cluster.members",
            ));
        }
        for (i, m) in c.members.iter().enumerate() {
            check_node_id("cluster.members.id", &m.id)?;
            if c.members[..i].iter().any(|o| o.id == m.id) {
                return Err(invalid(format!(
                    "cluster.members: id {:?} appears twice",
                    m.id
                )));
            }
            if c.members[..i].iter().any(|o| o.peer_addr == m.peer_addr) {
                return Err(invalid(format!(
                    "cluster.members: peer_addr {} appears twice",
                    m.peer_addr
                )));
            }
        }
        if c.join.is_empty() && !c.members.iter().any(|m| m.id == self.node_id) {
            return Err(invalid(format!(
                "node_id {:?} is not among cluster.members",
                self.node_id
            )));
        }
        self.check_bucket("defaults", &BucketOverride::default())?;
        for (name, o) in &self.buckets {
            if let Some(problem) = name_problem(name) {
                return Err(invalid(format!("buckets: name {name:?} {problem}")));
            }
            self.check_bucket(&format!("buckets.{name}"), o)?;
        }
        if self.storage.max_value_bytes == 0
            || self.storage.max_value_bytes > storage::FORMAT_MAX_VALUE_LEN / 2
        {
            return Err(invalid(format!(
                "storage.max_value_bytes must be between 1 and {}",
                storage::FORMAT_MAX_VALUE_LEN / 2
            )));
        }
        if self.storage.group_commit_delay_us > MAX_GROUP_COMMIT_DELAY_US {
            return Err(invalid(format!(
                "storage.group_commit_delay_us must be at most {MAX_GROUP_COMMIT_DELAY_US}"
            )));
        }
        if self.storage.sync == SyncSetting::Interval && self.storage.sync_interval_ms == 0 {
            return Err(invalid("storage.sync_interval_ms must be positive"));
        }
        if self.anti_entropy.interval_ms == 0 {
            return Err(invalid("anti_entropy.interval_ms must be positive"));
        }
        if self.anti_entropy.repair_bytes_per_sec == 0 {
            return Err(invalid(
                "anti_entropy.repair_bytes_per_sec must be positive",
            ));
        }
        if self.handoff.interval_ms == 0 {
            return Err(invalid("handoff.interval_ms must be positive"));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections must be positive"));
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return Err(invalid(
                "http.tls_cert_file and http.tls_key_file go together: set both or neither",
            ));
        }
        let exposed = [self.http_addr, self.peer_addr]
            .iter()
            .any(|a| !a.ip().is_loopback());
        let unprotected = self.security.cluster_secret_file.is_none()
            || self.security.tokens_file.is_none()
            || self.http.tls_cert_file.is_none();
        if exposed && unprotected && !self.security.insecure {
            return Err(invalid(
                "a node listening beyond loopback needs security.cluster_secret_file, \
                 security.tokens_file and http.tls_cert_file/tls_key_file (`quorumkv secret`, \
                 `quorumkv token`, `quorumkv cert`), or security.insecure = true to run \
                 without them on a network you trust",
            ));
        }
        Ok(())
    }

    fn check_bucket(&self, section: &str, o: &BucketOverride) -> Result<(), ConfigError> {
        let n = o.n.unwrap_or(self.defaults.n);
        // A node that joins takes the cluster's bucket settings; only the bounds apply.
        let members = match self.cluster.members.len() {
            0 => usize::from(MAX_N),
            m => m,
        };
        if n == 0 || n > MAX_N || usize::from(n) > members {
            return Err(invalid(format!(
                "{section}.n must be between 1 and the number of members ({members}, at most {MAX_N})"
            )));
        }
        let d = &self.defaults;
        for (knob, q) in [("r", o.r.unwrap_or(d.r)), ("w", o.w.unwrap_or(d.w))] {
            if q.resolve(n).is_none() {
                return Err(invalid(format!(
                    "{section}.{knob} must be between 1 and n ({n}), got {q}"
                )));
            }
        }
        Ok(())
    }

    /// The settings of a bucket by the config alone (a running node uses the metadata's,
    /// which the API can change).
    pub fn bucket(&self, name: &str) -> BucketProps {
        crate::meta::buckets::Settings::layered(&self.defaults, self.buckets.get(name), None)
            .resolve()
    }

    /// A fingerprint of the settings every node of the cluster must share.
    pub fn cluster_hash(&self) -> u64 {
        let shared = (&self.cluster, &self.defaults, &self.buckets);
        let canonical = serde_json::to_vec(&shared).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&canonical)
    }

    /// The share of dead bytes at which this node merges: from 0.40 to 0.60, drawn from its
    /// id. Replicas hold the same data and see the same overwrites, so with one threshold they
    /// would all merge at the same moment and the cluster's latency would dip at once.
    fn merge_dead_ratio(&self) -> f64 {
        0.40 + 0.20 * self.merge_spread()
    }

    /// How long after a merge is due this node starts it: 0 to 30 s, drawn from its id. The
    /// ratio alone does not stagger an overwrite-only load (see `MergeTrigger::delay`).
    fn merge_delay(&self) -> Duration {
        Duration::from_secs_f64(30.0 * self.merge_spread())
    }

    /// This node's own point in [0, 1), from its id.
    fn merge_spread(&self) -> f64 {
        (xxhash_rust::xxh3::xxh3_64(self.node_id.as_bytes()) % 1000) as f64 / 1000.0
    }

    pub fn storage_options(&self) -> storage::Options {
        storage::Options {
            sync: match self.storage.sync {
                SyncSetting::Always => SyncPolicy::Always,
                SyncSetting::Interval => {
                    SyncPolicy::Interval(Duration::from_millis(self.storage.sync_interval_ms))
                }
                SyncSetting::None => SyncPolicy::None,
            },
            // A stored state carries the value plus its version metadata.
            max_value_bytes: self.storage.max_value_bytes * 2,
            merge_trigger: Some(MergeTrigger {
                dead_ratio: self.merge_dead_ratio(),
                delay: self.merge_delay(),
                min_dead_bytes: 64 * 1024 * 1024,
            }),
            group_commit_delay: Duration::from_micros(self.storage.group_commit_delay_us),
            ..storage::Options::default()
        }
    }
}

/// A node id: 1 to [`MAX_NODE_ID_LEN`] characters of A-Z, a-z, 0-9, '-' or '_'.
pub fn check_node_id(field: &str, id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} must be 1 to {MAX_NODE_ID_LEN} characters of A-Z, a-z, 0-9, '-' or '_' (got {id:?})"
        )))
    }
}

fn location(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/3-nodes/n1.toml");

    fn with(replace: &str, by: &str) -> Result<(), ConfigError> {
        let text = EXAMPLE.replacen(replace, by, 1);
        assert_ne!(text, EXAMPLE, "{replace} not in the example");
        Config::parse(&text)?.validate()
    }

    #[test]
    fn the_example_configs_are_valid() {
        for text in [
            EXAMPLE,
            include_str!("../config/3-nodes/n2.toml"),
            include_str!("../config/3-nodes/n3.toml"),
            include_str!("../config/5-nodes/n1.toml"),
            include_str!("../config/5-nodes/n5.toml"),
        ] {
            let c = Config::parse(text).expect("parses");
            c.validate().expect("valid");
            assert_eq!(c.bucket("sessions").conflict, Conflict::Lww);
            assert_eq!(c.bucket("carts").r, 2);
        }
    }

    #[test]
    fn nodes_of_one_cluster_share_a_hash_and_others_do_not() {
        let a = Config::parse(EXAMPLE).expect("parses");
        let b = Config::parse(include_str!("../config/3-nodes/n2.toml")).expect("parses");
        assert_eq!(a.cluster_hash(), b.cluster_hash());
        let c =
            Config::parse(&EXAMPLE.replace("ring_size = 64", "ring_size = 128")).expect("parses");
        assert_ne!(a.cluster_hash(), c.cluster_hash());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "ring_size = 64",
                "ring_size = 48",
                "ring_size must be a power of two",
            ),
            (
                "r = \"quorum\"",
                "r = 4",
                "defaults.r must be between 1 and n",
            ),
            (
                "w = \"quorum\"",
                "w = \"most\"",
                "expected a number or one of",
            ),
            (
                "n = 3",
                "n = 5",
                "defaults.n must be between 1 and the number of members",
            ),
            (
                "node_id   = \"n1\"",
                "node_id = \"n9\"",
                "node_id \"n9\" is not among",
            ),
            (
                "[storage]",
                "[storage]\ncompression = true",
                "unknown field `compression`",
            ),
            (
                "conflict = \"siblings\"",
                "conflict = \"merge\"",
                "unknown variant `merge`",
            ),
            (
                "[buckets.sessions]",
                "[buckets.sessions]\nr = 0",
                "buckets.sessions.r must be",
            ),
            (
                "node_id   = \"n1\"",
                "node_id = \"n1\"\nworker_threads = 0",
                "worker_threads must be between 1 and 1024 (got 0)",
            ),
        ];
        for (replace, by, expected) in cases {
            let err = with(replace, by).expect_err(by);
            assert!(err.0.contains(expected), "{by}: got {err}");
        }
    }

    #[test]
    fn nodes_merge_at_different_shares_of_dead_bytes() {
        let configs = Config::local_cluster(
            (1..=5)
                .map(|i| Member {
                    id: format!("n{i}"),
                    http_addr: format!("127.0.0.1:{i}").parse().expect("addr"),
                    peer_addr: format!("127.0.0.1:{}", 100 + i).parse().expect("addr"),
                })
                .collect(),
            Path::new("data"),
        );
        let ratios: Vec<f64> = configs
            .iter()
            .map(|c| {
                c.storage_options()
                    .merge_trigger
                    .expect("trigger")
                    .dead_ratio
            })
            .collect();
        assert!(
            ratios.iter().all(|r| (0.40..=0.60).contains(r)),
            "{ratios:?}"
        );
        let delays: Vec<Duration> = configs
            .iter()
            .filter_map(|c| c.storage_options().merge_trigger.map(|t| t.delay))
            .collect();
        assert!(delays.iter().all(|d| d.as_secs() < 30), "{delays:?}");
        let secs: std::collections::BTreeSet<u64> = delays.iter().map(Duration::as_secs).collect();
        assert!(
            secs.len() > 1,
            "all five nodes start a merge at once: {delays:?}"
        );
        let distinct: std::collections::BTreeSet<u64> =
            ratios.iter().map(|r| (r * 100.0).round() as u64).collect();
        assert!(
            distinct.len() > 1,
            "all five nodes merge at once: {ratios:?}"
        );
    }

    /// `dev` writes each node's config for its `serve` process to read.
    #[test]
    fn a_written_config_reads_back_the_same() {
        let mut configs = Config::local_cluster(
            vec![Member {
                id: "n1".into(),
                http_addr: "127.0.0.1:1".parse().expect("addr"),
                peer_addr: "127.0.0.1:2".parse().expect("addr"),
            }],
            Path::new("data"),
        );
        configs[0].worker_threads = Some(1);
        configs.push(Config::parse(EXAMPLE).expect("parses"));
        for config in configs {
            let text = toml::to_string(&config).expect("serialises");
            let back = Config::parse(&text).expect("parses what it wrote");
            back.validate().expect("valid");
            assert_eq!(toml::to_string(&back).expect("serialises"), text);
            assert_eq!(back.cluster_hash(), config.cluster_hash());
            for bucket in ["sessions", "carts", "other"] {
                assert_eq!(back.bucket(bucket), config.bucket(bucket), "{bucket}");
            }
        }
        assert!(toml::to_string(&Config::parse(EXAMPLE).expect("parses"))
            .expect("serialises")
            .contains("r = \"quorum\""));
    }

    #[test]
    fn quorum_levels_resolve_against_n() {
        assert_eq!(Quorum::Quorum.resolve(3), Some(2));
        assert_eq!(Quorum::Quorum.resolve(5), Some(3));
        assert_eq!(Quorum::All.resolve(5), Some(5));
        assert_eq!(Quorum::N(4).resolve(3), None);
        assert_eq!(Quorum::N(0).resolve(3), None);
        assert_eq!(Quorum::parse("2"), Some(Quorum::N(2)));
        assert_eq!(Quorum::parse("two"), None);
    }
}
