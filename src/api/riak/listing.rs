//! `GET /buckets?buckets=true|stream` and `GET /buckets/{b}/keys?keys=true|stream`: listings
//! through the coordinator's coverage plan. `true` answers once with every name; `stream`
//! sends a JSON object per node as its share arrives (`{"keys":[...]}`, never an empty one)
//! and `{"error":"..."}` if a share fails. As in Riak, listing is expensive (every node walks
//! all of its keys) and meant for operators and tests, not for a request path: it is logged.

use std::collections::BTreeSet;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::query;
use super::{names, RiakError};
use crate::api::AppState;

pub async fn buckets(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Response, RiakError> {
    if let Some(t) = uri.path().strip_prefix("/types/") {
        let t = super::decode(t.split('/').next().unwrap_or(""))?;
        if t != "default" {
            return Err(RiakError::new(
                StatusCode::NOT_FOUND,
                format!("unknown bucket type {t:?}: only \"default\" exists"),
            ));
        }
    }
    list(state, None, "buckets", raw.as_deref()).await
}

pub async fn keys(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Response, RiakError> {
    let bucket = names(&uri)?.bucket;
    list(state, Some(bucket), "keys", raw.as_deref()).await
}

async fn list(
    state: AppState,
    bucket: Option<String>,
    field: &'static str,
    raw: Option<&str>,
) -> Result<Response, RiakError> {
    let pairs = query::pairs(raw)?;
    let stream = match query::value(&pairs, field) {
        Some("true") => false,
        Some("stream") => true,
        _ => {
            return Err(RiakError::bad_request(format!(
                "give {field}=true or {field}=stream"
            )))
        }
    };
    let timeout = query::listing_timeout(&pairs)?;
    tracing::warn!(
        bucket = bucket.as_deref().unwrap_or("*"),
        what = field,
        "listing through a coverage plan: every node walks all of its keys (expensive)"
    );
    let mut shares = state.coordinator.list(bucket, timeout)?;
    if !stream {
        let mut all = BTreeSet::new();
        while let Some(share) = shares.recv().await {
            all.extend(share?);
        }
        return Ok(json_response(json!({ field: all }).to_string()));
    }
    let chunks = futures::stream::unfold(
        (shares, BTreeSet::<String>::new(), false),
        move |(mut shares, mut seen, done)| async move {
            if done {
                return None;
            }
            loop {
                let chunk = match shares.recv().await? {
                    Ok(names) => {
                        let new: Vec<String> = names
                            .into_iter()
                            .filter(|n| seen.insert(n.clone()))
                            .collect();
                        if new.is_empty() {
                            continue;
                        }
                        (json!({ field: new }).to_string(), false)
                    }
                    Err(f) => {
                        let e = super::RiakError::from(f);
                        (json!({ "error": e.message }).to_string(), true)
                    }
                };
                let (text, last) = chunk;
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(Bytes::from(text)),
                    (shares, seen, last),
                ));
            }
        },
    );
    Ok(json_response(Body::from_stream(chunks)))
}

fn json_response(body: impl Into<Body>) -> Response {
    let mut r = (StatusCode::OK, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
