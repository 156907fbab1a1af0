//! Open-time recovery: finish or discard an interrupted merge, then rebuild the keydir from hint
//! files where they are valid and by scanning segments otherwise, cutting torn tails.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::error::{Result, StorageError};
use super::hint;
use super::keydir::{value_hash, Entry, KeyBytes, Keydir, ShardMut, SHARDS};
use super::merge::{self, Manifest};
use super::record::{self, HEADER_LEN};
use super::segment::{self, data_path, hint_path, sync_dir, Segment, DATA_EXT, HINT_EXT};

/// A region of a segment that held no valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: u32,
    pub offset: u64,
    pub bytes: u64,
}

/// What open found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments_from_hints: usize,
    pub segments_scanned: usize,
    /// Damaged regions skipped in the middle of a segment; records after them were kept.
    pub damaged: Vec<Damage>,
    /// Torn tails cut off the end of a segment.
    pub truncated: Vec<Damage>,
    /// Keys named by damaged records: their newest version may be lost here and should be
    /// repaired from another replica.
    pub suspect_keys: Vec<Vec<u8>>,
    /// Whether an interrupted, committed merge was finished.
    pub merge_rolled_forward: bool,
}

pub(super) struct Recovered {
    pub keydir: Keydir,
    pub segments: BTreeMap<u32, Arc<Segment>>,
    pub next_seq: u64,
    pub next_segment_id: u32,
    pub report: RecoveryReport,
}

/// A shard to fill and the records filed under it, by each reader thread.
type ShardJob<'a> = (ShardMut<'a>, Vec<Vec<Found>>);

/// One record as open found it, filed under its keydir shard.
struct Found {
    hash: u64,
    key: KeyBytes,
    entry: Entry,
    seq: u64,
    tombstone: bool,
}

/// What one reader thread gathered from the segments it took: records by shard, and what it
/// saw go wrong.
struct Gathered {
    by_shard: Vec<Vec<Found>>,
    /// A hint file's bytes, kept between files: a fresh buffer per file cost a page fault (and
    /// the kernel zeroing a page) per 4 KiB read.
    buf: Vec<u8>,
    report: RecoveryReport,
    max_seq: Option<u64>,
}

impl Gathered {
    fn new(expected: usize) -> Gathered {
        let per_shard = expected / SHARDS + expected / SHARDS / 4;
        Gathered {
            by_shard: (0..SHARDS).map(|_| Vec::with_capacity(per_shard)).collect(),
            buf: Vec::new(),
            report: RecoveryReport::default(),
            max_seq: None,
        }
    }

    /// Files one record of `segment`, counting its bytes into the segment's totals (a
    /// tombstone's bytes are dead from the start: it only hides older records).
    fn add(&mut self, keydir: &Keydir, segment: &Segment, key: &[u8], found: Recorded) {
        self.max_seq = self.max_seq.max(Some(found.seq));
        segment.add_total(u64::from(found.entry.len));
        if found.tombstone {
            segment.add_dead(u64::from(found.entry.len));
        }
        let hash = keydir.hash(key);
        self.by_shard[Keydir::shard_of(hash)].push(Found {
            hash,
            key: KeyBytes::new(key),
            entry: found.entry,
            seq: found.seq,
            tombstone: found.tombstone,
        });
    }
}

/// A record's place and kind, as a hint or a scan reports it.
struct Recorded {
    entry: Entry,
    seq: u64,
    tombstone: bool,
}

/// Builds one shard from every record filed under it, in any order: the highest sequence
/// number for a key wins, and a tombstone hides every older record of its key whichever file
/// it came from.
struct ShardBuild<'a> {
    segments: &'a BTreeMap<u32, Arc<Segment>>,
    tombstones: HashMap<Vec<u8>, u64>,
}

