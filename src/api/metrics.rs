//! `GET /metrics`: Prometheus (OpenMetrics) text. Request counts and latencies are kept as they
//! happen, by a middleware on `/kv`; everything else is read from its owner at scrape time, so
//! the numbers here and in `/admin/status` are the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::AppState;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The client operation, as the `op` label spells it.
type Op = &'static str;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: Op,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: Op,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.1 ms to ~3.3 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn sibling_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0])
}

/// What is counted per client request.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<OpLabels>,
    quorum_failures: Family<OpLabels, Counter>,
    siblings: Histogram,
    /// Reads and writes (deletes included) answered, for Riak's `/stats`.
    gets: AtomicU64,
    puts: AtomicU64,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            quorum_failures: Family::default(),
            siblings: sibling_histogram(),
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
        }
    }
}

impl RequestMetrics {
    fn observe(&self, op: Op, status: StatusCode, elapsed: Duration) {
        let total = if op == "get" { &self.gets } else { &self.puts };
        total.fetch_add(1, Ordering::Relaxed);
        let status = status.as_u16();
        self.requests
            .get_or_create(&RequestLabels { op, status })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
        if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
            self.quorum_failures.get_or_create(&OpLabels { op }).inc();
        }
    }

    /// Reads and writes answered since start.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.gets.load(Ordering::Relaxed),
            self.puts.load(Ordering::Relaxed),
        )
    }

    /// How many siblings a GET answered with (1 for a plain value).
    pub fn siblings(&self, count: usize) {
        self.siblings.observe(count as f64);
    }
}

/// Middleware for `/kv`: counts each request by op and status and times it.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let op = match *request.method() {
        Method::PUT | Method::POST => "put",
        Method::DELETE => "delete",
        _ => "get",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe(op, response.status(), started.elapsed());
    response
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstGauge::new(value as i64));
}

/// Builds this scrape's registry: the live request metrics plus a snapshot of the rest.
async fn registry(state: &AppState) -> Registry {
    let mut r = Registry::with_prefix("quorumkv");
    let m = &state.metrics;
    r.register(
        "requests",
        "Client requests by operation and HTTP status",
        m.requests.clone(),
    );
    r.register_with_unit(
        "request_duration",
        "Client request latency by operation",
        Unit::Seconds,
        m.latency.clone(),
    );
    r.register(
        "quorum_failures",
        "Client requests answered 503 because too few replicas answered",
        m.quorum_failures.clone(),
    );
    r.register(
        "get_siblings",
        "Number of siblings in each GET answer",
        m.siblings.clone(),
    );

    let c = &state.coordinator;
    counter(
        &mut r,
        "read_repairs",
        "Replicas brought up to date by read repair",
        c.read_repairs(),
    );
    let hints = c.replica().hints();
    counter(
        &mut r,
        "hints_stored",
        "Hints stored for unreachable nodes",
        hints.stored(),
    );
    counter(
        &mut r,
        "hints_delivered",
        "Hints handed off to their owners",
        c.hints_delivered(),
    );
    counter(
        &mut r,
        "stale_ring_refusals",
        "Replicated writes refused because they were placed under an older ring than this node acts on",
        c.fence().refused(),
    );
    let pending: Family<PeerLabels, Gauge> = Family::default();
    let connected: Family<PeerLabels, Gauge> = Family::default();
    let up: Family<PeerLabels, Gauge> = Family::default();
    let held = hints.pending();
    for view in c.liveness().view() {
        let peer = PeerLabels {
            peer: view.id.clone(),
        };
        let n = held.get(&view.id).copied().unwrap_or(0);
        pending.get_or_create(&peer).set(n as i64);
        up.get_or_create(&peer).set(i64::from(view.up));
        let is_connected = c.net().connected(&view.id).await;
        connected.get_or_create(&peer).set(i64::from(is_connected));
    }
    r.register(
        "hints_pending",
        "Hints held, by the node they are for",
        pending,
    );
    r.register(
        "peer_up",
        "1 if the failure detector thinks the peer is up",
        up,
    );
    r.register(
        "peer_connected",
        "1 if this node has an open internode connection to the peer",
        connected,
    );
    let (sent, received) = c.net().traffic();
    counter(
        &mut r,
        "internode_sent_bytes",
        "Bytes of internode requests sent",
        sent,
    );
    counter(
        &mut r,
        "internode_received_bytes",
        "Bytes of internode answers received",
        received,
    );

    let ae = &state.anti_entropy;
    counter(
        &mut r,
        "anti_entropy_exchanges",
        "Anti-entropy exchanges completed",
        ae.exchanges(),
    );
    counter(
        &mut r,
        "anti_entropy_keys_repaired",
        "Keys repaired by anti-entropy exchanges",
        ae.keys_repaired(),
    );
    counter(
        &mut r,
        "tombstones_reaped",
        "Tombstones removed once every replica held them",
        ae.tombstones_reaped(),
    );

    counter(
        &mut r,
        "corrupt_records",
        "Stored records that failed their checksum or did not decode, dropped for repair",
        c.replica().corrupt_records(),
    );
    counter(
        &mut r,
        "skewed_timestamps",
        "LWW timestamps seen further ahead than max_clock_offset_ms, not adopted",
        c.replica().skewed_stamps(),
    );
    let verdict = c.skew().verdict();
    r.register(
        "clock_offset_ms",
        "This node's clock minus its peers' (median), in milliseconds",
        ConstGauge::new(verdict.offset_ms),
    );
    gauge(
        &mut r,
        "clock_out_of_bounds",
        "1 if this node's clock is off from most peers' by more than max_clock_offset_ms",
        u64::from(verdict.out_of_bounds),
    );
    let peer_offsets: Family<PeerLabels, Gauge> = Family::default();
    for (peer, offset) in c.skew().peers() {
        peer_offsets.get_or_create(&PeerLabels { peer }).set(offset);
    }
    r.register(
        "peer_clock_offset_ms",
        "Each peer's clock minus this node's, from heartbeats, in milliseconds",
        peer_offsets,
    );

    let stats = c.replica().storage().stats();
    gauge(
        &mut r,
        "storage_keys",
        "Keys in this node's storage",
        stats.keys,
    );
    gauge(
        &mut r,
        "storage_live_bytes",
        "Bytes of live records on disk",
        stats.live_bytes,
    );
    gauge(
        &mut r,
        "storage_dead_bytes",
        "Bytes of superseded records awaiting merge",
        stats.dead_bytes,
    );
    gauge(
        &mut r,
        "storage_segments",
        "Log segment files",
        stats.segments,
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since this node started",
        state.started.elapsed().as_secs(),
    );
    r
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let registry = registry(&state).await;
    let mut body = String::new();
    match text::encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
