//! The running metadata group: an openraft node over [`Store`] and [`Links`], with what
//! only the leader does (bootstrapping the metadata, keeping the voter set, adding members
//! as learners) and how any node gets a command applied (through the leader).
//!
//! Raft node ids are the xxh3 hash of the member id. Up to [`VOTERS`] members vote; the
//! others learn the log as learners. A voter that leaves is replaced by a valid learner
//! before it goes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::storage::Adaptor;
use openraft::{ChangeMembers, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::network::{self, Links, MetaRequest, MetaResponse};
use super::store::Store;
use super::{ClusterMeta, Command, MemberState, Refusal, View};
use crate::net::Net;

pub type NodeId = u64;

/// A Raft node: the member id and its peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    pub id: String,
    pub addr: String,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Result<(), Refusal>,
        NodeId = NodeId,
        Node = RaftNode,
);

/// How many members vote; the rest are learners.
pub const VOTERS: usize = 3;
/// How often the leader looks at the voter set and the learners.
const DUTY_INTERVAL: Duration = Duration::from_millis(300);
/// How long one metadata call to a peer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a sender must look dead to the leader before its hand-offs are excused.
pub const EXCUSE_AFTER: Duration = Duration::from_secs(10);
/// How long `propose` keeps looking for a leader.
const PROPOSE_PATIENCE: Duration = Duration::from_secs(10);

pub fn raft_id(member: &str) -> NodeId {
    xxhash_rust::xxh3::xxh3_64(member.as_bytes())
}

/// The metadata group as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub leader: Option<String>,
    pub role: &'static str,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the metadata group has no reachable leader: {0}")]
    NoLeader(String),
}

/// Whether the failure detector has convicted a member (the leader's view).
pub type IsDown = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct Metadata {
    me: String,
    raft: Raft<TypeConfig>,
    view: watch::Receiver<Arc<View>>,
    net: Arc<Net>,
    duties: tokio::task::JoinHandle<()>,
}

impl Metadata {
    /// Starts this node's Raft over the store in `dir`. `provisional` is the metadata to use
    /// until the log has some; `bootstrap` (a first member's, from its config) is proposed
    /// when this node leads a group that has none yet.
    pub async fn start(
        me: &str,
        store: Store,
        net: Arc<Net>,
        bootstrap: Option<ClusterMeta>,
        is_down: IsDown,
    ) -> Result<Arc<Metadata>, String> {
        let fresh = !store.has_state();
        let view = store.subscribe();
        let config = openraft::Config {
            cluster_name: "quorumkv".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(256),
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())?;
        let (log, machine) = Adaptor::new(store);
        let links = Links { net: net.clone() };
        let raft = Raft::new(raft_id(me), Arc::new(config), links, log, machine)
            .await
            .map_err(|e| format!("cannot start the metadata group: {e}"))?;
        if let Some(meta) = bootstrap.as_ref().filter(|_| fresh) {
            let voters: BTreeMap<NodeId, RaftNode> = meta
                .members
                .iter()
                .take(VOTERS)
                .map(|(id, m)| (raft_id(id), node(id, m.peer_addr)))
                .collect();
            if voters.contains_key(&raft_id(me)) {
                match raft.initialize(voters).await {
                    Ok(()) => {
                        tracing::info!("metadata group initialized from the config's members")
                    }
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => return Err(format!("cannot initialize the metadata group: {e}")),
                }
            }
        }
        let duties = tokio::spawn(leader_duties(
            raft.clone(),
            view.clone(),
            bootstrap,
            is_down,
        ));
        Ok(Arc::new(Metadata {
            me: me.to_owned(),
            raft,
            view,
            net,
            duties,
        }))
    }

