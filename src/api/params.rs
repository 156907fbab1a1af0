//! Parsing and validating what a client sends: bucket and key names, knobs, the context token.

use std::time::Duration;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::RawPathParams;
use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;

use super::error::ApiError;
use crate::causal::token::{self, ContextKey};
use crate::causal::VersionVector;
use crate::config::{BucketProps, Quorum, MAX_NAME_BYTES};
use crate::coordinator::Knobs;

pub const CONTEXT_HEADER: &str = "x-causal-context";
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// The path parameters of a `/{bucket}/{key}` route, or why the router refused them.
pub type PathParams = Result<RawPathParams, RawPathParamsRejection>;

/// The bucket and key of a `/{bucket}/{key}` route, checked. The router has already
/// percent-decoded them, refusing anything that is not UTF-8 afterwards.
pub fn bucket_key(path: PathParams) -> Result<(String, String), ApiError> {
    let path = path.map_err(|e| ApiError::bad_request("bad_key", e.body_text()))?;
    let mut bucket = None;
    let mut key = None;
    for (param, value) in &path {
        match param {
            "bucket" => bucket = Some(check_name("bucket", value)?),
            "key" => key = Some(check_name("key", value)?),
            _ => {}
        }
    }
    bucket
        .zip(key)
        .ok_or_else(|| ApiError::bad_request("bad_key", "expected /{bucket}/{key}"))
}

/// Checks a decoded bucket or key: 1–255 bytes, no control characters, and for buckets no `/`.
pub fn check_name(what: &'static str, decoded: &str) -> Result<String, ApiError> {
    let error = if what == "bucket" {
        "bad_bucket"
    } else {
        "bad_key"
    };
    let problem = if decoded.is_empty() {
        Some("must not be empty")
    } else if decoded.len() > MAX_NAME_BYTES {
        Some("must be at most 255 bytes")
    } else if decoded.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if what == "bucket" && decoded.contains('/') {
        Some("must not contain '/'")
    } else {
        None
    };
    match problem {
        Some(p) => Err(ApiError::bad_request(error, format!("the {what} {p}"))),
        None => Ok(decoded.to_owned()),
    }
}

/// The knobs of one request, with `return_body`.
#[derive(Debug, Clone, Copy)]
pub struct RequestKnobs {
    pub knobs: Knobs,
    pub return_body: bool,
}

/// Parses the query string: `r`, `w`, `pr`, `pw`, `timeout_ms`, `return_body`. Anything else,
/// or a value out of range, is a 400 naming the knob.
pub fn knobs(query: Option<&str>, props: BucketProps) -> Result<RequestKnobs, ApiError> {
    let mut out = RequestKnobs {
        knobs: Knobs {
            r: props.r,
            w: props.w,
            pr: props.pr,
            pw: props.pw,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        },
        return_body: false,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let knob = percent_decode_str(raw_name).decode_utf8_lossy();
        let value = percent_decode_str(raw_value).decode_utf8_lossy();
        let bad = |why: String| ApiError::bad_request("bad_knob", format!("knob {knob}: {why}"));
        match knob.as_ref() {
            "r" | "w" => {
                let k = Quorum::parse(&value)
                    .and_then(|q| q.resolve(props.n))
                    .ok_or_else(|| {
                        bad(format!(
                            "must be 1..{} or one, quorum, all; got {value:?}",
                            props.n
                        ))
                    })?;
                if knob == "r" {
                    out.knobs.r = k;
                } else {
                    out.knobs.w = k;
                }
            }
            "pr" | "pw" => {
                let k = match Quorum::parse(&value) {
                    Some(Quorum::N(0)) => Some(0),
                    Some(q) => q.resolve(props.n),
                    None => None,
                }
                .ok_or_else(|| {
                    bad(format!(
                        "must be 0..{} or one, quorum, all; got {value:?}",
                        props.n
                    ))
                })?;
                if knob == "pr" {
                    out.knobs.pr = k;
                } else {
                    out.knobs.pw = k;
                }
            }
            "timeout_ms" => {
                let ms: u64 = value
                    .parse()
                    .ok()
                    .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
                    .ok_or_else(|| bad(format!("must be 1..{MAX_TIMEOUT_MS}; got {value:?}")))?;
                out.knobs.timeout = Duration::from_millis(ms);
            }
            "return_body" => {
                out.return_body = match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(format!("must be true or false; got {value:?}"))),
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "bad_knob",
                    format!("unknown knob {knob:?}; known: r, w, pr, pw, timeout_ms, return_body"),
                ))
            }
        }
    }
    Ok(out)
}

/// The causal context the client sent, or an empty one. A token that does not decode or
/// belongs to another key is a 400, never ignored.
pub fn context(
    mac: &ContextKey,
    headers: &HeaderMap,
    bucket: &str,
    key: &str,
) -> Result<Option<VersionVector>, ApiError> {
    let Some(value) = headers.get(CONTEXT_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("bad_context", "X-Causal-Context is not ASCII"))?;
    token::decode(mac, bucket.as_bytes(), key.as_bytes(), text.trim())
        .map(Some)
        .map_err(|e| ApiError::bad_request("bad_context", e.to_string()))
}
