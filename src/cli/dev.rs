//! `quorumkv dev`: a local cluster of node processes on 127.0.0.1, as ARCHITECTURE.md sketches.
//!
//! Each node is a `quorumkv serve` child with its config written next to its data, so one can
//! be killed and started again by hand to watch the others heal, as in production. Children
//! stop when their stdin closes: on Ctrl-C, and also if this process dies, so none is left
//! behind. Their logs come through here, each line prefixed with the node's id. A port that
//! is taken stops `dev` before it starts anything, and every node must answer `/health` with
//! the pid `dev` started, so a stale node from an earlier run is never taken for a new one.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::config::{share_of_cores, Config, Member, SyncSetting};

use super::{fail, port_holder, wait_for_stop_signal, EXIT_USAGE};

/// How long a node may take to open its storage and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to drain and close its storage after being told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// How long the nodes may take to see each other once serving (heartbeats go every 100 ms).
const PEERS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    nodes: u16,
    /// Where the nodes keep their data (one folder per node) and their configs (`<id>.toml`);
    /// a restart finds them again.
    #[arg(long, default_value = "data/dev")]
    data_dir: PathBuf,
    /// Node i serves HTTP on base-port+i and peers on base-port+100+i.
    #[arg(long, default_value_t = 8100, value_parser = clap::value_parser!(u16).range(1..=65000))]
    base_port: u16,
    /// When the nodes fsync writes (docs/API.md `[storage] sync`): always (before the ack, group
    /// commit), interval, or none.
    #[arg(long, value_enum, default_value = "always")]
    sync: SyncSetting,
    /// Plain node links, without the cluster secret `dev` otherwise makes (to measure what
    /// encryption costs; loopback only, as `dev` always is).
    #[arg(long)]
    no_secret: bool,
}

/// One running node process.
struct NodeProcess {
    id: String,
    http_addr: SocketAddr,
    config_path: PathBuf,
    child: Child,
    /// Reported as gone already (it died or was killed by hand).
    exited: bool,
}

pub fn run(args: DevArgs) -> ExitCode {
    if u32::from(args.base_port) + 100 + u32::from(args.nodes) > 65535 {
        return fail(EXIT_USAGE, "base-port leaves no room for the peer ports");
    }
    let addr = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let members = (1..=args.nodes)
        .map(|i| Member {
            id: format!("n{i}"),
            http_addr: addr(args.base_port + i),
            peer_addr: addr(args.base_port + 100 + i),
        })
        .collect();
    let mut configs = Config::local_cluster(members, &args.data_dir);
    let threads = share_of_cores(configs.len());
    let secret = if args.no_secret {
        None
    } else {
        match cluster_secret(&args.data_dir) {
            Ok(path) => Some(path),
            Err(e) => return fail(1, e),
        }
    };
    for config in &mut configs {
        config.storage.sync = args.sync;
        config.worker_threads = Some(threads);
        config.security.cluster_secret_file.clone_from(&secret);
    }
    if let Some(Err(e)) = configs.first().map(Config::validate) {
        return fail(EXIT_USAGE, e);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, e),
    };
    if let Err(e) = ports_free(&configs) {
        return fail(1, e);
    }
    let mut nodes = Vec::new();
    for config in &configs {
        match start(config, &args.data_dir) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop(&mut nodes);
                return fail(1, e);
            }
        }
    }
    if let Err(e) = rt.block_on(wait_until_serving(&mut nodes)) {
        stop(&mut nodes);
        return fail(1, e);
    }
    if let Err(e) = rt.block_on(wait_until_peers_up(&nodes)) {
        eprintln!("warning: {e}; writes that need every replica may fail until they do");
    }
    println!(
        "quorumkv dev: {} nodes, data under {}",
        nodes.len(),
        args.data_dir.display()
    );
    for node in &nodes {
        println!(
            "  {}  http://{}  pid {}",
            node.id,
            node.http_addr,
            node.child.id()
        );
    }
    println!("Ctrl-C stops the cluster.");
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = wait_for_stop_signal() => break,
                _ = tick.tick() => report_exits(&mut nodes),
            }
        }
    });
    stop(&mut nodes);
    ExitCode::SUCCESS
}

/// Writes the node's config and starts `quorumkv serve` on it.
fn start(config: &Config, data_dir: &Path) -> Result<NodeProcess, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let config_path = data_dir.join(format!("{}.toml", config.node_id));
    let text = toml::to_string(config).map_err(|e| format!("cannot write a config: {e}"))?;
    std::fs::write(&config_path, text)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--stop-on-stdin-close")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start node {}: {e}", config.node_id))?;
    if let Some(stderr) = child.stderr.take() {
        let prefix = format!("{} | ", config.node_id);
        let copier = std::thread::Builder::new()
            .name(format!("{}-log", config.node_id))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
                }
            });
        if let Err(e) = copier {
            eprintln!("cannot relay the log of {}: {e}", config.node_id);
        }
    }
    Ok(NodeProcess {
        id: config.node_id.clone(),
        http_addr: config.http_addr,
        config_path,
        child,
        exited: false,
    })
}