    /// The metadata in force on this node.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Waits until the metadata in force here satisfies `ready`; false if `deadline` passes.
    pub async fn wait_for_view(
        &self,
        deadline: tokio::time::Instant,
        ready: impl FnMut(&Arc<View>) -> bool,
    ) -> bool {
        let mut views = self.view.clone();
        let waited = tokio::time::timeout_at(deadline, views.wait_for(ready)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// The metadata group as this node sees it, for operators.
    pub fn group(&self) -> Group {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let name = |n: &NodeId| membership.get_node(n).map(|n| n.id.clone());
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let me = raft_id(&self.me);
        let role = if metrics.current_leader == Some(me) {
            "leader"
        } else if voters.contains(&me) {
            "voter"
        } else {
            "learner"
        };
        Group {
            leader: metrics.current_leader.as_ref().and_then(name),
            role,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|l| l.index),
            voters: voters.iter().filter_map(name).collect(),
            learners: membership.learner_ids().filter_map(|n| name(&n)).collect(),
        }
    }

    /// Gets `command` applied through the leader, wherever it is.
    pub async fn propose(&self, command: Command) -> Result<(), ProposeError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_PATIENCE;
        // Until the first members' metadata is applied here, a change would be refused (the
        // bootstrap would replace it): wait for it, as for a leader.
        if !self.wait_for_view(deadline, |v| !v.provisional).await {
            return Err(ProposeError::NoLeader(
                "the cluster's metadata is not bootstrapped here yet".into(),
            ));
        }
        let mut last = String::from("no leader elected yet");
        while tokio::time::Instant::now() < deadline {
            // A leader cut off from its majority takes the entry but can never commit it.
            let written =
                tokio::time::timeout_at(deadline, self.raft.client_write(command.clone()));
            let Ok(written) = written.await else {
                last =
                    "this node leads the metadata group but cannot reach a majority of its voters"
                        .into();
                break;
            };
            match written {
                Ok(written) => return written.data.map_err(ProposeError::Refused),
                Err(e) => {
                    let leader = e.forward_to_leader().and_then(|f| f.leader_node.clone());
                    match leader {
                        Some(leader) if leader.id != self.me => {
                            if let Ok(addr) = leader.addr.parse() {
                                self.net.add_peer(&leader.id, addr);
                            }
                            let request = MetaRequest::Propose(command.clone());
                            match network::call(&self.net, &leader.id, &request, CALL_TIMEOUT).await
                            {
                                Ok(MetaResponse::Proposed(Ok(answer))) => {
                                    return answer.map_err(ProposeError::Refused)
                                }
                                Ok(MetaResponse::Proposed(Err(e))) => last = e,
                                Ok(_) => last = format!("{} answered garbled", leader.id),
                                Err(e) => last = e.to_string(),
                            }
                        }
                        _ => last = e.to_string(),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ProposeError::NoLeader(last))
    }

    /// A node asks to join: on the leader, add it as a learner and apply the join; elsewhere,
    /// ask the leader. The answer is the metadata after the join.
    async fn join(
        &self,
        id: String,
        peer_addr: SocketAddr,
        http_addr: SocketAddr,
    ) -> Result<ClusterMeta, String> {
        match self.group().leader {
            Some(leader) if leader == self.me => {
                let added = tokio::time::timeout(
                    CALL_TIMEOUT,
                    self.raft
                        .add_learner(raft_id(&id), node(&id, peer_addr), false),
                )
                .await;
                match added {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return Err(format!("cannot add {id} to the metadata group: {e}"))
                    }
                    Err(_) => {
                        return Err(format!(
                            "cannot add {id} to the metadata group: no majority answered"
                        ))
                    }
                }
                let command = Command::Join {
                    id: id.clone(),
                    peer_addr,
                    http_addr,
                };
                self.propose(command).await.map_err(|e| e.to_string())?;
                tracing::info!(node = %id, %peer_addr, "node joined; its share of partitions moves to it by handoff");
                Ok(self.view().meta.clone())
            }
            Some(leader) => {
                let request = MetaRequest::Join {
                    id,
                    peer_addr,
                    http_addr,
                };
                match network::call(&self.net, &leader, &request, CALL_TIMEOUT * 2).await {
                    Ok(MetaResponse::Joined(answer)) => answer.map(|m| *m),
                    Ok(_) => Err(format!("{leader} answered the join garbled")),
                    Err(e) => Err(e.to_string()),
                }
            }
            None => Err("the metadata group has no leader right now; retry".into()),
        }
    }

    /// Answers a metadata request from `from` (already a member, or a node asking to join
    /// as itself; a member may pass on another's join).
    pub async fn handle(&self, from: &str, request: &[u8], member: bool) -> Vec<u8> {
        let answer = match serde_json::from_slice::<MetaRequest>(request) {
            Ok(MetaRequest::Join {
                id,
                peer_addr,
                http_addr,
            }) if id == from || member => {
                MetaResponse::Joined(self.join(id, peer_addr, http_addr).await.map(Box::new))
            }
            Ok(MetaRequest::Join { id, .. }) => MetaResponse::Joined(Err(format!(
                "a node calling itself {from} cannot ask to join as {id}"
            ))),
            Ok(_) if !member => {
                MetaResponse::Proposed(Err(format!("{from} is not a member of this cluster")))
            }
            Ok(MetaRequest::Append(r)) => MetaResponse::Append(self.raft.append_entries(r).await),
            Ok(MetaRequest::Vote(r)) => MetaResponse::Vote(self.raft.vote(r).await),
            Ok(MetaRequest::Snapshot(r)) => {
                MetaResponse::Snapshot(self.raft.install_snapshot(r).await)
            }
            Ok(MetaRequest::Propose(command)) => {
                let written =
                    tokio::time::timeout(CALL_TIMEOUT, self.raft.client_write(command)).await;
                MetaResponse::Proposed(match written {
                    Ok(Ok(written)) => Ok(written.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                        Err("not the leader".into())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the leader cannot reach a majority of its voters".into()),
                })
            }
            Err(e) => MetaResponse::Proposed(Err(format!("undecodable metadata request: {e}"))),
        };
        serde_json::to_vec(&answer).unwrap_or_default()
    }

    pub async fn shutdown(&self) {
        self.duties.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata group did not shut down cleanly");
        }
    }
}

/// Asks the members at `addrs` (any of them, in turn, until `patience` runs out) to let this
/// node join; the answer is the cluster's metadata with this node in it.
pub async fn ask_to_join(
    net: &Net,
    addrs: &[SocketAddr],
    id: &str,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
    patience: Duration,
) -> Result<ClusterMeta, String> {
    let request = MetaRequest::Join {
        id: id.to_owned(),
        peer_addr,
        http_addr,
    };
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = String::from("no address to ask");
    loop {
        for addr in addrs {
            match network::call_addr(net, *addr, &request, CALL_TIMEOUT * 3).await {
                Ok(MetaResponse::Joined(Ok(meta))) => return Ok(*meta),
                Ok(MetaResponse::Joined(Err(e))) => last = format!("{addr}: {e}"),
                Ok(_) => last = format!("{addr} answered the join garbled"),
                Err(e) => last = format!("{addr}: {e}"),
            }
            tracing::warn!(reason = %last, "join not accepted yet; retrying");
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn node(id: &str, peer_addr: SocketAddr) -> RaftNode {
    RaftNode {
        id: id.to_owned(),
        addr: peer_addr.to_string(),
    }
}

/// On the leader: bootstrap the metadata if the group has none, add every member the Raft
/// membership lacks as a learner, keep [`VOTERS`] valid members voting, and drop members
/// that have left.
async fn leader_duties(
    raft: Raft<TypeConfig>,
    view: watch::Receiver<Arc<View>>,
    bootstrap: Option<ClusterMeta>,
    is_down: IsDown,
) {
    let mut down_since: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(DUTY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            continue;
        }
        if let Err(e) = duty(&raft, &metrics, &view, bootstrap.as_ref()).await {
            tracing::debug!(error = %e, "leader duty did not finish; retrying");
        }
        if let Err(e) = excuse_dead(&raft, metrics.id, &view, &is_down, &mut down_since).await {
            tracing::debug!(error = %e, "could not excuse a dead sender; retrying");
        }
    }
}

/// Excuses the hand-offs of senders that have looked dead for [`EXCUSE_AFTER`], so a change
/// does not wait forever for a node that is gone (the other old replicas have streamed theirs;
/// the excused node pushes what it holds before it forgets anything, if it comes back).
async fn excuse_dead(
    raft: &Raft<TypeConfig>,
    me: NodeId,
    view: &watch::Receiver<Arc<View>>,
    is_down: &IsDown,
    down_since: &mut BTreeMap<String, tokio::time::Instant>,
) -> Result<(), String> {
    let (senders, version) = {
        let v = view.borrow();
        let Some(t) = &v.meta.transition else {
            down_since.clear();
            return Ok(());
        };
        let senders: BTreeSet<String> = t.pending.values().flatten().cloned().collect();
        (senders, v.meta.ring_version)
    };
    let now = tokio::time::Instant::now();
    down_since.retain(|s, _| senders.contains(s));
    for s in senders {
        if raft_id(&s) == me || !is_down(&s) {
            down_since.remove(&s);
            continue;
        }
        let since = *down_since.entry(s.clone()).or_insert(now);
        if now.duration_since(since) >= EXCUSE_AFTER {
            tracing::warn!(node = %s, ring_version = version, "excusing the hand-offs of a node that has been down for a while; the other old replicas' copies stand in for its own");
            raft.client_write(Command::Excuse {
                ring_version: version,
                node: s.clone(),
            })
            .await
            .map_err(|e| e.to_string())?;
            down_since.remove(&s);
        }
    }
    Ok(())
}

async fn duty(
    raft: &Raft<TypeConfig>,
    metrics: &openraft::RaftMetrics<NodeId, RaftNode>,
    view: &watch::Receiver<Arc<View>>,
    bootstrap: Option<&ClusterMeta>,
) -> Result<(), String> {
    let (meta, provisional) = {
        let v = view.borrow();
        (v.meta.clone(), v.provisional)
    };
    // The state machine is empty until a Bootstrap is applied; a provisional view is not it.
    if provisional {
        if let Some(b) = bootstrap {
            raft.client_write(Command::Bootstrap(Box::new(b.clone())))
                .await
                .map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let membership = metrics.membership_config.membership();
    let known: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    for (id, m) in meta.live_members() {
        if !known.contains(&raft_id(id)) {
            raft.add_learner(raft_id(id), node(id, m.peer_addr), false)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(node = %id, "added to the metadata group as a learner");
        }
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let state = |v: &NodeId| {
        meta.members
            .iter()
            .find(|(id, _)| raft_id(id) == *v)
            .map(|(_, m)| m.state)
    };
    let mut wanted: BTreeSet<NodeId> = voters
        .iter()
        .filter(|v| matches!(state(v), Some(MemberState::Valid | MemberState::Joining)))
        .copied()
        .collect();
    for (id, m) in &meta.members {
        if wanted.len() >= VOTERS {
            break;
        }
        if m.state == MemberState::Valid && known.contains(&raft_id(id)) {
            wanted.insert(raft_id(id));
        }
    }
    if !wanted.is_empty() && wanted != voters && membership.get_joint_config().len() == 1 {
        tracing::info!(?wanted, "changing the metadata group's voters");
        raft.change_membership(ChangeMembers::ReplaceAllVoters(wanted.clone()), true)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let gone: BTreeSet<NodeId> = known
        .iter()
        .filter(|n| !voters.contains(n))
        .filter(|n| state(n) == Some(MemberState::Left))
        .copied()
        .collect();
    if !gone.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(gone), true)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
