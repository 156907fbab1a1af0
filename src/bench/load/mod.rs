//! `quorumkv bench`: the load generator. Clients (each with one persistent HTTP/1.1 connection)
//! spread over the target nodes run a YCSB-like mix or read-modify-writes, closed-loop or at a
//! fixed rate; latencies go to hdrhistogram, and the run ends with a summary table, a JSON file
//! and two SVG plots.

mod client;
mod plot;
mod record;
mod report;
mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use http::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};

pub use client::Api;
use client::Client;
use record::{Kind, Outcome, Recorder, Timeline};
use workload::{key_name, Generator, Op};
pub use workload::{KeyDist, Workload};

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The operation mix: a (50% read / 50% update), b (95/5), c (read only), w (write only),
    /// rmw (read, then write back with the read's causal context).
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Which HTTP API to speak: quorumkv's own (`/kv`, `X-Causal-Context`) or the
    /// Riak-compatible one (`/buckets/../keys/..`, `X-Riak-Vclock`).
    #[arg(long, value_enum, default_value = "native")]
    pub api: Api,
    /// Nodes to send to, comma-separated `host:port` or `http://host:port`; clients are spread
    /// over them round-robin.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103"
    )]
    pub nodes: Vec<String>,
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub clients: u64,
    /// How many distinct keys (named k0, k1, ...).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// How keys are picked.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: KeyDist,
    /// Skew of the zipfian distribution (YCSB uses 0.99).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Size of each written value in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// How long to run (e.g. 30s, 2m); ignored when --ops is given.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Run this long first without recording (connections, caches and the cluster warm up).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Stop after this many operations in all instead of after --duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Target rate in operations per second over all clients. Latency is then counted from
    /// each operation's intended start, so a stall shows up in the figures (no coordinated
    /// omission; sends are scheduled on tokio's 1 ms timer). Without it, clients send as fast
    /// as answers come back.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bucket to use; default `sessions` (last-write-wins) for a/b/c/w, `siblings` for rmw.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Read quorum knob sent with every GET (`1..n`, one, quorum, all); default the bucket's.
    #[arg(long)]
    pub r: Option<String>,
    /// Write quorum knob sent with every PUT; default the bucket's.
    #[arg(long)]
    pub w: Option<String>,
    /// Write every key once before the measured run, so that reads find values (the
    /// default; README's figures are taken so).
    #[arg(long, overrides_with = "no_preload")]
    pub preload: bool,
    /// Skip the preload: reads of keys not yet written are 404s (counted apart, not as errors).
    #[arg(long, overrides_with = "preload")]
    pub no_preload: bool,
    /// The client token, when the cluster requires one.
    #[arg(long, env = "QUORUMKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Speak TLS to the nodes, trusting this PEM certificate (the nodes' own, or their CA).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Folder for the JSON results and the SVG plots.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Worker threads of the generator's own runtime (it shares the machine with the cluster).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
}

/// What every client shares.
struct Plan {
    args: LoadArgs,
    bucket: String,
    query: String,
    value: Bytes,
    /// Interval between one client's intended sends, when a rate is set.
    interval: Option<Duration>,
    start: Instant,
    /// The end of the warm-up: operations that began before it are not recorded.
    measured_from: Instant,
    deadline: Instant,
    timeline: Timeline,
}

impl Plan {
    fn path(&self, key: u64) -> String {
        self.args
            .api
            .path(&self.bucket, &key_name(key), &self.query)
    }

    fn done(&self, now: Instant) -> bool {
        match self.args.ops {
            Some(limit) => self.timeline.completed.load(Ordering::Relaxed) >= limit,
            None => now >= self.deadline,
        }
    }
}

