//! The ring-version fence of this node's replica: replicated writes carry the ring version
//! their coordinator placed them under, and once this node acts on a membership change
//! (streams a partition to its newcomers, or forgets what it no longer replicates) it takes
//! no write placed under an older ring. Such a write may have skipped the newcomers, and
//! landing here after the stream it would reach nobody who keeps the key; refused, its
//! coordinator catches up with the metadata and places it again.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{RwLock, RwLockReadGuard};

use crate::rpc::Failure;

#[derive(Debug, Default)]
pub struct Fence {
    version: RwLock<u64>,
    refused: AtomicU64,
}

impl Fence {
    /// Lets a write placed under `ring_version` go ahead while the guard lives, or refuses it
    /// when the fence is past that version.
    pub async fn admit(&self, ring_version: u64) -> Result<RwLockReadGuard<'_, u64>, Failure> {
        let guard = self.version.read().await;
        if ring_version < *guard {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::StaleRing {
                ring_version: *guard,
            });
        }
        Ok(guard)
    }

    /// How many writes placed under an older ring were refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Holds the fence where it is, for a write this node places itself: a placement read
    /// from the metadata while the guard lives is never older than the fence.
    pub async fn hold(&self) -> RwLockReadGuard<'_, u64> {
        self.version.read().await
    }

    /// Refuses writes placed under a ring older than `ring_version` from now on, once the
    /// writes already admitted have landed.
    pub async fn raise(&self, ring_version: u64) {
        let mut v = self.version.write().await;
        *v = (*v).max(ring_version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raise_waits_for_admitted_writes_and_then_refuses_older_ones() {
        let fence = std::sync::Arc::new(Fence::default());
        let admitted = fence.admit(1).await.expect("admitted");
        let raising = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.raise(2).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !raising.is_finished(),
            "the raise waits for the admitted write"
        );
        drop(admitted);
        raising.await.expect("raised");
        assert_eq!(
            fence.admit(1).await.err(),
            Some(Failure::StaleRing { ring_version: 2 })
        );
        assert_eq!(fence.refused(), 1);
        assert!(fence.admit(2).await.is_ok());
        assert!(fence.admit(3).await.is_ok(), "a newer ring is always taken");
        fence.raise(1).await;
        assert!(fence.admit(1).await.is_err(), "the fence never goes down");
    }
}
