//! `quorumkv dev`: the embedded default, a local cluster in one process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, Member, SyncSetting};
use crate::node::{Listeners, Node};

use super::{fail, runtime, wait_for_ctrl_c, EXIT_USAGE};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    nodes: u16,
    /// Where the nodes keep their data (one folder per node); a restart finds it again.
    #[arg(long, default_value = "data/dev")]
    data_dir: PathBuf,
    /// Node i serves HTTP on base-port+i and peers on base-port+100+i.
    #[arg(long, default_value_t = 8100, value_parser = clap::value_parser!(u16).range(1..=65000))]
    base_port: u16,
    /// When the nodes fsync writes (API.md `[storage] sync`): always (before the ack, group
    /// commit), interval, or none.
    #[arg(long, value_enum, default_value = "always")]
    sync: SyncSetting,
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
    for config in &mut configs {
        config.storage.sync = args.sync;
    }
    if let Some(Err(e)) = configs.first().map(Config::validate) {
        return fail(EXIT_USAGE, e);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(1, e),
    };
    rt.block_on(async {
        let mut nodes = Vec::new();
        for config in configs {
            let started = match Listeners::bind(config.http_addr, config.peer_addr).await {
                Ok(listeners) => Node::start(config, listeners).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    for node in nodes {
                        node.shutdown().await;
                    }
                    return fail(1, e);
                }
            }
        }
        println!(
            "quorumkv dev: {} nodes, data under {}",
            nodes.len(),
            args.data_dir.display()
        );
        for node in &nodes {
            println!("  {}  http://{}", node.node_id(), node.http_addr());
        }
        println!("Ctrl-C stops the cluster.");
        wait_for_ctrl_c().await;
        for node in nodes {
            node.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}
