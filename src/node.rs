//! One running node: its replica, transport, coordinator and HTTP server, wired together and
//! shut down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::anti_entropy;
use crate::api::{self, AppState};
use crate::causal::token::ContextKey;
use crate::causal::{SystemClock, WallClock};
use crate::cluster::{self, skew::Skew, Liveness};
use crate::config::{Config, ConfigError};
use crate::coordinator::{handoff, transfer, Coordinator, Service};
use crate::meta::{self, ClusterMeta};
use crate::net::{self, Dialer, Faults, Identity, Net, NoiseDialer, NoiseListener, TcpDialer};
use crate::replica::merkle::Filing;
use crate::replica::{Limits, Replica, ReplicaError};
use crate::secret::ClusterSecret;

/// How long shutdown waits for in-flight requests before letting go of the storage anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{0}")]
    Security(String),
    #[error("{0}")]
    Meta(String),
}

/// How long a node that joins keeps asking before it gives up.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// The metadata a first member starts from: its config's members, round robin.
fn first_members_meta(config: &Config) -> Option<ClusterMeta> {
    let c = &config.cluster;
    (!c.members.is_empty()).then(|| {
        ClusterMeta::bootstrap(
            config.cluster_hash(),
            c.ring_size,
            c.members
                .iter()
                .map(|m| (m.id.clone(), m.peer_addr, m.http_addr)),
            config.defaults.clone(),
            config.buckets.clone(),
        )
    })
}

/// Asks the config's `join` addresses to let this node in.
async fn join(
    config: &Config,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
    dialer: Arc<dyn Dialer>,
    faults: Arc<Faults>,
) -> Result<ClusterMeta, NodeError> {
    let identity = Identity::new(config.node_id.clone(), net::JOINING, []);
    let net = Net::new(identity, [], faults, dialer);
    tracing::info!(node = %config.node_id, addrs = ?config.cluster.join, "asking to join the cluster");
    meta::ask_to_join(
        &net,
        &config.cluster.join,
        &config.node_id,
        peer_addr,
        http_addr,
        JOIN_PATIENCE,
    )
    .await
    .map_err(|e| NodeError::Meta(format!("could not join the cluster: {e}")))
}

/// The cluster's shared settings come from its metadata; a first member's config says the
/// same unless it was edited since (then the metadata wins, and the log says so).
fn adopt_cluster_settings(config: &mut Config, meta: &ClusterMeta) {
    if !config.cluster.members.is_empty() && config.cluster_hash() != meta.settings_hash {
        tracing::warn!(
            "[cluster], [defaults] or [buckets] differ from the settings this cluster was made with; the cluster's metadata is used"
        );
    }
    config.cluster.ring_size = meta.ring_size;
    config.defaults = meta.defaults.clone();
    config.buckets = meta.buckets.clone();
}

