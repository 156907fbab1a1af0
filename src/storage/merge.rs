//! Merge (compaction): rewrite the live records of sealed segments into new segments with hint
//! files, then retire the inputs, while reads and writes go on.
//!
//! Crash safety comes from one atomic step, the rename of the `MERGE` manifest into place:
//! before it, nothing the engine relies on has changed (outputs carry `.merging` names and are
//! discarded at open); after it, open finishes the job from the manifest. Every file operation
//! reports a [`Step`] to a hook so tests can stop the merge there and reopen, as a crash would.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::engine::Inner;
use super::error::Result;
use super::hint::HintWriter;
use super::keydir::SHARDS;
use super::record;
use super::segment::{data_path, hint_path, merging, sync_dir, Segment};

pub(super) const MANIFEST: &str = "MERGE";
pub(super) const MANIFEST_TMP: &str = "MERGE.tmp";
const MANIFEST_MAGIC: &[u8; 8] = b"QKVMRG01";
/// How much of an input segment is read at a time. Reading a whole 64 MiB segment into a
/// fresh buffer had the kernel zero 64 MiB of pages per input: two thirds of a merge's CPU.
const READ_WINDOW: usize = 1 << 20;

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    pub inputs: Vec<u32>,
    pub outputs: Vec<u32>,
    pub records_kept: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Whether the merge stopped early at the hook's request (tests only).
    pub stopped: bool,
}

/// A file-system step of a merge, reported to the hook just after it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    OutputWritten(u32),
    OutputSynced(u32),
    HintWritten(u32),
    ManifestWritten,
    ManifestCommitted,
    OutputRenamed(u32),
    InputDeleted(u32),
}

pub(super) type Hook<'a> = &'a mut dyn FnMut(Step) -> ControlFlow<()>;

/// The commit record of a merge: which segments it retires and which it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Manifest {
    pub inputs: Vec<u32>,
    pub outputs: Vec<u32>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_vec();
        for ids in [&self.inputs, &self.outputs] {
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        let body = bytes.get(..bytes.len().checked_sub(4)?)?;
        let crc = u32::from_le_bytes(bytes[body.len()..].try_into().ok()?);
        if crc32fast::hash(body) != crc || body.get(..8)? != MANIFEST_MAGIC {
            return None;
        }
        let mut words = body[8..]
            .chunks(4)
            .map(|c| c.try_into().ok().map(u32::from_le_bytes));
        let list = |words: &mut dyn Iterator<Item = Option<u32>>| -> Option<Vec<u32>> {
            let n = words.next()??;
            (0..n).map(|_| words.next().flatten()).collect()
        };
        let inputs = list(&mut words)?;
        let outputs = list(&mut words)?;
        words
            .next()
            .is_none()
            .then_some(Manifest { inputs, outputs })
    }
}

