//! Claim: the next ring when members join or leave, moving as few partitions as it can.
//!
//! As in Riak's claim (after the Dynamo paper's strategy 3: equal partitions, each node owning
//! a share), a node's share is `ring_size / nodes`, some taking one more. Only two kinds of
//! partition move: those of nodes that leave, and the surplus of nodes above their share. Each
//! goes to the node furthest below its share, preferring a partition whose `spacing - 1`
//! neighbours on either side are not already that node's, so that a preference list of up to
//! `spacing` nodes walks over distinct owners without skipping (skipping is still correct —
//! the walk never lists a node twice — but it concentrates replicas). When no spaced
//! partition is left, the spacing is given up for that move rather than the balance.

use std::collections::{BTreeMap, BTreeSet};

/// The owners after a change: `owners` is the ring in force, `members` who should own
/// partitions from now on (not empty), `spacing` the largest `n` the ring should serve well.
pub fn claim(owners: &[String], members: &BTreeSet<String>, spacing: usize) -> Vec<String> {
    let size = owners.len();
    if members.is_empty() || size == 0 {
        return owners.to_vec();
    }
    let mut owners = owners.to_vec();
    let mut count: BTreeMap<&str, usize> = members.iter().map(|m| (m.as_str(), 0)).collect();
    for o in &owners {
        if let Some(c) = count.get_mut(o.as_str()) {
            *c += 1;
        }
    }
    // Shares: ring_size / nodes each, one more for the `extra` nodes that already hold the
    // most (so they keep what they have).
    let base = size / members.len();
    let extra = size % members.len();
    let mut by_count: Vec<(&str, usize)> = count.iter().map(|(m, c)| (*m, *c)).collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let share: BTreeMap<String, usize> = by_count
        .iter()
        .enumerate()
        .map(|(i, (m, _))| ((*m).to_owned(), base + usize::from(i < extra)))
        .collect();
    let mut held: BTreeMap<String, usize> =
        count.into_iter().map(|(m, c)| (m.to_owned(), c)).collect();
    // The node furthest below its share takes the next partition.
    while let Some((taker, _)) = share
        .iter()
        .map(|(m, s)| (m.clone(), s.saturating_sub(held[m])))
        .filter(|(_, deficit)| *deficit > 0)
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
    {
        // Candidates: partitions of departed nodes first, then the surplus of the node most
        // above its share; spaced ones before the rest.
        let surplus = |o: &String| {
            share
                .get(o)
                .map_or(usize::MAX, |s| held[o].saturating_sub(*s))
        };
        let spaced = |p: usize| {
            (1..spacing).all(|d| {
                owners[(p + d) % size] != taker && owners[(p + size - d % size) % size] != taker
            })
        };
        let best = (0..size)
            .filter(|&p| surplus(&owners[p]) > 0)
            .max_by(|&a, &b| {
                (spaced(a), surplus(&owners[a]), std::cmp::Reverse(a)).cmp(&(
                    spaced(b),
                    surplus(&owners[b]),
                    std::cmp::Reverse(b),
                ))
            });
        let Some(p) = best else {
            break;
        };
        if let Some(h) = held.get_mut(&owners[p]) {
            *h -= 1;
        }
        owners[p] = taker.clone();
        if let Some(h) = held.get_mut(&taker) {
            *h += 1;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{round_robin, Ring};
    use proptest::prelude::*;

    fn ids(range: std::ops::RangeInclusive<usize>) -> BTreeSet<String> {
        range.map(|i| format!("n{i}")).collect()
    }

    fn moved(a: &[String], b: &[String]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    fn spread(owners: &[String]) -> usize {
        let ring = Ring::from_owners(owners.to_vec());
        let counts: Vec<u32> = ring.ownership().iter().map(|o| o.partitions).collect();
        (counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)) as usize
    }

    #[test]
    fn a_join_moves_only_the_new_nodes_share_and_keeps_balance() {
        let before = round_robin(ids(1..=3).into_iter().collect(), 64);
        let after = claim(&before, &ids(1..=4), 3);
        assert_eq!(moved(&before, &after), 16, "a fourth node takes a quarter");
        assert!(after.iter().filter(|o| *o == "n4").count() == 16);
        assert!(spread(&after) <= 1);
        // Everything that moved went to the new node.
        assert!(before.iter().zip(&after).all(|(b, a)| b == a || a == "n4"));
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions() {
        let before = round_robin(ids(1..=5).into_iter().collect(), 64);
        let after = claim(
            &before,
            &(ids(1..=5).into_iter().filter(|m| m != "n2").collect()),
            3,
        );
        let had = before.iter().filter(|o| *o == "n2").count();
        assert_eq!(moved(&before, &after), had);
        assert!(!after.contains(&"n2".to_owned()));
        assert!(spread(&after) <= 1);
    }

    #[test]
    fn the_new_nodes_partitions_are_spaced_so_walks_do_not_skip() {
        let before = round_robin(ids(1..=3).into_iter().collect(), 64);
        let after = claim(&before, &ids(1..=5), 3);
        let ring = Ring::from_owners(after.clone());
        // Most preference lists of 3 are the next 3 partitions' owners.
        let direct = (0..64u32)
            .filter(|&p| {
                let three: BTreeSet<&str> = (0..3).map(|d| ring.owner((p + d) % 64)).collect();
                three.len() == 3
            })
            .count();
        assert!(
            direct >= 48,
            "only {direct} of 64 walks are direct: {after:?}"
        );
    }

    proptest! {
        #[test]
        fn any_change_balances_and_moves_no_more_than_needed(
            start in 1usize..=7, joins in 0usize..=3, leaves in 0usize..=3, bits in 3u32..=8,
        ) {
            let size = 1u32 << bits;
            prop_assume!(start <= size as usize);
            let before = round_robin(ids(1..=start).into_iter().collect(), size);
            let leaves = leaves.min(start - 1);
            let members: BTreeSet<String> = ids(leaves + 1..=start + joins);
            prop_assume!(members.len() <= size as usize);
            let after = claim(&before, &members, 3);
            prop_assert_eq!(after.len(), before.len());
            prop_assert!(after.iter().all(|o| members.contains(o)));
            prop_assert!(spread(&after) <= 1, "{:?}", after);
            // Lower bound of moves: the leavers' partitions plus what the joiners must get.
            let leavers_had = before.iter().filter(|o| !members.contains(*o)).count();
            let share = size as usize / members.len();
            let joiners_need = joins * share;
            prop_assert!(moved(&before, &after) <= leavers_had.max(joiners_need) + joins + leaves + 1,
                "moved {} leavers_had {} joiners_need {}", moved(&before, &after), leavers_had, joiners_need);
            // Every preference list of 3 names distinct nodes (the walk's guarantee).
            let ring = Ring::from_owners(after);
            for p in 0..size {
                let list = ring.preference_list(p, 3);
                let set: BTreeSet<&&str> = list.iter().collect();
                prop_assert_eq!(set.len(), list.len());
            }
        }
    }
}
