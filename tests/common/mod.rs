//! Helpers shared by the storage test suites.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use quorumkv::storage::{Options, Storage, SyncPolicy};

/// Options that make segments small, so a few records span many files, and leave merging to
/// the test.
pub fn small_segments(max_segment_bytes: u64) -> Options {
    Options {
        sync: SyncPolicy::None,
        max_segment_bytes,
        merge_trigger: None,
        ..Options::default()
    }
}

pub fn open(dir: &Path, options: &Options) -> Storage {
    Storage::open(dir, options.clone()).expect("open")
}

/// Copies every file of `from` into a fresh directory under `into`.
pub fn copy_dir(from: &Path, into: &Path) -> PathBuf {
    fs::create_dir_all(into).expect("mkdir");
    for dirent in fs::read_dir(from).expect("read_dir") {
        let dirent = dirent.expect("dirent");
        fs::copy(dirent.path(), into.join(dirent.file_name())).expect("copy");
    }
    into.to_path_buf()
}

/// Files in `dir` whose names end with `ext`, sorted.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|d| d.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Asserts the engine holds exactly `model`: every model key byte-for-byte, and nothing else.
pub fn assert_matches(storage: &Storage, model: &BTreeMap<Vec<u8>, Vec<u8>>, context: &str) {
    for (key, value) in model {
        let got = storage.get(key).expect("get");
        assert_eq!(
            got.as_deref(),
            Some(value.as_slice()),
            "{context}: key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    let mut keys = storage.keys();
    keys.sort();
    let expected: Vec<Vec<u8>> = model.keys().cloned().collect();
    assert_eq!(keys, expected, "{context}: key set");
}
