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
    /// For `insufficient_replicas`: (needed, acked).
    pub quorum: Option<(u8, u8)>,
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
            Failure::Insufficient { needed, acked } => ApiError {
                quorum: Some((needed, acked)),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "insufficient_replicas",
                    format!("{acked} of the {needed} replicas needed answered in time"),
                )
            },
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
            Some((needed, acked)) => json!({
                "error": self.error,
                "message": self.message,
                "needed": needed,
                "acked": acked,
            }),
            None => json!({ "error": self.error, "message": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}
