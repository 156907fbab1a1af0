//! Property tests of the causality algebra: DVVSet merge laws, what `update` keeps and drops,
//! that no value is lost unless a context covering it was supplied, bounded clocks, encoding
//! round trips, and decoders that never panic on arbitrary input.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use quorumkv::causal::{token, Actor, DvvSet, KeyState, Sibling, VersionVector};

const REPLICAS: usize = 3;

/// One step of a replicated history of a single key.
#[derive(Debug, Clone)]
enum Step {
    /// A client read `read_from` (or read nothing) and wrote through replica `at`.
    Write { at: usize, read_from: Option<usize> },
    /// Replica `to` merged replica `from`'s state (read repair, handoff, anti-entropy).
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..REPLICAS, proptest::option::of(0..REPLICAS))
            .prop_map(|(at, read_from)| Step::Write { at, read_from }),
        (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

fn actor(i: usize) -> Actor {
    Actor::new(format!("n{i}"))
}

/// The outcome of a history, with the model of which values must survive.
struct Played {
    replicas: Vec<DvvSet<u32>>,
    /// Every value written, with its dot.
    written: BTreeMap<u32, (Actor, u64)>,
    /// Values whose dot some write's context covered.
    superseded: BTreeSet<u32>,
}

fn play(steps: &[Step]) -> Played {
    let mut replicas = vec![DvvSet::new(); REPLICAS];
    let mut written = BTreeMap::new();
    let mut superseded = BTreeSet::new();
    for (id, step) in steps.iter().enumerate() {
        let id = id as u32;
        match *step {
            Step::Write { at, read_from } => {
                let context = read_from.map_or_else(VersionVector::new, |r| replicas[r].join());
                for (&value, (a, n)) in &written {
                    if context.covers(a, *n) {
                        superseded.insert(value);
                    }
                }
                let next = replicas[at].update(&context, id, &actor(at));
                let dot = next
                    .dotted_values()
                    .find(|(_, _, v)| **v == id)
                    .map(|(a, n, _)| (a.clone(), n))
                    .expect("the new value is current");
                written.insert(id, dot);
                replicas[at] = next;
            }
            Step::Sync { from, to } => {
                replicas[to] = replicas[to].sync(&replicas[from]);
            }
        }
    }
    Played {
        replicas,
        written,
        superseded,
    }
}

fn values(s: &DvvSet<u32>) -> BTreeSet<u32> {
    s.values().copied().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sync_is_commutative_associative_and_idempotent(
        steps in proptest::collection::vec(step(), 0..40)
    ) {
        let r = play(&steps).replicas;
        let (a, b, c) = (&r[0], &r[1], &r[2]);
        prop_assert_eq!(a.sync(b), b.sync(a));
        prop_assert_eq!(a.sync(b).sync(c), a.sync(&b.sync(c)));
        prop_assert_eq!(a.sync(a), a.clone());
        // Merging never loses knowledge.
        prop_assert!(a.less_or_equal(&a.sync(b)) && b.less_or_equal(&a.sync(b)));
    }

    #[test]
    fn update_drops_exactly_what_the_context_covers(
        steps in proptest::collection::vec(step(), 0..40),
        at in 0..REPLICAS,
        read_from in 0..REPLICAS,
    ) {
        let played = play(&steps);
        let state = &played.replicas[at];
        let context = played.replicas[read_from].join();
        let next = state.update(&context, u32::MAX, &actor(at));
        let expected: BTreeSet<u32> = state
            .dotted_values()
            .filter(|(a, n, _)| !context.covers(a, *n))
            .map(|(_, _, v)| *v)
            .chain([u32::MAX])
            .collect();
        prop_assert_eq!(values(&next), expected);
        // The new state knows everything the old state and the context knew.
        prop_assert!(state.less_or_equal(&next));
        for (a, n) in context.iter() {
            prop_assert!(next.join().covers(a, n));
        }
    }

    #[test]
    fn no_value_is_lost_unless_a_context_covered_it(
        steps in proptest::collection::vec(step(), 0..60)
    ) {
        let played = play(&steps);
        let all = played.replicas[1..]
            .iter()
            .fold(played.replicas[0].clone(), |acc, r| acc.sync(r));
        let expected: BTreeSet<u32> = played
            .written
            .keys()
            .filter(|v| !played.superseded.contains(v))
            .copied()
            .collect();
        prop_assert_eq!(values(&all), expected);
        for r in &played.replicas {
            prop_assert!(r.actors() <= REPLICAS, "clock grew past the actors: {:?}", r);
            prop_assert!(r.less_or_equal(&all));
        }
    }

    #[test]
    fn encoded_states_round_trip(
        steps in proptest::collection::vec(step(), 0..30),
        data in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let played = play(&steps);
        for r in &played.replicas {
            // Re-dress the u32 history as siblings, every third one a tombstone.
            let mut set = DvvSet::new();
            for (a, n, v) in r.dotted_values() {
                let sibling = if v % 3 == 0 {
                    Sibling::tombstone(u64::from(*v))
                } else {
                    let mut bytes = data.clone();
                    bytes.extend_from_slice(&v.to_le_bytes());
                    Sibling::value(bytes, "application/octet-stream", u64::from(*v))
                };
                let mut ctx = VersionVector::new();
                ctx.witness(a.clone(), n - 1);
                set = set.sync(&DvvSet::new().update(&ctx, sibling, a));
            }
            let state = KeyState::Siblings(set);
            prop_assert_eq!(KeyState::decode(&state.encode()), Ok(state));
            let context = r.join();
            let mac = token::ContextKey::new([5; 32]);
            let t = token::encode(&mac, b"bucket", b"key", &context);
            prop_assert_eq!(token::decode(&mac, b"bucket", b"key", &t), Ok(context));
        }
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = KeyState::decode(&bytes);
        for tag in [b'D', b'L'] {
            let mut tagged = vec![tag, 1];
            tagged.extend_from_slice(&bytes);
            let _ = KeyState::decode(&tagged);
        }
        // Past the tag too: `causal::token`'s own tests feed garbage bodies with valid tags.
        let mac = token::ContextKey::new([5; 32]);
        let _ = token::decode(&mac, b"b", b"k", &String::from_utf8_lossy(&bytes));
        let _ = token::decode(&mac, b"b", b"k", &URL_SAFE_NO_PAD.encode(&bytes));
    }
}

#[test]
fn an_lww_state_round_trips() {
    use quorumkv::causal::{LwwRegister, Timestamp};
    let state = KeyState::Lww(LwwRegister {
        timestamp: Timestamp {
            physical_ms: 1_700_000_000_000,
            logical: 3,
        },
        node: Actor::new("n2#4"),
        value: Sibling::value(b"session".to_vec(), "text/plain", 1_700_000_000_000),
    });
    assert_eq!(KeyState::decode(&state.encode()), Ok(state));
}
