//! The engine handle: options, the write path with group commit, the read path, and stats.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::durability::Durability;
use super::error::{Result, StorageError};
use super::keydir::{value_hash, Entry, Keydir, SHARDS};
use super::merge::MergeReport;
use super::record::{self, FORMAT_MAX_VALUE_LEN, HEADER_LEN, MAX_KEY_LEN};
use super::recovery::{self, RecoveryReport};
use super::segment::{data_path, sync_dir, Segment};

/// When a write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before `put`/`delete` returns; concurrent writers share fsyncs (group commit).
    Always,
    /// fsync from a background thread at this period; a crash loses at most that much.
    Interval(Duration),
    /// Never fsync explicitly; the operating system writes back when it likes.
    None,
}

/// When merge runs by itself: after a segment is sealed, if the sealed segments hold at least
/// `min_dead_bytes` of dead records making up at least `dead_ratio` of their bytes, `delay`
/// later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergeTrigger {
    pub dead_ratio: f64,
    pub min_dead_bytes: u64,
    /// Replicas see the same overwrites and seal segments at the same pace, so a merge due on
    /// one is due on all at once (under overwrites a sealed segment is nearly all dead the
    /// moment it seals, whatever the ratio); a delay of each node's own spreads them out.
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sync: SyncPolicy,
    /// Largest value accepted by `put`.
    pub max_value_bytes: usize,
    /// A segment is sealed once the next record would take it past this size.
    pub max_segment_bytes: u64,
    /// `None` runs merge only when asked.
    pub merge_trigger: Option<MergeTrigger>,
    /// With `sync = always`: how long the syncer waits, when several writers are waiting,
    /// to gather more of them into one fsync (see `durability`).
    pub group_commit_delay: Duration,
}

/// Offsets in the keydir are `u32`, so a segment must stay well under 4 GiB.
const MAX_SEGMENT_BYTES_LIMIT: u64 = 2 * 1024 * 1024 * 1024;
/// A reader that loses the race with a merge retries its lookup this many times.
const READ_RETRIES: usize = 8;

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Always,
            max_value_bytes: 1024 * 1024,
            max_segment_bytes: 64 * 1024 * 1024,
            merge_trigger: Some(MergeTrigger {
                dead_ratio: 0.5,
                min_dead_bytes: 16 * 1024 * 1024,
                delay: Duration::ZERO,
            }),
            group_commit_delay: Duration::ZERO,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        if self.max_value_bytes > FORMAT_MAX_VALUE_LEN {
            return Err(StorageError::BadOption(format!(
                "max_value_bytes must be at most {FORMAT_MAX_VALUE_LEN}"
            )));
        }
        if self.max_segment_bytes == 0 || self.max_segment_bytes > MAX_SEGMENT_BYTES_LIMIT {
            return Err(StorageError::BadOption(format!(
                "max_segment_bytes must be between 1 and {MAX_SEGMENT_BYTES_LIMIT}"
            )));
        }
        if let Some(t) = self.merge_trigger {
            if !(t.dead_ratio > 0.0 && t.dead_ratio <= 1.0) {
                return Err(StorageError::BadOption(
                    "merge dead_ratio must be in (0, 1]".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Counts for operators and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub keys: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub segments: u64,
}

/// A write that is in the log but, under `sync = always`, maybe not yet on disk.
#[must_use = "a write is only acknowledged once durable"]
pub struct Pending {
    wait: Option<(Arc<Durability>, u64)>,
}

impl Pending {
    /// Waits until the write is on disk (at once under `sync = interval` or `none`).
    pub async fn durable(self) -> Result<()> {
        match self.wait {
            Some((durability, seq)) => durability.wait_async(seq).await,
            None => Ok(()),
        }
    }
}

/// What one append did.
pub(super) struct Appended {
    seq: u64,
    /// Whether a segment was sealed to make room.
    sealed: bool,
    /// The hash of the value the record replaced or deleted.
    replaced: Option<u64>,
}

/// Under `sync = always`, the active segment is filled with zeros this far ahead of the
/// appends. An fdatasync of an append that grows the file also writes the file's block map
/// and inode; one of records written over zeros already on disk writes only the data. On
/// this machine's virtual disk that is 72 -> 50 us of CPU and 221 -> 131 us per fdatasync.
/// Recovery cuts the zeros a crash leaves after the last record.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// The segment being appended to.
pub(super) struct Writer {
    pub segment: Arc<Segment>,
    pub offset: u64,
    /// Where the zeros written ahead end (`sync = always`); at or below `offset` when there
    /// are none.
    zeroed: u64,
    pub next_seq: u64,
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(segment: Arc<Segment>, next_seq: u64) -> Self {
        Writer {
            segment,
            offset: 0,
            zeroed: 0,
            next_seq,
            buf: Vec::new(),
        }
    }

    /// Makes sure zeros stand where the next `len` bytes go, writing up to
    /// [`PREALLOCATE_BYTES`] (no further than `limit`) ahead. Best effort: if the zeros
    /// cannot be written (a full disk), they are cut off again and the record is appended.
    fn preallocate(&mut self, len: u64, limit: u64) -> std::io::Result<()> {
        if self.offset + len <= self.zeroed {
            return Ok(());
        }
        let end = (self.offset + PREALLOCATE_BYTES).min(limit);
        if end < self.offset + len {
            return Ok(());
        }
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = self.zeroed.max(self.offset);
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64) as usize;
            if self.segment.file.write_all_at(&ZEROS[..n], at).is_err() {
                return self.cut_at_offset();
            }
            at += n as u64;
        }
        self.zeroed = end;
        Ok(())
    }

    /// Cuts zeros written ahead, so that a sealed (or cleanly closed) segment ends at its
    /// last record.
    fn cut_zeros(&mut self) -> std::io::Result<()> {
        if self.zeroed > self.offset {
            return self.cut_at_offset();
        }
        Ok(())
    }

    /// Cuts the file after the last whole record: zeros written ahead, a partial append.
    fn cut_at_offset(&mut self) -> std::io::Result<()> {
        self.zeroed = self.offset;
        self.segment.file.set_len(self.offset)
    }
}

pub(super) struct Inner {
    pub dir: PathBuf,
    pub options: Options,
    pub keydir: Keydir,
    pub segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// Lock order: `writer` before `segments`; merge never takes `writer` while holding
    /// `segments`.
    pub writer: Mutex<Writer>,
    durability: Arc<Durability>,
    pub merge_lock: Mutex<()>,
    /// The automatic merge running in the background, if any.
    merge_thread: Mutex<Option<JoinHandle<()>>>,
    pub next_segment_id: AtomicU32,
    pub recovery: RecoveryReport,
    /// Holds the directory's `flock` for as long as the engine lives.
    _lock: File,
}

/// A handle to an open engine; clones share it. Methods block on disk I/O, except the wait
/// for durability in the `_async` writes. Dropping the last handle waits for a running merge
/// and the syncer thread, so once it returns the directory is free to open again.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
    _closer: Arc<Closer>,
}

