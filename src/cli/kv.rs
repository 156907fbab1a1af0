//! `quorumkv kv get|put|delete`: a client of the HTTP API that keeps each key's causal context
//! in a small JSON file, so that a read followed by a write merges instead of adding a sibling.
//! The file is per user, not per directory (`--contexts` says where; [`default_contexts`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};

use super::{fail, runtime};

/// Path-segment encoding: everything but unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Read a key: its value, or its siblings.
    Get {
        /// The bucket (its settings come from the cluster config; any name works).
        bucket: String,
        /// The key within the bucket.
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Write a value; sends the context of your last read of the key, so it replaces what you saw.
    Put {
        /// The bucket (its settings come from the cluster config; any name works).
        bucket: String,
        /// The key within the bucket.
        key: String,
        /// The value to store, as given.
        value: String,
        /// The value's media type, returned with it on reads.
        #[arg(long, default_value = "text/plain")]
        content_type: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a key: what your last read saw, or without a saved context what the node reads
    /// now (a concurrent write it did not see survives).
    Delete {
        /// The bucket.
        bucket: String,
        /// The key within the bucket.
        key: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Any node of the cluster: `host:port` or `http://host:port`.
    #[arg(long, default_value = "127.0.0.1:8101")]
    node: String,
    /// Read quorum (1..n, one, quorum, all); default the bucket's.
    #[arg(long)]
    r: Option<String>,
    /// Write quorum; default the bucket's.
    #[arg(long)]
    w: Option<String>,
    /// Primaries that must answer a read.
    #[arg(long)]
    pr: Option<String>,
    /// Primaries that must store a write.
    #[arg(long)]
    pw: Option<String>,
    /// How long the node may take (docs/API.md `timeout_ms`).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Send this causal context instead of the saved one.
    #[arg(long, conflicts_with = "no_context")]
    context: Option<String>,
    /// Write blind: send no context (a put becomes a sibling of whatever is there).
    #[arg(long)]
    no_context: bool,
    /// The client token, when the cluster requires one.
    #[arg(long, env = "QUORUMKV_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM certificate to trust for `https://` nodes (the node's own, from `quorumkv cert`).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Where contexts are kept between calls [default: $QUORUMKV_CONTEXTS, else
    /// $XDG_STATE_HOME/quorumkv/contexts.json, else ~/.local/state/quorumkv/contexts.json].
    #[arg(long, alias = "context-file")]
    contexts: Option<PathBuf>,
}

/// The per-user context file: `$QUORUMKV_CONTEXTS`, else under `$XDG_STATE_HOME` or
/// `~/.local/state`; the working directory only when none of these is set.
fn default_contexts() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(path) = var("QUORUMKV_CONTEXTS") {
        return path;
    }
    let state = var("XDG_STATE_HOME").or_else(|| var("HOME").map(|h| h.join(".local/state")));
    match state {
        Some(dir) => dir.join("quorumkv").join("contexts.json"),
        None => PathBuf::from(".quorumkv-contexts.json"),
    }
}

/// `host:port` or a URL, as a base URL without a trailing slash.
pub fn base_url(node: &str) -> String {
    let node = node.trim_end_matches('/');
    if node.contains("://") {
        node.to_owned()
    } else {
        format!("http://{node}")
    }
}

/// An error with every cause it wraps ("error sending request ...: connection refused").
pub(super) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub fn run(cmd: KvCommand) -> ExitCode {
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => return fail(1, e),
    };
    match rt.block_on(execute(cmd)) {
        Ok(code) => code,
        Err(e) => fail(1, e),
    }
}

