//! One request's quorum round as a plain state machine: no sockets, no clock of its own. The
//! shell (`coordinator::put`, `coordinator::forward`) feeds it answers and ticks and carries
//! out the [`Attempt`]s it returns, as toyDB drives its Raft node with `step()`/`tick()`.
//!
//! A round has one *slot* per primary replica, each first tried on that primary. A slot whose
//! primary is convicted, refuses, or has not answered within the round's *suspect delay* (an
//! adaptive figure from the latencies the node sees: [`super::latency`]) is also tried on the
//! next unused *stand-in*: a fallback node for a replicated write, another primary for a
//! forwarded one. The earlier attempt is not abandoned: a late primary answer still counts,
//! and upgrades a slot a stand-in filled (for `pw`). Every further suspect delay without an
//! answer brings in one more stand-in, until the pool is empty.
//!
//! The arithmetic is [`Tally`]'s; the round decides whom to ask next and when it is over.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::quorum::{By, Progress, Tally};

/// One message the shell must send: to `node`, on behalf of slot `slot` (whose primary is
/// `owner`), as a primary or a stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: usize,
    pub slot: usize,
    pub owner: String,
    pub node: String,
    pub by: By,
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Met {
        acked: u8,
    },
    /// Not met. `pending` attempts were still unanswered: the write may yet land on them.
    Failed {
        needed: u8,
        acked: u8,
        pending: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Open,
    Filled(By),
    Failed,
}

#[derive(Debug)]
struct Slot {
    owner: String,
    fill: Fill,
    /// Attempts sent and not yet answered.
    outstanding: u8,
    /// Whether the primary's own attempt is among them (it may still upgrade a stand-in's).
    primary_outstanding: bool,
    /// When to bring in a stand-in if the slot is still open.
    suspect_at: Instant,
}

#[derive(Debug)]
pub struct Round {
    tally: Tally,
    slots: Vec<Slot>,
    standins: VecDeque<String>,
    suspect_after: Duration,
    /// (slot, by) of every attempt, by id; `None` once answered.
    attempts: Vec<Option<(usize, By)>>,
    expired: bool,
}

impl Round {
    /// A round over `primaries` needing `need` answers, `need_primary` of them from
    /// primaries; `standins` in the order to use them; `down` says which nodes the failure
    /// detector has convicted (their slots go to a stand-in at once; convicted stand-ins are
    /// skipped).
    pub fn new(
        primaries: Vec<String>,
        standins: Vec<String>,
        need: u8,
        need_primary: u8,
        suspect_after: Duration,
    ) -> Round {
        let tally = Tally::new(need, need_primary, primaries.len() as u8);
        let far = Instant::now() + Duration::from_secs(86_400);
        Round {
            tally,
            slots: primaries
                .into_iter()
                .map(|owner| Slot {
                    owner,
                    fill: Fill::Open,
                    outstanding: 0,
                    primary_outstanding: false,
                    suspect_at: far,
                })
                .collect(),
            standins: standins.into(),
            suspect_after,
            attempts: Vec::new(),
            expired: false,
        }
    }

    /// The first attempts: each slot's primary, or a stand-in where the primary is down.
    pub fn start(&mut self, now: Instant, down: &dyn Fn(&str) -> bool) -> Vec<Attempt> {
        let mut out = Vec::new();
        for slot in 0..self.slots.len() {
            let owner = self.slots[slot].owner.clone();
            if down(&owner) {
                self.stand_in(slot, now, down, &mut out);
            } else {
                out.push(self.attempt(slot, owner, By::Primary, now));
            }
        }
        out
    }

    /// Takes the answer to attempt `id`: `ok` if the node did what was asked.
    pub fn answer(
        &mut self,
        id: usize,
        ok: bool,
        now: Instant,
        down: &dyn Fn(&str) -> bool,
    ) -> Vec<Attempt> {
        let mut out = Vec::new();
        let Some((slot, by)) = self.attempts.get_mut(id).and_then(Option::take) else {
            return out;
        };
        let s = &mut self.slots[slot];
        s.outstanding = s.outstanding.saturating_sub(1);
        if by == By::Primary {
            s.primary_outstanding = false;
        }
        match (s.fill, ok) {
            (Fill::Open, true) => {
                s.fill = Fill::Filled(by);
                if !self.expired {
                    self.tally.ack(by);
                }
            }
            (Fill::Filled(By::Fallback), true) if by == By::Primary => {
                s.fill = Fill::Filled(By::Primary);
                if !self.expired {
                    self.tally.promote();
                }
            }
            (Fill::Open, false) => self.stand_in(slot, now, down, &mut out),
            _ => {}
        }
        out
    }

