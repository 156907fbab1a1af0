//! The storage engine's contract with the layers above: limits, exclusive directories, stats,
//! iteration, the automatic merge trigger, and that arbitrary file content never panics it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::{assert_matches, open, small_segments};
use proptest::prelude::*;
use quorumkv::storage::{MergeTrigger, Options, Storage, StorageError, SyncPolicy, MAX_KEY_LEN};

#[test]
fn keys_and_values_beyond_the_limits_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = Options {
        max_value_bytes: 1000,
        ..small_segments(1 << 20)
    };
    let storage = open(tmp.path(), &options);
    assert!(matches!(
        storage.put(b"", b"v"),
        Err(StorageError::BadKey { len: 0, .. })
    ));
    let big_key = vec![b'k'; MAX_KEY_LEN + 1];
    assert!(matches!(
        storage.put(&big_key, b"v"),
        Err(StorageError::BadKey { .. })
    ));
    assert!(matches!(
        storage.put(b"k", &[0; 1001]),
        Err(StorageError::ValueTooLarge {
            len: 1001,
            max: 1000
        })
    ));
    let max_key = vec![b'k'; MAX_KEY_LEN];
    storage.put(&max_key, &[1; 1000]).expect("largest allowed");
    drop(storage);
    let storage = open(tmp.path(), &options);
    assert_eq!(storage.get(&max_key).expect("get"), Some(vec![1; 1000]));
}

#[test]
fn a_directory_is_opened_by_one_engine_at_a_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = open(tmp.path(), &Options::default());
    assert!(matches!(
        Storage::open(tmp.path(), Options::default()),
        Err(StorageError::Locked(_))
    ));
    drop(first);
    Storage::open(tmp.path(), Options::default()).expect("free again");
}

#[test]
fn restarts_leave_no_empty_segments_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_files = || {
        let mut names: Vec<String> = fs::read_dir(tmp.path())
            .expect("read dir")
            .map(|e| {
                e.expect("dirent")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".data"))
            .collect();
        names.sort();
        names
    };
    let storage = open(tmp.path(), &Options::default());
    storage.put(b"k", b"v").expect("put");
    drop(storage);
    for _ in 0..3 {
        drop(open(tmp.path(), &Options::default()));
    }
    let before = data_files();
    // The segment holding `k`, and the empty active segment of the last start.
    assert_eq!(before.len(), 2, "{before:?}");
    let storage = open(tmp.path(), &Options::default());
    assert_eq!(storage.get(b"k").expect("get"), Some(b"v".to_vec()));
    let after = data_files();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[0]);
    // The removed file's id is not handed out again.
    assert!(after[1] > before[1], "{before:?} then {after:?}");
}

#[test]
fn stats_and_iteration_follow_the_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let storage = open(tmp.path(), &small_segments(1 << 20));
    for i in 0..10u8 {
        storage.put(&[b'k', i], &[i; 10]).expect("put");
    }
    storage.put(b"k\x00", b"new").expect("overwrite");
    storage.delete(b"k\x01").expect("delete");
    let stats = storage.stats();
    assert_eq!(stats.keys, 9);
    // Nine live records: eight of 10-byte values, one of 3 bytes, each with a 2-byte key.
    assert_eq!(stats.live_bytes, 8 * (21 + 2 + 10) + (21 + 2 + 3));
    assert_eq!(stats.dead_bytes, 2 * (21 + 2 + 10) + (21 + 2));
    let mut all: Vec<_> = storage.iter().collect::<Result<_, _>>().expect("iter");
    all.sort();
    assert_eq!(all.len(), 9);
    assert_eq!(all[0], (b"k\x00".to_vec(), b"new".to_vec()));

    storage.merge().expect("merge");
    let after = storage.stats();
    assert_eq!(after.keys, 9);
    assert_eq!(after.dead_bytes, 0);
    assert_eq!(after.live_bytes, stats.live_bytes);
}

#[test]
fn dead_bytes_trigger_a_merge_by_themselves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = Options {
        sync: SyncPolicy::Interval(Duration::from_millis(5)),
        max_segment_bytes: 4096,
        merge_trigger: Some(MergeTrigger {
            dead_ratio: 0.5,
            min_dead_bytes: 16 * 1024,
            delay: Duration::ZERO,
        }),
        ..Options::default()
    };
    let storage = open(tmp.path(), &options);
    let mut model = BTreeMap::new();
    for round in 0..40u32 {
        for k in 0..20u32 {
            let key = format!("key-{k}").into_bytes();
            let value = format!("round {round} {}", "x".repeat(40)).into_bytes();
            storage.put(&key, &value).expect("put");
            model.insert(key, value);
        }
    }
    // 800 puts of ~70 bytes over 20 keys leave ~54 KiB dead without merging. Merges run on
    // their own thread whenever sealed segments hold 16 KiB of dead bytes, so once they have
    // caught up at most that plus one active segment's worth remains.
    let deadline = Instant::now() + Duration::from_secs(30);
    while storage.stats().dead_bytes > 16 * 1024 + 4096 {
        assert!(
            Instant::now() < deadline,
            "no merge ran: {:?}",
            storage.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_matches(&storage, &model, "after automatic merge");
    drop(storage);
    assert_matches(&open(tmp.path(), &options), &model, "after reopen");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever bytes the files hold, open neither panics nor fails, and the engine then works.
    #[test]
    fn arbitrary_files_never_panic_the_engine(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        hint in proptest::collection::vec(any::<u8>(), 0..256),
        manifest in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("00000001.data"), &data).expect("write data");
        fs::write(tmp.path().join("00000001.hint"), &hint).expect("write hint");
        if let Some(manifest) = manifest {
            fs::write(tmp.path().join("MERGE"), manifest).expect("write manifest");
        }
        let storage = Storage::open(tmp.path(), small_segments(1 << 20)).expect("open");
        for key in storage.keys() {
            // A hint may point at garbage: that read fails cleanly, it never serves bad bytes.
            let _ = storage.get(&key);
        }
        storage.put(b"fresh", b"value").expect("put");
        drop(storage);
        let storage = Storage::open(tmp.path(), small_segments(1 << 20)).expect("reopen");
        prop_assert_eq!(storage.get(b"fresh").expect("get"), Some(b"value".to_vec()));
    }
}
