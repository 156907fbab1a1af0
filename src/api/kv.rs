//! `GET`, `PUT` and `DELETE /kv/{bucket}/{key}`.

use axum::body::{to_bytes, Body};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::params::{self, PathParams, RequestKnobs};
use super::{respond, AppState};
use crate::causal::MAX_NAME_LEN;
use crate::rpc::WriteOp;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// How long a request body may take to arrive (a 1 MiB value needs far less on any link).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most bytes of a refused body read and dropped so that its sender sees the answer.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;
/// How long the drain of a refused body may take.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops a refused body, within [`DRAIN_TIMEOUT`].
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(_)) = futures::StreamExt::next(&mut stream).await {}
    })
    .await;
}

/// Bucket, key and knobs of a `/kv` request.
struct Target {
    bucket: String,
    key: String,
    knobs: RequestKnobs,
}

fn target(state: &AppState, path: PathParams, query: Option<&str>) -> Result<Target, ApiError> {
    let (bucket, key) = params::bucket_key(path)?;
    let knobs = params::knobs(query, state.coordinator.bucket(&bucket))?;
    Ok(Target { bucket, key, knobs })
}

pub async fn get(
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let t = target(&state, path, query.as_deref())?;
    let found = state
        .coordinator
        .get(&t.bucket, &t.key, t.knobs.knobs)
        .await?;
    if let Some(found) = &found {
        state.metrics.siblings(found.live_values().len());
    }
    Ok(respond::state(
        &state.contexts,
        &t.bucket,
        &t.key,
        found.as_ref(),
    ))
}

pub async fn put(
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let t = target(&state, path, query.as_deref())?;
    let context =
        params::context(&state.contexts, &headers, &t.bucket, &t.key)?.unwrap_or_default();
    let data = read_body(&headers, body, state.config.storage.max_value_bytes).await?;
    let content_type = content_type(&headers)?;
    write(
        state,
        t,
        context,
        WriteOp::Put {
            data,
            content_type,
            meta: Vec::new(),
        },
    )
    .await
}

pub async fn delete(
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = target(&state, path, query.as_deref())?;
    // Without a context, delete what a read at the request's `r` sees (API.md v2).
    let context = match params::context(&state.contexts, &headers, &t.bucket, &t.key)? {
        Some(context) => context,
        None => {
            state
                .coordinator
                .visible_context(&t.bucket, &t.key, t.knobs.knobs)
                .await?
        }
    };
    write(state, t, context, WriteOp::Delete).await
}

async fn write(
    state: AppState,
    t: Target,
    context: crate::causal::VersionVector,
    op: WriteOp,
) -> Result<Response, ApiError> {
    let after = state
        .coordinator
        .put(&t.bucket, &t.key, &context, op, t.knobs.knobs)
        .await?;
    if t.knobs.return_body {
        Ok(respond::state(
            &state.contexts,
            &t.bucket,
            &t.key,
            Some(&after),
        ))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Reads a write's body: at most `max` bytes, within [`BODY_TIMEOUT`]. A `Content-Length`
/// over `max` is refused from the header: a client waiting on `Expect: 100-continue` is
/// answered before it sends a byte; one already sending has a bounded amount of its body
/// read and dropped first, so it sees the 413 instead of a reset on a half-written request.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("values are limited to {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > max as u64) {
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue && len <= DRAIN_LIMIT {
            drain(body).await;
        }
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, max)).await {
        Ok(Ok(data)) => Ok(data.to_vec()),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "bad_body",
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body did not arrive within {BODY_TIMEOUT:?}"),
        )),
    }
}

/// The value's content type: the header as sent, or octet-stream without one.
pub(super) fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|ct| !ct.is_empty() && ct.len() <= MAX_NAME_LEN)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_content_type",
                    format!("Content-Type must be 1 to {MAX_NAME_LEN} visible ASCII characters"),
                )
            }),
    }
}
