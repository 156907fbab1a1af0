//! The `quorumkv` command line: `serve`, `dev`, `kv`, `admin` and `bench`.

mod admin;
mod dev;
mod kv;
mod port_holder;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bench;
use crate::config::Config;
use crate::node::{Listeners, Node};

#[derive(Debug, Parser)]
#[command(
    name = "quorumkv",
    version,
    about = "A Dynamo-style leaderless key-value store"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Serve(ServeArgs),
    /// Run a local cluster of N nodes on 127.0.0.1 until Ctrl-C.
    Dev(dev::DevArgs),
    /// Talk to a cluster: get, put and delete keys, carrying the causal context for you.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Operate the cluster's membership: status, leave, replace, wait for transfers.
    Admin(admin::AdminArgs),
    /// The load generator: run a workload against a cluster and report throughput and
    /// latency (table, JSON, SVG plots). `bench storage` measures the storage engine alone.
    Bench(BenchArgs),
    /// Make a new cluster secret file: every node of a cluster is given the same one
    /// (`[security] cluster_secret_file`); node links are encrypted and authenticated with it.
    Secret {
        /// Where to write it (created with mode 0600; an existing file is never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a self-signed TLS certificate and key for a node's client API
    /// (`[http] tls_cert_file`, `tls_key_file`); clients trust it with `curl --cacert`.
    Cert {
        /// A host name or IP address clients use to reach the node; repeat for several.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert_out: PathBuf,
        /// Where to write the private key (PEM, mode 0600).
        #[arg(long)]
        key_out: PathBuf,
    },
    /// Make a client token: prints the token (once) and the entry to add to every node's
    /// `[security] tokens_file`, which keeps only its hash.
    Token {
        /// Who holds it (shown in logs).
        #[arg(long)]
        name: String,
        /// `BUCKET=ACCESS[,ACCESS]` with access read, write or admin; BUCKET `*` is every
        /// bucket. Repeat for several buckets.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The node's TOML config (format in docs/API.md; examples in config/).
    #[arg(long)]
    config: PathBuf,
    /// Overrides the config's `node_id` (must be one of `[cluster] members`).
    #[arg(long)]
    node_id: Option<String>,
    /// Overrides the config's `http_addr`, where clients connect (IP:PORT).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Overrides the config's `peer_addr`, where other nodes connect (IP:PORT).
    #[arg(long)]
    peer_addr: Option<SocketAddr>,
    /// Overrides the config's `data_dir`, the folder this node keeps its data in.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also stop when stdin closes (how `dev` stops its nodes, and how they follow it if it dies).
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, args_override_self = true)]
struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    load: bench::load::LoadArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The storage engine alone: puts/s, gets/s, group commit, keydir memory, open time.
    Storage(bench::storage::StorageBench),
    /// Bare coordinators forwarding to bare replicas (no storage): the network path's ceiling.
    Ceiling(bench::ceiling::CeilingArgs),
    /// Writes N keys straight into a stopped node's data directory (for scale figures).
    Fill(bench::fill::FillArgs),
}

