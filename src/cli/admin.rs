//! `quorumkv admin`: the cluster's membership from an operator's terminal, over the HTTP API
//! (`/admin/cluster`): status, join, leave, replace, and waiting for a change's transfers with a
//! progress bar (plain lines when stderr is not a terminal).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::kv::{base_url, with_causes};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// Any node of the cluster: `host:port` or `http://host:port`.
    #[arg(long, global = true, default_value = "127.0.0.1:8101")]
    node: String,
    /// A token with `admin` on `*`, when the cluster requires one.
    #[arg(long, global = true, env = "QUORUMKV_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM certificate to trust for `https://` nodes.
    #[arg(long, global = true)]
    cacert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Members, their states, the ring version and the transfers still to do.
    Status,
    /// Admit a node: it is `joining` at once and its share of partitions streams to it once
    /// it runs (started with `[cluster] join` naming any member, before or after this).
    Join {
        id: String,
        /// Where the other nodes reach it (its `peer_addr`).
        #[arg(long)]
        peer_addr: SocketAddr,
        /// Where clients reach it (its `http_addr`).
        #[arg(long)]
        http_addr: SocketAddr,
        /// Return at once instead of waiting for the transfers.
        #[arg(long)]
        no_wait: bool,
    },
    /// Hand a node's partitions to the others; it reports `left` when done.
    Leave {
        id: String,
        /// Return at once instead of waiting for the transfers.
        #[arg(long)]
        no_wait: bool,
    },
    /// Give a dead (or retiring) node's partitions to a node that has joined.
    Replace {
        old: String,
        new: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Wait until no transfer is pending, showing progress (after a join, say).
    Wait,
}

pub fn run(args: AdminArgs) -> ExitCode {
    let rt = match super::runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => return super::fail(1, e),
    };
    match rt.block_on(admin(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(1, e),
    }
}

async fn admin(args: &AdminArgs) -> Result<(), String> {
    let http = client(args)?;
    let base = base_url(&args.node);
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = http.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(t) = &args.token {
            request = request.bearer_auth(t);
        }
        let base = base.clone();
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| format!("cannot reach {base}: {}", with_causes(&e)))?;
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!(
                    "{status}: {}",
                    body["message"].as_str().unwrap_or("")
                ))
            }
        }
    };
    match &args.command {
        AdminCommand::Status => {
            let v = call(reqwest::Method::GET, "/admin/cluster".into(), None).await?;
            print_status(&v);
            Ok(())
        }
        AdminCommand::Join {
            id,
            peer_addr,
            http_addr,
            no_wait,
        } => {
            let joiner = serde_json::json!({
                "id": id,
                "peer_addr": peer_addr.to_string(),
                "http_addr": http_addr.to_string(),
            });
            let path = "/admin/cluster/join".to_owned();
            call(reqwest::Method::POST, path, Some(joiner)).await?;
            println!(
                "{id} is joining; its partitions stream to it once it runs \
                 (`quorumkv serve` with `[cluster] join` naming any member)"
            );
            if !no_wait {
                wait(&call, None).await?;
            }
            Ok(())
        }
        AdminCommand::Leave { id, no_wait } => {
            call(
                reqwest::Method::POST,
                format!("/admin/cluster/leave/{id}"),
                None,
            )
            .await?;
            println!("{id} is leaving");
            if !no_wait {
                wait(&call, Some(id)).await?;
            }
            Ok(())
        }
        AdminCommand::Replace { old, new, no_wait } => {
            call(
                reqwest::Method::POST,
                format!("/admin/cluster/replace/{old}/{new}"),
                None,
            )
            .await?;
            println!("{new} replaces {old}");
            if !no_wait {
                wait(&call, Some(old)).await?;
            }
            Ok(())
        }
        AdminCommand::Wait => wait(&call, None).await,
    }
}

fn client(args: &AdminArgs) -> Result<reqwest::Client, String> {
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        client = client.add_root_certificate(cert);
    }
    client.build().map_err(|e| with_causes(&e))
}

fn print_status(v: &Value) {
    println!(
        "ring version {}, transfers pending {}, metadata leader {}",
        v["ring_version"],
        v["transfers_pending"],
        v["leader"].as_str().unwrap_or("none")
    );
    for m in v["members"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} {:<8} peer {:<22} http {}",
            m["id"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or(""),
            m["peer_addr"].as_str().unwrap_or(""),
            m["http_addr"].as_str().unwrap_or("")
        );
    }
}

/// Polls `/admin/cluster` until no transfer is pending, no member is joining or leaving, and
/// `gone` (if given) has left: the node asked may apply the change a moment after it answered.
async fn wait<F, Fut>(call: &F, gone: Option<&str>) -> Result<(), String>
where
    F: Fn(reqwest::Method, String, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(0);
    if tty {
        bar.set_style(
            ProgressStyle::with_template("{spinner} transfers {pos}/{len} {wide_bar} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut most = 0;
    let mut last_line = None;
    loop {
        let v = call(reqwest::Method::GET, "/admin/cluster".into(), None).await?;
        let pending = v["transfers_pending"].as_u64().unwrap_or(0);
        let members = v["members"].as_array().cloned().unwrap_or_default();
        let changing = members.iter().any(|m| {
            matches!(m["state"].as_str(), Some("joining" | "leaving"))
                || (gone.is_some() && m["id"].as_str() == gone && m["state"] != "left")
        });
        most = most.max(pending);
        bar.set_length(most);
        bar.set_position(most - pending);
        bar.set_message(format!("ring version {}", v["ring_version"]));
        if !tty && last_line != Some(pending) {
            eprintln!(
                "transfers pending: {pending} (ring version {})",
                v["ring_version"]
            );
            last_line = Some(pending);
        }
        if pending == 0 && !changing {
            bar.finish_and_clear();
            print_status(&v);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
