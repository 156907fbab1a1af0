//! Crash tests for the storage engine: segments and hint files cut at every offset or with bits
//! flipped, then reopened. The engine must open, serve exactly the records before the damage,
//! and keep accepting writes that survive another reopen.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::Path;

use common::{assert_matches, copy_dir, files_with_ext, open, small_segments};
use quorumkv::storage::Options;

const RECORD_HEADER: u64 = 21;

/// One record as written: key, value (None for a delete), and the byte offset where it ends.
struct Written {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    end: u64,
}

/// Writes a few hundred records (overwrites and deletes included) into a single segment and
/// returns them in order.
fn write_history(dir: &Path, options: &Options) -> Vec<Written> {
    let storage = open(dir, options);
    let mut history = Vec::new();
    let mut offset = 0;
    let mut live = BTreeMap::new();
    for i in 0..300u32 {
        let key = format!("key-{}", i % 120).into_bytes();
        let value = if i % 17 == 5 && live.contains_key(&key) {
            storage.delete(&key).expect("delete");
            live.remove(&key);
            None
        } else {
            let value = format!("value {i} {}", "x".repeat((i % 23) as usize)).into_bytes();
            storage.put(&key, &value).expect("put");
            live.insert(key.clone(), value.clone());
            Some(value)
        };
        offset += RECORD_HEADER + key.len() as u64 + value.as_ref().map_or(0, |v| v.len() as u64);
        history.push(Written {
            key,
            value,
            end: offset,
        });
    }
    // The last records write fresh keys, so "nothing after the damage" is observable.
    for i in 0..5u32 {
        let key = format!("tail-{i}").into_bytes();
        let value = format!("tail value {i}").into_bytes();
        storage.put(&key, &value).expect("put");
        offset += RECORD_HEADER + (key.len() + value.len()) as u64;
        history.push(Written {
            key,
            value: Some(value),
            end: offset,
        });
    }
    history
}

/// The state after applying the records that `keep` selects.
fn model_of<'a>(records: impl Iterator<Item = &'a Written>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for w in records {
        match &w.value {
            Some(v) => model.insert(w.key.clone(), v.clone()),
            None => model.remove(&w.key),
        };
    }
    model
}

/// After a reopen, new writes land and survive one more reopen.
fn check_accepts_writes(dir: &Path, options: &Options, mut model: BTreeMap<Vec<u8>, Vec<u8>>) {
    {
        let storage = open(dir, options);
        for i in 0..3 {
            let key = format!("after-{i}").into_bytes();
            let value = format!("after value {i}").into_bytes();
            storage.put(&key, &value).expect("put after recovery");
            model.insert(key, value);
        }
    }
    let storage = open(dir, options);
    assert_matches(&storage, &model, "after second reopen");
    assert!(storage.recovery_report().truncated.is_empty());
}