    /// Time passes: open slots whose suspect delay ran out get a stand-in.
    pub fn tick(&mut self, now: Instant, down: &dyn Fn(&str) -> bool) -> Vec<Attempt> {
        let mut out = Vec::new();
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if s.fill == Fill::Open && s.outstanding > 0 && now >= s.suspect_at {
                if self.standins.is_empty() {
                    // Nobody left to ask; wait for the attempts out there.
                    self.slots[slot].suspect_at = now + Duration::from_secs(86_400);
                } else {
                    self.stand_in(slot, now, down, &mut out);
                }
            }
        }
        out
    }

    /// When [`Round::tick`] has something to do next, if ever.
    pub fn next_tick(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.fill == Fill::Open && s.outstanding > 0 && !self.standins.is_empty())
            .map(|s| s.suspect_at)
            .min()
    }

    /// The outcome, once the round is decided: met, or out of reach with nothing left that
    /// could change it (so the reported ack count is the real one).
    pub fn outcome(&self) -> Option<Outcome> {
        let met = self.tally.progress() == Progress::Met;
        let can_improve = self.slots.iter().any(|s| match s.fill {
            Fill::Open => s.outstanding > 0,
            Fill::Filled(By::Fallback) => s.primary_outstanding,
            _ => false,
        });
        (self.expired || met || !can_improve).then(|| self.summary())
    }

    /// The primaries that stored it themselves (not through a stand-in).
    pub fn acked_primaries(&self) -> impl Iterator<Item = &str> {
        self.slots
            .iter()
            .filter(|s| s.fill == Fill::Filled(By::Primary))
            .map(|s| s.owner.as_str())
    }

    /// The deadline passed: the round ends with what it has.
    pub fn expire(&mut self) -> Outcome {
        let outcome = self.summary();
        self.expired = true;
        outcome
    }

    fn summary(&self) -> Outcome {
        match self.tally.progress() {
            Progress::Met => Outcome::Met {
                acked: self.tally.acked(),
            },
            _ => Outcome::Failed {
                needed: self.tally.needed(),
                acked: self.tally.acked(),
                pending: self.attempts.iter().flatten().count() as u8,
            },
        }
    }

    /// Sends slot `slot` to the next live stand-in, or fails it when none is left and
    /// nothing is out there for it.
    fn stand_in(
        &mut self,
        slot: usize,
        now: Instant,
        down: &dyn Fn(&str) -> bool,
        out: &mut Vec<Attempt>,
    ) {
        while let Some(node) = self.standins.pop_front() {
            if !down(&node) {
                out.push(self.attempt(slot, node, By::Fallback, now));
                return;
            }
        }
        let s = &mut self.slots[slot];
        if s.outstanding == 0 && s.fill == Fill::Open {
            s.fill = Fill::Failed;
            if !self.expired {
                self.tally.fail();
            }
        } else {
            s.suspect_at = now + Duration::from_secs(86_400);
        }
    }

    fn attempt(&mut self, slot: usize, node: String, by: By, now: Instant) -> Attempt {
        let id = self.attempts.len();
        self.attempts.push(Some((slot, by)));
        let s = &mut self.slots[slot];
        s.outstanding += 1;
        s.primary_outstanding |= by == By::Primary;
        s.suspect_at = now + self.suspect_after;
        Attempt {
            id,
            slot,
            owner: s.owner.clone(),
            node,
            by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUSPECT: Duration = Duration::from_millis(50);

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn up(_: &str) -> bool {
        false
    }

    /// A replicated write: primaries n1..n3, fallbacks n4, n5, needing `w` and `pw`.
    fn write(w: u8, pw: u8) -> Round {
        Round::new(
            nodes(&["n1", "n2", "n3"]),
            nodes(&["n4", "n5"]),
            w,
            pw,
            SUSPECT,
        )
    }

    fn to(attempts: &[Attempt]) -> Vec<(&str, &str, By)> {
        attempts
            .iter()
            .map(|a| (a.owner.as_str(), a.node.as_str(), a.by))
            .collect()
    }

    #[test]
    fn healthy_replicas_meet_the_quorum_without_stand_ins() {
        let t0 = Instant::now();
        let mut r = write(2, 0);
        let sent = r.start(t0, &up);
        assert_eq!(sent.len(), 3);
        assert!(r.answer(sent[0].id, true, t0, &up).is_empty());
        assert_eq!(r.outcome(), None);
        r.answer(sent[1].id, true, t0, &up);
        assert_eq!(r.outcome(), Some(Outcome::Met { acked: 2 }));
    }

    #[test]
    fn a_hung_primary_is_stood_in_for_after_the_suspect_delay_and_w3_is_met() {
        let t0 = Instant::now();
        let mut r = write(3, 0);
        let sent = r.start(t0, &up);
        r.answer(sent[0].id, true, t0, &up);
        r.answer(sent[1].id, true, t0, &up);
        // n3 hangs: nothing before the delay, a stand-in at it.
        assert!(r.tick(t0 + SUSPECT / 2, &up).is_empty());
        assert_eq!(r.next_tick(), Some(t0 + SUSPECT));
        let hedge = r.tick(t0 + SUSPECT, &up);
        assert_eq!(to(&hedge), [("n3", "n4", By::Fallback)]);
        r.answer(hedge[0].id, true, t0 + SUSPECT, &up);
        assert_eq!(r.outcome(), Some(Outcome::Met { acked: 3 }));
    }

    #[test]
    fn a_slow_primarys_late_answer_still_counts_toward_pw() {
        let t0 = Instant::now();
        let mut r = write(3, 3);
        let sent = r.start(t0, &up);
        r.answer(sent[0].id, true, t0, &up);
        r.answer(sent[1].id, true, t0, &up);
        let hedge = r.tick(t0 + SUSPECT, &up);
        r.answer(hedge[0].id, true, t0 + SUSPECT, &up);
        assert_eq!(r.outcome(), None, "a fallback does not count toward pw");
        r.answer(sent[2].id, true, t0 + SUSPECT * 3, &up);
        assert_eq!(r.outcome(), Some(Outcome::Met { acked: 3 }));
    }

    #[test]
    fn a_dead_primary_goes_to_a_fallback_at_once_and_dead_fallbacks_are_skipped() {
        let t0 = Instant::now();
        let mut r = write(3, 0);
        let down = |n: &str| n == "n2" || n == "n4";
        let sent = r.start(t0, &down);
        assert_eq!(
            to(&sent),
            [
                ("n1", "n1", By::Primary),
                ("n2", "n5", By::Fallback),
                ("n3", "n3", By::Primary)
            ]
        );
    }

    #[test]
    fn a_refusal_full_disk_or_corrupt_replica_goes_to_the_next_stand_in_at_once() {
        let t0 = Instant::now();
        let mut r = write(2, 0);
        let sent = r.start(t0, &up);
        let next = r.answer(sent[0].id, false, t0, &up);
        assert_eq!(to(&next), [("n1", "n4", By::Fallback)]);
        // The fallback refuses too; the last one is tried.
        let last = r.answer(next[0].id, false, t0, &up);
        assert_eq!(to(&last), [("n1", "n5", By::Fallback)]);
        r.answer(last[0].id, true, t0, &up);
        r.answer(sent[1].id, true, t0, &up);
        assert_eq!(r.outcome(), Some(Outcome::Met { acked: 2 }));
    }

    #[test]
    fn when_nobody_can_take_it_the_outcome_reports_the_real_ack_count() {
        let t0 = Instant::now();
        let mut r = Round::new(nodes(&["n1", "n2", "n3"]), vec![], 3, 0, SUSPECT);
        let sent = r.start(t0, &up);
        r.answer(sent[0].id, true, t0, &up);
        r.answer(sent[1].id, false, t0, &up);
        assert_eq!(r.outcome(), None, "n3 may still answer");
        r.answer(sent[2].id, true, t0, &up);
        assert_eq!(
            r.outcome(),
            Some(Outcome::Failed {
                needed: 3,
                acked: 2,
                pending: 0
            })
        );
    }

    #[test]
    fn at_the_deadline_unanswered_attempts_are_reported_as_pending() {
        let t0 = Instant::now();
        let mut r = Round::new(nodes(&["n1", "n2", "n3"]), vec![], 3, 0, SUSPECT);
        let sent = r.start(t0, &up);
        r.answer(sent[0].id, true, t0, &up);
        assert_eq!(r.next_tick(), None, "no stand-ins: nothing to tick for");
        assert_eq!(
            r.expire(),
            Outcome::Failed {
                needed: 3,
                acked: 1,
                pending: 2
            }
        );
        // Answers after the deadline change nothing the client was told.
        r.answer(sent[1].id, true, t0, &up);
        assert!(matches!(
            r.outcome(),
            Some(Outcome::Failed { acked: 1, .. })
        ));
    }

    #[test]
    fn a_forwarded_write_hedges_to_the_next_primary_when_the_first_is_hung() {
        // Forwarding: one slot, the other primaries as stand-ins, one answer needed.
        let t0 = Instant::now();
        let mut r = Round::new(nodes(&["n1"]), nodes(&["n2", "n3"]), 1, 0, SUSPECT);
        let sent = r.start(t0, &up);
        assert_eq!(to(&sent), [("n1", "n1", By::Primary)]);
        let hedge = r.tick(t0 + SUSPECT, &up);
        assert_eq!(to(&hedge), [("n1", "n2", By::Fallback)]);
        // n2 is slow as well: after another delay, n3.
        let again = r.tick(t0 + SUSPECT * 2, &up);
        assert_eq!(to(&again), [("n1", "n3", By::Fallback)]);
        r.answer(again[0].id, true, t0 + SUSPECT * 2, &up);
        assert_eq!(r.outcome(), Some(Outcome::Met { acked: 1 }));
        // The hung ones answering later is harmless.
        assert!(r.answer(sent[0].id, true, t0, &up).is_empty());
        assert_eq!(r.outcome(), Some(Outcome::Met { acked: 1 }));
    }

    #[test]
    fn stale_or_repeated_answers_are_ignored() {
        let t0 = Instant::now();
        let mut r = write(2, 0);
        let sent = r.start(t0, &up);
        r.answer(sent[0].id, true, t0, &up);
        r.answer(sent[0].id, true, t0, &up);
        r.answer(99, true, t0, &up);
        assert_eq!(r.outcome(), None);
    }
}
