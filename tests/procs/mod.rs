//! Real `quorumkv serve` processes for fault tests: each node on a loopback address of its own
//! (127.0.S.1, 127.0.S.2, ...), so iptables can cut links between them; signals hang
//! (SIGSTOP) and crash (SIGKILL) them.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumkv");
pub const AE_INTERVAL: Duration = Duration::from_millis(1500);
const HTTP_PORT: u16 = 8100;
const PEER_PORT: u16 = 9100;

pub fn ip(subnet: u8, i: usize) -> String {
    format!("127.0.{subnet}.{}", i + 1)
}

/// iptables rules in a chain of this test's own, removed on drop.
pub struct Firewall {
    chain: String,
    subnet: u8,
    nodes: usize,
}

impl Firewall {
    /// A chain for the cluster on subnet `subnet`; `None` without root or iptables.
    pub fn new(subnet: u8, nodes: usize) -> Option<Firewall> {
        let chain = format!("qkv-test-{subnet}");
        let fw = Firewall {
            chain,
            subnet,
            nodes,
        };
        fw.clear_jump();
        let _ = ipt(&["-F", &fw.chain]);
        let _ = ipt(&["-X", &fw.chain]);
        if !ipt(&["-N", &fw.chain]) {
            return None;
        }
        let net = format!("127.0.{subnet}.0/24");
        ipt(&["-I", "INPUT", "-s", &net, "-d", &net, "-j", &fw.chain]).then_some(fw)
    }

    fn clear_jump(&self) {
        let net = format!("127.0.{}.0/24", self.subnet);
        while ipt(&["-D", "INPUT", "-s", &net, "-d", &net, "-j", &self.chain]) {}
    }

    /// Drops every packet from node `a` to node `b` (TCP then breaks both ways, as a real
    /// one-way loss does: the acknowledgements cannot come back).
    pub fn cut_one_way(&self, a: usize, b: usize) {
        let (s, d) = (ip(self.subnet, a), ip(self.subnet, b));
        assert!(ipt(&["-A", &self.chain, "-s", &s, "-d", &d, "-j", "DROP"]));
    }

    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    pub fn isolate(&self, a: usize) {
        for b in (0..self.nodes).filter(|&b| b != a) {
            self.cut(a, b);
        }
    }

    pub fn heal(&self) {
        assert!(ipt(&["-F", &self.chain]));
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.clear_jump();
        let _ = ipt(&["-F", &self.chain]);
        let _ = ipt(&["-X", &self.chain]);
    }
}

