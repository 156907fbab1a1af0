//! `/admin/cluster`: the members as the metadata names them, and the membership changes an
//! operator asks for (leave, replace), applied through the metadata group's leader.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
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
        Err(ProposeError::Refused(Refusal::Invalid(why))) => {
            ApiError::new(StatusCode::CONFLICT, "refused", why).into_response()
        }
        Err(e @ ProposeError::NoLeader(_)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string())
                .into_response()
        }
    }
}
