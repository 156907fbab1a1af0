//! `quorumkv bench storage`: the storage engine alone, on this machine's disk.
//!
//! Reports puts/s without fsync, puts/s with `sync = always` at one and at many concurrent
//! writers (group commit), gets/s, keydir memory per key, and open time with and without hint
//! files.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;

use crate::storage::{Options, Storage, StorageError, SyncPolicy};

#[derive(Debug, Args)]
pub struct StorageBench {
    /// Directory for the bench's data; created fresh and removed afterwards.
    #[arg(long, default_value = "data/bench-storage")]
    pub dir: PathBuf,
    /// Keys written for the memory and open-time figures.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Puts for the no-fsync figure, and gets for the read figure.
    #[arg(long, default_value_t = 500_000)]
    pub ops: u64,
    /// How long each fsync-per-write figure runs, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Concurrent writers for the group-commit figure.
    #[arg(long, default_value_t = 64)]
    pub writers: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:010}").into_bytes()
}

fn options(sync: SyncPolicy) -> Options {
    Options {
        sync,
        merge_trigger: None,
        ..Options::default()
    }
}

/// Resident set size of this process, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn fresh_dir(base: &std::path::Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = base.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

/// Runs `writers` concurrent writers putting distinct keys with fsync for `seconds`; returns
/// puts/s. Writers are async tasks on a two-thread runtime, as requests are in a node.
fn timed_puts(
    storage: &Storage,
    writers: u64,
    seconds: f64,
    value: &[u8],
) -> Result<f64, StorageError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let total = runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let storage = storage.clone();
                let value = value.to_vec();
                tokio::spawn(async move {
                    let mut n = 0;
                    while Instant::now() < deadline {
                        storage.put_async(&key(w << 32 | n), &value).await?;
                        n += 1;
                    }
                    Ok::<u64, StorageError>(n)
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        }
        Ok::<u64, StorageError>(total)
    })?;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// The same with blocking threads calling `put`, for comparison.
fn timed_puts_threads(
    storage: &Storage,
    writers: u64,
    seconds: f64,
    value: &[u8],
) -> Result<f64, StorageError> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let total: Result<u64, StorageError> = thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                scope.spawn(move || -> Result<u64, StorageError> {
                    let mut n = 0;
                    while Instant::now() < deadline {
                        storage.put(&key(1 << 63 | w << 32 | n), value)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StorageError::Io(std::io::Error::other("writer panicked")))
                })
            })
            .sum()
    });
    Ok(total? as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: &StorageBench) -> Result<(), StorageError> {
    let value = vec![0x5a; args.value_bytes];
    let base = &args.dir;
    println!(
        "storage bench: {}-byte values, data under {}",
        args.value_bytes,
        base.display()
    );

    // First, while the heap is fresh, so that the RSS delta is the keydir's.
    // Keydir memory and open time at `keys` keys.
    let dir = fresh_dir(base, "keys")?;
    let rss_before = rss_bytes();
    let storage = Storage::open(&dir, options(SyncPolicy::None))?;
    for i in 0..args.keys {
        storage.put(&key(i), &value)?;
    }
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        let per_key = after.saturating_sub(before) as f64 / args.keys as f64;
        let key_len = key(0).len() as f64;
        println!(
            "keydir memory per key at {} keys:   {per_key:>8.1} bytes ({:.1} beyond the {key_len}-byte key)",
            args.keys,
            per_key - key_len
        );
    }
    drop(storage);
    let start = Instant::now();
    let storage = Storage::open(&dir, options(SyncPolicy::None))?;
    let scan_open = start.elapsed();
    println!(
        "open at {} keys, scanning segments:   {:>8.3} s",
        args.keys,
        scan_open.as_secs_f64()
    );
    storage.merge()?;
    drop(storage);
    let start = Instant::now();
    let storage = Storage::open(&dir, options(SyncPolicy::None))?;
    let hint_open = start.elapsed();
    println!(
        "open at {} keys, from hint files:     {:>8.3} s ({} segments from hints)",
        args.keys,
        hint_open.as_secs_f64(),
        storage.recovery_report().segments_from_hints
    );
    drop(storage);
    std::fs::remove_dir_all(&dir)?;
    // Puts without fsync, then gets over the same keys.
    let dir = fresh_dir(base, "none")?;
    let storage = Storage::open(&dir, options(SyncPolicy::None))?;
    let start = Instant::now();
    for i in 0..args.ops {
        storage.put(&key(i), &value)?;
    }
    let puts_none = args.ops as f64 / start.elapsed().as_secs_f64();
    println!("puts/s, sync=none, 1 writer:            {puts_none:>12.0}");
    let mut rng = fastrand::Rng::with_seed(1);
    let start = Instant::now();
    for _ in 0..args.ops {
        let k = key(rng.u64(..args.ops));
        if storage.get(&k)?.is_none() {
            return Err(StorageError::Io(std::io::Error::other("bench key missing")));
        }
    }
    let gets = args.ops as f64 / start.elapsed().as_secs_f64();
    println!("gets/s, 1 reader:                        {gets:>12.0}");
    drop(storage);
    std::fs::remove_dir_all(&dir)?;

    // Puts with an fsync before each acknowledgement: alone, then with group commit.
    let dir = fresh_dir(base, "always")?;
    let storage = Storage::open(&dir, options(SyncPolicy::Always))?;
    let one = timed_puts(&storage, 1, args.seconds, &value)?;
    println!("puts/s, sync=always, 1 writer:          {one:>12.0}");
    let many = timed_puts(&storage, args.writers, args.seconds, &value)?;
    println!(
        "puts/s, sync=always, {:>3} writers:      {many:>12.0}  ({:.1}x the single writer)",
        args.writers,
        many / one
    );
    let threads = timed_puts_threads(&storage, args.writers, args.seconds, &value)?;
    println!(
        "puts/s, sync=always, {:>3} threads:      {threads:>12.0}  ({:.1}x; blocking put, one thread per writer)",
        args.writers,
        threads / one
    );
    drop(storage);
    std::fs::remove_dir_all(&dir)?;

    Ok(())
}
