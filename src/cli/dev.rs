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

use crate::config::{share_of_cores, Config, Conflict, Member, SyncSetting};

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
    /// How buckets settle concurrent writes unless set otherwise (`[defaults] conflict`):
    /// siblings, or lww, as Riak's default bucket type does (`allow_mult = false`).
    #[arg(long, value_enum, default_value = "siblings")]
    conflict: Conflict,
    /// Plain node links, without the cluster secret `dev` otherwise makes (to measure what
    /// encryption costs; loopback only, as `dev` always is).
    #[arg(long)]
    no_secret: bool,
    /// Also serve the client API over TLS and require a token, as a production cluster
    /// should: makes `node.crt`/`node.key` and `dev.token` (an all-buckets token) in the data
    /// folder on first use, and prints how clients use them.
    #[arg(long, conflicts_with = "no_secret")]
    secure: bool,
    /// How fast each node's anti-entropy may repair (`[anti_entropy] repair_bytes_per_sec`;
    /// default 512 KiB/s): what a catch-up costs clients is measured at several rates.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    repair_bytes_per_sec: Option<u64>,
}

/// The certificate, key and tokens file of `dev --secure`, and the token's own file.
struct SecureFiles {
    cert: PathBuf,
    key: PathBuf,
    tokens: PathBuf,
    token: PathBuf,
}

/// Makes (once) a self-signed certificate for localhost and an all-buckets token. The token is
/// kept in the clear beside the data, for this local cluster only; nodes see only its hash.
fn secure_files(data_dir: &Path) -> Result<SecureFiles, String> {
    let at = |name: &str| {
        std::path::absolute(data_dir.join(name))
            .map_err(|e| format!("cannot resolve {}: {e}", data_dir.display()))
    };
    let files = SecureFiles {
        cert: at("node.crt")?,
        key: at("node.key")?,
        tokens: at("tokens.toml")?,
        token: at("dev.token")?,
    };
    if !files.cert.exists() || !files.key.exists() {
        let _ = std::fs::remove_file(&files.cert);
        let _ = std::fs::remove_file(&files.key);
        super::write_cert(
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            &files.cert,
            &files.key,
        )?;
    }
    if !files.token.exists() || !files.tokens.exists() {
        let _ = std::fs::remove_file(&files.token);
        let _ = std::fs::remove_file(&files.tokens);
        let (token, entry) = super::token_entry("dev", &["*=read,write,admin".to_owned()])?;
        super::write_new(&files.tokens, &entry, 0o644)?;
        super::write_new(&files.token, &format!("{token}\n"), 0o600)?;
    }
    Ok(files)
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
    let secure = if args.secure {
        match secure_files(&args.data_dir) {
            Ok(files) => Some(files),
            Err(e) => return fail(1, e),
        }
    } else {
        None
    };
    for config in &mut configs {
        config.storage.sync = args.sync;
        config.defaults.conflict = args.conflict;
        config.worker_threads = Some(threads);
        config.security.cluster_secret_file.clone_from(&secret);
        if let Some(rate) = args.repair_bytes_per_sec {
            config.anti_entropy.repair_bytes_per_sec = rate;
        }
        if let Some(files) = &secure {
            config.http.tls_cert_file = Some(files.cert.clone());
            config.http.tls_key_file = Some(files.key.clone());
            config.security.tokens_file = Some(files.tokens.clone());
        }
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
    let probe = match Probe::new(secure.as_ref()) {
        Ok(probe) => probe,
        Err(e) => {
            stop(&mut nodes);
            return fail(1, e);
        }
    };
    if let Err(e) = rt.block_on(wait_until_serving(&probe, &mut nodes)) {
        stop(&mut nodes);
        return fail(1, e);
    }
    if let Err(e) = rt.block_on(wait_until_peers_up(&probe, &nodes)) {
        eprintln!("warning: {e}; writes that need every replica may fail until they do");
    }
    println!(
        "quorumkv dev: {} nodes, data under {}",
        nodes.len(),
        args.data_dir.display()
    );
    for node in &nodes {
        println!(
            "  {}  {}://{}  pid {}",
            node.id,
            probe.scheme,
            probe.authority(node.http_addr),
            node.child.id()
        );
    }
    if let Some(files) = &secure {
        println!(
            "TLS and tokens on: clients pass --cacert {} and the token in {} \
             (curl: --cacert FILE -H \"Authorization: Bearer $(cat {})\")",
            files.cert.display(),
            files.token.display(),
            files.token.display()
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

/// How `dev` asks its own nodes: plain HTTP, or with `--secure` TLS (trusting the dev
/// certificate, by the name it was made for) and the dev token.
struct Probe {
    client: reqwest::Client,
    scheme: &'static str,
    token: Option<String>,
}

impl Probe {
    fn new(secure: Option<&SecureFiles>) -> Result<Probe, String> {
        let Some(files) = secure else {
            return Ok(Probe {
                client: reqwest::Client::new(),
                scheme: "http",
                token: None,
            });
        };
        let pem =
            std::fs::read(&files.cert).map_err(|e| format!("{}: {e}", files.cert.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .add_root_certificate(cert)
            .build()
            .map_err(|e| e.to_string())?;
        let token = std::fs::read_to_string(&files.token)
            .map_err(|e| format!("{}: {e}", files.token.display()))?;
        Ok(Probe {
            client,
            scheme: "https",
            token: Some(token.trim().to_owned()),
        })
    }

    /// `localhost:PORT` under TLS (the name in the certificate), the address otherwise.
    fn authority(&self, addr: SocketAddr) -> String {
        if self.scheme == "https" {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        }
    }

    fn url(&self, addr: SocketAddr, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.authority(addr))
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.get(url).timeout(POLL * 4);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// Waits until every node answers `/health` as the process `dev` started (its pid); fails if
/// one exits first or another process answers on its port.
async fn wait_until_serving(probe: &Probe, nodes: &mut [NodeProcess]) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    for node in nodes {
        let url = probe.url(node.http_addr, "/health");
        loop {
            if let Some(pid) = health_pid(probe, &url).await {
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
async fn health_pid(probe: &Probe, url: &str) -> Option<u32> {
    let response = probe.get(url).send().await.ok()?;
    let body = response.bytes().await.ok()?;
    let health: serde_json::Value = serde_json::from_slice(&body).ok()?;
    health["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Waits until every node sees every peer up (`/admin/status`), so that the cluster dev
/// announces can take a `w=all` write at once, not only once heartbeats have gone round.
async fn wait_until_peers_up(probe: &Probe, nodes: &[NodeProcess]) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PEERS_TIMEOUT;
    for node in nodes {
        let url = probe.url(node.http_addr, "/admin/status");
        loop {
            if all_peers_up(probe, &url).await {
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

async fn all_peers_up(probe: &Probe, url: &str) -> bool {
    let Ok(response) = probe.get(url).send().await else {
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