fn ipt(args: &[&str]) -> bool {
    Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Cluster {
    dir: tempfile::TempDir,
    subnet: u8,
    nodes: usize,
    children: Vec<Option<Child>>,
    stopped: Vec<bool>,
    /// More `[handoff]` settings for every node (a transfer rate, say).
    handoff: String,
}

impl Cluster {
    /// Starts `nodes` nodes on subnet `subnet`.
    pub fn start(subnet: u8, nodes: usize) -> Cluster {
        Cluster::start_with(subnet, nodes, "")
    }

    /// [`Cluster::start`], with `handoff` (TOML lines) added to every node's `[handoff]`.
    pub fn start_with(subnet: u8, nodes: usize, handoff: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // As a real deployment runs: node links encrypted under a cluster secret.
        let secret = quorumkv::secret::ClusterSecret::generate().expect("random");
        let secret_path = dir.path().join("cluster.secret");
        std::fs::write(&secret_path, secret.to_file_text()).expect("secret");
        let members: Vec<String> = (0..nodes)
            .map(|i| {
                format!(
                    "  {{ id = \"n{}\", peer_addr = \"{}:{PEER_PORT}\", http_addr = \"{}:{HTTP_PORT}\" }},",
                    i + 1,
                    ip(subnet, i),
                    ip(subnet, i)
                )
            })
            .collect();
        for i in 0..nodes {
            let text = format!(
                "node_id = \"n{n}\"\nhttp_addr = \"{a}:{HTTP_PORT}\"\npeer_addr = \"{a}:{PEER_PORT}\"\n\
                 data_dir = \"{d}\"\nworker_threads = 1\n\n[cluster]\nring_size = 64\nmembers = [\n{m}\n]\n\n\
                 [buckets.sessions]\nconflict = \"lww\"\n\n[anti_entropy]\ninterval_ms = {ae}\n\n\
                 [handoff]\ninterval_ms = 200\n{h}\n\n[security]\ncluster_secret_file = \"{s}\"\n",
                h = handoff,
                s = secret_path.display(),
                n = i + 1,
                a = ip(subnet, i),
                d = dir.path().join(format!("n{}", i + 1)).display(),
                m = members.join("\n"),
                ae = AE_INTERVAL.as_millis(),
            );
            std::fs::write(dir.path().join(format!("n{}.toml", i + 1)), text).expect("config");
        }
        let mut c = Cluster {
            dir,
            subnet,
            nodes,
            children: (0..nodes).map(|_| None).collect(),
            stopped: vec![false; nodes],
            handoff: handoff.to_owned(),
        };
        for i in 0..nodes {
            c.spawn(i);
        }
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .expect("log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.dir.path().join(format!("n{}.toml", i + 1)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        self.children[i] = Some(child);
    }

    /// Starts one more node, `[cluster] join`ing the cluster through the first nodes; returns
    /// its index.
    pub fn add_joiner(&mut self) -> usize {
        let i = self.prepare_joiner();
        self.spawn(i);
        i
    }

    /// Writes the config of one more node that joins through the first nodes, without
    /// starting it (`spawn` does); returns its index.
    pub fn prepare_joiner(&mut self) -> usize {
        let i = self.nodes;
        let join: Vec<String> = (0..i.min(3))
            .map(|j| format!("\"{}:{PEER_PORT}\"", ip(self.subnet, j)))
            .collect();
        let text = format!(
            "node_id = \"n{n}\"\nhttp_addr = \"{a}:{HTTP_PORT}\"\npeer_addr = \"{a}:{PEER_PORT}\"\n\
             data_dir = \"{d}\"\nworker_threads = 1\n\n[cluster]\njoin = [{j}]\n\n\
             [anti_entropy]\ninterval_ms = {ae}\n\n[handoff]\ninterval_ms = 200\n{h}\n\n\
             [security]\ncluster_secret_file = \"{s}\"\n",
            h = self.handoff,
            n = i + 1,
            a = ip(self.subnet, i),
            d = self.dir.path().join(format!("n{}", i + 1)).display(),
            j = join.join(", "),
            ae = AE_INTERVAL.as_millis(),
            s = self.secret_path().display(),
        );
        std::fs::write(self.config_path(i), text).expect("config");
        self.nodes += 1;
        self.children.push(None);
        self.stopped.push(false);
        i
    }

    /// Node `i`'s config file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.toml", i + 1))
    }

    /// The cluster secret every node was given.
    pub fn secret_path(&self) -> PathBuf {
        self.dir.path().join("cluster.secret")
    }

    /// Node `i`'s pid, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    pub fn peer_addr(&self, i: usize) -> std::net::SocketAddr {
        format!("{}:{PEER_PORT}", ip(self.subnet, i))
            .parse()
            .expect("peer address")
    }

    pub fn http_addr(&self, i: usize) -> std::net::SocketAddr {
        format!("{}:{HTTP_PORT}", ip(self.subnet, i))
            .parse()
            .expect("http address")
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.log", i + 1))
    }

    pub fn size(&self) -> usize {
        self.nodes
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}:{HTTP_PORT}{path}", ip(self.subnet, i))
    }

    pub fn signal(&mut self, i: usize, sig: &str) {
        if let Some(child) = &self.children[i] {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} n{}", i + 1);
            self.stopped[i] = sig == "-STOP";
        }
    }

    pub fn crash(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped[i] = false;
    }

    pub fn resume_all(&mut self) {
        for i in 0..self.nodes {
            if self.stopped[i] {
                self.signal(i, "-CONT");
            }
            if self.children[i].is_none() {
                self.spawn(i);
            }
        }
    }

    pub fn dump_logs(&self) {
        for i in 0..self.nodes {
            let text = std::fs::read_to_string(self.log(i)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            eprintln!("--- n{} log (last lines)", i + 1);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            if self.stopped[i] {
                self.signal(i, "-CONT");
            }
            self.crash(i);
        }
    }
}

/// The elements of a set stored as comma-separated text, as a read answered it: a 200's
/// value, or every sibling's of a 300.
pub fn set_elements(status: u16, body: &[u8]) -> std::collections::BTreeSet<String> {
    let values: Vec<String> = match status {
        200 => vec![String::from_utf8_lossy(body).into_owned()],
        300 => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["siblings"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s["value"].as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

pub async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether every node sees every other node up.
pub async fn all_up(http: &reqwest::Client, c: &Cluster) -> bool {
    for i in 0..c.nodes {
        let Ok(r) = http.get(c.url(i, "/admin/status")).send().await else {
            return false;
        };
        let Ok(bytes) = r.bytes().await else {
            return false;
        };
        let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        if peers.len() != c.nodes - 1 || peers.iter().any(|p| p["status"] != "up") {
            return false;
        }
    }
    true
}

/// A client, once every node sees every other node up (the logs are shown if they never do).
pub async fn started(c: &Cluster) -> reqwest::Client {
    let http = client();
    if !wait_until(Duration::from_secs(20), async || all_up(&http, c).await).await {
        c.dump_logs();
        panic!("the cluster did not come up");
    }
    http
}
