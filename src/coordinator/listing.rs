//! Listing keys and buckets through a coverage plan, as Riak does: every partition of the
//! ring in force is asked once, of one replica that is up, with the partitions grouped by
//! node so that each node walks its keydir once. Answers arrive per node, for streaming.
//!
//! Expensive by nature (every node reads through every key of the listed bucket); the API
//! says so, as Riak does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Coordinator;
use crate::net::Net;
use crate::replica::Replica;
use crate::ring::Ring;
use crate::rpc::{self, Failure, Request, Response};

/// Which partitions each node is asked for: the first replica of each partition (of `n`)
/// that is not down. `Err(p)`: no replica of partition `p` is up.
pub fn plan(
    ring: &Ring,
    n: usize,
    is_down: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, BTreeSet<u32>>, u32> {
    let mut plan: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for p in 0..ring.ring_size() {
        let node = ring
            .preference_list(p, n)
            .into_iter()
            .find(|node| !is_down(node))
            .ok_or(p)?;
        plan.entry(node.to_owned()).or_default().insert(p);
    }
    Ok(plan)
}

/// One node's answer to a listing: names, or why it could not give them.
pub type Share = Result<Vec<String>, Failure>;

impl Coordinator {
    /// Lists the live keys of `bucket` (with `None`: the buckets with a live key). The
    /// receiver yields one share per node of the plan, each within `timeout`.
    pub fn list(
        &self,
        bucket: Option<String>,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<Share>, Failure> {
        let view = self.view();
        let n = match &bucket {
            Some(b) => view.meta.bucket(b).n,
            // Every bucket's keys are on its partitions' first replicas: look there first.
            None => view.meta.max_n,
        };
        let plan = plan(&view.ring, usize::from(n), |node| self.is_down(node)).map_err(|_| {
            Failure::Insufficient {
                needed: 1,
                acked: 0,
                pending: 0,
            }
        })?;
        let (tx, rx) = mpsc::channel(plan.len().max(1));
        for (node, partitions) in plan {
            let asker = Asker {
                me: self.me.clone(),
                net: self.net.clone(),
                replica: self.replica.clone(),
            };
            let (tx, bucket) = (tx.clone(), bucket.clone());
            tokio::spawn(async move {
                let share = asker.ask(&node, bucket, partitions, timeout).await;
                let _ = tx.send(share).await;
            });
        }
        Ok(rx)
    }

    /// This node's share of a listing (the internode service's answer).
    pub async fn list_local(&self, bucket: Option<String>, partitions: Vec<u32>) -> Share {
        list_replica(
            self.replica.clone(),
            bucket,
            partitions.into_iter().collect(),
        )
        .await
    }
}

async fn list_replica(
    replica: Arc<Replica>,
    bucket: Option<String>,
    partitions: BTreeSet<u32>,
) -> Share {
    tokio::task::spawn_blocking(move || replica.list(bucket.as_deref(), &partitions))
        .await
        .map_err(|e| Failure::Internal(format!("listing task failed: {e}")))?
        .map_err(Failure::from)
}

/// What one share's task needs, owned.
struct Asker {
    me: String,
    net: Arc<Net>,
    replica: Arc<Replica>,
}

impl Asker {
    async fn ask(
        &self,
        node: &str,
        bucket: Option<String>,
        partitions: BTreeSet<u32>,
        timeout: Duration,
    ) -> Share {
        if node == self.me {
            return tokio::time::timeout(
                timeout,
                list_replica(self.replica.clone(), bucket, partitions),
            )
            .await
            .unwrap_or(Err(Failure::Insufficient {
                needed: 1,
                acked: 0,
                pending: 1,
            }));
        }
        let request = Request::List {
            bucket,
            partitions: partitions.into_iter().collect(),
        };
        match rpc::call(&self.net, node, &request, timeout).await {
            Ok(Response::Names(share)) => share,
            Ok(_) => Err(Failure::Internal(format!(
                "{node} answered a listing oddly"
            ))),
            Err(e) => {
                tracing::debug!(peer = %node, error = %e, "listing share failed");
                Err(Failure::Insufficient {
                    needed: 1,
                    acked: 0,
                    pending: u8::from(e.is_timeout()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_is_asked_once_of_a_replica_that_is_up() {
        let ring = Ring::new(vec!["a".into(), "b".into(), "c".into()], 8);
        let all_up = plan(&ring, 3, |_| false).expect("covered");
        let asked: Vec<u32> = all_up.values().flatten().copied().collect();
        assert_eq!(asked.len(), 8);
        assert_eq!(asked.iter().collect::<BTreeSet<_>>().len(), 8);
        // With b down, its partitions go to the next replica; none to b.
        let b_down = plan(&ring, 3, |n| n == "b").expect("covered");
        assert!(!b_down.contains_key("b"));
        assert_eq!(b_down.values().map(BTreeSet::len).sum::<usize>(), 8);
        for (node, partitions) in &b_down {
            for &p in partitions {
                assert!(ring.preference_list(p, 3).contains(&node.as_str()));
            }
        }
        // n = 1 and its one replica down: that partition cannot be covered.
        assert!(plan(&ring, 1, |n| n == "a").is_err());
    }
}