/// Owned only by `Storage` handles (never by background threads), so its drop marks the
/// moment the last user handle goes away.
struct Closer {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.inner.durability.shutdown();
        let syncer = self.syncer.take();
        let merge = self.inner.merge_thread.lock().take();
        for thread in syncer.into_iter().chain(merge) {
            if thread.join().is_err() {
                tracing::error!(dir = %self.inner.dir.display(), "a storage thread panicked");
            }
        }
    }
}

impl Storage {
    /// Opens (creating if needed) the engine in `dir`, recovering whatever a crash left there.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Storage> {
        Self::open_visiting(dir, options, || (), |(), _, _| {}).map(|(storage, _)| storage)
    }

    /// [`Storage::open`] that also hands `visit` every live key and its value's hash once, as
    /// the keydir is built, on several threads each with its own state from `init`; returns
    /// the states. A replica builds its hash trees so: walking the keydir again afterwards
    /// missed the CPU's cache on nearly every key.
    pub fn open_visiting<S: Send>(
        dir: impl AsRef<Path>,
        options: Options,
        init: impl Fn() -> S + Sync,
        visit: impl Fn(&mut S, &[u8], u64) + Sync,
    ) -> Result<(Storage, Vec<S>)> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = File::create(dir.join("LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked(dir));
        }
        let (recovered, visited) = recovery::recover(&dir, init, visit)?;
        let active_id = recovered.next_segment_id;
        let active = Arc::new(Segment::create(&data_path(&dir, active_id), active_id)?);
        sync_dir(&dir)?;
        let mut segments = recovered.segments;
        segments.insert(active_id, active.clone());
        let inner = Arc::new(Inner {
            dir,
            keydir: recovered.keydir,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer::new(active, recovered.next_seq)),
            durability: Durability::new(recovered.next_seq.saturating_sub(1)),
            merge_lock: Mutex::new(()),
            merge_thread: Mutex::new(None),
            next_segment_id: AtomicU32::new(active_id + 1),
            recovery: recovered.report,
            options,
            _lock: lock,
        });
        let syncer = spawn_syncer(&inner)?;
        let storage = Storage {
            _closer: Arc::new(Closer {
                inner: inner.clone(),
                syncer: Some(syncer),
            }),
            inner,
        };
        Ok((storage, visited))
    }

    /// What open found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        for _ in 0..READ_RETRIES {
            let Some(entry) = self.inner.keydir.get(key) else {
                return Ok(None);
            };
            // A merge may have retired the segment between the two lookups; look again.
            let Some(segment) = self.inner.segment(entry.segment) else {
                continue;
            };
            return read_value(&segment, &entry, key).map(Some);
        }
        Err(StorageError::Io(std::io::Error::other(
            "key kept moving under concurrent merges",
        )))
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_put(key, value)?;
        self.write(key, value, false).map(|_| ())
    }

    fn check_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        if value.len() > self.inner.options.max_value_bytes {
            return Err(StorageError::ValueTooLarge {
                len: value.len(),
                max: self.inner.options.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Deletes `key`; returns the hash of the value it removed (`None`: there was none).
    pub fn delete(&self, key: &[u8]) -> Result<Option<u64>> {
        check_key(key)?;
        if !self.inner.keydir.contains_key(key) {
            return Ok(None);
        }
        self.write(key, &[], true)
    }

    /// Makes every write so far durable, whatever the sync policy.
    pub fn sync(&self) -> Result<()> {
        let last = self.inner.writer.lock().next_seq.saturating_sub(1);
        self.inner.durability.wait(last)
    }

    /// `put` for async callers: the append is a write to the page cache, and the wait for
    /// durability (under `sync = always`) parks the task instead of a thread, so many
    /// concurrent writers share each fsync at no cost in threads.
    pub async fn put_async(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_deferred(key, value)?.0.durable().await
    }

    /// Appends the record now (readers see it at once) and returns the wait for its
    /// durability, so that a caller can release its locks, or do other work, before waiting;
    /// and the hash of the value it replaced, if any (exact even under racing writers: it comes
    /// from the keydir's own swap).
    pub fn put_deferred(&self, key: &[u8], value: &[u8]) -> Result<(Pending, Option<u64>)> {
        self.check_put(key, value)?;
        let (seq, replaced) = self.append(key, value, false)?;
        Ok((self.pending(seq), replaced))
    }

    /// The wait for everything appended so far to be durable.
    pub fn pending_all(&self) -> Pending {
        let last = self.inner.writer.lock().next_seq.saturating_sub(1);
        self.pending(last)
    }

    fn pending(&self, seq: u64) -> Pending {
        Pending {
            wait: (self.inner.options.sync == SyncPolicy::Always)
                .then(|| (self.inner.durability.clone(), seq)),
        }
    }

    /// `delete` for async callers; see [`Storage::put_async`].
    pub async fn delete_async(&self, key: &[u8]) -> Result<Option<u64>> {
        let (pending, replaced) = self.delete_deferred(key)?;
        pending.durable().await?;
        Ok(replaced)
    }

    /// `delete` as [`Storage::put_deferred`] puts: the tombstone is in the log on return, and
    /// the hash of the value it removed comes back with the wait for its durability.
    pub fn delete_deferred(&self, key: &[u8]) -> Result<(Pending, Option<u64>)> {
        check_key(key)?;
        if !self.inner.keydir.contains_key(key) {
            return Ok((Pending { wait: None }, None));
        }
        let (seq, replaced) = self.append(key, &[], true)?;
        Ok((self.pending(seq), replaced))
    }

    /// The keydir's hash of a live key's value (see [`value_hash`]), without reading it.
    pub fn hash_of(&self, key: &[u8]) -> Option<u64> {
        self.inner.keydir.get(key).map(|e| e.hash)
    }

    /// Calls `f` with every live key and its value's hash, in no particular order, without
    /// reading a value. `f` runs under a keydir shard's read lock: it must be quick.
    pub fn for_each_hash(&self, mut f: impl FnMut(&[u8], u64)) {
        self.inner
            .keydir
            .for_each_in(0..SHARDS, |key, entry| f(key, entry.hash));
    }

    /// A snapshot of the live keys, in no particular order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        self.inner
            .keydir
            .for_each_in(0..SHARDS, |key, _| keys.push(key.to_vec()));
        keys
    }

    /// Every live key with its value, from a snapshot of the keys: a key deleted while the
    /// iteration runs is skipped, a key written meanwhile shows its newest value.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        self.keys()
            .into_iter()
            .filter_map(|key| match self.get(&key) {
                Ok(Some(value)) => Some(Ok((key, value))),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
    }

    pub fn stats(&self) -> Stats {
        let segments = self.inner.segments.read();
        let (total, dead) = segments.values().fold((0, 0), |(t, d), s| {
            (t + s.total_bytes(), d + s.dead_bytes())
        });
        Stats {
            keys: self.inner.keydir.len() as u64,
            live_bytes: total.saturating_sub(dead),
            dead_bytes: dead,
            segments: segments.len() as u64,
        }
    }

    /// Ids of all segments, the active one included, ascending.
    pub fn segment_ids(&self) -> Vec<u32> {
        self.inner.segments.read().keys().copied().collect()
    }

    /// Merges every sealed segment, sealing the active one first so that all data is covered.
    pub fn merge(&self) -> Result<MergeReport> {
        self.inner.seal_active()?;
        let sealed = self.inner.sealed_ids();
        self.merge_segments(&sealed)
    }

    /// Merges the given sealed segments (the active one and unknown ids are ignored).
    pub fn merge_segments(&self, ids: &[u32]) -> Result<MergeReport> {
        self.inner
            .merge(ids, &mut |_| std::ops::ControlFlow::Continue(()))
    }

    #[cfg(test)]
    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Appends and waits for durability; returns the replaced value's hash.
    fn write(&self, key: &[u8], value: &[u8], tombstone: bool) -> Result<Option<u64>> {
        let (seq, replaced) = self.append(key, value, tombstone)?;
        if self.inner.options.sync == SyncPolicy::Always {
            self.inner.durability.wait(seq)?;
        }
        Ok(replaced)
    }

    /// Appends a record, starting a merge if sealing a segment made one due. Returns its
    /// sequence number and the hash of the value it replaced.
    fn append(&self, key: &[u8], value: &[u8], tombstone: bool) -> Result<(u64, Option<u64>)> {
        let appended = self.inner.append(key, value, tombstone)?;
        if appended.sealed {
            self.maybe_spawn_merge();
        }
        Ok((appended.seq, appended.replaced))
    }

    fn maybe_spawn_merge(&self) {
        let Some(trigger) = self.inner.options.merge_trigger else {
            return;
        };
        let mut running = self.inner.merge_thread.lock();
        if running.as_ref().is_some_and(|t| !t.is_finished()) || !self.inner.merge_due(trigger) {
            return;
        }
        let inner = self.inner.clone();
        let spawned = thread::Builder::new()
            .name("storage-merge".into())
            .spawn(move || {
                let due = std::time::Instant::now();
                while due.elapsed() < trigger.delay {
                    if inner.durability.shutting_down() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(50).min(trigger.delay));
                }
                // Segments sealed while a merge runs are not among its inputs: go again until
                // the dead bytes are under the trigger.
                loop {
                    let sealed = inner.sealed_ids();
                    let started = std::time::Instant::now();
                    match inner.merge(&sealed, &mut |_| std::ops::ControlFlow::Continue(())) {
                        Ok(report) => {
                            let ms = started.elapsed().as_millis() as u64;
                            tracing::info!(dir = %inner.dir.display(), ms, ?report, "merge done");
                            if report.inputs.is_empty() || !inner.merge_due(trigger) {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(dir = %inner.dir.display(), error = %e, "merge failed");
                            return;
                        }
                    }
                }
            });
        match spawned {
            Ok(thread) => *running = Some(thread),
            Err(e) => tracing::warn!(error = %e, "could not start a merge thread"),
        }
    }
}

impl Inner {
    pub fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        self.segments.read().get(&id).cloned()
    }

    pub fn active_id(&self) -> u32 {
        self.writer.lock().segment.id
    }

    pub fn sealed_ids(&self) -> Vec<u32> {
        let active = self.active_id();
        self.segments
            .read()
            .keys()
            .copied()
            .filter(|&id| id != active)
            .collect()
    }

    /// Counts a superseded record as dead in whichever segment holds it.
    pub fn mark_dead(&self, entry: &Entry) {
        if let Some(segment) = self.segment(entry.segment) {
            segment.add_dead(u64::from(entry.len));
        }
    }

    /// Appends one record and points the keydir at it.
    fn append(&self, key: &[u8], value: &[u8], tombstone: bool) -> Result<Appended> {
        if self.durability.failed() {
            return Err(StorageError::Failed);
        }
        let len = (HEADER_LEN + key.len() + value.len()) as u64;
        let mut w = self.writer.lock();
        let sealed = w.offset > 0 && w.offset + len > self.options.max_segment_bytes;
        if sealed {
            self.rotate(&mut w)?;
        }
        if self.options.sync == SyncPolicy::Always {
            if let Err(e) = w.preallocate(len, self.options.max_segment_bytes) {
                self.durability.fail();
                return Err(e.into());
            }
        }
        let seq = w.next_seq;
        let mut buf = std::mem::take(&mut w.buf);
        record::encode_into(&mut buf, seq, tombstone, key, value);
        let written = w.segment.file.write_all_at(&buf, w.offset);
        w.buf = buf;
        if let Err(e) = written {
            // Cut any partial append so the next record does not follow garbage.
            if w.cut_at_offset().is_err() {
                self.durability.fail();
            }
            return Err(e.into());
        }
        let entry = Entry {
            segment: w.segment.id,
            offset: w.offset as u32,
            len: len as u32,
            hash: value_hash(value),
        };
        w.next_seq += 1;
        w.offset += len;
        w.segment.add_total(len);
        let old = if tombstone {
            w.segment.add_dead(len);
            self.keydir.remove(key)
        } else {
            self.keydir.insert(key, entry)
        };
        if let Some(old) = &old {
            self.mark_dead(old);
        }
        Ok(Appended {
            seq,
            sealed,
            replaced: old.map(|e| e.hash),
        })
    }

    /// Seals the active segment and starts a new one. Called with the writer lock held. Unless
    /// the policy is to never fsync, the sealed segment is fsynced (little is left unsynced by
    /// then), so the syncer only ever has the active segment to cover.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let fsync = self.options.sync != SyncPolicy::None;
        if let Err(e) = w.cut_zeros() {
            self.durability.fail();
            return Err(e.into());
        }
        if fsync {
            if let Err(e) = w.segment.file.sync_data() {
                self.durability.fail();
                return Err(e.into());
            }
        }
        let id = self.next_segment_id.fetch_add(1, Ordering::Relaxed);
        let segment = Arc::new(Segment::create(&data_path(&self.dir, id), id)?);
        if fsync {
            sync_dir(&self.dir)?;
        }
        self.segments.write().insert(id, segment.clone());
        w.segment = segment;
        w.offset = 0;
        w.zeroed = 0;
        Ok(())
    }

    /// Seals the active segment if it holds anything, so a merge can cover all data.
    pub fn seal_active(&self) -> Result<()> {
        let mut w = self.writer.lock();
        if w.offset > 0 {
            self.rotate(&mut w)?;
        }
        Ok(())
    }

    fn merge_due(&self, trigger: MergeTrigger) -> bool {
        let active = self.active_id();
        let segments = self.segments.read();
        let (total, dead) = segments
            .values()
            .filter(|s| s.id != active)
            .fold((0u64, 0u64), |(t, d), s| {
                (t + s.total_bytes(), d + s.dead_bytes())
            });
        dead >= trigger.min_dead_bytes
            && total > 0
            && dead as f64 >= trigger.dead_ratio * total as f64
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.durability.shutdown();
        // A clean close leaves nothing unsynced, whatever the policy.
        let w = self.writer.get_mut();
        if let Err(e) = w.cut_zeros().and_then(|()| w.segment.file.sync_data()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "final fsync failed");
        }
    }
}