#[test]
fn cut_at_every_offset_of_the_last_records() {
    let options = small_segments(1 << 20);
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let history = write_history(&original, &options);
    let segment = files_with_ext(&original, "data")[0].clone();
    let file_len = fs::metadata(&segment).expect("metadata").len();
    assert_eq!(file_len, history.last().map_or(0, |w| w.end));

    let first_cut = history[history.len() - 6].end;
    for cut in first_cut..=file_len {
        let dir = copy_dir(&original, &base.path().join(format!("cut-{cut}")));
        let name = segment.file_name().expect("file name");
        OpenOptions::new()
            .write(true)
            .open(dir.join(name))
            .and_then(|f| f.set_len(cut))
            .expect("cut");
        let model = model_of(history.iter().filter(|w| w.end <= cut));
        {
            let storage = open(&dir, &options);
            assert_matches(&storage, &model, &format!("cut at {cut}"));
            let torn = history.iter().all(|w| w.end != cut);
            assert_eq!(
                !storage.recovery_report().truncated.is_empty(),
                torn,
                "cut at {cut}: torn tail reported iff the cut splits a record"
            );
        }
        check_accepts_writes(&dir, &options, model);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

#[test]
fn flipped_bits_lose_only_the_damaged_record() {
    let options = small_segments(1 << 20);
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let history = write_history(&original, &options);
    let segment = files_with_ext(&original, "data")[0].clone();
    let bytes = fs::read(&segment).expect("read");
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for trial in 0..200 {
        let at = rng.usize(..bytes.len());
        let bit = rng.u8(..8);
        let dir = copy_dir(&original, &base.path().join(format!("flip-{trial}")));
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << bit;
        fs::write(dir.join(segment.file_name().expect("name")), &damaged).expect("write");

        let hit = history
            .iter()
            .position(|w| (at as u64) < w.end)
            .expect("flip inside some record");
        let model = model_of(
            history
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != hit)
                .map(|(_, w)| w),
        );
        {
            let storage = open(&dir, &options);
            let context = format!("flip at byte {at} bit {bit} (record {hit})");
            assert_matches(&storage, &model, &context);
            let report = storage.recovery_report();
            assert_eq!(
                report.damaged.len() + report.truncated.len(),
                1,
                "{context}"
            );
            // A flip in the value leaves the key readable, so it must be named for repair.
            let value_start =
                history[hit].end - history[hit].value.as_ref().map_or(0, |v| v.len() as u64);
            if at as u64 >= value_start {
                assert!(
                    report.suspect_keys.contains(&history[hit].key),
                    "{context}: damaged key reported for repair"
                );
            }
            // A merge reads the damaged segment again and must keep exactly what open kept.
            storage.merge().expect("merge");
            assert_matches(&storage, &model, &format!("{context}, merged"));
        }
        check_accepts_writes(&dir, &options, model);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// Writes records across several segments and merges them, so the merged segments have hints.
fn merged_store(dir: &Path, options: &Options) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let storage = open(dir, options);
    let mut model = BTreeMap::new();
    for i in 0..60u32 {
        let key = format!("k{}", i % 25).into_bytes();
        let value = format!("v{i}").into_bytes();
        storage.put(&key, &value).expect("put");
        model.insert(key, value);
    }
    for i in 0..5 {
        let key = format!("k{i}").into_bytes();
        storage.delete(&key).expect("delete");
        model.remove(&key);
    }
    storage.merge().expect("merge");
    model
}

#[test]
fn torn_or_corrupt_hint_files_fall_back_to_scanning() {
    let options = small_segments(1 << 20);
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let model = merged_store(&original, &options);
    {
        let storage = open(&original, &options);
        assert_eq!(storage.recovery_report().segments_from_hints, 1);
        assert_matches(&storage, &model, "clean hint");
    }
    let hint = files_with_ext(&original, "hint")[0].clone();
    let name = hint.file_name().expect("name").to_owned();
    let bytes = fs::read(&hint).expect("read hint");
    let mut damaged_versions: Vec<(String, Vec<u8>)> = (0..bytes.len())
        .map(|cut| (format!("cut at {cut}"), bytes[..cut].to_vec()))
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..100 {
        let at = rng.usize(..bytes.len());
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << rng.u8(..8);
        damaged_versions.push((format!("flip at {at}"), flipped));
    }
    for (i, (what, damaged)) in damaged_versions.iter().enumerate() {
        let dir = copy_dir(&original, &base.path().join(format!("hint-{i}")));
        fs::write(dir.join(&name), damaged).expect("write hint");
        {
            let storage = open(&dir, &options);
            let report = storage.recovery_report();
            assert_eq!(report.segments_from_hints, 0, "{what}");
            assert_matches(&storage, &model, what);
        }
        check_accepts_writes(&dir, &options, model.clone());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

#[test]
fn a_flipped_bit_in_a_segment_opened_from_its_hint_is_caught_when_read() {
    // Open trusts a sound hint for where records are, not for what they hold: each record's
    // crc is checked when it is read, so damage under a hint is a Corrupt error, never bytes.
    let options = small_segments(1 << 20);
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let model = merged_store(&original, &options);
    let hint = files_with_ext(&original, "hint")[0].clone();
    let data = hint.with_extension("data");
    let bytes = fs::read(&data).expect("read merged segment");
    // The last byte of the segment is the last byte of some live record's value.
    let dir = copy_dir(&original, &base.path().join("flipped"));
    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    fs::write(dir.join(data.file_name().expect("name")), &damaged).expect("write");
    let storage = open(&dir, &options);
    assert_eq!(storage.recovery_report().segments_from_hints, 1);
    let mut corrupt = 0;
    for (key, value) in &model {
        match storage.get(key) {
            Ok(Some(v)) => assert_eq!(&v, value, "a damaged value was served"),
            Ok(None) => panic!("a live key vanished"),
            Err(quorumkv::storage::StorageError::Corrupt { .. }) => corrupt += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(corrupt, 1, "exactly the damaged record is reported corrupt");
}

/// Under `sync = always` the writer fills the active segment with zeros ahead of its appends
/// (an fdatasync over zeros already on disk writes no block map). A crash leaves them after
/// the last record: reopening keeps every record, cuts the zeros, and reports no damage. A
/// sealed or cleanly closed segment ends at its last record.
#[test]
fn zeros_written_ahead_are_cut_without_damage() {
    const SEGMENT: u64 = 4096;
    let ends_with_a_record = |path: &Path| {
        let bytes = fs::read(path).expect("read segment");
        bytes.last().is_some_and(|&b| b != 0)
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("live");
    let options = Options {
        sync: quorumkv::storage::SyncPolicy::Always,
        ..small_segments(SEGMENT)
    };
    let mut model = BTreeMap::new();
    let storage = open(&dir, &options);
    for i in 0..400u32 {
        let key = format!("key-{}", i % 70).into_bytes();
        let value = format!("value {i}").into_bytes();
        storage.put(&key, &value).expect("put");
        model.insert(key, value);
    }
    let mut segments = files_with_ext(&dir, "data");
    let active = segments.pop().expect("active segment");
    assert!(segments.len() >= 2, "expected sealed segments");
    for sealed in &segments {
        assert!(
            ends_with_a_record(sealed),
            "{} ends in zeros",
            sealed.display()
        );
    }
    assert_eq!(fs::metadata(&active).expect("stat").len(), SEGMENT);
    assert!(!ends_with_a_record(&active), "no zeros written ahead");

    // The disk as a crash would leave it: records, then zeros.
    let crashed = copy_dir(&dir, &tmp.path().join("crashed"));
    let reopened = open(&crashed, &options);
    assert_matches(&reopened, &model, "after a crash");
    let report = reopened.recovery_report();
    assert!(report.truncated.is_empty(), "zeros reported as a torn tail");
    assert!(report.damaged.is_empty() && report.suspect_keys.is_empty());
    let name = active.file_name().expect("name");
    assert!(ends_with_a_record(&crashed.join(name)), "zeros not cut");
    drop(reopened);

    drop(storage);
    assert!(ends_with_a_record(&active), "a clean close left zeros");
}
