//! `/health` and `/admin/*`: what operators look at.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::params::{self, PathParams};
use super::{respond, AppState};
use crate::causal::{token, KeyState};

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    // The pid lets a supervisor (`quorumkv dev`) tell its own node from a stale one.
    Json(json!({ "status": "ok", "node_id": state.config.node_id, "pid": std::process::id() }))
}

/// The last anti-entropy exchange of each partition this node replicates, in partition order.
pub async fn anti_entropy(State(state): State<AppState>) -> Json<Value> {
    let partitions: Vec<Value> = state
        .anti_entropy
        .last()
        .into_iter()
        .map(|(partition, e)| {
            json!({
                "partition": partition,
                "peer": e.peer,
                "finished_ms": e.finished_ms,
                "keys_repaired": e.keys_repaired,
                "bytes": e.bytes,
            })
        })
        .collect();
    Json(json!({ "partitions": partitions }))
}

pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let c = &state.coordinator;
    let pending = c.replica().hints().pending();
    let offsets = c.skew().peers();
    let mut peers = Vec::new();
    for view in c.liveness().view() {
        let connected = c.net().connected(&view.id).await;
        peers.push(json!({
            "clock_offset_ms": offsets.get(&view.id),
            "id": view.id,
            "status": if view.up { "up" } else { "down" },
            "phi": (view.phi * 100.0).round() / 100.0,
            "last_heard_ms": view.last_heard_ms,
            "connected": connected,
            "pending_hints": pending.get(&view.id).copied().unwrap_or(0),
        }));
    }
    let stats = c.replica().storage().stats();
    let (sent, received) = c.net().traffic();
    let verdict = c.skew().verdict();
    let (suspect_replica, suspect_forward) = c.suspect_delays();
    let last = state.anti_entropy.last();
    Json(json!({
        "node_id": state.config.node_id,
        "actor": c.replica().actor().as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "peers": peers,
        "anti_entropy": {
            "enabled": state.config.anti_entropy.enabled,
            "interval_ms": state.config.anti_entropy.interval_ms,
            "exchanges": state.anti_entropy.exchanges(),
            "keys_repaired": state.anti_entropy.keys_repaired(),
            "tombstones_reaped": state.anti_entropy.tombstones_reaped(),
            // A summary: the per-partition detail is `/admin/anti-entropy`.
            "partitions_exchanged": last.len(),
            "oldest_exchange_ms": last.values().map(|e| e.finished_ms).min(),
            "latest_exchange_ms": last.values().map(|e| e.finished_ms).max(),
        },
        "clock": {
            "offset_ms": verdict.offset_ms,
            "max_offset_ms": c.skew().max_offset_ms(),
            "out_of_bounds": verdict.out_of_bounds,
            "skewed_timestamps_seen": c.replica().skewed_stamps(),
        },
        "suspect_after_ms": {
            "replica": suspect_replica.as_secs_f64() * 1000.0,
            "forward": suspect_forward.as_secs_f64() * 1000.0,
        },
        "corrupt_records": c.replica().corrupt_records(),
        "read_repairs": c.read_repairs(),
        "hints_stored": c.replica().hints().stored(),
        "hints_delivered": c.hints_delivered(),
        "stale_ring_refusals": c.fence().refused(),
        "hints_pending": pending.values().sum::<u64>(),
        "internode": { "sent_bytes": sent, "received_bytes": received },
        "storage": {
            "keys": stats.keys,
            "live_bytes": stats.live_bytes,
            "dead_bytes": stats.dead_bytes,
            "segments": stats.segments,
        },
    }))
}

pub async fn ring(State(state): State<AppState>) -> Json<Value> {
    let view = state.coordinator.view();
    let ring = &view.ring;
    let partitions: Vec<Value> = (0..ring.ring_size())
        .map(|p| json!({ "partition": p, "owner": ring.owner(p) }))
        .collect();
    let ownership = ring.ownership();
    let counts = ownership.iter().map(|o| o.partitions);
    let spread = counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0);
    Json(json!({
        "ring_size": ring.ring_size(),
        "partitions": partitions,
        "ownership": ownership,
        "ownership_spread": spread,
    }))
}

pub async fn preflist(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Json<Value>, ApiError> {
    let (bucket, key) = params::bucket_key(path)?;
    let (partition, nodes) = state.coordinator.preference_list(&bucket, &key);
    Ok(Json(json!({ "partition": partition, "nodes": nodes })))
}

pub async fn replica(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Json<Value>, ApiError> {
    let (bucket, key) = params::bucket_key(path)?;
    let stored = state
        .coordinator
        .replica()
        .read(&bucket, &key)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let Some(stored) = stored else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node holds nothing for the key",
        ));
    };
    let siblings: Vec<Value> = respond::ordered_siblings(&stored)
        .into_iter()
        .map(respond::sibling_json)
        .collect();
    let mut body = json!({
        "siblings": siblings,
        "tombstone": stored.has_tombstone(),
        "context": token::encode(&state.contexts, bucket.as_bytes(), key.as_bytes(), &stored.context()),
    });
    if let KeyState::Lww(reg) = &stored {
        body["timestamp"] = json!(reg.timestamp.physical_ms);
        body["written_by"] = json!(reg.node.as_str());
    }
    Ok(Json(body))
}
