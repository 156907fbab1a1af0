//! `/buckets/{b}/keys/{k}`: `GET`/`HEAD`, `PUT`/`POST`, `DELETE`; `POST /buckets/{b}/keys`
//! makes a key. The semantics of Riak's `riak_kv_wm_object`: conditional requests (`304`,
//! `412`), `returnbody`, `300` siblings, `404` for a key that is gone (or never was).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::query::{self, ObjectQuery};
use super::wire::{self, Answer, VCLOCK_HEADER};
use super::{names, RiakError};
use crate::api::{kv, AppState};
use crate::causal::token;
use crate::causal::{KeyState, VersionVector};
use crate::rpc::WriteOp;

/// Length of the keys `POST /buckets/{b}/keys` makes (as Riak's: 22 base-62 characters).
const NEW_KEY_LEN: usize = 22;

/// The bucket, key and parameters of an object request.
struct Target {
    prefix: String,
    bucket: String,
    key: String,
    query: ObjectQuery,
}

fn target(state: &AppState, uri: &Uri, raw: Option<&str>) -> Result<Target, RiakError> {
    let names = names(uri)?;
    let key = names.key.ok_or_else(RiakError::not_found)?;
    let pairs = query::pairs(raw)?;
    let query = query::object(&pairs, state.coordinator.bucket(&names.bucket))?;
    Ok(Target {
        prefix: names.prefix,
        bucket: names.bucket,
        key,
        query,
    })
}

fn takes_multipart(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("multipart/mixed"))
}

/// The causal context of `X-Riak-Vclock`, if sent; one the cluster did not issue for this
/// key is a 400.
fn vclock(
    state: &AppState,
    headers: &HeaderMap,
    t: &Target,
) -> Result<Option<VersionVector>, RiakError> {
    let Some(v) = headers.get(VCLOCK_HEADER) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| RiakError::bad_request("X-Riak-Vclock is not ASCII"))?;
    token::decode_vclock(
        &state.contexts,
        t.bucket.as_bytes(),
        t.key.as_bytes(),
        text.trim(),
    )
    .map(Some)
    .map_err(|e| RiakError::bad_request(format!("bad X-Riak-Vclock: {e}")))
}

