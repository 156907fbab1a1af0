//! The cluster's metadata as plain data, and the commands that change it: what the Raft log
//! replicates and every node applies in the same order (`apply` is deterministic, with no
//! I/O, so every node computes the same ring from the same log).
//!
//! A membership change runs as one *transition* from the ring in force (`owners`) to the
//! next (`Transition::next`), under a new `ring_version`:
//! 1. it starts when a join, leave or replace is applied and no transition is running (one
//!    asked for during a transition waits for its end, and changes that wait are planned
//!    together);
//! 2. while it runs, writes go to the replicas under both rings (`w` in each), reads to the
//!    ring in force; every old replica of a partition whose replica set gains a node streams
//!    the partition to the newcomers and reports `HandedOff`;
//! 3. when no partition has a sender left, it commits: `next` is in force, `ring_version` is
//!    bumped again, nodes that lost partitions drop them, joining nodes become valid and
//!    leaving nodes left.
//!
//! A sender that is dead may be `Excused`: its copies are missing from the stream, the other
//! old replicas' are not (and a write needs `w` of them), and when it comes back it pushes
//! what it holds to the new owners before it drops anything.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::buckets::{PropsSet, Settings};
use crate::config::{BucketDefaults, BucketOverride, BucketProps};
use crate::ring::{claim::claim, Ring};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Joining,
    Valid,
    Leaving,
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: MemberState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub next: Vec<String>,
    /// Partition → the old replicas that have not handed it to its newcomers yet.
    pub pending: BTreeMap<u32, BTreeSet<String>>,
    /// Senders excused because they were dead (they push before dropping when back).
    pub excused: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Fingerprint of the settings the cluster was made with; peers compare it on connect.
    pub settings_hash: u64,
    pub ring_size: u32,
    /// The largest bucket `n`: how many replicas a partition's data moves to.
    pub max_n: u8,
    pub members: BTreeMap<String, MemberInfo>,
    /// The ring in force: owner of each partition. Empty until bootstrapped.
    pub owners: Vec<String>,
    /// Bumped when a transition starts and when it commits; requests carry it.
    pub ring_version: u64,
    pub transition: Option<Transition>,
    /// Replacements asked for and not yet planned: old → new.
    pub replacing: BTreeMap<String, String>,
    pub defaults: BucketDefaults,
    pub buckets: BTreeMap<String, BucketOverride>,
    /// Bucket properties set over the API, over `buckets` and `defaults` (absent in
    /// metadata written before they existed).
    #[serde(default)]
    pub props: BTreeMap<String, PropsSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The cluster's first metadata, from the v1 config every first member shares; applied
    /// only to an empty state (each first member may propose it).
    Bootstrap(Box<ClusterMeta>),
    Join {
        id: String,
        peer_addr: SocketAddr,
        http_addr: SocketAddr,
    },
    Leave {
        id: String,
    },
    Replace {
        old: String,
        new: String,
    },
    HandedOff {
        ring_version: u64,
        partition: u32,
        node: String,
    },
    Excuse {
        ring_version: u64,
        node: String,
    },
    /// Sets the named properties of a bucket (over what was set before).
    SetProps {
        bucket: String,
        props: PropsSet,
    },
    /// Forgets the properties set over the API: the config's settings apply again.
    ClearProps {
        bucket: String,
    },
}

/// Why a command was not applied; the API answers it as a 409 or 400.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("no member {0:?}")]
    UnknownMember(String),
    #[error("{0}")]
    Invalid(String),
    /// A change before the first members' metadata is in the log (it would be replaced by it).
    #[error("the cluster's metadata is not bootstrapped yet; retry in a moment")]
    NotBootstrapped,
}

impl ClusterMeta {
    /// The v1 start: `members` own the ring round robin, all valid.
    pub fn bootstrap(
        settings_hash: u64,
        ring_size: u32,
        members: impl IntoIterator<Item = (String, SocketAddr, SocketAddr)>,
        defaults: BucketDefaults,
        buckets: BTreeMap<String, BucketOverride>,
    ) -> ClusterMeta {
        let members: BTreeMap<String, MemberInfo> = members
            .into_iter()
            .map(|(id, peer_addr, http_addr)| {
                let info = MemberInfo {
                    peer_addr,
                    http_addr,
                    state: MemberState::Valid,
                };
                (id, info)
            })
            .collect();
        let max_n = buckets
            .values()
            .filter_map(|b| b.n)
            .chain([defaults.n])
            .max()
            .unwrap_or(1);
        ClusterMeta {
            settings_hash,
            ring_size,
            max_n,
            owners: crate::ring::round_robin(members.keys().cloned().collect(), ring_size),
            members,
            ring_version: 1,
            transition: None,
            replacing: BTreeMap::new(),
            defaults,
            buckets,
            props: BTreeMap::new(),
        }
    }

