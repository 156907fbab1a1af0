//! Read repair: after a read has been answered, wait (bounded) for the replicas that had not
//! answered yet, merge every answer, and push the merged state to each replica whose answer
//! was older or empty. Replicas that never answered are left to hinted handoff and
//! anti-entropy.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use super::Reader;
use crate::causal::KeyState;
use crate::rpc::Failure;

/// The answers of one read, as they arrive.
#[derive(Default)]
pub struct Repair {
    answers: Vec<(String, Option<KeyState>)>,
    merged: Option<KeyState>,
}

impl Repair {
    pub fn answer(&mut self, node: String, state: Option<KeyState>) {
        self.merged = match (self.merged.take(), &state) {
            (Some(acc), Some(s)) => Some(acc.merge(s)),
            (acc, s) => acc.or_else(|| s.clone()),
        };
        self.answers.push((node, state));
    }

    /// The merge of every answer so far.
    pub fn merged(&self) -> Option<&KeyState> {
        self.merged.as_ref()
    }

    /// The replicas whose answer lacks something the merged state has.
    fn stale(&self) -> Vec<&str> {
        match &self.merged {
            None => Vec::new(),
            Some(merged) => self
                .answers
                .iter()
                .filter(|(_, state)| state.as_ref() != Some(merged))
                .map(|(node, _)| node.as_str())
                .collect(),
        }
    }

    /// Collects the late answers for up to `wait`, then brings every stale replica up to date.
    /// Returns how many replicas it repaired.
    pub async fn finish(
        mut self,
        mut late: impl Stream<Item = (String, Result<Option<KeyState>, Failure>)> + Unpin,
        reader: &Reader,
        wait: Duration,
    ) -> u64 {
        let deadline = Instant::now() + wait;
        while let Ok(Some((node, answer))) =
            tokio::time::timeout_at(deadline.into(), late.next()).await
        {
            if let Ok(state) = answer {
                self.answer(node, state);
            }
        }
        let Some(merged) = self.merged.clone() else {
            return 0;
        };
        let mut repaired = 0;
        for node in self.stale() {
            match reader.push(node, &merged, wait).await {
                Ok(()) => {
                    repaired += 1;
                    tracing::debug!(peer = node, "read repair");
                }
                Err(e) => tracing::debug!(peer = node, error = ?e, "read repair failed"),
            }
        }
        repaired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Actor, DvvSet, Sibling, VersionVector};

    fn state(values: &[&str]) -> KeyState {
        let mut set = DvvSet::new();
        for (i, v) in values.iter().enumerate() {
            set = set.update(
                &VersionVector::new(),
                Sibling::value(v.as_bytes().to_vec(), "text/plain", i as u64),
                &Actor::new(format!("a{i}")),
            );
        }
        KeyState::Siblings(set)
    }

    #[test]
    fn replicas_with_older_or_no_state_are_stale() {
        let full = state(&["x", "y"]);
        let mut r = Repair::default();
        r.answer("n1".into(), Some(full.clone()));
        r.answer("n2".into(), Some(state(&["x"])));
        r.answer("n3".into(), None);
        assert_eq!(r.merged(), Some(&full));
        assert_eq!(r.stale(), ["n2", "n3"]);
    }

    #[test]
    fn nothing_to_repair_when_no_replica_has_the_key() {
        let mut r = Repair::default();
        r.answer("n1".into(), None);
        r.answer("n2".into(), None);
        assert!(r.stale().is_empty());
    }
}
