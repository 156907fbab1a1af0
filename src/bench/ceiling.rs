//! `quorumkv bench ceiling`: what this machine can do for quorumkv's request path with nothing
//! but the network in it, to hold the real cluster's figures against.
//!
//! The benchmark issue's calibration: three bare coordinators (HTTP on base-port+i, as
//! `quorumkv dev` lays nodes out) forward each request over the internode transport (framed
//! binary, request ids, one persistent connection per peer) to three bare replicas (on
//! base-port+100+i), which answer at once; a coordinator answers its client when 2 of the 3
//! have. GETs answer with a value of `--value-bytes`. Nothing is stored, hashed, versioned or
//! fsynced. Point `quorumkv bench` or wrk at it, then at a real cluster: the ratio is what
//! everything but the network costs. The replicas are separate processes (this binary again,
//! with the hidden `--replica` flag), as in the calibration; `--in-process` keeps them in this
//! process, as `quorumkv dev` keeps its nodes.
//!
//! `--fsync-dir` makes it the ceiling for durable writes: each replica appends a write's body
//! to a file of its own there and acks only after an fdatasync that covers it, writes that
//! arrive during one fdatasync sharing the next (group commit) — the least `sync = "always"`
//! must do.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::config::share_of_cores;
use crate::net::{self, Faults, Handler, Identity, Net, TcpDialer};

#[derive(Debug, clap::Args)]
pub struct CeilingArgs {
    /// Coordinator i serves HTTP on base-port+i, replica i listens on base-port+100+i (the
    /// default keeps clear of `quorumkv dev`'s ports, so both can run at once).
    #[arg(long, default_value_t = 8300, value_parser = clap::value_parser!(u16).range(1..=65000))]
    pub base_port: u16,
    /// Size of the value a GET answers with.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Run the replicas inside this process instead of as three child processes.
    #[arg(long)]
    pub in_process: bool,
    /// Replicas append each write to a file in this folder and fdatasync it (group commit)
    /// before acking.
    #[arg(long)]
    pub fsync_dir: Option<std::path::PathBuf>,
    /// Internal: run one bare replica on this address (how the child processes start).
    #[arg(long, hide = true)]
    pub replica: Option<SocketAddr>,
}

/// Child replica processes, killed when the ceiling stops.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const NODES: u16 = 3;
/// Answers a coordinator waits for.
const QUORUM: usize = 2;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// First byte of an internode message: what the peer should answer with.
const READ: u8 = 1;
const WRITE: u8 = 0;
/// A replica's answer to a write it could not make durable.
const FAILED: &[u8] = b"!";

/// A peer that stores nothing: reads get a value back, writes an empty ack (after the group
/// commit's fdatasync, with `--fsync-dir`).
struct Echo {
    value: Bytes,
    commit: Option<Arc<GroupCommit>>,
}

impl Echo {
    fn new(
        value: Bytes,
        fsync_dir: Option<&std::path::Path>,
        at: SocketAddr,
    ) -> Result<Echo, String> {
        let commit = match fsync_dir {
            Some(dir) => Some(GroupCommit::start(
                &dir.join(format!("replica-{}.log", at.port())),
            )?),
            None => None,
        };
        Ok(Echo { value, commit })
    }
}

impl Handler for Echo {
    fn handle(&self, _from: &str, request: Bytes) -> BoxFuture<'static, Bytes> {
        if request.first() == Some(&READ) {
            let answer = self.value.clone();
            return Box::pin(async move { answer });
        }
        let commit = self.commit.clone();
        Box::pin(async move {
            if let Some(c) = commit {
                match c.append(&request[1..]) {
                    Ok(seq) => c.durable(seq).await,
                    // Not acked: the coordinator counts it as a failed replica.
                    Err(_) => return Bytes::from_static(FAILED),
                }
            }
            Bytes::new()
        })
    }
}

/// An append-only file whose writers wait for an fdatasync covering their write; a syncer
/// thread runs one fdatasync for every write that queued during the previous one.
struct GroupCommit {
    file: std::fs::File,
    /// (bytes appended, writes appended)
    appended: parking_lot::Mutex<(u64, u64)>,
    wake: parking_lot::Condvar,
    synced: tokio::sync::watch::Sender<u64>,
}

impl GroupCommit {
    fn start(path: &std::path::Path) -> Result<Arc<GroupCommit>, String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let commit = Arc::new(GroupCommit {
            file,
            appended: parking_lot::Mutex::new((0, 0)),
            wake: parking_lot::Condvar::new(),
            synced: tokio::sync::watch::channel(0).0,
        });
        let syncer = commit.clone();
        std::thread::Builder::new()
            .name("ceiling-fsync".into())
            .spawn(move || syncer.run())
            .map_err(|e| e.to_string())?;
        Ok(commit)
    }

    /// Appends a write; returns its number, for [`GroupCommit::durable`].
    fn append(&self, body: &[u8]) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut a = self.appended.lock();
        self.file.write_all_at(body, a.0)?;
        *a = (a.0 + body.len() as u64, a.1 + 1);
        self.wake.notify_one();
        Ok(a.1)
    }

    async fn durable(&self, seq: u64) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|&synced| synced >= seq).await;
    }

    fn run(&self) {
        let mut synced = 0;
        loop {
            let target = {
                let mut a = self.appended.lock();
                while a.1 == synced {
                    self.wake.wait(&mut a);
                }
                a.1
            };
            if self.file.sync_data().is_err() {
                // Writers stay unacked, as a replica with a failed disk would leave them.
                return;
            }
            synced = target;
            self.synced.send_replace(synced);
        }
    }
}

