//! openraft's messages over the internode transport ([`crate::net`], so encrypted and
//! authenticated like everything else on the peer port), as JSON inside one `rpc::Request`
//! variant: the metadata log is small and rare, and JSON keeps openraft's own types as they
//! are.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::raft::{NodeId, RaftNode, TypeConfig};
use super::{ClusterMeta, Command, Refusal};
use crate::net::Net;
use crate::rpc::{self, Request, Response};

/// What nodes ask each other about metadata.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetaRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Apply a command through the leader (a follower forwards it).
    Propose(Command),
    /// A new node asks to join; the answer is the metadata it joins.
    Join {
        id: String,
        peer_addr: SocketAddr,
        http_addr: SocketAddr,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum MetaResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Proposed(Result<Result<(), Refusal>, String>),
    Joined(Result<Box<ClusterMeta>, String>),
}

/// Why a metadata call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Call(#[from] rpc::CallError),
    #[error("peer {0} answered a metadata request with something else")]
    Garbled(String),
}

/// Sends one metadata request to `peer`.
pub async fn call(
    net: &Net,
    peer: &str,
    request: &MetaRequest,
    timeout: Duration,
) -> Result<MetaResponse, CallError> {
    let body = serde_json::to_vec(request).map_err(|_| CallError::Garbled(peer.to_owned()))?;
    match rpc::call(net, peer, &Request::Meta(body), timeout).await? {
        Response::Meta(bytes) => {
            serde_json::from_slice(&bytes).map_err(|_| CallError::Garbled(peer.to_owned()))
        }
        _ => Err(CallError::Garbled(peer.to_owned())),
    }
}

/// Sends one metadata request to whoever listens at `addr` (for a node that is joining).
pub async fn call_addr(
    net: &Net,
    addr: SocketAddr,
    request: &MetaRequest,
    timeout: Duration,
) -> Result<MetaResponse, String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let raw = net
        .call_addr(addr, rpc::encode(&Request::Meta(body)).into(), timeout)
        .await
        .map_err(|e| e.to_string())?;
    match rpc::decode::<Response>(&raw) {
        Some(Response::Meta(bytes)) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        _ => Err(format!("{addr} answered with something else")),
    }
}

/// Makes a [`Link`] per peer openraft talks to.
pub struct Links {
    pub net: Arc<Net>,
}

impl RaftNetworkFactory<TypeConfig> for Links {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, node: &RaftNode) -> Link {
        if let Ok(addr) = node.addr.parse() {
            self.net.add_peer(&node.id, addr);
        }
        Link {
            net: self.net.clone(),
            target,
            peer: node.id.clone(),
        }
    }
}

pub struct Link {
    net: Arc<Net>,
    target: NodeId,
    peer: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, RaftNode, RaftError<NodeId, E>>>;

impl Link {
    async fn send(
        &self,
        request: &MetaRequest,
        option: &RPCOption,
    ) -> Result<MetaResponse, RPCError<NodeId, RaftNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        call(&self.net, &self.peer, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Call(c) => RPCError::Unreachable(Unreachable::new(&c)),
                garbled => RPCError::Network(NetworkError::new(&garbled)),
            })
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, RaftNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

/// A transport failure, retyped for an RPC whose remote error type differs.
fn retype<E: std::error::Error>(
    e: RPCError<NodeId, RaftNode, RaftError<NodeId, InstallSnapshotError>>,
) -> RPCError<NodeId, RaftNode, RaftError<NodeId, E>> {
    match e {
        RPCError::Unreachable(u) => RPCError::Unreachable(u),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

fn garbled<E: std::error::Error>(peer: &str) -> RPCError<NodeId, RaftNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&CallError::Garbled(peer.to_owned())))
}

impl RaftNetwork<TypeConfig> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self
            .send(&MetaRequest::Append(rpc), &option)
            .await
            .map_err(retype)?
        {
            MetaResponse::Append(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(garbled(&self.peer)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.send(&MetaRequest::Snapshot(rpc), &option).await? {
            MetaResponse::Snapshot(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(garbled(&self.peer)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self
            .send(&MetaRequest::Vote(rpc), &option)
            .await
            .map_err(retype)?
        {
            MetaResponse::Vote(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(garbled(&self.peer)),
        }
    }
}
