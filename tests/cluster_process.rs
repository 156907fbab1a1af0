//! The built binary, as an operator runs it: `quorumkv serve` processes killed and restarted
//! on the same data directory, `quorumkv dev` and its node processes, and the exit status for a
//! bad config.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quorumkv");

/// A free port on 127.0.0.1 (released before the node binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_configs(dir: &Path, http: &[u16], peer: &[u16]) {
    let members: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "  {{ id = \"n{}\", peer_addr = \"127.0.0.1:{}\", http_addr = \"127.0.0.1:{}\" }},",
                i + 1,
                peer[i],
                http[i]
            )
        })
        .collect();
    for i in 0..3 {
        let text = format!(
            "node_id = \"n{n}\"\nhttp_addr = \"127.0.0.1:{h}\"\npeer_addr = \"127.0.0.1:{p}\"\n\
             data_dir = \"{d}\"\n\n[cluster]\nring_size = 64\nmembers = [\n{m}\n]\n\n\
             [storage]\nsync = \"always\"\n",
            n = i + 1,
            h = http[i],
            p = peer[i],
            d = dir.join(format!("n{}", i + 1)).display(),
            m = members.join("\n"),
        );
        std::fs::write(dir.join(format!("n{}.toml", i + 1)), text).expect("write config");
    }
}

fn serve(dir: &Path, i: usize) -> Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join(format!("n{}.toml", i + 1)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quorumkv serve")
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("http://127.0.0.1:{port}/health");
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node on {port} never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node on `port` sees every peer up (heartbeats flowing).
async fn wait_all_peers_up(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("http://127.0.0.1:{port}/admin/status");
        if let Ok(r) = client.get(url).send().await {
            let body = r.bytes().await.unwrap_or_default();
            let status: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let peers = status["peers"].as_array().cloned().unwrap_or_default();
            if !peers.is_empty() && peers.iter().all(|p| p["status"] == "up") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node on {port} never saw its peers up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_by_serve_serves_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer: Vec<u16> = (0..3).map(|_| free_port()).collect();
    write_configs(dir.path(), &http, &peer);
    let mut nodes: Vec<Child> = (0..3).map(|i| serve(dir.path(), i)).collect();
    let client = reqwest::Client::new();
    for &port in &http {
        wait_healthy(&client, port).await;
    }
    for &port in &http {
        wait_all_peers_up(&client, port).await;
    }
    for k in 0..50 {
        let url = format!("http://127.0.0.1:{}/kv/b/key-{k}?w=all", http[k % 3]);
        let r = client
            .put(url)
            .body(format!("value-{k}"))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), reqwest::StatusCode::NO_CONTENT);
    }
    // SIGKILL: no clean shutdown, nothing flushed on the way out.
    nodes[1].kill().expect("kill");
    nodes[1].wait().expect("reap");
    nodes[1] = serve(dir.path(), 1);
    wait_healthy(&client, http[1]).await;
    for k in 0..50 {
        let url = format!("http://127.0.0.1:{}/admin/replica/b/key-{k}", http[1]);
        let bytes = client
            .get(url)
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            body["siblings"][0]["value"],
            format!("value-{k}"),
            "key-{k}"
        );
    }
    kv_client_merges_siblings_with_its_saved_context(dir.path(), http[0]);
    for node in &mut nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
}

