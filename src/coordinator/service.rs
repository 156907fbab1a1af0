//! The internode service: answers what peers ask of this node as a replica (coordinate a
//! forwarded write, merge a replicated state, report a stored state).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::Coordinator;
use crate::causal::KeyState;
use crate::net::Handler;
use crate::replica::HintKey;
use crate::rpc::{self, Failure, Request, Response};

/// Local operations take no network round trip; the timeout they are given is unused.
const LOCAL: Duration = Duration::ZERO;

pub struct Service {
    coordinator: Arc<Coordinator>,
}

impl Service {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Service { coordinator }
    }
}

impl Handler for Service {
    fn handle(&self, from: &str, request: Bytes) -> BoxFuture<'static, Bytes> {
        let coordinator = self.coordinator.clone();
        let from = from.to_owned();
        Box::pin(async move {
            let member = coordinator.net().identity().is_member(&from);
            let request = rpc::decode::<Request>(&request);
            // A node that is not a member yet may only ask to join (`Metadata::handle`).
            if !member && !matches!(request, Some(Request::Meta(_))) {
                tracing::warn!(peer = %from, "refusing a data request from a node that is not a member");
                let refusal = Failure::Internal(format!("{from} is not a member of this cluster"));
                return Bytes::from(rpc::encode(&Response::Synced(Err(refusal))));
            }
            let response = match request {
                Some(Request::Put(put)) => Response::Put(coordinator.coordinate_put(put).await),
                Some(Request::Sync {
                    bucket,
                    key,
                    state,
                    ring_version,
                }) => Response::Synced(match coordinator.fence().admit(ring_version).await {
                    Ok(_admitted) => sync(&coordinator, &bucket, &key, &state).await,
                    Err(refused) => Err(refused),
                }),
                Some(Request::Read { bucket, key }) => Response::State(
                    coordinator
                        .replica()
                        .read(&bucket, &key)
                        .map(|s| s.map(|s| rpc::Blob(s.encode())))
                        .map_err(Failure::from),
                ),
                Some(Request::List { bucket, partitions }) => {
                    Response::Names(coordinator.list_local(bucket, partitions).await)
                }
                Some(Request::Ping { .. }) => Response::Pong {
                    wall_ms: coordinator.liveness().wall_ms(),
                },
                Some(Request::Reap { bucket, key, state }) => {
                    Response::Synced(reap(&coordinator, &bucket, &key, &state).await)
                }
                Some(Request::AeGroups { tree }) => {
                    Response::Hashes(coordinator.replica().trees().groups(tree))
                }
                Some(Request::AeLeaves { tree, groups }) => {
                    let trees = coordinator.replica().trees();
                    Response::Hashes(
                        groups
                            .iter()
                            .flat_map(|&g| trees.leaves(tree, g as usize))
                            .collect(),
                    )
                }
                Some(Request::AeDigests {
                    tree,
                    leaves,
                    max_keys,
                }) => {
                    // A walk of the whole keydir: off the async workers meanwhile.
                    let replica = coordinator.replica().clone();
                    let walk = move || replica.digests(tree, &leaves, max_keys as usize);
                    Response::Digests(tokio::task::spawn_blocking(walk).await.unwrap_or_default())
                }
                Some(Request::AeFetch { keys }) => Response::States(
                    keys.iter()
                        .map(|(bucket, key)| {
                            let state = coordinator.replica().read(bucket, key);
                            state.ok().flatten().map(|s| rpc::Blob(s.encode()))
                        })
                        .collect(),
                ),
                Some(Request::Hint {
                    owner,
                    bucket,
                    key,
                    state,
                }) => Response::Synced(hint(&coordinator, owner, bucket, key, &state).await),
                Some(Request::Transfer { partition, items }) => {
                    // All at once, so the batch shares its fsyncs (group commit) instead of
                    // waiting for one per key.
                    let c = &coordinator;
                    let merges = items.iter().map(|(bucket, key, state)| async move {
                        let result = sync(c, bucket, key, &state.0).await;
                        if let Err(f) = &result {
                            tracing::warn!(partition, %bucket, %key, failure = ?f, "could not take a handed-off key");
                        }
                        result
                    });
                    let results = futures::future::join_all(merges).await;
                    Response::Synced(results.into_iter().find(Result::is_err).unwrap_or(Ok(())))
                }
                Some(Request::Meta(body)) => {
                    Response::Meta(coordinator.metadata().handle(&from, &body, member).await)
                }
                None => {
                    tracing::warn!(peer = %from, "undecodable request from peer");
                    Response::Synced(Err(Failure::Internal("undecodable request".into())))
                }
            };
            Bytes::from(rpc::encode(&response))
        })
    }
}

fn decode(state: &[u8]) -> Result<KeyState, Failure> {
    KeyState::decode(state).map_err(|e| Failure::Internal(e.to_string()))
}

/// Merges a replicated state into this node's copy (the same path read repair takes).
async fn sync(
    coordinator: &Coordinator,
    bucket: &str,
    key: &str,
    state: &[u8],
) -> Result<(), Failure> {
    let me = coordinator.me();
    coordinator
        .reader(bucket, key)
        .push(me, &decode(state)?, LOCAL)
        .await
}

async fn hint(
    coordinator: &Coordinator,
    owner: String,
    bucket: String,
    key: String,
    state: &[u8],
) -> Result<(), Failure> {
    let hint = HintKey { owner, bucket, key };
    coordinator
        .replica()
        .hints()
        .store(&hint, &decode(state)?)
        .await?;
    Ok(())
}

/// Reaps this node's copy (the same path the reaper takes locally).
async fn reap(
    coordinator: &Coordinator,
    bucket: &str,
    key: &str,
    state: &[u8],
) -> Result<(), Failure> {
    let me = coordinator.me();
    coordinator
        .reader(bucket, key)
        .reap(me, &decode(state)?, LOCAL)
        .await
}