fn host(node: &str) -> String {
    node.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

fn outcome(answer: &Result<client::Answer, String>) -> Outcome {
    match answer {
        Ok(a) => Outcome::Status(a.status.as_u16()),
        Err(_) => Outcome::Transport,
    }
}

/// Runs one operation; returns its kind and how it ended.
async fn run_op(plan: &Plan, client: &mut Client, op: Op) -> (Kind, Outcome) {
    match op {
        Op::Read(key) => {
            let answer = client
                .send(Method::GET, &plan.path(key), Bytes::new(), None)
                .await;
            (Kind::Read, outcome(&answer))
        }
        Op::Update(key) => {
            let answer = client
                .send(Method::PUT, &plan.path(key), plan.value.clone(), None)
                .await;
            (Kind::Update, outcome(&answer))
        }
        Op::ReadModifyWrite(key) => {
            let path = plan.path(key);
            let read = client.send(Method::GET, &path, Bytes::new(), None).await;
            let context = match &read {
                Ok(a)
                    if a.status == StatusCode::OK
                        || a.status == StatusCode::MULTIPLE_CHOICES
                        || a.status == StatusCode::NOT_FOUND =>
                {
                    a.context.clone()
                }
                _ => return (Kind::ReadModifyWrite, outcome(&read)),
            };
            let write = client
                .send(Method::PUT, &path, plan.value.clone(), context.as_deref())
                .await;
            (Kind::ReadModifyWrite, outcome(&write))
        }
    }
}

async fn client_loop(
    plan: Arc<Plan>,
    index: u64,
    mut client: Client,
    mut recorder: Recorder,
) -> Recorder {
    let mut generator = match Generator::new(
        plan.args.workload,
        plan.args.distribution,
        plan.args.keys,
        plan.args.zipf_exponent,
        index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ plan.args.keys,
    ) {
        Ok(g) => g,
        Err(_) => return recorder,
    };
    // With a rate, client i sends at start + offset_i + k * interval, offsets spreading the
    // clients evenly over one interval.
    let mut intended = plan
        .interval
        .map(|every| plan.start + every.mul_f64(index as f64 / plan.args.clients as f64));
    loop {
        let began = match (intended.as_mut(), plan.interval) {
            (Some(at), Some(every)) => {
                tokio::time::sleep_until((*at).into()).await;
                let began = *at;
                *at += every;
                began
            }
            _ => Instant::now(),
        };
        if plan.done(Instant::now()) {
            break;
        }
        let (kind, outcome) = run_op(&plan, &mut client, generator.next_op()).await;
        let now = Instant::now();
        if began >= plan.measured_from {
            recorder.record(kind, outcome, now - began);
            plan.timeline.record(now - plan.measured_from, now - began);
        }
    }
    recorder
}

/// Writes every key once, clients splitting the key space; returns how many writes failed.
async fn preload(
    args: &LoadArgs,
    bucket: &str,
    query: &str,
    value: &Bytes,
    tls: &Option<Arc<rustls::ClientConfig>>,
) -> u64 {
    let mut tasks = Vec::new();
    for index in 0..args.clients.min(args.keys) {
        let host = host(&args.nodes[index as usize % args.nodes.len()]);
        let (clients, keys) = (args.clients.min(args.keys), args.keys);
        let (bucket, query, value) = (bucket.to_owned(), query.to_owned(), value.clone());
        let (token, tls, api) = (args.token.clone(), tls.clone(), args.api);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(host, token.as_deref(), tls, api);
            let mut failed = 0;
            let mut key = index;
            while key < keys {
                let path = api.path(&bucket, &key_name(key), &query);
                match client.send(Method::PUT, &path, value.clone(), None).await {
                    Ok(a) if a.status.is_success() => {}
                    _ => failed += 1,
                }
                key += clients;
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap_or(0);
    }
    failed
}

fn query(args: &LoadArgs) -> String {
    let knobs: Vec<String> = [("r", &args.r), ("w", &args.w)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    if knobs.is_empty() {
        String::new()
    } else {
        format!("?{}", knobs.join("&"))
    }
}

/// Live progress: a bar with ops/s on a terminal, a plain line a second otherwise.
async fn progress(plan: Arc<Plan>) {
    let total = match plan.args.ops {
        Some(n) => n,
        None => plan.args.duration.as_secs().max(1),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if plan.done(now) {
            break;
        }
        let completed = plan.timeline.completed.load(Ordering::Relaxed);
        let rate = completed - last;
        last = completed;
        let elapsed = now.saturating_duration_since(plan.measured_from).as_secs();
        match &bar {
            Some(bar) => {
                bar.set_position(if plan.args.ops.is_some() {
                    completed
                } else {
                    elapsed
                });
                bar.set_message(format!("{rate} ops/s"));
            }
            None => eprintln!("{elapsed:>4} s  {rate:>8} ops/s  {completed:>10} ops"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    if args.nodes.is_empty() {
        return Err("--nodes needs at least one node".into());
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("--rate {rate}: must be a positive number"));
        }
    }
    // Checks the distribution's parameters before any traffic.
    Generator::new(
        args.workload,
        args.distribution,
        args.keys,
        args.zipf_exponent,
        0,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: LoadArgs) -> Result<(), String> {
    let bucket = args
        .bucket
        .clone()
        .unwrap_or_else(|| args.workload.default_bucket().to_owned());
    let query = query(&args);
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    let tls = args
        .cacert
        .as_deref()
        .map(client::tls_trusting)
        .transpose()?;
    if !args.no_preload {
        eprintln!("preloading {} keys into {bucket}", args.keys);
        let failed = preload(&args, &bucket, &query, &value, &tls).await;
        if failed > 0 {
            return Err(format!(
                "preload: {failed} writes failed; is the cluster up?"
            ));
        }
    }
    // Every client connects, and allocates its histograms, before the clock starts.
    let clients = futures::future::join_all((0..args.clients).map(|i| {
        let mut client = Client::new(
            host(&args.nodes[i as usize % args.nodes.len()]),
            args.token.as_deref(),
            tls.clone(),
            args.api,
        );
        async move { client.connect().await.map(|()| (client, Recorder::new())) }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, String>>()?;
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate));
    let start = Instant::now();
    let plan = Arc::new(Plan {
        measured_from: start + args.warmup,
        deadline: start + args.warmup + args.duration,
        bucket,
        query,
        value,
        interval,
        start,
        timeline: Timeline::new(args.duration.as_secs() as usize),
        args,
    });
    let progress = tokio::spawn(progress(plan.clone()));
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(0..)
        .map(|((client, recorder), i)| tokio::spawn(client_loop(plan.clone(), i, client, recorder)))
        .collect();
    let mut total = Recorder::new();
    for task in tasks {
        total.merge(task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = plan.measured_from.elapsed();
    progress.abort();
    // Wait for the progress task to be dropped, so that it lets go of the plan.
    let _ = progress.await;
    let plan = Arc::into_inner(plan).ok_or("a client outlived the run")?;
    let seconds = plan.timeline.into_seconds();
    let summary = report::Summary::new(&plan.args, &plan.bucket, elapsed, &total, &seconds);
    print!("{}", summary.table());
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = &plan.args.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let name = format!("bench-{}-{stamp}", summary.workload_name());
    let json = out.join(format!("{name}.json"));
    summary.write_json(&json)?;
    let over_time = out.join(format!("{name}-latency.svg"));
    let histogram = out.join(format!("{name}-histogram.svg"));
    plot::latency_over_time(&summary, &over_time)?;
    plot::percentiles(&summary, &total, &histogram)?;
    println!(
        "wrote {}, {} and {}",
        json.display(),
        over_time.display(),
        histogram.display()
    );
    Ok(())
}