impl ShardBuild<'_> {
    fn dead(&self, entry: &Entry) {
        if let Some(s) = self.segments.get(&entry.segment) {
            s.add_dead(u64::from(entry.len));
        }
    }

    /// The sequence number of a record already in the keydir, read back from its header: the
    /// keydir does not keep it, and only a key seen twice during recovery needs it.
    fn seq_of(&self, entry: &Entry) -> Result<u64> {
        let segment = self.segments.get(&entry.segment).ok_or_else(|| {
            std::io::Error::other(format!("keydir names unknown segment {}", entry.segment))
        })?;
        let mut header = [0; HEADER_LEN];
        segment.read_exact_at(&mut header, u64::from(entry.offset))?;
        Ok(record::header_seq(&header))
    }

    fn apply(&mut self, shard: &mut ShardMut<'_>, found: Found) -> Result<()> {
        let key = found.key.as_slice();
        let existing = match shard.get(found.hash, key) {
            Some(e) => Some((e, self.seq_of(&e)?)),
            None => None,
        };
        if found.tombstone {
            if let Some((old, _)) = existing.filter(|&(_, s)| s < found.seq) {
                shard.remove(found.hash, key);
                self.dead(&old);
            }
            let t = self.tombstones.entry(key.to_vec()).or_insert(found.seq);
            *t = (*t).max(found.seq);
            return Ok(());
        }
        let hidden = self.tombstones.get(key).is_some_and(|&t| t > found.seq);
        match existing {
            _ if hidden => self.dead(&found.entry),
            Some((_, old_seq)) if old_seq >= found.seq => self.dead(&found.entry),
            Some((old, _)) => {
                self.dead(&old);
                shard.insert(found.hash, key, found.entry);
            }
            None => {
                shard.insert(found.hash, key, found.entry);
            }
        }
        Ok(())
    }
}