async fn execute(cmd: KvCommand) -> Result<ExitCode, String> {
    let (method, bucket, key, body, content_type, common) = match cmd {
        KvCommand::Get {
            bucket,
            key,
            common,
        } => (Method::GET, bucket, key, None, None, common),
        KvCommand::Put {
            bucket,
            key,
            value,
            content_type,
            common,
        } => (
            Method::PUT,
            bucket,
            key,
            Some(value),
            Some(content_type),
            common,
        ),
        KvCommand::Delete {
            bucket,
            key,
            common,
        } => (Method::DELETE, bucket, key, None, None, common),
    };
    let id = format!("{bucket}/{key}");
    let contexts = common.contexts.clone().unwrap_or_else(default_contexts);
    let mut saved = load(&contexts);
    let mut query: Vec<(&str, String)> = [
        ("r", &common.r),
        ("w", &common.w),
        ("pr", &common.pr),
        ("pw", &common.pw),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect();
    if let Some(ms) = common.timeout_ms {
        query.push(("timeout_ms", ms.to_string()));
    }
    if method != Method::GET {
        query.push(("return_body", "true".into()));
    }
    let url = format!(
        "{}/kv/{}/{}",
        base_url(&common.node),
        utf8_percent_encode(&bucket, SEGMENT),
        utf8_percent_encode(&key, SEGMENT)
    );
    let mut client = reqwest::Client::builder();
    if let Some(path) = &common.cacert {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        client = client.add_root_certificate(cert);
    }
    let client = client.build().map_err(|e| with_causes(&e))?;
    let mut request = client.request(method.clone(), url).query(&query);
    let context = if common.no_context {
        None
    } else {
        common.context.clone().or_else(|| saved.get(&id).cloned())
    };
    if method != Method::GET {
        if let Some(token) = &context {
            request = request.header("x-causal-context", token);
        }
    }
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(token) = &common.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| {
        format!(
            "cannot reach {}: {}",
            base_url(&common.node),
            with_causes(&e)
        )
    })?;
    let status = response.status();
    if let Some(token) = response
        .headers()
        .get("x-causal-context")
        .and_then(|v| v.to_str().ok())
    {
        saved.insert(id.clone(), token.to_owned());
        store(&contexts, &saved)?;
    }
    let text = response.bytes().await.map_err(|e| with_causes(&e))?;
    if method == Method::DELETE && status.is_success() {
        println!("deleted {id}");
        if status == StatusCode::NO_CONTENT {
            return Ok(ExitCode::SUCCESS);
        }
        // 200 or 300: values the delete did not cover (written concurrently) survive.
        print!("still there, written concurrently: ");
    }
    match status {
        StatusCode::OK => {
            println!("{}", String::from_utf8_lossy(&text));
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::NO_CONTENT => Ok(ExitCode::SUCCESS),
        StatusCode::MULTIPLE_CHOICES => {
            let parsed: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| e.to_string())?;
            let siblings = parsed["siblings"].as_array().cloned().unwrap_or_default();
            println!(
                "{} siblings (write back to merge them; the context is saved):",
                siblings.len()
            );
            for (i, s) in siblings.iter().enumerate() {
                let value = s["value"].as_str().map(str::to_owned).unwrap_or_else(|| {
                    format!("base64:{}", s["value_base64"].as_str().unwrap_or(""))
                });
                let modified = s["modified_ms"].as_u64().map_or_else(String::new, |ms| {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    format!(", modified {}", humantime::format_rfc3339_millis(at))
                });
                println!(
                    "  [{}] {}  ({}{modified})",
                    i + 1,
                    value,
                    s["content_type"].as_str().unwrap_or(""),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::NOT_FOUND if method == Method::DELETE => {
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::NOT_FOUND => {
            println!("not found");
            Ok(ExitCode::FAILURE)
        }
        _ => {
            eprintln!("{}: {}", status, String::from_utf8_lossy(&text));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn load(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn store(path: &Path, contexts: &BTreeMap<String, String>) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(contexts).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {} for contexts: {e}", dir.display()))?;
    }
    std::fs::write(path, json)
        .map_err(|e| format!("cannot save contexts to {}: {e}", path.display()))
}
