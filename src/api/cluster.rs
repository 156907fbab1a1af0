//! `/admin/cluster`: the members as the metadata names them, and the membership changes an
//! operator asks for (join, leave, replace), applied through the metadata group's leader.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::config::check_node_id;
use crate::meta::{Command, ProposeError, Refusal};

pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let metadata = state.coordinator.metadata();
    let view = metadata.view();
    let group = metadata.group();
    let members: Vec<Value> = view
        .meta
        .members
        .iter()
        .map(|(id, m)| {
            json!({
                "id": id,
                "peer_addr": m.peer_addr.to_string(),
                "http_addr": m.http_addr.to_string(),
                "state": m.state,
            })
        })
        .collect();
    Json(json!({
        "members": members,
        "ring_version": view.meta.ring_version,
        "transfers_pending": view.meta.transfers_pending(),
        "leader": group.leader,
        "role": group.role,
        "raft": group,
    }))
}

/// A node to admit, as `POST /admin/cluster/join` names it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Joiner {
    id: String,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
}

/// Admits a node as `joining` before (or after) it starts with `[cluster] join`: the change
/// is planned at once, and its partitions stream to it once it is up.
pub async fn join(State(state): State<AppState>, body: Bytes) -> Response {
    let joiner: Joiner = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return ApiError::bad_request(
                "bad_join",
                format!(
                    "expected {{\"id\", \"peer_addr\", \"http_addr\"}} (addresses as IP:PORT): {e}"
                ),
            )
            .into_response()
        }
    };
    if let Err(e) = check_node_id("id", &joiner.id) {
        return ApiError::bad_request("bad_join", e.0).into_response();
    }
    let command = Command::Join {
        id: joiner.id,
        peer_addr: joiner.peer_addr,
        http_addr: joiner.http_addr,
    };
    change(&state, command).await
}

pub async fn leave(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    change(&state, Command::Leave { id }).await
}

pub async fn replace(
    State(state): State<AppState>,
    Path((old, new)): Path<(String, String)>,
) -> Response {
    change(&state, Command::Replace { old, new }).await
}

async fn change(state: &AppState, command: Command) -> Response {
    let metadata = state.coordinator.metadata();
    match metadata.propose(command).await {
        Ok(()) => {
            let view = metadata.view();
            let body = json!({
                "status": "accepted",
                "ring_version": view.meta.ring_version,
                "transfers_pending": view.meta.transfers_pending(),
            });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(ProposeError::Refused(Refusal::UnknownMember(id))) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_member",
            format!("no member {id:?} in this cluster"),
        )
        .into_response(),
        Err(ProposeError::Refused(r @ Refusal::NotBootstrapped)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", r.to_string())
                .into_response()
        }
        Err(ProposeError::Refused(Refusal::Invalid(why))) => {
            ApiError::new(StatusCode::CONFLICT, "refused", why).into_response()
        }
        Err(e @ ProposeError::NoLeader(_)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string())
                .into_response()
        }
    }
}
