//! `quorumkv kv get|put|delete`: a client of the HTTP API that keeps each key's causal context
//! in a small JSON file, so that a read followed by a write merges instead of adding a sibling.

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
        bucket: String,
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Write a value; sends the context of your last read of the key, so it replaces what you saw.
    Put {
        bucket: String,
        key: String,
        value: String,
        #[arg(long, default_value = "text/plain")]
        content_type: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a key (with the context of your last read).
    Delete {
        bucket: String,
        key: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Any node of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:8101")]
    node: String,
    #[arg(long)]
    r: Option<String>,
    #[arg(long)]
    w: Option<String>,
    #[arg(long)]
    pr: Option<String>,
    #[arg(long)]
    pw: Option<String>,
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Send this causal context instead of the saved one.
    #[arg(long, conflicts_with = "no_context")]
    context: Option<String>,
    /// Write blind: send no context (the write becomes a sibling of whatever is there).
    #[arg(long)]
    no_context: bool,
    /// Where contexts are kept between calls.
    #[arg(long, default_value = ".quorumkv-contexts.json")]
    context_file: PathBuf,
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
    let mut saved = load(&common.context_file);
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
        common.node.trim_end_matches('/'),
        utf8_percent_encode(&bucket, SEGMENT),
        utf8_percent_encode(&key, SEGMENT)
    );
    let mut request = reqwest::Client::new()
        .request(method.clone(), url)
        .query(&query);
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
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if let Some(token) = response
        .headers()
        .get("x-causal-context")
        .and_then(|v| v.to_str().ok())
    {
        saved.insert(id.clone(), token.to_owned());
        store(&common.context_file, &saved)?;
    }
    let text = response.bytes().await.map_err(|e| e.to_string())?;
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
                println!(
                    "  [{}] {}  ({}, modified {} ms)",
                    i + 1,
                    value,
                    s["content_type"].as_str().unwrap_or(""),
                    s["modified_ms"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::NOT_FOUND if method == Method::DELETE => Ok(ExitCode::SUCCESS),
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
    std::fs::write(path, json)
        .map_err(|e| format!("cannot save contexts to {}: {e}", path.display()))
}