    /// A bucket's settings, each quorum as it was given.
    pub fn bucket_settings(&self, bucket: &str) -> Settings {
        Settings::layered(
            &self.defaults,
            self.buckets.get(bucket),
            self.props.get(bucket),
        )
    }

    /// A bucket's settings as requests use them.
    pub fn bucket(&self, bucket: &str) -> BucketProps {
        self.bucket_settings(bucket).resolve()
    }

    /// The `n` of every bucket whose `n` differs from the default's.
    pub fn bucket_n(&self) -> BTreeMap<String, u8> {
        self.buckets
            .keys()
            .chain(self.props.keys())
            .map(|b| (b.clone(), self.bucket_settings(b).n))
            .filter(|(_, n)| *n != self.defaults.n)
            .collect()
    }

    pub fn is_bootstrapped(&self) -> bool {
        !self.owners.is_empty()
    }

    pub fn ring(&self) -> Ring {
        Ring::from_owners(self.owners.clone())
    }

    /// The ring a running transition moves to.
    pub fn next_ring(&self) -> Option<Ring> {
        self.transition
            .as_ref()
            .map(|t| Ring::from_owners(t.next.clone()))
    }

    /// Partition hand-offs still to do.
    pub fn transfers_pending(&self) -> usize {
        self.transition
            .as_ref()
            .map_or(0, |t| t.pending.values().map(BTreeSet::len).sum())
    }

    /// Members that are not gone, in id order.
    pub fn live_members(&self) -> impl Iterator<Item = (&String, &MemberInfo)> {
        self.members
            .iter()
            .filter(|(_, m)| m.state != MemberState::Left)
    }

    pub fn apply(&mut self, command: Command) -> Result<(), Refusal> {
        if !self.is_bootstrapped() && !matches!(command, Command::Bootstrap(_)) {
            return Err(Refusal::NotBootstrapped);
        }
        match command {
            Command::Bootstrap(meta) => {
                if !self.is_bootstrapped() {
                    *self = *meta;
                }
                Ok(())
            }
            Command::Join {
                id,
                peer_addr,
                http_addr,
            } => {
                if let Some(m) = self.members.get(&id) {
                    if m.state != MemberState::Left {
                        // Asked again (a retry): it is in already.
                        return Ok(());
                    }
                }
                if self
                    .live_members()
                    .any(|(other, m)| *other != id && m.peer_addr == peer_addr)
                {
                    return Err(Refusal::Invalid(format!(
                        "peer_addr {peer_addr} is already a member's"
                    )));
                }
                let state = MemberState::Joining;
                let info = MemberInfo {
                    peer_addr,
                    http_addr,
                    state,
                };
                self.members.insert(id, info);
                self.plan();
                Ok(())
            }
            Command::Leave { id } => {
                let m = self
                    .members
                    .get(&id)
                    .ok_or_else(|| Refusal::UnknownMember(id.clone()))?;
                if matches!(m.state, MemberState::Leaving | MemberState::Left) {
                    return Ok(());
                }
                let staying = self.owning().iter().filter(|o| **o != id).count();
                if staying < usize::from(self.max_n) {
                    return Err(Refusal::Invalid(format!(
                        "{id} cannot leave: {staying} nodes would be left for buckets with n = {}",
                        self.max_n
                    )));
                }
                if !self.owners.contains(&id) {
                    // It owns nothing in the ring in force: a join given up (the node died
                    // before its transfer finished, say). Nothing moves away from it; a
                    // transition moving partitions to it is planned again without it.
                    self.set_state(&id, MemberState::Left);
                    self.replacing.retain(|old, new| *old != id && *new != id);
                    if self
                        .transition
                        .as_ref()
                        .is_some_and(|t| t.next.contains(&id))
                    {
                        self.transition = None;
                        // Reports for the cancelled transition no longer count.
                        self.ring_version += 1;
                    }
                    self.plan();
                    return Ok(());
                }
                self.set_state(&id, MemberState::Leaving);
                self.plan();
                Ok(())
            }
            Command::Replace { old, new } => {
                let o = self
                    .members
                    .get(&old)
                    .ok_or_else(|| Refusal::UnknownMember(old.clone()))?;
                let n = self
                    .members
                    .get(&new)
                    .ok_or_else(|| Refusal::UnknownMember(new.clone()))?;
                if old == new || o.state == MemberState::Left || n.state == MemberState::Left {
                    return Err(Refusal::Invalid(format!(
                        "cannot replace {old} with {new}: both must be members, and differ"
                    )));
                }
                // A node that owns nothing yet takes exactly the old one's partitions; one
                // that already claimed a share makes this a leave, rebalanced by claim.
                let owns = self.owners.contains(&new)
                    || self
                        .transition
                        .as_ref()
                        .is_some_and(|t| t.next.contains(&new));
                if !owns {
                    self.replacing.insert(old.clone(), new);
                }
                self.set_state(&old, MemberState::Leaving);
                self.plan();
                Ok(())
            }
            Command::HandedOff {
                ring_version,
                partition,
                node,
            } => {
                if ring_version == self.ring_version {
                    if let Some(t) = &mut self.transition {
                        if let Some(senders) = t.pending.get_mut(&partition) {
                            senders.remove(&node);
                        }
                    }
                    self.commit_if_done();
                }
                Ok(())
            }
            Command::Excuse { ring_version, node } => {
                if ring_version == self.ring_version {
                    if let Some(t) = &mut self.transition {
                        for senders in t.pending.values_mut() {
                            senders.remove(&node);
                        }
                        t.excused.insert(node);
                    }
                    self.commit_if_done();
                }
                Ok(())
            }
            Command::SetProps { bucket, props } => {
                let set = self.props.get(&bucket).cloned().unwrap_or_default();
                let set = set.overlay(&props);
                Settings::layered(&self.defaults, self.buckets.get(&bucket), Some(&set))
                    .check(self.max_n)
                    .map_err(Refusal::Invalid)?;
                self.props.insert(bucket, set);
                Ok(())
            }
            Command::ClearProps { bucket } => {
                self.props.remove(&bucket);
                Ok(())
            }
        }
    }

