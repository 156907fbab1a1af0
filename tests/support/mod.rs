//! A real cluster inside the test process: nodes on 127.0.0.1 port-0 sockets, each with its
//! own data directory, with helpers to cut nodes off at the transport seam and restart them.
#![allow(dead_code)] // each test crate uses its own subset

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use quorumkv::causal::WallClock;
use quorumkv::config::{Config, Member};
use quorumkv::node::{Listeners, Node, Seams};
use reqwest::{Method, StatusCode};

pub struct TestCluster {
    pub configs: Vec<Config>,
    seams: Vec<Seams>,
    nodes: Vec<Option<Node>>,
    _dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub context: Option<String>,
    pub content_type: Option<String>,
    /// `X-Timestamp`, on answers from `lww` buckets.
    pub timestamp: Option<u64>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The values shown: the body of a 200, or each sibling's value of a 300, sorted.
    pub fn values(&self) -> Vec<String> {
        let mut values = match self.status {
            StatusCode::OK => vec![self.text()],
            StatusCode::MULTIPLE_CHOICES => self.json()["siblings"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|v| v["value"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        values.sort();
        values
    }
}

impl TestCluster {
    /// Starts `n` nodes with `quorumkv dev`'s settings (a `sessions` bucket in LWW mode).
    pub async fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, |_| {}).await
    }

    /// Starts `n` nodes, letting `tweak` adjust every node's config first.
    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> TestCluster {
        TestCluster::start_with_clocks(n, tweak, |_| None).await
    }

    /// [`TestCluster::start_with`], with node `i`'s wall clock replaced where `clock(i)` says.
    pub async fn start_with_clocks(
        n: usize,
        tweak: impl Fn(&mut Config),
        clock: impl Fn(usize) -> Option<Arc<dyn WallClock>>,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = Vec::new();
        let mut members = Vec::new();
        for i in 1..=n {
            let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
            let l = Listeners::bind(any, any).await.expect("bind");
            members.push(Member {
                id: format!("n{i}"),
                http_addr: l.http.local_addr().expect("addr"),
                peer_addr: l.peer.local_addr().expect("addr"),
            });
            listeners.push(l);
        }
        let mut configs = Config::local_cluster(members, dir.path());
        configs.iter_mut().for_each(&tweak);
        let mut nodes = Vec::new();
        let mut all_seams = Vec::new();
        for (i, (config, l)) in configs.iter().zip(listeners).enumerate() {
            let mut seams = Seams::system();
            if let Some(clock) = clock(i) {
                seams.clock = clock;
            }
            all_seams.push(seams.clone());
            nodes.push(Some(
                Node::start_with(config.clone(), l, seams)
                    .await
                    .expect("start node"),
            ));
        }
        TestCluster {
            configs,
            seams: all_seams,
            nodes,
            _dir: dir,
            client: reqwest::Client::new(),
        }
    }

    pub fn size(&self) -> usize {
        self.configs.len()
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.configs[i].http_addr, path)
    }

    /// Cuts node `i` off from every other node, both directions, at the transport seam.
    pub fn cut_off(&self, i: usize) {
        let me = &self.configs[i].node_id;
        for (j, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if j == i {
                for c in &self.configs {
                    node.faults().cut(&c.node_id);
                }
            } else {
                node.faults().cut(me);
            }
        }
    }

    pub fn heal(&self) {
        for node in self.nodes.iter().flatten() {
            node.faults().heal_all();
        }
    }

    /// Kills node `i` (as a crash) and leaves it down.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.crash().await;
        }
    }

    /// Stops node `i` cleanly (or as a crash) and starts it again on the same ports and data.
    pub async fn restart(&mut self, i: usize, crash: bool) {
        let node = self.nodes[i].take().expect("node is running");
        if crash {
            node.crash().await;
        } else {
            node.shutdown().await;
        }
        self.start_again(i).await;
    }

    /// Crashes node `i`, deletes its data directory, and starts it again empty.
    pub async fn crash_and_wipe(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("node is running");
        node.crash().await;
        std::fs::remove_dir_all(&self.configs[i].data_dir).expect("wipe");
        self.start_again(i).await;
    }

    async fn start_again(&mut self, i: usize) {
        let c = self.configs[i].clone();
        let l = Listeners::bind(c.http_addr, c.peer_addr)
            .await
            .expect("rebind");
        // The same clock and fault rules as before: they belong to the machine, not the process.
        let node = Node::start_with(c, l, self.seams[i].clone()).await;
        self.nodes[i] = Some(node.expect("restart"));
    }

    pub async fn request(
        &self,
        i: usize,
        method: Method,
        path: &str,
        context: Option<&str>,
        body: Option<&[u8]>,
    ) -> Answer {
        let mut req = self.client.request(method, self.url(i, path));
        if let Some(ctx) = context {
            req = req.header("x-causal-context", ctx);
        }
        if let Some(body) = body {
            req = req.header("content-type", "text/plain").body(body.to_vec());
        }
        let resp = req.send().await.expect("request");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (context, content_type) = (header("x-causal-context"), header("content-type"));
        let timestamp = header("x-timestamp").and_then(|t| t.parse().ok());
        Answer {
            status: resp.status(),
            context,
            content_type,
            timestamp,
            body: resp.bytes().await.expect("body").to_vec(),
        }
    }

    pub async fn get(&self, i: usize, path: &str) -> Answer {
        self.request(i, Method::GET, path, None, None).await
    }

    pub async fn put(&self, i: usize, path: &str, context: Option<&str>, value: &str) -> Answer {
        self.request(i, Method::PUT, path, context, Some(value.as_bytes()))
            .await
    }

    /// Waits until `check` holds, up to `limit`; the condition, not a sleep, is what we wait for.
    pub async fn eventually<F, Fut>(&self, limit: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if check().await {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Node `i`'s `/admin/status`.
    pub async fn status(&self, i: usize) -> serde_json::Value {
        self.get(i, "/admin/status").await.json()
    }

    /// The key's primaries, as node indexes, in preference order.
    pub async fn preflist(&self, bucket: &str, key: &str) -> Vec<usize> {
        let list = self
            .get(0, &format!("/admin/preflist/{bucket}/{key}"))
            .await
            .json();
        let ids: Vec<String> = serde_json::from_value(list["nodes"].clone()).expect("nodes");
        ids.iter().map(|id| self.index(id)).collect()
    }

    /// The index of the node with id `id`.
    pub fn index(&self, id: &str) -> usize {
        self.configs
            .iter()
            .position(|c| c.node_id == id)
            .expect("a member")
    }

    /// Waits until every node sees every other node up.
    pub async fn all_up(&self) {
        let ok = self
            .eventually(Duration::from_secs(10), || async {
                for i in 0..self.size() {
                    if self.nodes[i].is_none() {
                        continue;
                    }
                    let status = self.status(i).await;
                    let peers = status["peers"].as_array().cloned().unwrap_or_default();
                    if peers.iter().any(|p| p["status"] != "up") {
                        return false;
                    }
                }
                true
            })
            .await;
        assert!(ok, "peers did not all come up");
    }

    /// Makes node `i` hang as seen from every node (SIGSTOP-like: connections stay open,
    /// nothing answers for `for_`), including its own calls out.
    pub fn hang(&self, i: usize, for_: Duration) {
        let me = &self.configs[i].node_id;
        for (j, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if j == i {
                for c in &self.configs {
                    node.faults().delay(&c.node_id, for_);
                }
            } else {
                node.faults().delay(me, for_);
            }
        }
    }

    pub async fn shutdown(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown().await;
        }
    }
}