pub async fn get(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, RiakError> {
    let t = target(&state, &uri, raw.as_deref())?;
    let found = state
        .coordinator
        .get(&t.bucket, &t.key, t.query.knobs)
        .await?;
    let Some(found) = found else {
        return Err(RiakError::not_found());
    };
    state.metrics.siblings(found.live_values().len());
    let vclock = wire::vclock(&state.contexts, &t.bucket, &t.key, &found);
    if let Some(unchanged) = not_modified(&headers, &found, &vclock) {
        return Ok(unchanged);
    }
    let answer = Answer {
        state: &found,
        vclock: vclock.clone(),
        multipart: takes_multipart(&headers),
        vtag: t.query.vtag.as_deref(),
        single_status: StatusCode::OK,
    };
    match answer.respond() {
        Err(e) if e.status == StatusCode::NOT_FOUND && t.query.deleted_vclock => {
            let mut r = e.into_response();
            if let Ok(v) = HeaderValue::from_str(&vclock) {
                r.headers_mut().insert(VCLOCK_HEADER, v);
            }
            Ok(r)
        }
        answered => answered,
    }
}

/// `304` when the one value shown is what `If-None-Match` or `If-Modified-Since` names.
fn not_modified(headers: &HeaderMap, state: &KeyState, vclock: &str) -> Option<Response> {
    let shown = wire::siblings(state);
    let [one] = shown.as_slice() else {
        return None;
    };
    if one.tombstone {
        return None;
    }
    let tag = wire::vtag(one);
    let same_tag = header_text(headers, header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| unquote(t) == tag || t.trim() == "*"));
    let not_since = header_text(headers, header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| modified_secs(one.modified_ms) <= secs(since));
    if !same_tag && !not_since {
        return None;
    }
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    if let (Ok(etag), Ok(v)) = (
        HeaderValue::from_str(&format!("\"{tag}\"")),
        HeaderValue::from_str(vclock),
    ) {
        r.headers_mut().insert(header::ETAG, etag);
        r.headers_mut().insert(VCLOCK_HEADER, v);
    }
    Some(r)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn unquote(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/").trim_matches('"')
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// HTTP dates have whole seconds.
fn modified_secs(ms: u64) -> u64 {
    ms / 1000
}

pub async fn put(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RiakError> {
    let t = target(&state, &uri, raw.as_deref())?;
    let context = vclock(&state, &headers, &t)?.unwrap_or_default();
    let op = value(&state, &headers, body).await?;
    preconditions(&state, &headers, &t).await?;
    write(&state, &t, &headers, &context, op, false).await
}

/// `POST /buckets/{b}/keys`: stores the value under a new random key; `201` with its
/// `Location`.
pub async fn create(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RiakError> {
    let names = names(&uri)?;
    let pairs = query::pairs(raw.as_deref())?;
    let t = Target {
        query: query::object(&pairs, state.coordinator.bucket(&names.bucket))?,
        prefix: names.prefix,
        bucket: names.bucket,
        key: std::iter::repeat_with(fastrand::alphanumeric)
            .take(NEW_KEY_LEN)
            .collect(),
    };
    let op = value(&state, &headers, body).await?;
    write(&state, &t, &headers, &VersionVector::new(), op, true).await
}

/// The value a write carries: its bytes, content type and Riak metadata.
async fn value(state: &AppState, headers: &HeaderMap, body: Body) -> Result<WriteOp, RiakError> {
    let meta = wire::meta_from(headers)?;
    let data = kv::read_body(headers, body, state.config.storage.max_value_bytes).await?;
    Ok(WriteOp::Put {
        data,
        content_type: kv::content_type(headers)?,
        meta,
    })
}

/// `If-None-Match`, `If-Match` and `If-Unmodified-Since` on a write: checked against what a
/// read finds now (read only when one is sent); `412` when they do not hold.
async fn preconditions(state: &AppState, headers: &HeaderMap, t: &Target) -> Result<(), RiakError> {
    let none_match = header_text(headers, header::IF_NONE_MATCH);
    let matching = header_text(headers, header::IF_MATCH);
    let unmodified = header_text(headers, header::IF_UNMODIFIED_SINCE);
    if none_match.is_none() && matching.is_none() && unmodified.is_none() {
        return Ok(());
    }
    let current = state
        .coordinator
        .get(&t.bucket, &t.key, t.query.knobs)
        .await?;
    let live: Vec<_> = current
        .as_ref()
        .map(|s| {
            wire::siblings(s)
                .into_iter()
                .filter(|s| !s.tombstone)
                .collect()
        })
        .unwrap_or_default();
    let tags: Vec<String> = live.iter().map(|s| wire::vtag(s)).collect();
    let names = |v: &str, tag: &str| v.split(',').any(|t| t.trim() == "*" || unquote(t) == tag);
    let failed = none_match.is_some_and(|v| {
        (v.trim() == "*" && !live.is_empty()) || tags.iter().any(|tag| names(v, tag))
    }) || matching.is_some_and(|v| !tags.iter().any(|tag| names(v, tag)))
        || unmodified
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                live.iter()
                    .any(|s| modified_secs(s.modified_ms) > secs(since))
            });
    if failed {
        return Err(RiakError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed: the object is not as the request's conditions require",
        ));
    }
    Ok(())
}

async fn write(
    state: &AppState,
    t: &Target,
    headers: &HeaderMap,
    context: &VersionVector,
    op: WriteOp,
    created: bool,
) -> Result<Response, RiakError> {
    let after = state
        .coordinator
        .put(&t.bucket, &t.key, context, op, t.query.knobs)
        .await?;
    let mut response = if t.query.return_body {
        Answer {
            state: &after,
            vclock: wire::vclock(&state.contexts, &t.bucket, &t.key, &after),
            multipart: takes_multipart(headers),
            vtag: None,
            single_status: if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
        }
        .respond()?
    } else if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if created {
        let location = format!("{}/keys/{}", t.prefix, t.key);
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(response)
}

/// `DELETE`: with `X-Riak-Vclock`, supersedes what it covers; without, what a read at `r`
/// finds (`404` if that is nothing, as in Riak).
pub async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, RiakError> {
    let t = target(&state, &uri, raw.as_deref())?;
    let context = match vclock(&state, &headers, &t)? {
        Some(context) => context,
        None => {
            let found = state
                .coordinator
                .get(&t.bucket, &t.key, t.query.knobs)
                .await?;
            match found {
                Some(s) if !s.live_values().is_empty() => s.context(),
                _ => return Err(RiakError::not_found()),
            }
        }
    };
    state
        .coordinator
        .put(&t.bucket, &t.key, &context, WriteOp::Delete, t.query.knobs)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Secondary-index queries: the index entries are stored and returned with each object,
/// but not queried.
pub async fn index() -> RiakError {
    RiakError::new(
        StatusCode::NOT_IMPLEMENTED,
        "secondary index queries are not served by quorumkv; index entries are stored and returned with each object",
    )
}