/// Starts the group-commit thread; it holds only a weak reference, so it ends with the engine.
fn spawn_syncer(inner: &Arc<Inner>) -> Result<JoinHandle<()>> {
    let durability = inner.durability.clone();
    let delay = inner.options.group_commit_delay;
    let period = match inner.options.sync {
        SyncPolicy::Interval(period) => Some(period),
        SyncPolicy::Always | SyncPolicy::None => None,
    };
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let thread = thread::Builder::new()
        .name("storage-sync".into())
        .spawn(move || {
            durability.run(period, delay, || {
                let inner = weak.upgrade()?;
                let w = inner.writer.lock();
                Some((w.segment.clone(), w.next_seq.saturating_sub(1)))
            })
        })?;
    Ok(thread)
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StorageError::BadKey {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Reads and verifies one record; the value is returned only if the whole record checks out
/// and is the one the keydir expects.
fn read_value(segment: &Segment, entry: &Entry, key: &[u8]) -> Result<Vec<u8>> {
    let mut buf = vec![0; entry.len as usize];
    segment.read_exact_at(&mut buf, u64::from(entry.offset))?;
    let value_at = match record::parse(&buf) {
        Ok(rec) if rec.key == key && !rec.tombstone => Some(buf.len() - rec.value.len()),
        _ => None,
    };
    match value_at {
        // The value is the record's tail: keep the buffer rather than copy it out.
        Some(at) => {
            buf.drain(..at);
            Ok(buf)
        }
        _ => {
            tracing::error!(
                segment = entry.segment,
                offset = entry.offset,
                "corrupt record on read; not served"
            );
            Err(StorageError::Corrupt {
                segment: entry.segment,
                offset: entry.offset,
            })
        }
    }
}
