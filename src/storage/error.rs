//! What can go wrong in the storage engine, grouped by what the caller should do about it.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Bad input from the caller: fix the request.
    #[error("key must be 1 to {max} bytes, got {len}")]
    BadKey { len: usize, max: usize },
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    #[error("invalid storage option: {0}")]
    BadOption(String),

    /// Another engine holds the directory.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),

    /// The stored bytes for a key fail their checksum: never served; repair from a replica.
    #[error("corrupt record in segment {segment} at offset {offset}")]
    Corrupt { segment: u32, offset: u32 },

    /// An fsync failed. After that the page cache may have dropped the data while a later fsync
    /// reports success, so the engine refuses all writes until it is reopened and re-scanned.
    #[error("an earlier fsync failed; the engine refuses writes until it is reopened")]
    Failed,

    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
