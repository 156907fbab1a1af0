//! Shaping a key's state into the answer API.md specifies: 200 with the value, 300 with the
//! siblings as JSON, or 404; each with the `X-Causal-Context` covering what was shown.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::error::ApiError;
use super::params::CONTEXT_HEADER;
use crate::causal::token::{self, ContextKey};
use crate::causal::{KeyState, Sibling};

pub const TIMESTAMP_HEADER: &str = "x-timestamp";

/// One sibling as JSON: the value as text when it is UTF-8, base64 otherwise.
pub fn sibling_json(s: &Sibling) -> Value {
    let mut v = match std::str::from_utf8(&s.data) {
        Ok(text) => json!({ "value": text }),
        Err(_) => json!({ "value_base64": STANDARD.encode(&s.data) }),
    };
    v["content_type"] = json!(s.content_type);
    v["modified_ms"] = json!(s.modified_ms);
    v
}

/// The live siblings in a stable order: oldest write first.
pub fn ordered_siblings(state: &KeyState) -> Vec<&Sibling> {
    let mut live = state.live_values();
    live.sort_by(|a, b| (a.modified_ms, &a.data).cmp(&(b.modified_ms, &b.data)));
    live
}

/// The answer to a GET (or a write with `return_body=true`) for this state.
pub fn state(mac: &ContextKey, bucket: &str, key: &str, state: Option<&KeyState>) -> Response {
    let Some(state) = state else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such key").into_response();
    };
    let context = token::encode(mac, bucket.as_bytes(), key.as_bytes(), &state.context());
    let live = ordered_siblings(state);
    let mut response = match live.as_slice() {
        [] => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "the key was deleted").into_response()
        }
        [one] => {
            let mut r = (StatusCode::OK, one.data.clone()).into_response();
            if let Ok(ct) = HeaderValue::from_str(&one.content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        }
        many => {
            let siblings: Vec<Value> = many.iter().map(|s| sibling_json(s)).collect();
            (
                StatusCode::MULTIPLE_CHOICES,
                axum::Json(json!({ "siblings": siblings })),
            )
                .into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&context) {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
    if let KeyState::Lww(reg) = state {
        response.headers_mut().insert(
            TIMESTAMP_HEADER,
            HeaderValue::from(reg.timestamp.physical_ms),
        );
    }
    response
}
