//! Jepsen-style checks on the real binary: four `quorumkv serve` processes, each on a loopback
//! address of its own (127.0.S.1-4), with links cut by iptables (both directions, one node
//! from the rest, one direction only), nodes hung with SIGSTOP and crashed with SIGKILL, while
//! clients run two workloads:
//!
//! - a grow-only set in a `siblings` bucket (read, merge the siblings, add one element, write
//!   back with the context): every acknowledged add must be in the final set;
//! - an `lww` register: we count acknowledged writes that were overwritten by an older one
//!   (one that was acknowledged before they started).
//!
//! After the faults are healed every replica must hold the same state within three
//! anti-entropy intervals. The run is seeded (`QKV_SEED`, printed) and bounded
//! (`QKV_FAULT_SECS`, default 8); `scripts/soak-partitions.sh` runs it long.
//! Needs root and iptables (CI installs it, and fails without them); elsewhere the test says it
//! skipped.

mod procs;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;

use procs::{all_up, client, set_elements, wait_until, Cluster, Firewall, AE_INTERVAL};

const NODES: usize = 4;

/// One add to the grow-only set; returns the element if the write was acknowledged.
async fn add(http: &reqwest::Client, c_url: &str, element: &str) -> Option<()> {
    let read = http
        .get(format!("{c_url}/kv/gset/set?timeout_ms=1000"))
        .send()
        .await
        .ok()?;
    let status = read.status();
    if !(status.is_success()
        || status == StatusCode::MULTIPLE_CHOICES
        || status == StatusCode::NOT_FOUND)
    {
        return None;
    }
    let context = read
        .headers()
        .get("x-causal-context")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut set = set_elements(status.as_u16(), &read.bytes().await.ok()?);
    set.insert(element.to_owned());
    let value = set.into_iter().collect::<Vec<_>>().join(",");
    let mut put = http
        .put(format!("{c_url}/kv/gset/set?timeout_ms=1000"))
        .header("content-type", "text/plain")
        .body(value);
    if let Some(ctx) = context {
        put = put.header("x-causal-context", ctx);
    }
    let answer = put.send().await.ok()?;
    (answer.status() == StatusCode::NO_CONTENT).then_some(())
}

/// One acknowledged LWW write: its value, when it was sent and when it was acknowledged.
#[derive(Debug, Clone, Copy)]
struct LwwWrite {
    value: u64,
    invoked: Instant,
    acked: Instant,
}

struct Run {
    acked_adds: Vec<String>,
    attempted_adds: u64,
    lww: Vec<LwwWrite>,
    faults: Vec<String>,
    /// When the last fault was healed.
    last_heal: Instant,
}

/// Runs both workloads for `secs`, injecting faults when `faults` is set.
async fn run(c: &mut Cluster, fw: &Firewall, secs: u64, faults: bool, seed: u64) -> Run {
    let urls: Arc<Vec<String>> = Arc::new((0..NODES).map(|i| c.url(i, "")).collect());
    let done = Arc::new(AtomicBool::new(false));
    let acked_adds = Arc::new(Mutex::new(Vec::new()));
    let attempted = Arc::new(AtomicU64::new(0));
    let lww = Arc::new(Mutex::new(Vec::new()));
    let next_value = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for client_id in 0..3u64 {
        let (urls, done, acked, attempted) = (
            urls.clone(),
            done.clone(),
            acked_adds.clone(),
            attempted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut rng = fastrand::Rng::with_seed(seed ^ client_id);
            let mut seq = 0u64;
            while !done.load(Ordering::Relaxed) {
                seq += 1;
                let element = format!("c{client_id}-{seq}");
                attempted.fetch_add(1, Ordering::Relaxed);
                if add(&http, &urls[rng.usize(..NODES)], &element)
                    .await
                    .is_some()
                {
                    acked.lock().push(element);
                }
            }
        }));
    }
    for client_id in 0..2u64 {
        let (urls, done, lww, next_value) =
            (urls.clone(), done.clone(), lww.clone(), next_value.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut rng = fastrand::Rng::with_seed(seed ^ (100 + client_id));
            while !done.load(Ordering::Relaxed) {
                let value = next_value.fetch_add(1, Ordering::Relaxed);
                let invoked = Instant::now();
                let url = format!(
                    "{}/kv/sessions/reg?timeout_ms=1000",
                    urls[rng.usize(..NODES)]
                );
                let answer = http
                    .put(url)
                    .header("content-type", "text/plain")
                    .body(value.to_string())
                    .send()
                    .await;
                if answer.is_ok_and(|a| a.status() == StatusCode::NO_CONTENT) {
                    lww.lock().push(LwwWrite {
                        value,
                        invoked,
                        acked: Instant::now(),
                    });
                }
            }
        }));
    }
    let mut log = Vec::new();
    let mut last_heal = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if faults {
            let a = rng.usize(..NODES);
            let b = (a + 1 + rng.usize(..NODES - 1)) % NODES;
            let what = match rng.u8(..5) {
                0 => {
                    fw.isolate(a);
                    format!("isolate n{}", a + 1)
                }
                1 => {
                    fw.cut_one_way(a, b);
                    format!("drop n{} -> n{}", a + 1, b + 1)
                }
                2 => {
                    // A majority/minority split: {a, b} against the rest.
                    for x in (0..NODES).filter(|&x| x != a && x != b) {
                        fw.cut(a, x);
                        fw.cut(b, x);
                    }
                    format!("split n{},n{} | rest", a + 1, b + 1)
                }
                3 => {
                    c.signal(a, "-STOP");
                    format!("hang n{}", a + 1)
                }
                _ => {
                    c.crash(a);
                    format!("crash n{}", a + 1)
                }
            };
            log.push(what);
            tokio::time::sleep(Duration::from_millis(800 + rng.u64(..1200))).await;
            fw.heal();
            c.resume_all();
            last_heal = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(400 + rng.u64(..600))).await;
    }
    if !faults {
        // Nothing was healed: count from when the load stops.
        last_heal = Instant::now();
    }
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked_adds.lock().clone();
    let writes = lww.lock().clone();
    Run {
        acked_adds: acked,
        attempted_adds: attempted.load(Ordering::Relaxed),
        lww: writes,
        faults: log,
        last_heal,
    }
}