    fn set_state(&mut self, id: &str, state: MemberState) {
        if let Some(m) = self.members.get_mut(id) {
            m.state = state;
        }
    }

    /// The members that should own partitions: joining and valid ones.
    fn owning(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, m)| matches!(m.state, MemberState::Joining | MemberState::Valid))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Starts the next transition, if none runs and the members who should own partitions
    /// differ from those who do.
    fn plan(&mut self) {
        if self.transition.is_some() || !self.is_bootstrapped() {
            return;
        }
        let mut next = self.owners.clone();
        for (old, new) in std::mem::take(&mut self.replacing) {
            for o in next.iter_mut().filter(|o| **o == old) {
                o.clone_from(&new);
            }
        }
        let owning = self.owning();
        if owning.is_empty() {
            return;
        }
        let next = claim(&next, &owning, usize::from(self.max_n));
        if next == self.owners {
            self.settle_states();
            return;
        }
        let (old, new) = (self.ring(), Ring::from_owners(next.clone()));
        let n = usize::from(self.max_n);
        let mut pending = BTreeMap::new();
        for p in 0..self.ring_size {
            let before = old.preference_list(p, n);
            let after = new.preference_list(p, n);
            if after.iter().any(|a| !before.contains(a)) {
                pending.insert(p, before.iter().map(|s| (*s).to_owned()).collect());
            }
        }
        self.ring_version += 1;
        self.transition = Some(Transition {
            next,
            pending,
            excused: BTreeSet::new(),
        });
        self.commit_if_done();
    }

    fn commit_if_done(&mut self) {
        let done = self
            .transition
            .as_ref()
            .is_some_and(|t| t.pending.values().all(BTreeSet::is_empty));
        if !done {
            return;
        }
        if let Some(t) = self.transition.take() {
            self.owners = t.next;
            self.ring_version += 1;
        }
        self.settle_states();
        self.plan();
    }

    /// Joining nodes that own partitions are valid; leaving nodes that own none have left.
    fn settle_states(&mut self) {
        let owners: BTreeSet<&String> = self.owners.iter().collect();
        for (id, m) in &mut self.members {
            match m.state {
                MemberState::Joining if owners.contains(id) => m.state = MemberState::Valid,
                MemberState::Leaving if !owners.contains(id) => m.state = MemberState::Left,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn three() -> ClusterMeta {
        let members = (1..=3).map(|i| (format!("n{i}"), addr(9100 + i), addr(8100 + i)));
        ClusterMeta::bootstrap(7, 64, members, BucketDefaults::default(), BTreeMap::new())
    }

    #[test]
    fn a_change_before_the_bootstrap_is_refused_not_wiped_out_by_it() {
        let mut meta = ClusterMeta::default();
        let early = Command::Join {
            id: "n4".into(),
            peer_addr: addr(9104),
            http_addr: addr(8104),
        };
        assert_eq!(meta.apply(early), Err(Refusal::NotBootstrapped));
        assert_eq!(meta.apply(Command::Bootstrap(Box::new(three()))), Ok(()));
        assert_eq!(meta, three());
        join(&mut meta, 4);
        assert_eq!(state(&meta, "n4"), MemberState::Joining);
    }

    fn join(meta: &mut ClusterMeta, i: u16) {
        let command = Command::Join {
            id: format!("n{i}"),
            peer_addr: addr(9100 + i),
            http_addr: addr(8100 + i),
        };
        assert_eq!(meta.apply(command), Ok(()));
    }

    /// Every sender of the running transition reports, as the handoff would.
    fn hand_off(meta: &mut ClusterMeta, t: Transition) {
        let version = meta.ring_version;
        for (p, senders) in t.pending {
            for node in senders {
                let c = Command::HandedOff {
                    ring_version: version,
                    partition: p,
                    node,
                };
                assert_eq!(meta.apply(c), Ok(()));
            }
        }
    }

    /// Transitions run until none is left (changes that waited start by themselves).
    fn hand_off_all(meta: &mut ClusterMeta) {
        while let Some(t) = meta.transition.clone() {
            hand_off(meta, t);
        }
    }

    fn state(meta: &ClusterMeta, id: &str) -> MemberState {
        meta.members[id].state
    }

    #[test]
    fn a_join_starts_a_transition_that_commits_when_every_sender_handed_off() {
        let mut meta = three();
        join(&mut meta, 4);
        assert_eq!(state(&meta, "n4"), MemberState::Joining);
        assert_eq!(meta.ring_version, 2);
        let t = meta.transition.clone().expect("a transition");
        assert!(t.next.iter().filter(|o| *o == "n4").count() == 16);
        assert!(!meta.owners.contains(&"n4".to_owned()), "not in force yet");
        // Every partition whose replica set gains n4 waits for its three old replicas.
        assert!(t.pending.values().all(|s| s.len() == 3));
        hand_off_all(&mut meta);
        assert_eq!(meta.ring_version, 3);
        assert_eq!(state(&meta, "n4"), MemberState::Valid);
        assert_eq!(meta.owners, t.next);
    }

    #[test]
    fn a_joining_node_that_leaves_is_dropped_from_the_running_transition() {
        let mut meta = three();
        join(&mut meta, 4);
        join(&mut meta, 5);
        let before = meta.owners.clone();
        // n4's join runs (n5 waits for it); n4 dies and the operator gives up on it.
        assert_eq!(meta.apply(Command::Leave { id: "n4".into() }), Ok(()));
        assert_eq!(state(&meta, "n4"), MemberState::Left);
        assert_eq!(meta.owners, before, "the ring in force never had n4");
        let t = meta
            .transition
            .clone()
            .expect("n5's join is planned at once");
        assert!(!t.next.contains(&"n4".to_owned()));
        assert!(t.next.contains(&"n5".to_owned()));
        assert_eq!(meta.ring_version, 4, "cancelled, then planned again");
        hand_off_all(&mut meta);
        assert_eq!(state(&meta, "n5"), MemberState::Valid);
        assert!(!meta.owners.contains(&"n4".to_owned()));
    }

    #[test]
    fn a_stale_hand_off_is_ignored_and_a_retried_join_is_one_join() {
        let mut meta = three();
        join(&mut meta, 4);
        join(&mut meta, 4);
        assert_eq!(meta.ring_version, 2);
        let (&p, senders) = meta
            .transition
            .as_ref()
            .and_then(|t| t.pending.iter().next())
            .expect("pending");
        let node = senders.iter().next().cloned().expect("a sender");
        let stale = Command::HandedOff {
            ring_version: 1,
            partition: p,
            node: node.clone(),
        };
        assert_eq!(meta.apply(stale), Ok(()));
        assert!(meta
            .transition
            .as_ref()
            .is_some_and(|t| t.pending[&p].contains(&node)));
    }

    #[test]
    fn two_joins_at_once_run_one_after_the_other() {
        let mut meta = three();
        join(&mut meta, 4);
        join(&mut meta, 5);
        assert_eq!(state(&meta, "n5"), MemberState::Joining);
        let first = meta.transition.clone().expect("first");
        assert!(
            !first.next.contains(&"n5".to_owned()),
            "planned after the running one"
        );
        // Commit the first; the second starts by itself.
        hand_off(&mut meta, first);
        assert!(meta
            .transition
            .as_ref()
            .is_some_and(|t| t.next.contains(&"n5".to_owned())));
        hand_off_all(&mut meta);
        let ring = meta.ring();
        assert!(ring
            .ownership()
            .iter()
            .all(|o| (12..=13).contains(&o.partitions)));
    }

    #[test]
    fn leave_hands_a_nodes_partitions_over_then_marks_it_left() {
        let mut meta = three();
        join(&mut meta, 4);
        hand_off_all(&mut meta);
        assert_eq!(meta.apply(Command::Leave { id: "n1".into() }), Ok(()));
        assert_eq!(state(&meta, "n1"), MemberState::Leaving);
        hand_off_all(&mut meta);
        assert_eq!(state(&meta, "n1"), MemberState::Left);
        assert!(!meta.owners.contains(&"n1".to_owned()));
        // Three are left for n = 3: no more may go.
        assert!(matches!(
            meta.apply(Command::Leave { id: "n2".into() }),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            meta.apply(Command::Leave { id: "n9".into() }),
            Err(Refusal::UnknownMember(_))
        ));
    }

    #[test]
    fn replace_gives_the_new_node_exactly_the_old_ones_partitions() {
        let mut meta = three();
        join(&mut meta, 4);
        hand_off_all(&mut meta);
        join(&mut meta, 5);
        // n5 joined while nothing ran and took a share by claim: replacing n2 with it is n2
        // leaving, its partitions rebalanced over the four that stay.
        hand_off_all(&mut meta);
        assert_eq!(
            meta.apply(Command::Replace {
                old: "n2".into(),
                new: "n5".into()
            }),
            Ok(())
        );
        hand_off_all(&mut meta);
        assert_eq!(state(&meta, "n2"), MemberState::Left);
        assert!(meta.ring().ownership().iter().all(|o| o.partitions == 16));
        // A node that owns nothing yet takes exactly the old one's partitions.
        let mut meta = three();
        join(&mut meta, 4);
        // n6 waits for n4's transition; replacing n3 by it is planned with its join.
        join(&mut meta, 6);
        assert_eq!(
            meta.apply(Command::Replace {
                old: "n3".into(),
                new: "n6".into()
            }),
            Ok(())
        );
        let had: Vec<bool> = meta
            .transition
            .as_ref()
            .map(|t| t.next.iter().map(|o| o == "n3").collect())
            .unwrap_or_default();
        hand_off_all(&mut meta);
        let now: Vec<bool> = meta.owners.iter().map(|o| o == "n6").collect();
        assert_eq!(had, now, "n6 owns exactly what n3 owned");
        assert_eq!(state(&meta, "n3"), MemberState::Left);
        assert_eq!(state(&meta, "n6"), MemberState::Valid);
    }

    #[test]
    fn an_excused_sender_no_longer_blocks_the_commit() {
        let mut meta = three();
        join(&mut meta, 4);
        let version = meta.ring_version;
        assert_eq!(
            meta.apply(Command::Excuse {
                ring_version: version,
                node: "n2".into()
            }),
            Ok(())
        );
        let t = meta.transition.clone().expect("still running");
        assert!(t.pending.values().all(|s| !s.contains("n2")));
        assert!(t.excused.contains("n2"));
    }

    #[test]
    fn bucket_properties_set_are_checked_kept_and_cleared() {
        let mut meta = three();
        let set = |props: PropsSet| Command::SetProps {
            bucket: "carts".into(),
            props,
        };
        assert!(meta
            .apply(set(PropsSet {
                n: Some(1),
                ..PropsSet::default()
            }))
            .is_ok());
        assert_eq!(meta.bucket("carts").n, 1);
        assert_eq!(meta.bucket_n().get("carts"), Some(&1));
        // r = 2 cannot be met with n = 1: refused, and nothing changes.
        assert!(matches!(
            meta.apply(set(PropsSet {
                r: Some(crate::config::Quorum::N(2)),
                ..PropsSet::default()
            })),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(meta.bucket("carts").r, 1);
        meta.apply(Command::ClearProps {
            bucket: "carts".into(),
        })
        .expect("clear");
        assert_eq!(meta.bucket("carts").n, 3);
        assert!(meta.bucket_n().is_empty());
    }
}