/// Exit status for bad flags or a bad config file (API.md).
const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(BenchArgs {
            command: Some(BenchCommand::Storage(args)),
            ..
        }) => match bench::storage::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
        Command::Bench(BenchArgs {
            command: Some(BenchCommand::Ceiling(args)),
            ..
        }) => match bench::ceiling::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
        Command::Bench(BenchArgs {
            command: Some(BenchCommand::Fill(args)),
            ..
        }) => match bench::fill::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
        Command::Bench(BenchArgs { load, .. }) => match bench::load::run(load) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
        Command::Serve(args) => serve(args),
        Command::Dev(args) => dev::run(args),
        Command::Kv(cmd) => kv::run(cmd),
        Command::Admin(args) => admin::run(args),
        Command::Token { name, grants } => match token_entry(&name, &grants) {
            Ok((token, entry)) => {
                println!("token for {name} (shown once; hand it to the client):\n{token}\n");
                println!("add to the tokens file of every node:\n{entry}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_USAGE, e),
        },
        Command::Cert {
            names,
            cert_out,
            key_out,
        } => match write_cert(&names, &cert_out, &key_out) {
            Ok(()) => {
                println!(
                    "wrote {} and {}; set [http] tls_cert_file and tls_key_file to them",
                    cert_out.display(),
                    key_out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        Command::Secret { out } => match write_secret(&out) {
            Ok(()) => {
                println!(
                    "wrote a new cluster secret to {}; copy it to every node and set \
                     [security] cluster_secret_file",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
    }
}

/// A new token and its tokens-file entry (TOML), from `--grant BUCKET=read,write` flags.
fn token_entry(name: &str, grants: &[String]) -> Result<(String, String), String> {
    let mut table = String::new();
    for grant in grants {
        let (bucket, access) = grant
            .split_once('=')
            .ok_or_else(|| format!("--grant {grant:?}: expected BUCKET=read,write,admin"))?;
        let mut list = Vec::new();
        for a in access.split(',').map(str::trim) {
            if !["read", "write", "admin"].contains(&a) {
                return Err(format!(
                    "--grant {grant:?}: {a:?} is not read, write or admin"
                ));
            }
            list.push(format!("{a:?}"));
        }
        table.push_str(&format!("{:?} = [{}], ", bucket.trim(), list.join(", ")));
    }
    let (token, hash) = crate::api::auth::new_token()?;
    let entry = format!(
        "[[token]]\nname = {name:?}\nblake3 = \"{hash}\"\ngrants = {{ {} }}\n",
        table.trim_end_matches([',', ' '])
    );
    Ok((token, entry))
}

/// Writes a new cluster secret to `path`, readable by its owner only; never overwrites.
fn write_secret(path: &std::path::Path) -> Result<(), String> {
    let secret = crate::secret::ClusterSecret::generate()?;
    write_new(path, &secret.to_file_text(), 0o600)
}

/// Writes a self-signed certificate and its key; never overwrites either.
fn write_cert(
    names: &[String],
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(), String> {
    let (cert_pem, key_pem) = crate::api::tls::self_signed(names)?;
    write_new(key, &key_pem, 0o600)?;
    write_new(cert, &cert_pem, 0o644)
}

/// Creates `path` with `text` and `mode`, synced; an existing file is an error.
fn write_new(path: &std::path::Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, format!("{}: {e}", args.config.display())),
    };
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.http_addr {
        config.http_addr = v;
    }
    if let Some(v) = args.peer_addr {
        config.peer_addr = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Err(e) = config.validate() {
        return fail(EXIT_USAGE, format!("{}: {e}", args.config.display()));
    }
    let rt = match runtime(config.worker_threads) {
        Ok(rt) => rt,
        Err(e) => return fail(1, e),
    };
    rt.block_on(async {
        let listeners = match Listeners::bind(config.http_addr, config.peer_addr).await {
            Ok(l) => l,
            Err(e) => return fail(1, e),
        };
        let node = match Node::start(config, listeners).await {
            Ok(n) => n,
            Err(e) => return fail(1, e),
        };
        println!(
            "node {} serving HTTP on http://{}",
            node.node_id(),
            node.http_addr()
        );
        if args.stop_on_stdin_close {
            tokio::select! {
                () = wait_for_stop_signal() => {}
                () = stdin_closed() => tracing::info!("stdin closed; stopping"),
            }
        } else {
            wait_for_stop_signal().await;
        }
        node.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Resolves once stdin reaches its end (or fails), read on a thread of its own.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
    match reader {
        Ok(_) => {
            let _ = rx.await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch stdin; only Ctrl-C stops this node");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, the signal service managers stop a process with.
pub(crate) async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops cleanly");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => {
            if let Err(e) = stopped {
                tracing::error!(error = %e, "cannot listen for Ctrl-C; stopping");
            }
        }
        () = term => {}
    }
    tracing::info!("stopping");
}
