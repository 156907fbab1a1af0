//! The HTTP API of API.md: `/kv` for clients, `/health` and `/admin` for operators; and
//! beside them Riak's plain-KV endpoints (`riak`) for the applications and clients that speak
//! Riak's HTTP interface.
//!
//! Handlers parse and validate (`params`), call the coordinator, and shape the answer
//! (`respond`); every error is JSON (`error`). No client input reaches a panic or a 500.

mod admin;
pub mod auth;
mod cluster;
mod error;
mod kv;
mod metrics;
mod params;
mod respond;
pub(crate) mod riak;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use crate::anti_entropy;
use crate::causal::token::ContextKey;
use crate::config::Config;
use crate::coordinator::Coordinator;
pub use error::ApiError;
pub use metrics::RequestMetrics;
pub use params::CONTEXT_HEADER;

/// What every handler shares; one `Arc`, as axum clones it for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub coordinator: Arc<Coordinator>,
    pub anti_entropy: Arc<anti_entropy::Stats>,
    pub config: Arc<Config>,
    pub started: Instant,
    /// Counted per client request; shared by the `/kv` middleware and `/metrics`.
    pub metrics: Arc<RequestMetrics>,
    /// Authenticates the causal contexts this node issues and accepts.
    pub contexts: ContextKey,
    /// Client tokens and grants; `None` lets every client do everything (loopback only).
    pub tokens: Option<auth::Tokens>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub fn router(state: AppState) -> Router {
    let kv = Router::new()
        .route(
            "/kv/{bucket}/{key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .merge(riak::object_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    Router::new()
        .merge(kv)
        .merge(riak::routes())
        .route("/metrics", get(metrics::metrics))
        .route("/health", get(admin::health))
        .route("/admin/status", get(admin::status))
        .route("/admin/anti-entropy", get(admin::anti_entropy))
        .route("/admin/ring", get(admin::ring))
        .route("/admin/cluster", get(cluster::status))
        .route("/admin/cluster/join", post(cluster::join))
        .route("/admin/cluster/leave/{id}", post(cluster::leave))
        .route("/admin/cluster/replace/{old}/{new}", post(cluster::replace))
        .route("/admin/preflist/{bucket}/{key}", get(admin::preflist))
        .route("/admin/replica/{bucket}/{key}", get(admin::replica))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::check))
        .layer(middleware::from_fn(limits))
        .with_state(state)
}

/// Longest request target accepted (the path and query of any valid request are far shorter).
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes answered with a JSON 431; hyper's own limit (with an empty 431) is
/// `server::MAX_HEADER_BYTES`, twice this.
const MAX_HEADERS_BYTES: usize = server::MAX_HEADER_BYTES / 2;

/// Refuses over-long targets and headers with the JSON errors of docs/API.md.
async fn limits(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    let target = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("request targets are limited to {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADERS_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers are limited to {MAX_HEADERS_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_endpoint",
        "no such endpoint; see docs/API.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
