//! `/buckets/{b}/props`: Riak's bucket properties, mapped onto the bucket settings in the
//! cluster's metadata (a change goes through consensus, `meta::buckets`):
//! `n_val` ↔ `n`; `r`, `w`, `pr`, `pw`, `dw`, `rw` as they are; `allow_mult: true` ↔
//! `conflict = "siblings"`, `allow_mult: false` or `last_write_wins: true` ↔ `"lww"`.
//! Properties quorumkv does not act on are kept and returned as they were given.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{names, RiakError};
use crate::api::{kv, AppState};
use crate::config::{Conflict, Quorum};
use crate::meta::buckets::PropsSet;
use crate::meta::{Command, ProposeError, Refusal};

/// Largest properties body accepted.
const MAX_PROPS_BYTES: usize = 64 * 1024;
/// How long a change may take to show on this node once committed.
const SHOW_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn get(State(state): State<AppState>, uri: Uri) -> Result<Json<Value>, RiakError> {
    let bucket = names(&uri)?.bucket;
    let s = state.coordinator.view().meta.bucket_settings(&bucket);
    let mut props = json!({
        "name": bucket,
        "n_val": s.n,
        "allow_mult": s.conflict == Conflict::Siblings,
        "last_write_wins": s.conflict == Conflict::Lww,
        "r": s.r, "w": s.w, "dw": s.dw, "rw": s.rw, "pr": s.pr, "pw": s.pw,
        "basic_quorum": false,
        "notfound_ok": true,
    });
    if let Value::Object(map) = &mut props {
        for (k, v) in &s.other {
            map.insert(k.clone(), serde_json::from_str(v).unwrap_or(Value::Null));
        }
    }
    Ok(Json(json!({ "props": props })))
}

pub async fn put(
    State(state): State<AppState>,
    uri: Uri,
    body: Body,
) -> Result<Response, RiakError> {
    let bucket = names(&uri)?.bucket;
    let bytes = kv::read_body(&axum::http::HeaderMap::new(), body, MAX_PROPS_BYTES).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| RiakError::bad_request(format!("the body must be JSON: {e}")))?;
    let props = body
        .get("props")
        .and_then(Value::as_object)
        .ok_or_else(|| RiakError::bad_request("the body must be {\"props\": {...}}"))?;
    let change = parse(props)?;
    let shown = change.clone();
    let command = Command::SetProps {
        bucket: bucket.clone(),
        props: change,
    };
    apply(&state, &bucket, command, move |set| {
        set.is_some_and(|set| set.overlay(&shown) == *set)
    })
    .await
}

pub async fn delete(State(state): State<AppState>, uri: Uri) -> Result<Response, RiakError> {
    let bucket = names(&uri)?.bucket;
    let command = Command::ClearProps {
        bucket: bucket.clone(),
    };
    apply(&state, &bucket, command, |set| set.is_none()).await
}

/// Proposes the change, then waits (briefly) until this node's metadata shows it, so that
/// the client's next request here sees its own change.
async fn apply(
    state: &AppState,
    bucket: &str,
    command: Command,
    shows: impl Fn(Option<&PropsSet>) -> bool,
) -> Result<Response, RiakError> {
    let metadata = state.coordinator.metadata();
    match metadata.propose(command).await {
        Ok(()) => {}
        Err(ProposeError::Refused(Refusal::Invalid(why))) => {
            return Err(RiakError::bad_request(why))
        }
        Err(e) => {
            return Err(RiakError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
        }
    }
    let deadline = tokio::time::Instant::now() + SHOW_WAIT;
    metadata
        .wait_for_view(deadline, |v| shows(v.meta.props.get(bucket)))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Riak's properties as a change of settings.
fn parse(props: &Map<String, Value>) -> Result<PropsSet, RiakError> {
    let mut set = PropsSet::default();
    let mut allow_mult = None;
    let mut lww = None;
    for (name, value) in props {
        let bad =
            |what: &str| RiakError::bad_request(format!("{name} must be {what}; got {value}"));
        match name.as_str() {
            "name" => {}
            "n_val" => {
                let n = value
                    .as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("a positive integer"))?;
                set.n = Some(n);
            }
            "allow_mult" => allow_mult = Some(value.as_bool().ok_or_else(|| bad("true or false"))?),
            "last_write_wins" => lww = Some(value.as_bool().ok_or_else(|| bad("true or false"))?),
            "r" | "w" | "pr" | "pw" | "dw" | "rw" => {
                let q = match value {
                    Value::Number(n) => {
                        n.as_u64().and_then(|n| u8::try_from(n).ok()).map(Quorum::N)
                    }
                    Value::String(s) if s == "default" => continue,
                    Value::String(s) => Quorum::parse(s),
                    _ => None,
                }
                .ok_or_else(|| bad("a number or one, quorum, all, default"))?;
                let slot = match name.as_str() {
                    "r" => &mut set.r,
                    "w" => &mut set.w,
                    "pr" => &mut set.pr,
                    "pw" => &mut set.pw,
                    "dw" => &mut set.dw,
                    _ => &mut set.rw,
                };
                *slot = Some(q);
            }
            _ => {
                set.other.insert(name.clone(), value.to_string());
            }
        }
    }
    set.conflict = match (allow_mult, lww) {
        (Some(true), Some(true)) => {
            return Err(RiakError::bad_request(
                "allow_mult and last_write_wins cannot both be true",
            ))
        }
        (Some(true), _) => Some(Conflict::Siblings),
        (Some(false), _) | (None, Some(true)) => Some(Conflict::Lww),
        (None, _) => None,
    };
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(v: Value) -> Result<PropsSet, RiakError> {
        parse(v.as_object().expect("object"))
    }

    #[test]
    fn riak_properties_map_onto_settings_and_unknown_ones_are_kept() {
        let set = props(json!({"n_val": 2, "allow_mult": true, "r": "one", "pw": 0,
            "w": "default", "young_vclock": 20, "name": "b"}))
        .expect("valid");
        assert_eq!(set.n, Some(2));
        assert_eq!(set.conflict, Some(Conflict::Siblings));
        assert_eq!(
            (set.r, set.pw, set.w),
            (Some(Quorum::One), Some(Quorum::N(0)), None)
        );
        assert_eq!(
            set.other.get("young_vclock").map(String::as_str),
            Some("20")
        );
        assert!(!set.other.contains_key("name"));
        assert_eq!(
            props(json!({"allow_mult": false})).expect("valid").conflict,
            Some(Conflict::Lww)
        );
        assert_eq!(
            props(json!({"last_write_wins": true}))
                .expect("valid")
                .conflict,
            Some(Conflict::Lww)
        );
        assert_eq!(
            props(json!({"last_write_wins": false}))
                .expect("valid")
                .conflict,
            None
        );
        for bad in [
            json!({"n_val": 0}),
            json!({"allow_mult": "yes"}),
            json!({"r": "most"}),
            json!({"allow_mult": true, "last_write_wins": true}),
        ] {
            assert!(props(bad.clone()).is_err(), "{bad}");
        }
    }
}