/// The dev cluster's secret, made on first start and kept beside the data (absolute, so the
/// configs dev writes work from any directory).
fn cluster_secret(data_dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let path = std::path::absolute(data_dir.join("cluster.secret"))
        .map_err(|e| format!("cannot resolve {}: {e}", data_dir.display()))?;
    if !path.exists() {
        super::write_secret(&path)?;
    }
    Ok(path)
}

/// Refuses to start when a port a node needs is taken, naming the process that holds it (a
/// node started by hand outlives `dev`, and would otherwise answer for the one `dev` starts).
fn ports_free(configs: &[Config]) -> Result<(), String> {
    for config in configs {
        let ports = [("HTTP", config.http_addr), ("peer", config.peer_addr)];
        for (what, addr) in ports {
            let Err(e) = std::net::TcpListener::bind(addr) else {
                continue;
            };
            let who = match port_holder::holder(addr.port()) {
                Some((pid, cmdline)) => format!("pid {pid} ({cmdline})"),
                None => "another process".to_owned(),
            };
            return Err(format!(
                "{what} port {addr} of node {} is taken by {who}: {e}; stop it, or pick \
                 other ports with --base-port",
                config.node_id
            ));
        }
    }
    Ok(())
}

/// Waits until every node answers `/health` as the process `dev` started (its pid); fails if
/// one exits first or another process answers on its port.
async fn wait_until_serving(nodes: &mut [NodeProcess]) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    for node in nodes {
        let url = format!("http://{}/health", node.http_addr);
        loop {
            if let Some(pid) = health_pid(&client, &url).await {
                if pid == node.child.id() {
                    break;
                }
                return Err(format!(
                    "pid {pid} answers on {} instead of node {} (pid {}); stop it, or pick \
                     other ports with --base-port",
                    node.http_addr,
                    node.id,
                    node.child.id()
                ));
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                node.exited = true;
                return Err(format!(
                    "node {} exited during start-up ({status}); its log is above",
                    node.id
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {} is not serving on {} after {START_TIMEOUT:?}",
                    node.id, node.http_addr
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// The pid a node reports in `/health`, if it answers.
async fn health_pid(client: &reqwest::Client, url: &str) -> Option<u32> {
    let response = client.get(url).timeout(POLL * 4).send().await.ok()?;
    let body = response.bytes().await.ok()?;
    let health: serde_json::Value = serde_json::from_slice(&body).ok()?;
    health["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Waits until every node sees every peer up (`/admin/status`), so that the cluster dev
/// announces can take a `w=all` write at once, not only once heartbeats have gone round.
async fn wait_until_peers_up(nodes: &[NodeProcess]) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PEERS_TIMEOUT;
    for node in nodes {
        let url = format!("http://{}/admin/status", node.http_addr);
        loop {
            if all_peers_up(&client, &url).await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "node {} does not see all its peers up after {PEERS_TIMEOUT:?}",
                    node.id
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

async fn all_peers_up(client: &reqwest::Client, url: &str) -> bool {
    let Ok(response) = client.get(url).timeout(POLL * 4).send().await else {
        return false;
    };
    let Ok(body) = response.bytes().await else {
        return false;
    };
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    status["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().all(|p| p["status"] == "up"))
}

/// Says so, once, when a node has gone (killed by hand, say), and how to start it again.
fn report_exits(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut().filter(|n| !n.exited) {
        if let Ok(Some(status)) = node.child.try_wait() {
            node.exited = true;
            let exe = std::env::current_exe()
                .map_or_else(|_| "quorumkv".to_owned(), |p| p.display().to_string());
            let config =
                std::path::absolute(&node.config_path).unwrap_or_else(|_| node.config_path.clone());
            eprintln!(
                "node {} exited ({status}); start it again with: {exe} serve --config {} \
                 (a node started by hand is not dev's: Ctrl-C here will not stop it)",
                node.id,
                config.display()
            );
        }
    }
}

/// Tells every node to stop (closing its stdin) and waits for it; kills one that hangs.
fn stop(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut() {
        drop(node.child.stdin.take());
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for node in nodes.iter_mut() {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) | Err(_) => {
                    eprintln!("node {} did not stop in time; killing it", node.id);
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
            }
        }
    }
}
