//! openraft's storage for the metadata group, in `DATA_DIR/meta/`: the log as length- and
//! crc32-framed JSON records in `log` (appended and fsynced; rewritten whole when entries are
//! cut or purged, which the small metadata log can afford), the vote and commit point in
//! `state.json`, and the latest snapshot of the state machine in `snapshot.json`. Small
//! files written whole go through a temporary file and a rename, so a crash leaves the old
//! or the new one.
//!
//! On open the state machine is rebuilt from the snapshot plus the committed log, so a
//! restarted node has its ring before it hears from any peer.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, RaftStorage, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::raft::{NodeId, RaftNode, TypeConfig};
use super::{ClusterMeta, Refusal, View};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The applied state: the metadata and where in the log it stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, RaftNode>,
    meta: ClusterMeta,
}

impl Machine {
    fn apply(&mut self, entry: &Entry<TypeConfig>) -> std::result::Result<(), Refusal> {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => Ok(()),
            EntryPayload::Normal(command) => self.meta.apply(command.clone()),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hard {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, RaftNode>,
    data: Vec<u8>,
}

struct Inner {
    dir: PathBuf,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    hard: Hard,
    machine: Machine,
    snapshot: Option<StoredSnapshot>,
    snapshots_built: u64,
}

/// The store; clones share it (openraft wants its reader and snapshot builder as values).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    view: Arc<watch::Sender<Arc<View>>>,
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        fs::create_dir_all(dir)?;
        let hard: Hard = read_json(&dir.join("state.json"))?.unwrap_or_default();
        let snapshot: Option<StoredSnapshot> = read_json(&dir.join("snapshot.json"))?;
        let mut machine: Machine = match &snapshot {
            Some(s) => serde_json::from_slice(&s.data).map_err(std::io::Error::other)?,
            None => Machine::default(),
        };
        let log = read_log(&dir.join("log"))?;
        let applied = machine.last_applied.map_or(0, |l| l.index + 1);
        let committed = hard.committed.map_or(0, |l| l.index + 1);
        for entry in log.range(applied..committed).map(|(_, e)| e) {
            if let Err(refusal) = machine.apply(entry) {
                tracing::debug!(%refusal, "a replayed command was refused, as it was when first applied");
            }
        }
        let view = View::new(machine.meta.clone(), !machine.meta.is_bootstrapped());
        let (view, _) = watch::channel(Arc::new(view));
        let inner = Inner {
            dir: dir.to_path_buf(),
            log,
            hard,
            machine,
            snapshot,
            snapshots_built: 0,
        };
        Ok(Store {
            inner: Arc::new(Mutex::new(inner)),
            view: Arc::new(view),
        })
    }

    /// Whether this node has ever been part of a Raft group (a log, a vote or a snapshot).
    pub fn has_state(&self) -> bool {
        let inner = self.inner.lock();
        !inner.log.is_empty() || inner.snapshot.is_some() || inner.hard.vote.is_some()
    }

    /// What to go by until the log brings metadata (a first member's config, a joiner's
    /// answer); ignored once it has.
    pub fn provide(&self, provisional: ClusterMeta) {
        if !self.inner.lock().machine.meta.is_bootstrapped() {
            self.view
                .send_replace(Arc::new(View::new(provisional, true)));
        }
    }

    /// The metadata in force here, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    fn publish(&self, meta: &ClusterMeta) {
        if meta.is_bootstrapped() {
            self.view.send_if_modified(|v| {
                if v.meta == *meta && !v.provisional {
                    return false;
                }
                *v = Arc::new(View::new(meta.clone(), false));
                true
            });
        }
    }

    fn save_hard(inner: &Inner) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&inner.hard)?;
        write_atomic(&inner.dir.join("state.json"), &bytes)
    }

    fn rewrite_log(inner: &Inner) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in inner.log.values() {
            bytes.extend(frame(entry)?);
        }
        write_atomic(&inner.dir.join("log"), &bytes)
    }
}

impl RaftLogReader<TypeConfig> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Store {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let mut inner = self.inner.lock();
        let data = serde_json::to_vec(&inner.machine)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        inner.snapshots_built += 1;
        let last = inner.machine.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.machine.membership.clone(),
            snapshot_id: format!("{}-{}", last.map_or(0, |l| l.index), inner.snapshots_built),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        write_atomic(&inner.dir.join("snapshot.json"), &bytes)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        inner.snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStorage<TypeConfig> for Store {
    type LogReader = Store;
    type SnapshotBuilder = Store;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last_purged = inner.hard.last_purged;
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.hard.vote = Some(*vote);
        Store::save_hard(&inner).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().hard.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.hard.committed != committed {
            inner.hard.committed = committed;
            Store::save_hard(&inner).map_err(|e| StorageIOError::write(&e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().hard.committed)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let mut inner = self.inner.lock();
        let mut bytes = Vec::new();
        for entry in entries {
            bytes.extend(frame(&entry).map_err(|e| StorageIOError::write_logs(&e))?);
            inner.log.insert(entry.log_id.index, entry);
        }
        let path = inner.dir.join("log");
        append_synced(&path, &bytes).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.log.split_off(&log_id.index);
        Store::rewrite_log(&inner).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let mut inner = self.inner.lock();
        let rest = inner.log.split_off(&(log_id.index + 1));
        inner.log = rest;
        inner.hard.last_purged = Some(log_id);
        Store::save_hard(&inner).map_err(|e| StorageIOError::write_logs(&e))?;
        Store::rewrite_log(&inner).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn last_applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, RaftNode>)> {
        let inner = self.inner.lock();
        Ok((inner.machine.last_applied, inner.machine.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> Result<Vec<std::result::Result<(), Refusal>>> {
        let meta = {
            let mut inner = self.inner.lock();
            let answers = entries.iter().map(|e| inner.machine.apply(e)).collect();
            (answers, inner.machine.meta.clone())
        };
        self.publish(&meta.1);
        Ok(meta.0)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, RaftNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let machine: Machine = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let published = machine.meta.clone();
        {
            let mut inner = self.inner.lock();
            let stored = StoredSnapshot {
                meta: meta.clone(),
                data,
            };
            let bytes = serde_json::to_vec(&stored)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            write_atomic(&inner.dir.join("snapshot.json"), &bytes)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            inner.machine = machine;
            inner.snapshot = Some(stored);
        }
        self.publish(&published);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

/// One log record: length, crc32 of the body, the body (JSON).
fn frame(entry: &Entry<TypeConfig>) -> serde_json::Result<Vec<u8>> {
    let body = serde_json::to_vec(entry)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(crc32fast::hash(&body).to_le_bytes());
    out.extend(body);
    Ok(out)
}

/// Reads the log's records up to the first torn or damaged one, and cuts the file there (a
/// record is appended and fsynced before openraft counts it written, so only an
/// unacknowledged tail can be torn).
fn read_log(path: &Path) -> std::io::Result<BTreeMap<u64, Entry<TypeConfig>>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    }
    let mut log = BTreeMap::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(body) else {
            break;
        };
        log.insert(entry.log_id.index, entry);
        at += 8 + len;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), kept = at, dropped = bytes.len() - at, "metadata log had a torn tail; cut it");
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(at as u64)?;
    }
    Ok(log)
}

fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
