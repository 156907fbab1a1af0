//! Every error the HTTP API returns: a status and the JSON body
//! `{"error":"<machine word>","message":"<for a person>"}` (API.md).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::rpc::Failure;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
    /// For `insufficient_replicas`: (needed, acked, pending).
    pub quorum: Option<(u8, u8, u8)>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            quorum: None,
        }
    }

    pub fn bad_request(error: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error, message)
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Insufficient {
                needed,
                acked,
                pending,
            } => ApiError {
                quorum: Some((needed, acked, pending)),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "insufficient_replicas",
                    if pending > 0 {
                        format!("{acked} of the {needed} replicas needed answered in time; {pending} had not answered, so a write may still land on them")
                    } else {
                        format!("{acked} of the {needed} replicas needed answered in time")
                    },
                )
            },
            Failure::NoSpace(reason) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!("no replica could store the write: {reason}"),
            ),
            Failure::Corrupt(reason) => {
                tracing::warn!(%reason, "no replica could read the key");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "replica_damaged",
                    format!("the key's stored state is being repaired: {reason}"),
                )
            }
            Failure::ClockSkew { offset_ms } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "clock_skew",
                format!("no replica with a sound clock could coordinate this lww write (this node's clock is off by {offset_ms} ms)"),
            ),
            Failure::TooManySiblings { count, max } => ApiError::new(
                StatusCode::CONFLICT,
                "too_many_siblings",
                format!(
                    "the write would leave {count} siblings, over the limit of {max}: read the key and write back with its X-Causal-Context to merge them"
                ),
            ),
            Failure::TooLarge { bytes, max } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                format!("the key's value with its siblings would take {bytes} bytes, over the limit of {max}"),
            ),
            Failure::StaleRing { ring_version } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ring_changing",
                format!("the cluster's ring changed during the write (now version {ring_version}) and it could not be placed again in time; retry"),
            ),
            Failure::Internal(reason) => {
                tracing::error!(%reason, "request failed inside the node");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", reason)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.quorum {
            Some((needed, acked, pending)) => json!({
                "error": self.error,
                "message": self.message,
                "needed": needed,
                "acked": acked,
                "pending": pending,
            }),
            None => json!({ "error": self.error, "message": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}
