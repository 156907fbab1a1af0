//! Group commit: one background thread fsyncs the active segment on behalf of every writer.
//!
//! A writer appends its record, asks for its sequence number to be made durable, and waits:
//! on a condition variable (blocking callers) or on a watch channel (async callers, so that
//! thousands of waiting requests cost no threads). The syncer fsyncs everything appended so
//! far, so all the writers that queued up during one fsync are covered by the next one.
//! Sealed segments are fsynced when sealed, so syncing the active segment covers all data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::error::{Result, StorageError};
use super::segment::Segment;

/// With at least this many records waiting, writers are evidently concurrent: the syncer then
/// lingers (`Options::group_commit_delay`) before the fsync so that one fsync covers more of
/// them, as PostgreSQL's `commit_delay` does. An fsync costs CPU as well as time (on a virtual
/// disk especially); a lone writer never waits for the delay.
const LINGER_WHEN_WAITING: u64 = 2;

/// How far durability has got, as async waiters see it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    synced: u64,
    failed: bool,
}

struct State {
    /// Highest sequence number some writer waits for.
    requested: u64,
    /// Highest sequence number known to be fsynced.
    synced: u64,
    shutdown: bool,
}

pub(super) struct Durability {
    state: Mutex<State>,
    /// Wakes the syncer.
    request: Condvar,
    /// Wakes blocking waiters.
    done: Condvar,
    /// Wakes async waiters.
    progress: watch::Sender<Progress>,
    /// Set after an fsync failed: the page cache may have dropped the data while a later
    /// fsync reports success, so nothing is acknowledged any more.
    failed: AtomicBool,
}

impl Durability {
    pub fn new(synced: u64) -> Arc<Self> {
        Arc::new(Durability {
            state: Mutex::new(State {
                requested: synced,
                synced,
                shutdown: false,
            }),
            request: Condvar::new(),
            done: Condvar::new(),
            progress: watch::Sender::new(Progress {
                synced,
                failed: false,
            }),
            failed: AtomicBool::new(false),
        })
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Records an fsync failure and wakes every waiter so it can report it.
    pub fn fail(&self) {
        let _state = self.state.lock();
        self.failed.store(true, Ordering::Release);
        self.done.notify_all();
        self.progress.send_modify(|p| p.failed = true);
    }

    fn request(&self, state: &mut State, seq: u64) {
        if state.requested < seq {
            state.requested = seq;
            self.request.notify_one();
        }
    }

    /// Blocks until the record with sequence number `seq` is on disk.
    pub fn wait(&self, seq: u64) -> Result<()> {
        let mut state = self.state.lock();
        self.request(&mut state, seq);
        while state.synced < seq {
            if self.failed() {
                return Err(StorageError::Failed);
            }
            self.done.wait(&mut state);
        }
        Ok(())
    }

    /// Waits, without blocking a thread, until the record with sequence number `seq` is on disk.
    pub async fn wait_async(&self, seq: u64) -> Result<()> {
        let mut progress = self.progress.subscribe();
        self.request(&mut self.state.lock(), seq);
        let reached = progress
            .wait_for(|p| p.synced >= seq || p.failed)
            .await
            .map(|p| p.synced >= seq)
            .unwrap_or(false);
        if reached {
            Ok(())
        } else {
            Err(StorageError::Failed)
        }
    }

    /// Whether the engine is closing (a delayed merge then does not start).
    pub fn shutting_down(&self) -> bool {
        self.state.lock().shutdown
    }

    /// Stops the syncer thread at its next wake-up.
    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.request.notify_one();
    }

    /// The syncer thread's loop. `active` returns the segment to fsync and the last sequence
    /// number appended to it, or `None` once the engine is gone. With a `period`, it also
    /// fsyncs that often whatever was appended, unasked (`sync = interval`); otherwise it
    /// lingers for `delay` before an fsync that concurrent writers wait for.
    pub fn run(
        &self,
        period: Option<Duration>,
        delay: Duration,
        active: impl Fn() -> Option<(Arc<Segment>, u64)>,
    ) {
        loop {
            let mut state = self.state.lock();
            while state.requested <= state.synced && !state.shutdown {
                match period {
                    Some(p) => {
                        if self.request.wait_for(&mut state, p).timed_out() {
                            break;
                        }
                    }
                    None => self.request.wait(&mut state),
                }
            }
            if state.shutdown || self.failed() {
                return;
            }
            let crowded = state.requested - state.synced >= LINGER_WHEN_WAITING;
            let synced = state.synced;
            drop(state);
            if crowded && period.is_none() && !delay.is_zero() {
                std::thread::sleep(delay);
            }
            let Some((segment, last)) = active() else {
                return;
            };
            if last <= synced {
                continue;
            }
            if let Err(e) = segment.file.sync_data() {
                tracing::error!(segment = segment.id, error = %e, "fsync failed; refusing writes until reopened");
                self.fail();
                return;
            }
            let mut state = self.state.lock();
            state.synced = state.synced.max(last);
            let synced = state.synced;
            drop(state);
            self.done.notify_all();
            self.progress.send_modify(|p| p.synced = synced);
        }
    }
}