/// Completes a committed merge: outputs take their final names, inputs go. Idempotent, so a
/// crash during it is finished by the next open.
pub(super) fn finish(dir: &Path, m: &Manifest) -> Result<()> {
    for &id in &m.outputs {
        for path in [hint_path(dir, id), data_path(dir, id)] {
            let pending = merging(&path);
            if pending.exists() {
                fs::rename(&pending, &path)?;
            }
        }
    }
    for &id in &m.inputs {
        for path in [hint_path(dir, id), data_path(dir, id)] {
            remove_if_exists(&path)?;
        }
    }
    sync_dir(dir)?;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// A live record copied into an output, to be swapped into the keydir after commit.
struct Moved {
    key: Vec<u8>,
    from: (u32, u32),
    to: (u32, u32),
    len: u32,
}

/// One output segment being written.
struct Output {
    id: u32,
    file: BufWriter<File>,
    len: u64,
    dead: u64,
    /// Bytes written since this output's last fsync.
    unsynced: u64,
    hint: HintWriter,
}

/// A merge output is fsynced every this many bytes, so its dirty pages reach the disk a
/// little at a time instead of in one flush that stalls the writers' own fsyncs.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;

macro_rules! step {
    ($hook:expr, $report:expr, $step:expr) => {
        if ($hook)($step).is_break() {
            $report.stopped = true;
            return Ok($report);
        }
    };
}

impl Inner {
    pub(super) fn merge(&self, ids: &[u32], hook: Hook<'_>) -> Result<MergeReport> {
        let _merging = self.merge_lock.lock();
        let sealed = self.sealed_ids();
        let inputs: Vec<u32> = sealed
            .iter()
            .copied()
            .filter(|id| ids.contains(id))
            .collect();
        let mut report = MergeReport {
            inputs: inputs.clone(),
            ..MergeReport::default()
        };
        if inputs.is_empty() {
            return Ok(report);
        }
        // Dropping a tombstone is safe only if every older record of its key is dropped too,
        // which holds only when the inputs are all the sealed segments.
        let full = inputs == sealed;
        let unread = if full {
            self.unreferenced(&inputs)
        } else {
            Vec::new()
        };

        let mut outputs: Vec<Output> = Vec::new();
        let mut moved = Vec::new();
        for &id in &inputs {
            let Some(segment) = self.segment(id) else {
                continue;
            };
            let len = segment.file.metadata()?.len();
            report.bytes_before += len;
            if unread.contains(&id) {
                continue;
            }
            let mut copy_err = None;
            let read_at = |buf: &mut [u8], at: u64| segment.file.read_exact_at(buf, at);
            record::scan_windowed(len, READ_WINDOW, read_at, |offset, rec, raw| {
                let offset = offset as u32;
                // The value's hash when the record is live (`None`: a tombstone still needed).
                let live = if rec.tombstone {
                    (!full && !self.keydir.contains_key(rec.key)).then_some(None)
                } else {
                    self.keydir
                        .get(rec.key)
                        .filter(|e| e.is_at(id, offset))
                        .map(|e| Some(e.hash))
                };
                let Some(hash) = live.filter(|_| copy_err.is_none()) else {
                    return;
                };
                match self.copy_record(&mut outputs, raw, rec, hash) {
                    Ok(to) => {
                        report.records_kept += 1;
                        if !rec.tombstone {
                            moved.push(Moved {
                                key: rec.key.to_vec(),
                                from: (id, offset),
                                to,
                                len: raw.len() as u32,
                            });
                        }
                    }
                    Err(e) => copy_err = Some(e),
                }
            })?;
            if let Some(e) = copy_err {
                return Err(e);
            }
        }

        let manifest = Manifest {
            inputs: inputs.clone(),
            outputs: outputs.iter().map(|o| o.id).collect(),
        };
        report.outputs = manifest.outputs.clone();
        let mut finished = Vec::new();
        for out in outputs {
            let file = out.file.into_inner().map_err(|e| e.into_error())?;
            step!(hook, report, Step::OutputWritten(out.id));
            file.sync_all()?;
            step!(hook, report, Step::OutputSynced(out.id));
            let hint = merging(&hint_path(&self.dir, out.id));
            write_synced(&hint, &out.hint.finish())?;
            step!(hook, report, Step::HintWritten(out.id));
            report.bytes_after += out.len;
            finished.push(Arc::new(Segment::new(out.id, file, out.len, out.dead)));
        }
        let tmp = self.dir.join(MANIFEST_TMP);
        write_synced(&tmp, &manifest.encode())?;
        step!(hook, report, Step::ManifestWritten);
        fs::rename(&tmp, self.dir.join(MANIFEST))?;
        sync_dir(&self.dir)?;
        step!(hook, report, Step::ManifestCommitted);

        // Committed: switch readers over, then tidy the directory.
        {
            let mut segments = self.segments.write();
            for s in &finished {
                segments.insert(s.id, s.clone());
            }
        }
        for m in moved {
            let swapped = self.keydir.modify(&m.key, |e| {
                let here = e.is_at(m.from.0, m.from.1);
                if here {
                    e.segment = m.to.0;
                    e.offset = m.to.1;
                }
                here
            });
            if !swapped {
                // Overwritten or deleted while we copied: the copy is already dead.
                if let Some(s) = finished.iter().find(|s| s.id == m.to.0) {
                    s.add_dead(u64::from(m.len));
                }
            }
        }
        {
            let mut segments = self.segments.write();
            for id in &inputs {
                segments.remove(id);
            }
        }
        for &id in &manifest.outputs {
            fs::rename(merging(&hint_path(&self.dir, id)), hint_path(&self.dir, id))?;
            fs::rename(merging(&data_path(&self.dir, id)), data_path(&self.dir, id))?;
            step!(hook, report, Step::OutputRenamed(id));
        }
        for &id in &inputs {
            remove_if_exists(&hint_path(&self.dir, id))?;
            remove_if_exists(&data_path(&self.dir, id))?;
            step!(hook, report, Step::InputDeleted(id));
        }
        sync_dir(&self.dir)?;
        fs::remove_file(self.dir.join(MANIFEST))?;
        sync_dir(&self.dir)?;
        Ok(report)
    }

    /// The inputs of a full merge that no keydir entry points into. Such a segment holds nothing
    /// the merge would keep: no live record, and only tombstones a full merge drops. It is
    /// retired without being read; under overwrites that is nearly every input (a 10,000-key
    /// merge read 134 MB to keep 3 records). No new entry can point into a sealed segment
    /// while the merge lock is held: writes go to the active segment.
    pub(super) fn unreferenced(&self, inputs: &[u32]) -> Vec<u32> {
        let mut referenced = vec![false; inputs.len()];
        self.keydir.for_each_in(0..SHARDS, |_, entry| {
            if let Ok(i) = inputs.binary_search(&entry.segment) {
                referenced[i] = true;
            }
        });
        inputs
            .iter()
            .zip(referenced)
            .filter(|(_, referenced)| !referenced)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Appends a record's raw bytes to the current output, starting a new output when full.
    /// Returns where the copy lies.
    fn copy_record(
        &self,
        outputs: &mut Vec<Output>,
        raw: &[u8],
        rec: &record::Record<'_>,
        hash: Option<u64>,
    ) -> Result<(u32, u32)> {
        let len = raw.len() as u64;
        let full = outputs
            .last()
            .is_none_or(|o| o.len > 0 && o.len + len > self.options.max_segment_bytes);
        if full {
            let id = self.next_segment_id.fetch_add(1, Ordering::Relaxed);
            let file = File::create_new(merging(&data_path(&self.dir, id)))?;
            outputs.push(Output {
                id,
                file: BufWriter::new(file),
                len: 0,
                dead: 0,
                unsynced: 0,
                hint: HintWriter::default(),
            });
        }
        // Non-empty: either the last output had room or one was just pushed.
        let last = outputs.len() - 1;
        let out = &mut outputs[last];
        let offset = out.len as u32;
        out.file.write_all(raw)?;
        out.hint
            .push(rec.seq, offset, raw.len() as u32, hash, rec.key);
        out.len += len;
        if rec.tombstone {
            out.dead += len;
        }
        out.unsynced += len;
        if out.unsynced >= SYNC_EVERY {
            out.file.flush()?;
            out.file.get_ref().sync_data()?;
            out.unsynced = 0;
        }
        Ok((out.id, offset))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = File::create(path)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_rejects_damage() {
        let m = Manifest {
            inputs: vec![1, 2, 5],
            outputs: vec![9],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Some(m));
        for cut in 0..bytes.len() {
            assert_eq!(Manifest::decode(&bytes[..cut]), None);
        }
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert_eq!(Manifest::decode(&flipped), None);
    }
}
