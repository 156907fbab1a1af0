//! The `quorumkv` command line: `serve`, `dev`, `kv` and `bench`.

mod dev;
mod kv;

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
    /// The load generator: run a workload against a cluster and report throughput and
    /// latency (table, JSON, SVG plots). `bench storage` measures the storage engine alone.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The node's TOML config (format in API.md; examples in config/).
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    node_id: Option<String>,
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    #[arg(long)]
    peer_addr: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
        Command::Bench(BenchArgs { load, .. }) => match bench::load::run(load) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
        Command::Serve(args) => serve(args),
        Command::Dev(args) => dev::run(args),
        Command::Kv(cmd) => kv::run(cmd),
    }
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
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
    let rt = match runtime() {
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
        wait_for_ctrl_c().await;
        node.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for Ctrl-C; stopping");
    }
    tracing::info!("stopping");
}
