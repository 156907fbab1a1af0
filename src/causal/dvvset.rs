//! Dotted version vector sets (Almeida, Baquero, Gonçalves, Preguiça, Fonte: "Scalable and
//! Accurate Causality Tracking for Eventually Consistent Stores", 2014), as Riak's `dvvset`.
//!
//! A DVVSet holds, per actor (a replica, never a client), a counter `n` and the values that
//! actor wrote that are still current, newest first: the value at index `i` carries the *dot*
//! `(actor, n - i)`. The causal history it represents is every dot `(a, k)` with `k <= n_a`;
//! a dot in the history but without a value was overwritten. Because dots are unique events,
//! two states can always be merged exactly: keep a value unless the other side's history
//! includes its dot while no longer holding it.
//!
//! Unlike Riak's version, values without a dot ("anonymous" values) do not exist here: every
//! value enters through [`DvvSet::update`] on a replica, which gives it a dot.

use std::collections::BTreeMap;
use std::fmt;

/// Who creates events: a replica's identity (node id plus incarnation), never a client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor(String);

impl Actor {
    pub fn new(id: impl Into<String>) -> Self {
        Actor(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A causal context: for each actor, how many of its events are known. What a client gets
/// with a read (as an opaque token) and sends back with its next write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector(BTreeMap<Actor, u64>);

impl VersionVector {
    pub fn new() -> Self {
        VersionVector::default()
    }

    pub fn get(&self, actor: &Actor) -> u64 {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Records that events of `actor` up to `counter` are known (never lowers a counter).
    pub fn witness(&mut self, actor: Actor, counter: u64) {
        let known = self.0.entry(actor).or_insert(0);
        *known = (*known).max(counter);
    }

    pub fn covers(&self, actor: &Actor, counter: u64) -> bool {
        self.get(actor) >= counter
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Actor, u64)> {
        self.0.iter().map(|(a, n)| (a, *n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (actor, n) in iter {
            vv.witness(actor, n);
        }
        vv
    }
}

/// One actor's part of a DVVSet. Invariant: `values.len() <= counter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry<V> {
    pub actor: Actor,
    pub counter: u64,
    /// Newest first: `values[i]` has the dot `(actor, counter - i)`.
    pub values: Vec<V>,
}

/// The causally current values of one key, with their causal history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvvSet<V> {
    /// Sorted by actor, one entry per actor.
    pub(super) entries: Vec<Entry<V>>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        DvvSet {
            entries: Vec::new(),
        }
    }
}

impl<V: Clone> DvvSet<V> {
    pub fn new() -> Self {
        DvvSet::default()
    }

    /// A new event on this replica: `value`, written by a client that had seen `context`,
    /// applied by `actor`. Exactly the values whose dots `context` covers are replaced; every
    /// other value stays as a sibling.
    pub fn update(&self, context: &VersionVector, value: V, actor: &Actor) -> DvvSet<V> {
        let mut next = self.discard(context);
        next.event(actor, value);
        next
    }

    /// The merge of two replicas' states of the same key. Commutative, associative, idempotent.
    pub fn sync(&self, other: &DvvSet<V>) -> DvvSet<V> {
        let mut entries = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next().cloned(),
                (None, Some(_)) => b.next().cloned(),
                (Some(x), Some(y)) => match x.actor.cmp(&y.actor) {
                    std::cmp::Ordering::Less => a.next().cloned(),
                    std::cmp::Ordering::Greater => b.next().cloned(),
                    std::cmp::Ordering::Equal => match (a.next(), b.next()) {
                        (Some(x), Some(y)) => Some(merge_entry(x, y)),
                        _ => None,
                    },
                },
            };
            entries.extend(next);
        }
        DvvSet { entries }
    }

    /// Drops the values whose dots `context` covers and raises counters to what it knows.
    fn discard(&self, context: &VersionVector) -> DvvSet<V> {
        let mut entries: Vec<Entry<V>> = self
            .entries
            .iter()
            .map(|e| {
                let known = context.get(&e.actor);
                // Values with dot > known survive: indices below counter - known.
                let keep = e.counter.saturating_sub(known).min(e.values.len() as u64) as usize;
                Entry {
                    actor: e.actor.clone(),
                    counter: e.counter.max(known),
                    values: e.values[..keep].to_vec(),
                }
            })
            .collect();
        for (actor, known) in context.iter() {
            if let Err(at) = entries.binary_search_by(|e| e.actor.cmp(actor)) {
                entries.insert(
                    at,
                    Entry {
                        actor: actor.clone(),
                        counter: known,
                        values: Vec::new(),
                    },
                );
            }
        }
        DvvSet { entries }
    }

    fn event(&mut self, actor: &Actor, value: V) {
        match self.entries.binary_search_by(|e| e.actor.cmp(actor)) {
            Ok(at) => {
                let e = &mut self.entries[at];
                // Never wraps: 2^64 events of one actor cannot happen, and no client can raise
                // a counter (contexts are authenticated), so saturating only guards a damaged
                // state from wrapping or panicking.
                e.counter = e.counter.saturating_add(1);
                e.values.insert(0, value);
            }
            Err(at) => self.entries.insert(
                at,
                Entry {
                    actor: actor.clone(),
                    counter: 1,
                    values: vec![value],
                },
            ),
        }
    }
}

impl<V> DvvSet<V> {
    /// The context covering every current value: what a client must send back to replace them.
    pub fn join(&self) -> VersionVector {
        self.entries
            .iter()
            .map(|e| (e.actor.clone(), e.counter))
            .collect()
    }