#[derive(Clone)]
struct Node {
    net: Arc<Net>,
    peers: Arc<Vec<String>>,
    value: Bytes,
}

async fn forward(State(node): State<Node>, request: Request) -> Response {
    let read = request.method() == Method::GET;
    let body = match to_bytes(request.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let mut message = Vec::with_capacity(body.len() + 1);
    message.push(if read { READ } else { WRITE });
    message.extend_from_slice(&body);
    let message = Bytes::from(message);
    let mut calls: FuturesUnordered<_> = node
        .peers
        .iter()
        .map(|peer| {
            let (net, peer, message) = (node.net.clone(), peer.clone(), message.clone());
            async move { net.call(&peer, message, CALL_TIMEOUT).await }
        })
        .collect();
    let mut answered = 0;
    while answered < QUORUM {
        match calls.next().await {
            Some(Ok(a)) if a.as_ref() != FAILED => answered += 1,
            Some(_) => {}
            None => break,
        }
    }
    if answered < QUORUM {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    tokio::spawn(async move { while calls.next().await.is_some() {} });
    if read {
        (StatusCode::OK, Body::from(node.value.clone())).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

pub fn run(args: &CeilingArgs) -> Result<(), String> {
    if u32::from(args.base_port) + 100 + u32::from(NODES) > 65535 {
        return Err("base-port leaves no room for the peer ports".into());
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !args.in_process {
        // The coordinators' process and the replicas' split the cores, as dev's nodes do.
        builder.worker_threads(share_of_cores(usize::from(NODES) + 1));
    }
    let runtime = builder.enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        match args.replica {
            Some(at) => serve_replica(at, &args.value_bytes, args.fsync_dir.as_deref()).await,
            None => serve(args).await,
        }
    })
}

/// The bare cluster's identities: coordinators `c1..` and replicas named by their address;
/// replicas accept any coordinator.
fn identity(id: String) -> Identity {
    Identity::new(id, 0, (1..=NODES).map(|i| format!("c{i}")))
}

/// One bare replica, until the process is killed.
async fn serve_replica(
    at: SocketAddr,
    value_bytes: &usize,
    fsync_dir: Option<&std::path::Path>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .map_err(|e| format!("replica port {at}: {e}"))?;
    let value = Bytes::from(vec![b'v'; *value_bytes]);
    let handler = Arc::new(Echo::new(value, fsync_dir, at)?);
    net::serve(
        listener,
        identity(at.to_string()),
        handler,
        Arc::new(|_: &str| {}),
    )
    .await;
    Ok(())
}

/// Starts the replicas as child processes and waits until each accepts connections.
async fn spawn_replicas(args: &CeilingArgs, at: &[SocketAddr]) -> Result<Children, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut children = Children(Vec::new());
    for addr in at {
        let mut command = std::process::Command::new(&exe);
        command
            .args(["bench", "ceiling", "--value-bytes"])
            .arg(args.value_bytes.to_string())
            .arg("--replica")
            .arg(addr.to_string());
        if let Some(dir) = &args.fsync_dir {
            command.arg("--fsync-dir").arg(dir);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start a replica process: {e}"))?;
        children.0.push(child);
    }
    for addr in at {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("replica on {addr} did not start"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(children)
}

async fn serve(args: &CeilingArgs) -> Result<(), String> {
    let addr = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    // A replica's node id is its address, which is all a child process is told.
    let replicas: Vec<(String, SocketAddr)> = (1..=NODES)
        .map(|i| addr(args.base_port + 100 + i))
        .map(|a| (a.to_string(), a))
        .collect();
    let at: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let mut servers = Vec::new();
    let _children = if args.in_process {
        for addr in &at {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("replica port {addr}: {e}"))?;
            let handler = Arc::new(Echo::new(value.clone(), args.fsync_dir.as_deref(), *addr)?);
            servers.push(tokio::spawn(net::serve(
                listener,
                identity(addr.to_string()),
                handler,
                Arc::new(|_: &str| {}),
            )));
        }
        None
    } else {
        Some(spawn_replicas(args, &at).await?)
    };
    for i in 1..=NODES {
        let http_listener = tokio::net::TcpListener::bind(addr(args.base_port + i))
            .await
            .map_err(|e| format!("http port {}: {e}", args.base_port + i))?;
        let node = Node {
            peers: Arc::new(replicas.iter().map(|(id, _)| id.clone()).collect()),
            net: Arc::new(Net::new(
                identity(format!("c{i}")),
                replicas.clone(),
                Arc::new(Faults::default()),
                Arc::new(TcpDialer::default()),
            )),
            value: value.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(node);
        let http = axum::serve::ListenerExt::tap_io(http_listener, |tcp| {
            // Client sockets get TCP_NODELAY as the real nodes' do.
            let _ = tcp.set_nodelay(true);
        });
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(http, app).await;
        }));
        println!("  c{i}  http://{}", addr(args.base_port + i));
    }
    println!(
        "quorumkv bench ceiling: 3 bare coordinators, 3 bare replicas ({}{}); Ctrl-C stops them.",
        if args.in_process {
            "in this process"
        } else {
            "child processes"
        },
        if args.fsync_dir.is_some() {
            ", fdatasync before each write's ack, group commit"
        } else {
            ""
        }
    );
    // SIGTERM too (scripts stop it so): returning drops `_children`, which stops the
    // replicas; left running, they would answer the next ceiling's coordinators.
    crate::cli::wait_for_stop_signal().await;
    for server in servers {
        server.abort();
    }
    Ok(())
}
