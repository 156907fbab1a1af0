//! `GET /` (the resource map Riak's clients read to find endpoints: only what is served is
//! named), `GET /ping`, and `GET /stats` (Riak's names where a counter means the same).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::RIAK_KV_VERSION;
use crate::api::AppState;

pub async fn resources() -> Json<Value> {
    Json(json!({
        "riak_kv_wm_buckets": "/buckets",
        "riak_kv_wm_bucket_type": "/types",
        "riak_kv_wm_ping": "/ping",
        "riak_kv_wm_stats": "/stats",
    }))
}

pub async fn ping() -> Response {
    let mut r = "OK".into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let c = &state.coordinator;
    let view = c.view();
    let host = state.config.http_addr.ip();
    let (gets, puts) = state.metrics.totals();
    let members: Vec<String> = view
        .meta
        .live_members()
        .map(|(id, m)| format!("{id}@{}", m.http_addr.ip()))
        .collect();
    let connected: Vec<&String> = members
        .iter()
        .filter(|m| !m.starts_with(&format!("{}@", c.me())))
        .collect();
    Json(json!({
        "riak_kv_version": RIAK_KV_VERSION,
        "nodename": format!("{}@{host}", c.me()),
        "connected_nodes": connected,
        "ring_members": members,
        "ring_num_partitions": view.ring.ring_size(),
        "ring_creation_size": view.ring.ring_size(),
        "node_gets_total": gets,
        "node_puts_total": puts,
        "read_repairs_total": c.read_repairs(),
        "storage_backend": "quorumkv_bitcask",
        "quorumkv_version": env!("CARGO_PKG_VERSION"),
        "quorumkv_hints_delivered_total": c.hints_delivered(),
        "quorumkv_corrupt_records_total": c.replica().corrupt_records(),
        "quorumkv_anti_entropy_keys_repaired_total": state.anti_entropy.keys_repaired(),
    }))
}