/// Threads open uses: reading and parsing files and filling tables are CPU work that a
/// restart waits for (10M keys took ~6 s on one thread, mostly cache misses).
fn open_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Rebuilds the keydir of `dir`; also hands `visit` each live key and its value hash once, on
/// the thread that built the key's shard right after building it (while the shard is in the
/// CPU's cache), with that thread's own state from `init`. Returns every thread's state.
pub(super) fn recover<S: Send>(
    dir: &Path,
    init: impl Fn() -> S + Sync,
    visit: impl Fn(&mut S, &[u8], u64) + Sync,
) -> Result<(Recovered, Vec<S>)> {
    let started = std::time::Instant::now();
    let mut report = RecoveryReport {
        merge_rolled_forward: settle_merge(dir)?,
        ..RecoveryReport::default()
    };

    let mut data_ids = Vec::new();
    let mut hint_ids = Vec::new();
    // Ids are never reused, even those of files removed here.
    let mut last_id = 0;
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let Some((id, ext, false)) = name.to_str().and_then(segment::parse_name) else {
            continue;
        };
        last_id = last_id.max(id);
        match ext {
            // Every start leaves the previous active segment behind; one that never got a
            // record holds nothing, and open would otherwise scan it at every start until
            // a merge.
            DATA_EXT if dirent.metadata()?.len() == 0 => fs::remove_file(dirent.path())?,
            DATA_EXT => data_ids.push(id),
            HINT_EXT => hint_ids.push(id),
            _ => {}
        }
    }
    data_ids.sort_unstable();
    for id in hint_ids
        .iter()
        .filter(|id| data_ids.binary_search(id).is_err())
    {
        fs::remove_file(hint_path(dir, *id))?;
    }

    // Sized up front from the hint files' footers: growing a map of millions of keys rehashes
    // it again and again, and open time is what a restart costs.
    let hinted: u64 = hint_ids
        .iter()
        .filter(|id| data_ids.binary_search(id).is_ok())
        .filter_map(|&id| {
            let mut file = fs::File::open(hint_path(dir, id)).ok()?;
            let len = file.metadata().ok()?.len();
            let mut footer = vec![0; hint::FOOTER_LEN];
            std::io::Seek::seek(
                &mut file,
                std::io::SeekFrom::Start(len.checked_sub(footer.len() as u64)?),
            )
            .ok()?;
            std::io::Read::read_exact(&mut file, &mut footer).ok()?;
            hint::count(&footer)
        })
        .sum();
    let mut keydir = Keydir::with_capacity(hinted as usize);
    let mut segments = BTreeMap::new();
    for &id in &data_ids {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(data_path(dir, id))?;
        segments.insert(id, Arc::new(Segment::new(id, file, 0, 0)));
    }
    // Records are read on several threads and filed by keydir shard, then each shard's table
    // is filled in one go while it fits in the CPU's cache: filling in file order missed the
    // cache on nearly every key (~600 ns a key at 10M keys).
    let threads = open_threads();
    let expected = hinted as usize / threads;
    let files: Vec<&Arc<Segment>> = segments.values().collect();
    let gathered = crate::parallel::on_threads::<_, _, StorageError>(
        threads,
        &files,
        || Gathered::new(expected),
        |out, segment| {
            if load_from_hint(dir, &keydir, segment, out)? {
                out.report.segments_from_hints += 1;
            } else {
                scan_segment(&keydir, segment, out)?;
                out.report.segments_scanned += 1;
            }
            Ok(())
        },
    )?;
    let mut max_seq = None;
    let mut by_shard: Vec<Vec<Vec<Found>>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for g in gathered {
        max_seq = max_seq.max(g.max_seq);
        report.segments_from_hints += g.report.segments_from_hints;
        report.segments_scanned += g.report.segments_scanned;
        report.damaged.extend(g.report.damaged);
        report.truncated.extend(g.report.truncated);
        report.suspect_keys.extend(g.report.suspect_keys);
        for (shard, found) in by_shard.iter_mut().zip(g.by_shard) {
            shard.push(found);
        }
    }
    let jobs: Vec<parking_lot::Mutex<Option<ShardJob<'_>>>> = keydir
        .shards_mut()
        .into_iter()
        .zip(by_shard)
        .map(|job| parking_lot::Mutex::new(Some(job)))
        .collect();
    let visited =
        crate::parallel::on_threads::<_, _, StorageError>(threads, &jobs, init, |state, job| {
            let Some((mut shard, found)) = job.lock().take() else {
                return Ok(());
            };
            let mut build = ShardBuild {
                segments: &segments,
                tombstones: HashMap::new(),
            };
            for f in found.into_iter().flatten() {
                build.apply(&mut shard, f)?;
            }
            shard.for_each(|key, entry| visit(state, key, entry.hash));
            Ok(())
        })?;
    drop(jobs);
    for (what, d) in report
        .damaged
        .iter()
        .map(|d| ("skipped damaged bytes; later records kept", d))
        .chain(report.truncated.iter().map(|d| ("cut a torn tail", d)))
    {
        tracing::warn!(
            file = %data_path(dir, d.segment).display(),
            offset = d.offset,
            bytes = d.bytes,
            "{what}"
        );
    }
    if !report.suspect_keys.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            keys = report.suspect_keys.len(),
            "keys named by damaged records may have lost their newest version"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        keys = keydir.len(),
        from_hints = report.segments_from_hints,
        scanned = report.segments_scanned,
        threads,
        ms = started.elapsed().as_millis() as u64,
        "storage recovered"
    );
    report.damaged.sort_by_key(|d| (d.segment, d.offset));
    report.truncated.sort_by_key(|d| d.segment);
    let recovered = Recovered {
        keydir,
        segments,
        next_seq: max_seq.map_or(1, |s| s + 1),
        next_segment_id: last_id + 1,
        report,
    };
    Ok((recovered, visited))
}

