//! Counting replica answers against `r`/`w` and `pr`/`pw`: the one place quorum arithmetic
//! lives. Fed one answer at a time, it says when the request has succeeded, when it can no
//! longer succeed, and otherwise to keep waiting.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Enough answers (and enough from primaries).
    Met,
    /// Too many failures: even if every outstanding replica answers, the quorum is out of reach.
    Impossible,
    Pending,
}

#[derive(Debug, Clone)]
pub struct Tally {
    need: u8,
    need_primary: u8,
    outstanding: u8,
    outstanding_primary: u8,
    acked: u8,
    acked_primary: u8,
}

impl Tally {
    /// `need` answers of which `need_primary` from primaries, out of `targets` replicas of which
    /// `primaries` are primaries.
    pub fn new(need: u8, need_primary: u8, targets: u8, primaries: u8) -> Tally {
        Tally {
            need,
            need_primary,
            outstanding: targets,
            outstanding_primary: primaries,
            acked: 0,
            acked_primary: 0,
        }
    }

    pub fn ack(&mut self, primary: bool) -> Progress {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.acked += 1;
        if primary {
            self.outstanding_primary = self.outstanding_primary.saturating_sub(1);
            self.acked_primary += 1;
        }
        self.progress()
    }

    pub fn fail(&mut self, primary: bool) -> Progress {
        self.outstanding = self.outstanding.saturating_sub(1);
        if primary {
            self.outstanding_primary = self.outstanding_primary.saturating_sub(1);
        }
        self.progress()
    }

    pub fn acked(&self) -> u8 {
        self.acked
    }

    pub fn needed(&self) -> u8 {
        self.need
    }

    /// Whether an answer is final: met, or out of reach with every replica heard from (so the
    /// ack count reported with a failure is the real one, not a snapshot).
    pub fn settled(&self) -> bool {
        match self.progress() {
            Progress::Met => true,
            Progress::Impossible => self.outstanding == 0,
            Progress::Pending => false,
        }
    }

    pub fn progress(&self) -> Progress {
        if self.acked >= self.need && self.acked_primary >= self.need_primary {
            Progress::Met
        } else if self.acked + self.outstanding < self.need
            || self.acked_primary + self.outstanding_primary < self.need_primary
        {
            Progress::Impossible
        } else {
            Progress::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_after_w_acks() {
        let mut t = Tally::new(2, 0, 3, 3);
        assert_eq!(t.ack(true), Progress::Pending);
        assert_eq!(t.ack(true), Progress::Met);
    }

    #[test]
    fn impossible_as_soon_as_too_many_fail_and_settled_once_all_answered() {
        let mut t = Tally::new(3, 0, 3, 3);
        assert_eq!(t.ack(true), Progress::Pending);
        assert_eq!(t.fail(true), Progress::Impossible);
        assert!(!t.settled());
        assert_eq!(t.ack(true), Progress::Impossible);
        assert!(t.settled());
        assert_eq!(t.acked(), 2);
    }

    #[test]
    fn primaries_must_be_enough_even_when_w_is_met() {
        // w=2 met by a primary and a fallback, but pw=2 needs a second primary.
        let mut t = Tally::new(2, 2, 4, 3);
        assert_eq!(t.ack(true), Progress::Pending);
        assert_eq!(t.ack(false), Progress::Pending);
        assert_eq!(t.fail(true), Progress::Pending);
        assert_eq!(t.fail(true), Progress::Impossible);
    }

    #[test]
    fn zero_needed_is_met_at_once() {
        assert_eq!(Tally::new(0, 0, 3, 3).progress(), Progress::Met);
    }
}
