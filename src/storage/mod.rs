//! The local, durable store of one node: a Bitcask-style log (Sheehy & Smith, 2010).
//!
//! Knows nothing of versions, the ring or the network: it maps byte keys to byte values.
//!
//! # Model
//! Writes are appends to the *active segment*; an in-memory *keydir* maps every live key to the
//! position of its newest record, so a read is one positioned read. When the active segment
//! passes `max_segment_bytes` it is sealed and a new one started. *Merge* rewrites the live
//! records of sealed segments into new ones, each with a *hint file*, and deletes the old files.
//! On open the keydir is rebuilt from hint files where they are valid and by scanning otherwise.
//!
//! # On-disk format
//! A data directory holds:
//! - `NNNNNNNN.data`: segment files, `NNNNNNNN` a zero-padded decimal id.
//! - `NNNNNNNN.hint`: the hint file of a merged segment (layout in [`hint`]).
//! - `*.merging`: merge outputs not yet committed; deleted at open unless a manifest commits them.
//! - `MERGE`: a merge manifest, present only between a merge's commit point and its cleanup.
//! - `LOCK`: held with an exclusive `flock` by the open engine.
//!
//! A segment is a sequence of records. One record, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | crc32 (IEEE, `crc32fast`) of every byte after this field: header rest, key, value |
//! | 4  | 8 | sequence number: unique, increasing in write order across all segments |
//! | 12 | 1 | flags: bit 0 = tombstone; other bits must be zero |
//! | 13 | 4 | key length, 1..=65536 |
//! | 17 | 4 | value length, 0..=256 MiB (0 for a tombstone) |
//! | 21 | key length | key |
//! | .. | value length | value |
//!
//! Records are ordered by sequence number, not by file: merge copies records unchanged (same
//! sequence number, same checksum) into segments with new ids, and recovery lets the highest
//! sequence number for a key win, a tombstone included.
//!
//! # Recovery
//! A record whose checksum fails is never served. A scan skips a damaged region by searching
//! forward for the next valid record, logs the file, offset and length skipped, and reports the
//! key the damaged header names (if any) in [`RecoveryReport::suspect_keys`] for repair from
//! other replicas. Bytes at the end of a segment that hold no valid record (a torn append) are
//! truncated away so new appends never follow garbage. Lengths are validated against fixed
//! bounds and against the bytes present before anything is sliced, so no file content can cause
//! a panic or an absurd allocation.
//!
//! # Merge and deletes
//! A tombstone must outlive every older record of its key, or a reopen resurrects the value
//! (Bitcask issue #82). Merge therefore drops a tombstone only when its input is *every* sealed
//! segment; a merge of some segments keeps the tombstones of keys that are still deleted.
//! For the same reason a merge of every sealed segment retires, unread, each input that no
//! keydir entry points into: it holds nothing that merge would keep.
//! A merge is atomic across crashes: outputs are written under `.merging` names and fsynced,
//! then the `MERGE` manifest (inputs, outputs, crc) is written, fsynced and renamed into place,
//! which is the commit point; then outputs are renamed and inputs deleted. Open rolls a
//! committed merge forward and discards an uncommitted one.
//!
//! # Durability
//! [`SyncPolicy::Always`] fsyncs before a write returns, with group commit: a syncer thread
//! fsyncs everything appended so far while writers wait (blocking, or parked as async tasks
//! with [`Storage::put_async`]), so every writer that queued during one fsync shares the next.
//! [`SyncPolicy::Interval`] has the syncer fsync periodically; [`SyncPolicy::None`] leaves it to
//! the operating system. With `Always` and `Interval` a segment is fsynced when it is sealed;
//! with `None` it is not, since that fsync would flush a whole segment of dirty pages while
//! every writer waits (about 125 ms per 64 MiB on a virtual disk). With `Always` the active
//! segment holds zeros up to 1 MiB past its last record, so the group commit's fdatasync
//! overwrites blocks already on disk; a sealed segment and a cleanly closed one end at their
//! last record, and open cuts the zeros a crash leaves, without reporting them as damage.

mod durability;
mod engine;
mod error;
mod hint;
mod keydir;
mod merge;
mod record;
mod recovery;
mod segment;

pub use engine::{MergeTrigger, Options, Pending, Stats, Storage, SyncPolicy};
pub use error::{Result, StorageError};
pub use keydir::value_hash;
pub use merge::MergeReport;
pub use record::{FORMAT_MAX_VALUE_LEN, MAX_KEY_LEN};
pub use recovery::{Damage, RecoveryReport};

#[cfg(test)]
mod tests;