/// Finishes a committed merge (its `MERGE` manifest exists and is valid) or discards an
/// uncommitted one. Returns whether a merge was rolled forward.
fn settle_merge(dir: &Path) -> Result<bool> {
    let manifest_path = dir.join(merge::MANIFEST);
    let manifest = match fs::read(&manifest_path) {
        Ok(bytes) => Manifest::decode(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let rolled_forward = match manifest {
        Some(m) => {
            tracing::warn!(dir = %dir.display(), inputs = ?m.inputs, outputs = ?m.outputs, "finishing an interrupted merge");
            merge::finish(dir, &m)?;
            true
        }
        None => false,
    };
    // Whatever is still named `.merging` belongs to a merge that never committed.
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let uncommitted = name
            .to_str()
            .and_then(segment::parse_name)
            .is_some_and(|(_, _, merging)| merging);
        if uncommitted || name == merge::MANIFEST_TMP || name == merge::MANIFEST {
            fs::remove_file(dirent.path())?;
        }
    }
    sync_dir(dir)?;
    Ok(rolled_forward)
}

/// Files a segment's records from its hint file; false if there is none or it is damaged.
fn load_from_hint(
    dir: &Path,
    keydir: &Keydir,
    segment: &Segment,
    out: &mut Gathered,
) -> Result<bool> {
    let mut file = match fs::File::open(hint_path(dir, segment.id)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = std::mem::take(&mut out.buf);
    bytes.clear();
    let loaded = std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(Into::into)
        .and_then(|_| load_hint_entries(dir, keydir, segment, &bytes, out));
    out.buf = bytes;
    loaded
}

fn load_hint_entries(
    dir: &Path,
    keydir: &Keydir,
    segment: &Segment,
    bytes: &[u8],
    out: &mut Gathered,
) -> Result<bool> {
    let data_len = segment.file.metadata()?.len();
    let Some(entries) = hint::parse(bytes, data_len) else {
        tracing::warn!(dir = %dir.display(), segment = segment.id, "hint file damaged; scanning the segment instead");
        return Ok(false);
    };
    for e in entries {
        let entry = Entry {
            segment: segment.id,
            offset: e.offset,
            len: e.len,
            hash: e.hash,
        };
        let found = Recorded {
            entry,
            seq: e.seq,
            tombstone: e.tombstone,
        };
        out.add(keydir, segment, e.key, found);
    }
    Ok(true)
}

/// Scans a whole segment, applying every valid record, and cuts a torn tail off the file.
fn scan_segment(keydir: &Keydir, segment: &Segment, out: &mut Gathered) -> Result<()> {
    let len = segment.file.metadata()?.len();
    if len > u64::from(u32::MAX) {
        return Err(std::io::Error::other(format!(
            "segment {} is {len} bytes, larger than the format allows",
            segment.id
        ))
        .into());
    }
    let mut buf = vec![0; len as usize];
    segment.file.read_exact_at(&mut buf, 0)?;
    let outcome = record::scan(&buf, |offset, rec| {
        let entry = Entry {
            segment: segment.id,
            offset: offset as u32,
            len: rec.encoded_len() as u32,
            hash: value_hash(rec.value),
        };
        let found = Recorded {
            entry,
            seq: rec.seq,
            tombstone: rec.tombstone,
        };
        out.add(keydir, segment, rec.key, found);
    });
    for (offset, bytes) in outcome.skipped {
        segment.add_total(bytes);
        segment.add_dead(bytes);
        out.report.damaged.push(Damage {
            segment: segment.id,
            offset,
            bytes,
        });
    }
    if let Some(at) = outcome.garbage_tail_at {
        segment.file.set_len(at)?;
        segment.file.sync_all()?;
        // Zeros are space the writer filled ahead of its appends (`sync = always`), not
        // damage: nothing was ever written there.
        if buf[at as usize..].iter().any(|&b| b != 0) {
            out.report.truncated.push(Damage {
                segment: segment.id,
                offset: at,
                bytes: len - at,
            });
        }
    }
    out.report.suspect_keys.extend(outcome.suspect_keys);
    Ok(())
}
