//! The storage engine against a model: random operation sequences, merges of every subset of
//! segments (no resurrection of deleted keys), and concurrent readers and writers during merges.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{assert_matches, files_with_ext, open, small_segments};
use proptest::prelude::*;
use quorumkv::storage::{Options, Storage, SyncPolicy};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Get(u8),
    Reopen,
    ReopenWithoutHints,
    Merge,
    MergeSome(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..10u8, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Op::Put(k, v)),
        3 => (0..10u8).prop_map(Op::Delete),
        2 => (0..10u8).prop_map(Op::Get),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReopenWithoutHints),
        1 => Just(Op::Merge),
        2 => any::<u16>().prop_map(Op::MergeSome),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn remove_hints(dir: &Path) {
    for hint in files_with_ext(dir, "hint") {
        std::fs::remove_file(hint).expect("remove hint");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_operations_match_a_btreemap(ops in proptest::collection::vec(op(), 1..80)) {
        let options = small_segments(160);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut storage = Some(open(dir, &options));
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in ops {
            let s = storage.as_ref().expect("open engine");
            match op {
                Op::Put(k, v) => {
                    s.put(&key(k), &v).expect("put");
                    model.insert(key(k), v);
                }
                Op::Delete(k) => {
                    let existed = s.delete(&key(k)).expect("delete");
                    prop_assert_eq!(existed.is_some(), model.remove(&key(k)).is_some());
                }
                Op::Get(k) => {
                    prop_assert_eq!(s.get(&key(k)).expect("get"), model.get(&key(k)).cloned());
                }
                Op::Reopen | Op::ReopenWithoutHints => {
                    drop(storage.take());
                    if matches!(op, Op::ReopenWithoutHints) {
                        remove_hints(dir);
                    }
                    storage = Some(open(dir, &options));
                }
                Op::Merge => {
                    s.merge().expect("merge");
                }
                Op::MergeSome(mask) => {
                    let ids: Vec<u32> = s
                        .segment_ids()
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << (i % 16)) != 0)
                        .map(|(_, id)| id)
                        .collect();
                    s.merge_segments(&ids).expect("merge some");
                }
            }
            assert_matches(storage.as_ref().expect("open engine"), &model, "after op");
        }
    }
}

/// The sequence of the no-resurrection scenario: every record lands in a segment of its own.
fn resurrection_scenario(storage: &Storage) -> BTreeMap<Vec<u8>, Vec<u8>> {
    storage.put(b"k", b"a").expect("put");
    storage.put(b"j", b"b").expect("put");
    storage.delete(b"k").expect("delete");
    storage.put(b"j", b"c").expect("put");
    storage.delete(b"j").expect("delete");
    storage.put(b"j", b"d").expect("put");
    storage.put(b"m", b"e").expect("put");
    storage.delete(b"m").expect("delete");
    BTreeMap::from([(b"j".to_vec(), b"d".to_vec())])
}

#[test]
fn deleted_keys_stay_deleted_whatever_subset_is_merged() {
    // A one-byte limit seals a segment after every record.
    let options = small_segments(1);
    for with_hints in [true, false] {
        for mask in 0u32..(1 << 8) {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path();
            let model = {
                let storage = open(dir, &options);
                let model = resurrection_scenario(&storage);
                let sealed = storage.segment_ids();
                let chosen: Vec<u32> = sealed
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, id)| *id)
                    .collect();
                storage.merge_segments(&chosen).expect("merge subset");
                assert_matches(&storage, &model, "after merge");
                model
            };
            if !with_hints {
                remove_hints(dir);
            }
            let storage = open(dir, &options);
            let context = format!("subset {mask:#010b}, hints {with_hints}");
            assert_matches(&storage, &model, &context);
            // A second, full merge and another reopen: still nothing comes back.
            storage.merge().expect("full merge");
            drop(storage);
            assert_matches(&open(dir, &options), &model, &context);
        }
    }
}

