//! Open-time recovery: finish or discard an interrupted merge, then rebuild the keydir from hint
//! files where they are valid and by scanning segments otherwise, cutting torn tails.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::error::Result;
use super::hint;
use super::keydir::{self, value_hash, Entry, KeyBytes, Keydir};
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

/// Replays records in any order: the highest sequence number for a key wins, and a tombstone
/// hides every older record of its key whichever file it came from.
struct Loader {
    keydir: Keydir,
    tombstones: HashMap<Vec<u8>, u64>,
    segments: BTreeMap<u32, Arc<Segment>>,
    max_seq: Option<u64>,
}

impl Loader {
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

    fn apply(
        &mut self,
        segment: &Segment,
        key: &[u8],
        entry: Entry,
        seq: u64,
        tombstone: bool,
    ) -> Result<()> {
        self.max_seq = self.max_seq.max(Some(seq));
        segment.add_total(u64::from(entry.len));
        let existing = self.keydir.get(key).map(|e| *e);
        let existing = match existing {
            Some(e) => Some((e, self.seq_of(&e)?)),
            None => None,
        };
        if tombstone {
            segment.add_dead(u64::from(entry.len));
            if let Some((old, _)) = existing.filter(|&(_, s)| s < seq) {
                self.keydir.remove(key);
                self.dead(&old);
            }
            let t = self.tombstones.entry(key.to_vec()).or_insert(seq);
            *t = (*t).max(seq);
            return Ok(());
        }
        let hidden = self.tombstones.get(key).is_some_and(|&t| t > seq);
        match existing {
            _ if hidden => segment.add_dead(u64::from(entry.len)),
            Some((_, old_seq)) if old_seq >= seq => segment.add_dead(u64::from(entry.len)),
            Some((old, _)) => {
                self.dead(&old);
                self.keydir.insert(KeyBytes::new(key), entry);
            }
            None => {
                self.keydir.insert(KeyBytes::new(key), entry);
            }
        }
        Ok(())
    }
}

pub(super) fn recover(dir: &Path) -> Result<Recovered> {
    let mut report = RecoveryReport {
        merge_rolled_forward: settle_merge(dir)?,
        ..RecoveryReport::default()
    };

    let mut data_ids = Vec::new();
    let mut hint_ids = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let name = dirent?.file_name();
        let Some((id, ext, false)) = name.to_str().and_then(segment::parse_name) else {
            continue;
        };
        match ext {
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
    let mut loader = Loader {
        keydir: keydir::with_capacity(hinted as usize),
        tombstones: HashMap::new(),
        segments: BTreeMap::new(),
        max_seq: None,
    };
    for &id in &data_ids {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(data_path(dir, id))?;
        let segment = Arc::new(Segment::new(id, file, 0, 0));
        loader.segments.insert(id, segment.clone());
        if !load_from_hint(dir, &segment, &mut loader)? {
            scan_segment(&segment, &mut loader, &mut report)?;
            report.segments_scanned += 1;
        } else {
            report.segments_from_hints += 1;
        }
    }
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
    Ok(Recovered {
        keydir: loader.keydir,
        segments: loader.segments,
        next_seq: loader.max_seq.map_or(1, |s| s + 1),
        next_segment_id: data_ids.last().map_or(1, |id| id + 1),
        report,
    })
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

/// Loads a segment's records from its hint file; false if there is none or it is damaged.
fn load_from_hint(dir: &Path, segment: &Segment, loader: &mut Loader) -> Result<bool> {
    let bytes = match fs::read(hint_path(dir, segment.id)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let data_len = segment.file.metadata()?.len();
    let Some(entries) = hint::parse(&bytes, data_len) else {
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
        loader.apply(segment, e.key, entry, e.seq, e.tombstone)?;
    }
    Ok(true)
}

/// Scans a whole segment, applying every valid record, and cuts a torn tail off the file.
fn scan_segment(segment: &Segment, loader: &mut Loader, report: &mut RecoveryReport) -> Result<()> {
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
    let mut applied = Ok(());
    let outcome = record::scan(&buf, |offset, rec| {
        let entry = Entry {
            segment: segment.id,
            offset: offset as u32,
            len: rec.encoded_len() as u32,
            hash: value_hash(rec.value),
        };
        if applied.is_ok() {
            applied = loader.apply(segment, rec.key, entry, rec.seq, rec.tombstone);
        }
    });
    applied?;
    for (offset, bytes) in outcome.skipped {
        segment.add_total(bytes);
        segment.add_dead(bytes);
        report.damaged.push(Damage {
            segment: segment.id,
            offset,
            bytes,
        });
    }
    if let Some(at) = outcome.garbage_tail_at {
        segment.file.set_len(at)?;
        segment.file.sync_all()?;
        report.truncated.push(Damage {
            segment: segment.id,
            offset: at,
            bytes: len - at,
        });
    }
    report.suspect_keys.extend(outcome.suspect_keys);
    Ok(())
}
