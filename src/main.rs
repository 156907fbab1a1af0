//! The `quorumkv` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quorumkv::bench;

#[derive(Debug, Parser)]
#[command(
    name = "quorumkv",
    version,
    about = "A Dynamo-style leaderless key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure this machine: load generators that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The storage engine alone: puts/s, gets/s, group commit, keydir memory, open time.
    Storage(bench::storage::StorageBench),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Bench(BenchCommand::Storage(args)) => bench::storage::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
