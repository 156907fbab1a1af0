//! A crash at every step of a merge: stop the merge right after each file write, fsync, rename
//! and unlink, drop the engine as a crash would, reopen, and check nothing was lost or revived.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use super::merge::Step;
use super::{Options, Storage, SyncPolicy};

fn options() -> Options {
    Options {
        sync: SyncPolicy::Always,
        max_segment_bytes: 300,
        merge_trigger: None,
        ..Options::default()
    }
}

/// Fills a store across many segments with overwrites and deletes; returns the expected state.
/// An early merge moves old values into segments with higher ids than the tombstones written
/// after it, so file order and record order disagree, as they do in a long-lived store.
fn populate(storage: &Storage) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 0..30u32 {
        let key = format!("key-{i}").into_bytes();
        let value = format!("first-{i}").into_bytes();
        storage.put(&key, &value).expect("put");
        model.insert(key, value);
    }
    storage.inner().seal_active().expect("seal");
    let sealed = storage.inner().sealed_ids();
    storage
        .merge_segments(&sealed[..sealed.len() / 2])
        .expect("early merge");
    // These tombstones land in a segment with a lower id than the merged values they hide.
    for i in 0..5u32 {
        let key = format!("key-{i}").into_bytes();
        storage.delete(&key).expect("delete");
        model.remove(&key);
    }
    for i in 0..80u32 {
        let key = format!("key-{}", 5 + i % 25).into_bytes();
        let value = format!("value-{i}").into_bytes();
        storage.put(&key, &value).expect("put");
        model.insert(key, value);
        if i % 7 == 3 {
            let victim = format!("key-{}", (i * 3) % 30).into_bytes();
            storage.delete(&victim).expect("delete");
            model.remove(&victim);
        }
    }
    model
}

fn check(dir: &Path, model: &BTreeMap<Vec<u8>, Vec<u8>>, context: &str) {
    let storage = Storage::open(dir, options()).expect("reopen");
    for i in 0..30u32 {
        let key = format!("key-{i}").into_bytes();
        assert_eq!(
            storage.get(&key).expect("get"),
            model.get(&key).cloned(),
            "{context}: key-{i}"
        );
    }
    assert_eq!(storage.keys().len(), model.len(), "{context}: key count");
    // Hashes come from hint files or a scan; either way they are the values' own.
    storage.for_each_hash(|key, hash| {
        let value = model.get(key).expect("a live key is in the model");
        assert_eq!(hash, super::value_hash(value), "{context}: hash of {key:?}");
    });
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".merging") || n.starts_with("MERGE"))
        .collect();
    assert!(leftovers.is_empty(), "{context}: leftovers {leftovers:?}");
}

#[test]
fn a_crash_at_any_merge_step_loses_and_revives_nothing() {
    let mut stop_at = 0;
    let mut steps_seen = Vec::new();
    loop {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (model, report) = {
            let storage = Storage::open(tmp.path(), options()).expect("open");
            let model = populate(&storage);
            storage.inner().seal_active().expect("seal");
            let sealed = storage.inner().sealed_ids();
            let mut n = 0;
            let report = storage
                .inner()
                .merge(&sealed, &mut |step: Step| {
                    if n == stop_at {
                        steps_seen.push(step);
                    }
                    n += 1;
                    if n > stop_at {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("merge");
            (model, report)
        };
        let context = format!("stopped after step {stop_at} ({:?})", steps_seen.last());
        check(tmp.path(), &model, &context);
        if !report.stopped {
            break;
        }
        stop_at += 1;
    }
    // Every kind of step was exercised.
    for kind in [
        "OutputWritten",
        "OutputSynced",
        "HintWritten",
        "ManifestWritten",
        "ManifestCommitted",
        "OutputRenamed",
        "InputDeleted",
    ] {
        assert!(
            steps_seen
                .iter()
                .any(|s| format!("{s:?}").starts_with(kind)),
            "no crash simulated after {kind}"
        );
    }
}

/// A full merge retires, unread, the inputs no key points into, and still keeps every live
/// record of the others.
#[test]
fn a_full_merge_skips_only_segments_nothing_points_into() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(tmp.path(), options()).expect("open");
    // 300-byte segments: each of these records fills one.
    let big = |c: u8| vec![c; 250];
    storage.put(b"a", &big(b'1')).expect("put");
    storage.put(b"b", &big(b'2')).expect("put");
    storage.put(b"a", &big(b'3')).expect("put");
    storage.inner().seal_active().expect("seal");
    let sealed = storage.inner().sealed_ids();
    assert_eq!(sealed.len(), 3, "{sealed:?}");
    // Only the first holds nothing live (the old "a").
    assert_eq!(storage.inner().unreferenced(&sealed), [sealed[0]]);
    let report = storage.merge_segments(&sealed).expect("merge");
    assert_eq!(report.records_kept, 2);
    assert_eq!(storage.get(b"a").expect("get"), Some(big(b'3')));
    assert_eq!(storage.get(b"b").expect("get"), Some(big(b'2')));
    drop(storage);
    let reopened = Storage::open(tmp.path(), options()).expect("reopen");
    assert_eq!(reopened.get(b"a").expect("get"), Some(big(b'3')));
    assert_eq!(reopened.get(b"b").expect("get"), Some(big(b'2')));
}