    /// Every current value (siblings), by actor and newest first within an actor.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().flat_map(|e| e.values.iter())
    }

    /// Every current value with its dot.
    pub fn dotted_values(&self) -> impl Iterator<Item = (&Actor, u64, &V)> {
        self.entries.iter().flat_map(|e| {
            e.values
                .iter()
                .enumerate()
                .map(move |(i, v)| (&e.actor, e.counter.saturating_sub(i as u64), v))
        })
    }

    /// Number of current values.
    pub fn size(&self) -> usize {
        self.entries.iter().map(|e| e.values.len()).sum()
    }

    /// Number of actors in the clock.
    pub fn actors(&self) -> usize {
        self.entries.len()
    }

    /// Whether everything this state knows, `other` knows too.
    pub fn less_or_equal(&self, other: &DvvSet<V>) -> bool {
        let theirs = other.join();
        self.entries
            .iter()
            .all(|e| theirs.covers(&e.actor, e.counter))
    }
}

/// Merges two entries of the same actor (Riak's `dvvset:merge/5`): the side with the higher
/// counter knows every dot the other holds, so of its values keep those the other side has
/// not already overwritten.
fn merge_entry<V: Clone>(x: &Entry<V>, y: &Entry<V>) -> Entry<V> {
    let (hi, lo) = if x.counter >= y.counter {
        (x, y)
    } else {
        (y, x)
    };
    let hi_oldest = hi.counter - hi.values.len() as u64;
    let lo_oldest = lo.counter - lo.values.len() as u64;
    let values = if hi_oldest >= lo_oldest {
        hi.values.clone()
    } else {
        // Values of `hi` with dots at or below `lo_oldest` were overwritten on the `lo` side.
        hi.values[..(hi.counter - lo_oldest) as usize].to_vec()
    };
    Entry {
        actor: hi.actor.clone(),
        counter: hi.counter,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n1() -> Actor {
        Actor::new("n1")
    }

    fn cart(items: &[&str]) -> String {
        items.join(",")
    }

    fn siblings(s: &DvvSet<String>) -> Vec<String> {
        let mut v: Vec<String> = s.values().cloned().collect();
        v.sort();
        v
    }

    /// DDIA chapter 5, "Capturing the happens-before relationship": two clients add to one
    /// shopping cart on a single replica; each write carries the version of its last read.
    #[test]
    fn ddia_shopping_cart() {
        let server = DvvSet::new();
        // 1. Client 1 adds milk, with no version.
        let s1 = server.update(&VersionVector::new(), cart(&["milk"]), &n1());
        assert_eq!(siblings(&s1), ["milk"]);
        let c1 = s1.join();
        assert_eq!(c1.get(&n1()), 1);
        // 2. Client 2 adds eggs, with no version: concurrent with milk.
        let s2 = s1.update(&VersionVector::new(), cart(&["eggs"]), &n1());
        assert_eq!(siblings(&s2), ["eggs", "milk"]);
        let c2 = s2.join();
        assert_eq!(c2.get(&n1()), 2);
        // 3. Client 1 writes [milk, flour] with version 1: replaces milk, eggs stays.
        let s3 = s2.update(&c1, cart(&["milk", "flour"]), &n1());
        assert_eq!(siblings(&s3), ["eggs", "milk,flour"]);
        let c3 = s3.join();
        assert_eq!(c3.get(&n1()), 3);
        // 4. Client 2 merges its siblings and adds ham, with version 2.
        let s4 = s3.update(&c2, cart(&["eggs", "milk", "ham"]), &n1());
        assert_eq!(siblings(&s4), ["eggs,milk,ham", "milk,flour"]);
        let c4 = s4.join();
        assert_eq!(c4.get(&n1()), 4);
        // 5. Client 1 merges its siblings and adds bacon, with version 3.
        let s5 = s4.update(&c3, cart(&["milk", "flour", "eggs", "bacon"]), &n1());
        assert_eq!(siblings(&s5), ["eggs,milk,ham", "milk,flour,eggs,bacon"]);
        assert_eq!(s5.join().get(&n1()), 5);
        // A client reads both siblings and writes their union with the joint context.
        let merged = s5.update(
            &s5.join(),
            cart(&["milk", "flour", "eggs", "bacon", "ham"]),
            &n1(),
        );
        assert_eq!(siblings(&merged), ["milk,flour,eggs,bacon,ham"]);
    }

    #[test]
    fn sync_keeps_concurrent_writes_of_two_replicas() {
        let (a, b) = (Actor::new("a"), Actor::new("b"));
        let base = DvvSet::new().update(&VersionVector::new(), 1, &a);
        let on_a = base.update(&base.join(), 2, &a);
        let on_b = base.sync(&DvvSet::new()).update(&base.join(), 3, &b);
        let merged = on_a.sync(&on_b);
        let mut values: Vec<i32> = merged.values().copied().collect();
        values.sort();
        assert_eq!(values, [2, 3]);
        assert!(on_a.less_or_equal(&merged) && on_b.less_or_equal(&merged));
        assert!(!on_a.less_or_equal(&on_b));
    }
}