/// Every node's own copy of a key (`/admin/replica`), as JSON or `null`.
async fn copies(http: &reqwest::Client, c: &Cluster, path: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for i in 0..NODES {
        let v = match http.get(c.url(i, path)).send().await {
            Ok(r) if r.status().is_success() => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        out.push(v);
    }
    out
}

/// How long after healing until every node holding the keys holds the same state of each.
async fn converge(http: &reqwest::Client, c: &Cluster, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let ok = wait_until(limit, async || {
        for path in ["/admin/replica/gset/set", "/admin/replica/sessions/reg"] {
            // Only the key's replicas hold it; a node outside its preference list holds nothing.
            let held: Vec<serde_json::Value> = copies(http, c, path)
                .await
                .into_iter()
                .filter(|v| !v.is_null())
                .collect();
            if held.len() < 3 || held.iter().any(|v| *v != held[0]) {
                return false;
            }
        }
        true
    })
    .await;
    ok.then(|| started.elapsed())
}

/// An `r=all` read of `path` through node `i`, tried until it answers 200 or 300: the
/// status and body. A read that never succeeds fails the test (it says nothing of losses).
async fn final_read(http: &reqwest::Client, c: &Cluster, i: usize, path: &str) -> (u16, Vec<u8>) {
    let url = c.url(i, &format!("{path}?r=all&timeout_ms=1500"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let last = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::MULTIPLE_CHOICES => {
                let status = r.status().as_u16();
                if let Ok(body) = r.bytes().await {
                    return (status, body.to_vec());
                }
                format!("{status} with a body that did not arrive")
            }
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("the final read of {path} never succeeded: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Acknowledged LWW writes that lost to a write acknowledged before they were sent.
fn overwritten_by_older(writes: &[LwwWrite], winner: u64) -> usize {
    let Some(w) = writes.iter().find(|w| w.value == winner) else {
        return 0; // the winner's outcome was unknown to its client: it may have landed last
    };
    writes.iter().filter(|x| x.invoked > w.acked).count()
}

async fn check(subnet: u8, faults: bool) {
    let Some(fw) = Firewall::new(subnet, NODES) else {
        // CI installs iptables and runs as root: there a skip would hide a broken setup.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the partition tests: needs root and iptables"
        );
        eprintln!("skipped: needs root and iptables");
        return;
    };
    let seed = std::env::var("QKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let secs = std::env::var("QKV_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    eprintln!("QKV_SEED={seed} QKV_FAULT_SECS={secs} faults={faults}");
    let mut c = Cluster::start(subnet, NODES);
    let http = client();
    if !wait_until(Duration::from_secs(20), async || all_up(&http, &c).await).await {
        c.dump_logs();
        panic!("the cluster did not come up");
    }
    let result = run(&mut c, &fw, secs, faults, seed).await;
    fw.heal();
    c.resume_all();
    let converged = converge(&http, &c, AE_INTERVAL * 3 + Duration::from_secs(4))
        .await
        .map(|_| result.last_heal.elapsed());

    // The final reads need every replica: wait until every node sees every other one
    // again (a healed link may take a redial), then read until a read succeeds.
    if !wait_until(Duration::from_secs(20), async || all_up(&http, &c).await).await {
        c.dump_logs();
        panic!("the nodes did not all see each other again after healing (seed {seed})");
    }
    let (status, body) = final_read(&http, &c, 0, "/kv/gset/set").await;
    let final_set = set_elements(status, &body);
    let lost: Vec<&String> = result
        .acked_adds
        .iter()
        .filter(|e| !final_set.contains(*e))
        .collect();
    let (_, reg) = final_read(&http, &c, 1, "/kv/sessions/reg").await;
    let winner: u64 = String::from_utf8_lossy(&reg).parse().unwrap_or(0);
    let overwritten = overwritten_by_older(&result.lww, winner);
    eprintln!(
        "faults: {:?}\nset: {} adds attempted, {} acknowledged, {} lost, {} in the final set\n\
         lww: {} acknowledged writes, winner {winner}, {overwritten} acknowledged writes overwritten by an older one\n\
         replicas identical {:?} after the last fault was healed (anti-entropy interval {:?})",
        result.faults,
        result.attempted_adds,
        result.acked_adds.len(),
        lost.len(),
        final_set.len(),
        result.lww.len(),
        converged,
        AE_INTERVAL,
    );
    if !lost.is_empty() || converged.is_none() {
        c.dump_logs();
    }
    assert!(
        !result.acked_adds.is_empty(),
        "no add was acknowledged: the test tested nothing"
    );
    assert!(
        lost.is_empty(),
        "acknowledged adds lost: {lost:?} (seed {seed})"
    );
    assert!(
        converged.is_some_and(|t| t <= AE_INTERVAL * 3),
        "replicas not identical within three anti-entropy intervals of healing: {converged:?} (seed {seed})"
    );
    if !faults {
        assert_eq!(
            overwritten, 0,
            "without faults no acknowledged lww write may lose to an older one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grow_only_set_loses_no_acknowledged_add_under_partitions_hangs_and_crashes() {
    check(71, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_faults_nothing_is_lost_and_no_lww_write_loses_to_an_older_one() {
    check(72, false).await;
}