/// `quorumkv kv`: two blind writes make siblings; `get` shows them and saves the context, and
/// the next `put` sends it, merging them. `--node` takes host:port; a delete with no saved
/// context deletes what the node reads; an unreachable node's error names the cause.
fn kv_client_merges_siblings_with_its_saved_context(dir: &Path, port: u16) {
    let node = format!("127.0.0.1:{port}");
    let run = |contexts: &Path, args: &[&str]| {
        Command::new(BIN)
            .arg("kv")
            .args(args)
            .args(["--node", &node, "--contexts"])
            .arg(contexts)
            .output()
            .expect("run kv")
    };
    let contexts = dir.join("contexts.json");
    let kv = |args: &[&str]| {
        let out = run(&contexts, args);
        assert!(
            out.status.success(),
            "kv {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    kv(&["put", "carts", "cli", "milk", "--no-context"]);
    kv(&["put", "carts", "cli", "eggs", "--no-context"]);
    let siblings = kv(&["get", "carts", "cli"]);
    assert!(siblings.starts_with("2 siblings"), "{siblings}");
    assert!(
        siblings.contains("milk") && siblings.contains("eggs"),
        "{siblings}"
    );
    kv(&["put", "carts", "cli", "milk,eggs"]);
    assert_eq!(kv(&["get", "carts", "cli"]).trim(), "milk,eggs");
    kv(&["delete", "carts", "cli"]);
    let gone = run(&contexts, &["get", "carts", "cli"]);
    assert!(!gone.status.success(), "a missing key exits non-zero");
    assert_eq!(String::from_utf8_lossy(&gone.stdout).trim(), "not found");
    // Another user, with no saved context: the delete removes what the node reads.
    kv(&["put", "carts", "shared", "tea", "--no-context"]);
    let fresh = dir.join("someone-else.json");
    let deleted = run(&fresh, &["delete", "carts", "shared"]);
    assert!(deleted.status.success());
    assert_eq!(
        String::from_utf8_lossy(&run(&fresh, &["get", "carts", "shared"]).stdout).trim(),
        "not found"
    );
    // Nothing listens on port 1: the error says why, not only that sending failed.
    let refused = Command::new(BIN)
        .args([
            "kv",
            "get",
            "carts",
            "cli",
            "--node",
            "127.0.0.1:1",
            "--contexts",
        ])
        .arg(&contexts)
        .output()
        .expect("run kv");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(stderr.contains("connection refused"), "{stderr}");
}

/// Starts `quorumkv dev` on `data_dir` and waits until its nodes serve and see each other.
async fn start_dev(data_dir: &Path, base_port: u16) -> Child {
    let mut cluster = Command::new(BIN)
        .args(["dev", "--base-port", &base_port.to_string(), "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quorumkv dev");
    let stdout = cluster.stdout.take().expect("dev's stdout is piped");
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let ready = lines
            .by_ref()
            .any(|l| l.starts_with("Ctrl-C stops the cluster"));
        // Keep reading, so that dev never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ready
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("dev says the cluster is ready within a minute")
        .expect("stdout reader");
    assert!(ready, "dev ended before saying the cluster is ready");
    cluster
}

/// Kills `dev` outright (SIGKILL: it cannot pass anything on) and waits until its nodes have
/// stopped serving and closed their stores.
async fn kill_dev(mut cluster: Child, data_dir: &Path, base_port: u16) {
    cluster.kill().expect("kill dev");
    cluster.wait().expect("reap dev");
    for i in 1..=3 {
        wait_closed(base_port + i).await;
        wait_unlocked(&data_dir.join(format!("n{i}"))).await;
    }
}

/// Waits until nothing accepts connections on `port` any more.
async fn wait_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "port {port} still serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no process holds the locks of a node's stores (the node has closed them).
async fn wait_unlocked(node_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for store in ["storage", "hints"] {
        let path = node_dir.join(store).join("LOCK");
        let lock = std::fs::File::open(&path).expect("open LOCK");
        while lock.try_lock().is_err() {
            assert!(Instant::now() < deadline, "{} still held", path.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `dev` runs each node as a process of its own; killing `dev` outright (no chance to stop
/// them) still stops every node cleanly, and a new `dev` on the same folder finds the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_nodes_are_processes_that_stop_with_dev_and_keep_their_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_port().clamp(1, 65000) - 1;
    let client = reqwest::Client::new();
    let cluster = start_dev(dir.path(), base).await;
    // No waiting here: once dev says the cluster is ready, every node sees its peers, so a
    // write that needs all three replicas goes through at once.
    let put = client
        .put(format!("http://127.0.0.1:{}/kv/b/k?w=all", base + 1))
        .body("kept")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), reqwest::StatusCode::NO_CONTENT);
    assert!(dir.path().join("n2.toml").exists(), "n2's config written");
    kill_dev(cluster, dir.path(), base).await;

    let cluster = start_dev(dir.path(), base).await;
    let get = client
        .get(format!("http://127.0.0.1:{}/kv/b/k", base + 3))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), reqwest::StatusCode::OK);
    assert_eq!(get.text().await.expect("body"), "kept");
    kill_dev(cluster, dir.path(), base).await;
}

/// A port taken by another process (a node restarted by hand outlives `dev`) stops `dev`
/// before it announces anything, naming the process that holds the port.
#[test]
fn dev_refuses_a_taken_port_and_names_the_process_holding_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_port().clamp(1, 65000) - 1;
    let taken = base + 2;
    let _squatter = TcpListener::bind(("127.0.0.1", taken)).expect("hold n2's port");
    let mut dev = Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dev");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = dev.kill();
            panic!("dev kept running with one of its ports taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = dev.wait_with_output().expect("output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{taken}"))
            && stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(!stdout.contains("Ctrl-C"), "no ready banner: {stdout}");
    // It started nothing: n1's port is free again at once.
    assert!(TcpListener::bind(("127.0.0.1", base + 1)).is_ok());
}

#[test]
fn a_bad_config_exits_2_with_a_line_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "node_id = \"n1\"\nhttp_addr = \"127.0.0.1:1\"\npeer_addr = \"127.0.0.1:2\"\n\
         data_dir = \"d\"\n[cluster]\nring_size = 48\n\
         members = [{ id = \"n1\", peer_addr = \"127.0.0.1:2\", http_addr = \"127.0.0.1:1\" }]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ring_size must be a power of two"),
        "{stderr}"
    );
    let unknown = Command::new(BIN)
        .args(["serve", "--nope"])
        .output()
        .expect("run");
    assert_eq!(unknown.status.code(), Some(2));
}
