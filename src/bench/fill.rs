//! `quorumkv bench fill`: writes keys straight into a stopped node's data directory, stored as
//! the node itself stores a client write, so that the scale figures (memory per key, start-up
//! time, throughput at ten million keys) need not wait for ten million HTTP writes.
//!
//! The keys are the load generator's (`k0`, `k1`, ... in its bucket), so a following
//! `quorumkv bench --keys N --no-preload` reads values that exist. A merge at the end leaves
//! the data as a long-running node keeps it: merged segments, each with its hint file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::causal::{SystemClock, VersionVector};
use crate::config::Config;
use crate::replica::merkle::Filing;
use crate::replica::{Limits, Replica};
use crate::ring::Ring;
use crate::rpc::WriteOp;
use crate::storage::SyncPolicy;

#[derive(Debug, Args)]
pub struct FillArgs {
    /// The node's config file; its `data_dir` is filled. The node must be stopped.
    #[arg(long)]
    pub config: PathBuf,
    /// How many keys (named k0, k1, ...).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Size of each value in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Bucket to fill (the load generator's default for the headline mix).
    #[arg(long, default_value = "sessions")]
    pub bucket: String,
    /// Leave the segments unmerged (no hint files): open then scans every record.
    #[arg(long)]
    pub no_merge: bool,
}

pub fn run(args: &FillArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let mut options = config.storage_options();
    // Durable once, at the end (`close`), instead of per write.
    options.sync = SyncPolicy::None;
    options.merge_trigger = None;
    let filing = Filing::new(
        Ring::new(vec![config.node_id.clone()], 1),
        3,
        Default::default(),
    );
    let replica = Replica::open(
        &config.data_dir,
        &config.node_id,
        options,
        filing,
        Arc::new(SystemClock),
        &|| fastrand::u64(..),
        Limits::default(),
    )
    .map_err(|e| e.to_string())?;
    let conflict = config.bucket(&args.bucket).conflict;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let bar = ProgressBar::new(args.keys);
    bar.set_style(
        ProgressStyle::with_template("fill {bar:40} {pos}/{len} keys, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut value = vec![0u8; args.value_bytes];
    runtime.block_on(async {
        for i in 0..args.keys {
            fastrand::fill(&mut value);
            let op = WriteOp::Put {
                data: value.clone(),
                content_type: "application/octet-stream".into(),
                meta: Vec::new(),
            };
            let key = format!("k{i}");
            let context = VersionVector::new();
            let (_, pending) = replica
                .coordinate(&args.bucket, &key, conflict, &context, op, i + 1)
                .await
                .map_err(|e| format!("{}/{key}: {e}", args.bucket))?;
            pending.durable().await.map_err(|e| e.to_string())?;
            if i % 4096 == 0 {
                bar.set_position(i);
            }
        }
        Ok::<(), String>(())
    })?;
    bar.finish_and_clear();
    let written = started.elapsed();
    if !args.no_merge {
        replica.storage().merge().map_err(|e| e.to_string())?;
    }
    replica.close().map_err(|e| e.to_string())?;
    println!(
        "filled {} with {} keys of {} bytes in {:.1} s ({:.0} keys/s){}",
        config.data_dir.display(),
        args.keys,
        args.value_bytes,
        written.as_secs_f64(),
        args.keys as f64 / written.as_secs_f64(),
        if args.no_merge {
            String::new()
        } else {
            format!(
                ", merged in {:.1} s",
                (started.elapsed() - written).as_secs_f64()
            )
        }
    );
    Ok(())
}
