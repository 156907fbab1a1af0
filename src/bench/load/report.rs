//! The run's results: the summary table printed at the end, and the JSON written for scripts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::Recorder;
use super::LoadArgs;

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Serialize)]
pub struct Second {
    pub second: usize,
    pub ops: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub workload: super::Workload,
    pub api: super::Api,
    pub distribution: super::KeyDist,
    pub nodes: Vec<String>,
    pub bucket: String,
    pub clients: u64,
    pub keys: u64,
    pub value_bytes: usize,
    pub rate: Option<f64>,
    pub r: Option<String>,
    pub w: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub settings: Settings,
    pub elapsed_s: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub errors: u64,
    /// Reads that found nothing (404): keys not written yet, not failures.
    pub not_found: u64,
    /// Answers by HTTP status (or "transport" for a failed connection).
    pub outcomes: std::collections::BTreeMap<String, u64>,
    pub latency: std::collections::BTreeMap<String, Latency>,
    pub per_second: Vec<Second>,
}

impl Summary {
    pub fn new(
        args: &LoadArgs,
        bucket: &str,
        elapsed: Duration,
        total: &Recorder,
        seconds: &[Histogram<u64>],
    ) -> Self {
        let all = total.all();
        let mut latency: std::collections::BTreeMap<String, Latency> = total
            .latency
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(kind, h)| (kind.name().to_owned(), Latency::of(h)))
            .collect();
        latency.insert("all".into(), Latency::of(&all));
        let errors = total
            .outcomes
            .iter()
            .filter(|(o, _)| o.is_error())
            .map(|(_, n)| n)
            .sum();
        Summary {
            settings: Settings {
                workload: args.workload,
                api: args.api,
                distribution: args.distribution,
                nodes: args.nodes.clone(),
                bucket: bucket.to_owned(),
                clients: args.clients,
                keys: args.keys,
                value_bytes: args.value_bytes,
                rate: args.rate,
                r: args.r.clone(),
                w: args.w.clone(),
            },
            elapsed_s: elapsed.as_secs_f64(),
            ops: all.len(),
            ops_per_s: all.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            errors,
            not_found: total
                .outcomes
                .get(&super::record::Outcome::Status(404))
                .copied()
                .unwrap_or(0),
            outcomes: total
                .outcomes
                .iter()
                .map(|(o, n)| (o.label(), *n))
                .collect(),
            latency,
            per_second: seconds
                .iter()
                .enumerate()
                .map(|(second, h)| Second {
                    second,
                    ops: h.len(),
                    p50_ms: ms(h.value_at_quantile(0.5)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    max_ms: ms(h.max()),
                })
                .collect(),
        }
    }

    pub fn workload_name(&self) -> String {
        format!("{:?}", self.settings.workload).to_lowercase()
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "workload {} over the {:?} API ({:?} keys, {} keys, {} B values) on {} node(s), {} clients{}",
            self.workload_name(),
            s.api,
            s.distribution,
            s.keys,
            s.value_bytes,
            s.nodes.len(),
            s.clients,
            s.rate
                .map(|r| format!(", fixed rate {r} ops/s"))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "{} ops in {:.1} s = {:.0} ops/s, {} errors, {} reads found nothing (404)",
            self.ops, self.elapsed_s, self.ops_per_s, self.errors, self.not_found
        );
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "op", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, l) in &self.latency {
            let _ = writeln!(
                out,
                "{name:<8} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                l.count, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        let _ = writeln!(out, "(latencies in ms)");
        let statuses: Vec<String> = self
            .outcomes
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        let _ = writeln!(out, "answers: {}", statuses.join(", "));
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