/// A value that names its key and version and carries its own checksum, so a torn or
/// misplaced value is detectable.
fn versioned_value(key: &[u8], version: u32) -> Vec<u8> {
    let mut v = format!("{}:{version}:", String::from_utf8_lossy(key)).into_bytes();
    v.extend(std::iter::repeat_n(
        version as u8,
        40 + (version % 50) as usize,
    ));
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn parse_version(key: &[u8], value: &[u8]) -> u32 {
    let (body, crc) = value.split_at(value.len() - 4);
    assert_eq!(crc32fast::hash(body).to_le_bytes(), crc, "torn value");
    let text = String::from_utf8_lossy(body);
    let mut parts = text.splitn(3, ':');
    assert_eq!(
        parts.next().map(str::as_bytes),
        Some(key),
        "value of another key"
    );
    parts.next().and_then(|v| v.parse().ok()).expect("version")
}

#[test]
fn concurrent_reads_and_writes_during_merges_lose_nothing() {
    const WRITERS: u32 = 4;
    const KEYS_PER_WRITER: u32 = 25;
    const VERSIONS: u32 = 200;
    let options = Options {
        sync: SyncPolicy::None,
        max_segment_bytes: 16 * 1024,
        merge_trigger: None,
        ..Options::default()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let storage = open(tmp.path(), &options);
    let done = Arc::new(AtomicBool::new(false));
    let key = |w: u32, k: u32| format!("w{w}-k{k}").into_bytes();

    thread::scope(|scope| {
        let merger = scope.spawn(|| {
            let mut merges = 0;
            while !done.load(Ordering::Relaxed) {
                storage.merge().expect("merge");
                merges += 1;
            }
            merges
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = BTreeMap::new();
                    let mut reads = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        for w in 0..WRITERS {
                            for k in 0..KEYS_PER_WRITER {
                                let key = key(w, k);
                                if let Some(v) = storage.get(&key).expect("get") {
                                    let version = parse_version(&key, &v);
                                    let last = seen.entry(key).or_insert(0);
                                    assert!(version >= *last, "a read went back in time");
                                    *last = version;
                                    reads += 1;
                                }
                            }
                        }
                    }
                    reads
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let storage = &storage;
                scope.spawn(move || {
                    for version in 1..=VERSIONS {
                        for k in 0..KEYS_PER_WRITER {
                            let key = key(w, k);
                            storage
                                .put(&key, &versioned_value(&key, version))
                                .expect("put");
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
        assert!(merger.join().expect("merger") > 0);
    });

    let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..WRITERS)
        .flat_map(|w| (0..KEYS_PER_WRITER).map(move |k| (w, k)))
        .map(|(w, k)| (key(w, k), versioned_value(&key(w, k), VERSIONS)))
        .collect();
    assert_matches(&storage, &expected, "after the run");
    drop(storage);
    assert_matches(&open(tmp.path(), &options), &expected, "after reopen");
}

#[test]
fn every_acknowledged_async_write_survives_reopen() {
    let options = Options {
        sync: SyncPolicy::Always,
        max_segment_bytes: 8 * 1024,
        merge_trigger: None,
        ..Options::default()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let storage = open(tmp.path(), &options);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let acknowledged: Vec<(Vec<u8>, Vec<u8>)> = runtime.block_on(async {
        let tasks: Vec<_> = (0..32u32)
            .map(|t| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0..40u32 {
                        let key = format!("t{t}-{i}").into_bytes();
                        let value = versioned_value(&key, i);
                        storage.put_async(&key, &value).await.expect("put_async");
                        acked.push((key, value));
                    }
                    for i in (0..40u32).step_by(3) {
                        let key = format!("t{t}-{i}").into_bytes();
                        assert!(storage
                            .delete_async(&key)
                            .await
                            .expect("delete_async")
                            .is_some());
                        acked.retain(|(k, _)| *k != key);
                    }
                    acked
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("task"));
        }
        all
    });
    drop(storage);
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = acknowledged.into_iter().collect();
    assert_eq!(expected.len(), 32 * 26);
    assert_matches(&open(tmp.path(), &options), &expected, "after reopen");
}
