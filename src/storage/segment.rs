//! Segment files on disk: their names, their open handles, and their live/dead byte counts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of a segment data file: `00000042.data`.
pub const DATA_EXT: &str = "data";
/// Suffix of a hint file written by merge beside its data file: `00000042.hint`.
pub const HINT_EXT: &str = "hint";
/// Added to a merge output while the merge has not committed: `00000042.data.merging`.
pub const MERGING_EXT: &str = "merging";

pub fn data_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.{DATA_EXT}"))
}

pub fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.{HINT_EXT}"))
}

pub fn merging(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(MERGING_EXT);
    PathBuf::from(s)
}

/// Parses `00000042.data` / `00000042.hint` (and their `.merging` forms) into (id, ext, merging).
pub fn parse_name(name: &str) -> Option<(u32, &str, bool)> {
    let (rest, merging) = match name.strip_suffix(&format!(".{MERGING_EXT}")) {
        Some(rest) => (rest, true),
        None => (name, false),
    };
    let (id, ext) = rest.split_once('.')?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id.parse().ok()?, ext, merging))
}

/// Makes renames, creations and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One open segment. Reads are positioned (`pread`), so readers share the handle without locks;
/// the file stays readable through this handle even after a merge unlinks it.
#[derive(Debug)]
pub struct Segment {
    pub id: u32,
    pub file: File,
    total_bytes: AtomicU64,
    dead_bytes: AtomicU64,
}

impl Segment {
    pub fn new(id: u32, file: File, total_bytes: u64, dead_bytes: u64) -> Self {
        Segment {
            id,
            file,
            total_bytes: AtomicU64::new(total_bytes),
            dead_bytes: AtomicU64::new(dead_bytes),
        }
    }

    /// Creates a new, empty segment file for appending.
    pub fn create(path: &Path, id: u32) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Segment::new(id, file, 0, 0))
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn add_total(&self, bytes: u64) {
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_dead(&self, bytes: u64) {
        self.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    pub fn dead_bytes(&self) -> u64 {
        self.dead_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/d");
        let data = data_path(dir, 42);
        let name = data.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(parse_name(name), Some((42, DATA_EXT, false)));
        let m = merging(&hint_path(dir, 7));
        let name = m.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(parse_name(name), Some((7, HINT_EXT, true)));
        assert_eq!(parse_name("LOCK"), None);
        assert_eq!(parse_name("123.data"), None);
    }
}