/// Keeps the transport, the failure detector and the handshake's member list in step with
/// the members the metadata names.
async fn follow_membership(
    mut view: tokio::sync::watch::Receiver<Arc<meta::View>>,
    me: String,
    net: Arc<Net>,
    liveness: Arc<Liveness>,
    skew: Arc<Skew>,
) {
    loop {
        let members: Vec<(String, SocketAddr)> = view
            .borrow_and_update()
            .meta
            .live_members()
            .map(|(id, m)| (id.clone(), m.peer_addr))
            .collect();
        for (id, addr) in &members {
            net.add_peer(id, *addr);
        }
        // A node that left may still serve its clients (it forwards): it stays known.
        let known: Vec<String> = view.borrow().meta.members.keys().cloned().collect();
        net.identity().set_members(known);
        let others: Vec<String> = members
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| *id != me)
            .collect();
        skew.set_peer_count(others.len());
        liveness.set_peers(others);
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the replica's hash trees filed by each bucket's `n` in force (the API can change it).
async fn follow_buckets(
    mut view: tokio::sync::watch::Receiver<Arc<meta::View>>,
    replica: Arc<Replica>,
) {
    loop {
        let bucket_n = view.borrow_and_update().meta.bucket_n();
        let replica = replica.clone();
        // The refiling walks the keydir: off the runtime's workers.
        if let Err(e) = tokio::task::spawn_blocking(move || replica.refile(bucket_n)).await {
            tracing::error!(error = %e, "refiling the hash trees failed");
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Sockets bound ahead of start, so tests can use port 0 and learn the ports first.
pub struct Listeners {
    pub http: TcpListener,
    pub peer: TcpListener,
}

impl Listeners {
    pub async fn bind(http: SocketAddr, peer: SocketAddr) -> Result<Listeners, NodeError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { what, addr, source })
        };
        Ok(Listeners {
            http: bind("http_addr", http).await?,
            peer: bind("peer_addr", peer).await?,
        })
    }
}

/// What a node takes from the outside world, injected so that tests and simulations can
/// replace it: wall-clock time, randomness, how it dials peers and which messages get lost.
#[derive(Clone)]
pub struct Seams {
    pub clock: Arc<dyn WallClock>,
    pub random: Arc<dyn Fn() -> u64 + Send + Sync>,
    pub dialer: Arc<dyn Dialer>,
    /// Fault rules for outgoing messages; a test that restarts a node passes the same ones
    /// again, as firewall rules outlive a process.
    pub faults: Arc<Faults>,
}

impl Seams {
    /// The real ones: the system clock, a seeded PRNG, TCP.
    pub fn system() -> Seams {
        Seams {
            clock: Arc::new(SystemClock),
            random: Arc::new(|| fastrand::u64(..)),
            dialer: Arc::new(TcpDialer::default()),
            faults: Arc::default(),
        }
    }
}

pub struct Node {
    node_id: String,
    http_addr: SocketAddr,
    faults: Arc<Faults>,
    replica: Arc<Replica>,
    metadata: Arc<meta::Metadata>,
    follow_task: JoinHandle<()>,
    buckets_task: JoinHandle<()>,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: JoinHandle<()>,
    peer_task: JoinHandle<()>,
    heartbeat_task: JoinHandle<()>,
    handoff_task: JoinHandle<()>,
    transfer_task: JoinHandle<()>,
    ae_task: JoinHandle<()>,
}

impl Node {
    /// Validates the config, opens the data directory and starts serving on `listeners`.
    pub async fn start(config: Config, listeners: Listeners) -> Result<Node, NodeError> {
        let seams = Seams {
            dialer: Arc::new(TcpDialer::from_ip(config.peer_addr.ip())),
            ..Seams::system()
        };
        Node::start_with(config, listeners, seams).await
    }

    /// [`Node::start`] with the outside world replaced.
    pub async fn start_with(
        config: Config,
        listeners: Listeners,
        seams: Seams,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let mut config = config;
        let bound = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| NodeError::Bind { what, addr, source })
        };
        let http_addr = bound(&listeners.http, "http_addr", config.http_addr)?;
        let peer_addr = bound(&listeners.peer, "peer_addr", config.peer_addr)?;
        let secret = match &config.security.cluster_secret_file {
            Some(path) => Some(ClusterSecret::load(path).map_err(NodeError::Security)?),
            None => None,
        };
        let faults = seams.faults.clone();
        let dialer: Arc<dyn Dialer> = match &secret {
            Some(s) => Arc::new(NoiseDialer::new(seams.dialer.clone(), s.link_key())),
            None => seams.dialer.clone(),
        };
        // The cluster's metadata: from the log if this node has been a member, else from
        // the config's first members, else by asking to join.
        let store = meta::Store::open(&config.data_dir.join("meta")).map_err(|e| {
            NodeError::Meta(format!(
                "cannot open the metadata store in {}: {e}",
                config.data_dir.join("meta").display()
            ))
        })?;
        let bootstrap = first_members_meta(&config);
        if !store.subscribe().borrow().meta.is_bootstrapped() {
            let provisional = match &bootstrap {
                Some(b) => b.clone(),
                None => {
                    join(
                        &config,
                        peer_addr,
                        http_addr,
                        dialer.clone(),
                        faults.clone(),
                    )
                    .await?
                }
            };
            store.provide(provisional);
        }
        let view = store.subscribe().borrow().clone();
        adopt_cluster_settings(&mut config, &view.meta);
        let config = Arc::new(config);
        let replica = {
            let bucket_n = view.meta.bucket_n();
            let filing = Filing::new(view.ring.clone(), config.defaults.n, bucket_n);
            let (config, seams) = (config.clone(), seams.clone());
            tokio::task::spawn_blocking(move || {
                Replica::open(
                    &config.data_dir,
                    &config.node_id,
                    config.storage_options(),
                    filing,
                    seams.clock.clone(),
                    &*seams.random,
                    Limits {
                        max_clock_offset_ms: config.cluster.max_clock_offset_ms,
                        ..Limits::default()
                    },
                )
            })
            .await
            .map_err(|e| ReplicaError::Identity(std::io::Error::other(e)))??
        };
        let replica = Arc::new(replica);
        let tls = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(api::tls::acceptor(cert, key).map_err(NodeError::Security)?)
            }
            _ => None,
        };
        let tokens = match &config.security.tokens_file {
            Some(path) => Some(api::auth::Tokens::load(path).map_err(NodeError::Security)?),
            None => None,
        };
        let contexts = secret.as_ref().map_or_else(
            || ContextKey::from_settings(view.meta.settings_hash),
            |s| ContextKey::new(s.context_key()),
        );
        let others: Vec<(String, SocketAddr)> = view
            .meta
            .live_members()
            .filter(|(id, _)| **id != config.node_id)
            .map(|(id, m)| (id.clone(), m.peer_addr))
            .collect();
        let identity = Identity::new(
            config.node_id.clone(),
            view.meta.settings_hash,
            view.meta.live_members().map(|(id, _)| id.clone()),
        );
        let net = Arc::new(Net::new(
            identity.clone(),
            others.clone(),
            faults.clone(),
            dialer,
        ));
        let liveness = Arc::new(Liveness::new(
            others.iter().map(|(id, _)| id.clone()),
            seams.clock.clone(),
        ));
        let is_down: meta::raft::IsDown = {
            let liveness = liveness.clone();
            Arc::new(move |node: &str| liveness.is_down(node))
        };
        let metadata =
            meta::Metadata::start(&config.node_id, store, net.clone(), bootstrap, is_down)
                .await
                .map_err(NodeError::Meta)?;
        let skew = Arc::new(Skew::new(config.cluster.max_clock_offset_ms, others.len()));
        let follow_task = tokio::spawn(follow_membership(
            metadata.subscribe(),
            config.node_id.clone(),
            net.clone(),
            liveness.clone(),
            skew.clone(),
        ));
        let buckets_task = tokio::spawn(follow_buckets(metadata.subscribe(), replica.clone()));
        let heartbeat_task = tokio::spawn(cluster::heartbeat(
            net.clone(),
            liveness.clone(),
            skew.clone(),
        ));
        let coordinator = Arc::new(Coordinator::new(
            config.clone(),
            metadata.clone(),
            replica.clone(),
            net.clone(),
            liveness,
            skew,
        ));
        let ae_stats = Arc::new(anti_entropy::Stats::default());
        let ae_task = tokio::spawn(anti_entropy::run(
            coordinator.clone(),
            ae_stats.clone(),
            seams.clock.clone(),
            anti_entropy::Pacing {
                interval: Duration::from_millis(config.anti_entropy.interval_ms),
                tombstone_grace: Duration::from_millis(config.anti_entropy.tombstone_grace_ms),
                repair_bytes_per_sec: config.anti_entropy.repair_bytes_per_sec,
            },
        ));
        if !config.anti_entropy.enabled {
            ae_task.abort();
        }
        let handoff_task = tokio::spawn(handoff::run(
            coordinator.clone(),
            Duration::from_millis(config.handoff.interval_ms),
        ));
        let transfer_task = tokio::spawn(transfer::run(
            coordinator.clone(),
            config.handoff.transfer_bytes_per_sec,
        ));
        let on_hello: net::OnHello = {
            let net = net.clone();
            Arc::new(move |peer: &str| net.heard_from(peer))
        };
        let service = Arc::new(Service::new(coordinator.clone()));
        let peer_task = match &secret {
            Some(s) => tokio::spawn(net::serve(
                NoiseListener::new(listeners.peer, s.link_key()),
                identity,
                service,
                on_hello,
            )),
            None => tokio::spawn(net::serve(listeners.peer, identity, service, on_hello)),
        };
        let app = api::router(AppState::new(api::Shared {
            coordinator,
            anti_entropy: ae_stats,
            config: config.clone(),
            started: Instant::now(),
            metrics: Arc::default(),
            contexts,
            tokens,
        }));
        let (http_stop, stopped) = oneshot::channel::<()>();
        let http_task = tokio::spawn(api::server::serve(
            listeners.http,
            app,
            config.http.max_connections,
            tls,
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(node = %config.node_id, %http_addr, %peer_addr, actor = %replica.actor(), "node started");
        Ok(Node {
            node_id: config.node_id.clone(),
            http_addr,
            faults,
            replica,
            metadata,
            follow_task,
            buckets_task,
            http_stop: Some(http_stop),
            http_task,
            peer_task,
            heartbeat_task,
            handoff_task,
            transfer_task,
            ae_task,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The fault-injection seam of this node's outgoing messages.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Stops serving, lets in-flight requests finish, syncs and marks a clean shutdown.
    pub async fn shutdown(self) {
        let node_id = self.node_id.clone();
        if let Some(replica) = self.stop().await {
            if let Err(e) = replica.close() {
                tracing::error!(node = %node_id, error = %e, "clean shutdown failed");
            }
        }
        tracing::info!(node = %node_id, "node stopped");
    }

    /// Stops the node as a crash would: no clean-shutdown marker, so it restarts with a new
    /// epoch. (In-flight requests still finish, so the data directory is free afterwards.)
    pub async fn crash(self) {
        drop(self.stop().await);
    }

    /// Stops both servers and waits (bounded) until nothing else holds the replica, so the
    /// storage is closed and its directory free when the returned handle is dropped.
    async fn stop(mut self) -> Option<Arc<Replica>> {
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        self.heartbeat_task.abort();
        self.follow_task.abort();
        self.buckets_task.abort();
        self.metadata.shutdown().await;
        for task in [
            &mut self.handoff_task,
            &mut self.transfer_task,
            &mut self.ae_task,
        ] {
            task.abort();
            let _ = task.await;
        }
        self.peer_task.abort();
        let _ = self.peer_task.await;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.http_task)
            .await
            .is_err()
        {
            tracing::warn!(node = %self.node_id, "in-flight HTTP requests did not finish in time");
            self.http_task.abort();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Arc::strong_count(&self.replica) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.replica) > 1 {
            tracing::warn!(node = %self.node_id, "replica still in use at shutdown");
            return None;
        }
        Some(self.replica)
    }
}
