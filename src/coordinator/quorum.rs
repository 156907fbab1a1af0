//! Counting replica answers against `r`/`w` and `pr`/`pw`: the one place quorum arithmetic
//! lives. Fed one answer at a time, it says when the request has succeeded, when it can no
//! longer succeed, and otherwise to keep waiting.
//!
//! A request has one *slot* per primary replica of the key. A slot is filled by the primary
//! itself, or — in a sloppy quorum — by a fallback node standing in for it, which counts toward
//! `w` but not toward `pw`; or it fails.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Enough answers (and enough from primaries).
    Met,
    /// Too many failures: even if every outstanding slot is filled, the quorum is out of reach.
    Impossible,
    Pending,
}

/// Who filled a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Primary,
    Fallback,
}

#[derive(Debug, Clone)]
pub struct Tally {
    need: u8,
    need_primary: u8,
    outstanding: u8,
    acked: u8,
    acked_primary: u8,
}

impl Tally {
    /// `need` answers of which `need_primary` from primaries, over `slots` primaries.
    pub fn new(need: u8, need_primary: u8, slots: u8) -> Tally {
        Tally {
            need,
            need_primary,
            outstanding: slots,
            acked: 0,
            acked_primary: 0,
        }
    }

    pub fn ack(&mut self, by: By) -> Progress {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.acked += 1;
        if by == By::Primary {
            self.acked_primary += 1;
        }
        self.progress()
    }

    /// A slot a fallback filled is now also held by its primary (a late answer): it counts
    /// toward `pw` from now on.
    pub fn promote(&mut self) -> Progress {
        self.acked_primary += 1;
        self.progress()
    }

    pub fn fail(&mut self) -> Progress {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.progress()
    }

    pub fn acked(&self) -> u8 {
        self.acked
    }

    pub fn needed(&self) -> u8 {
        self.need
    }

    /// Whether an answer is final: met, or out of reach with every slot settled (so the ack
    /// count reported with a failure is the real one, not a snapshot).
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
            || self.acked_primary + self.outstanding < self.need_primary
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
        let mut t = Tally::new(2, 0, 3);
        assert_eq!(t.ack(By::Primary), Progress::Pending);
        assert_eq!(t.ack(By::Primary), Progress::Met);
    }

    #[test]
    fn impossible_as_soon_as_too_many_fail_and_settled_once_all_answered() {
        let mut t = Tally::new(3, 0, 3);
        assert_eq!(t.ack(By::Primary), Progress::Pending);
        assert_eq!(t.fail(), Progress::Impossible);
        assert!(!t.settled());
        assert_eq!(t.ack(By::Primary), Progress::Impossible);
        assert!(t.settled());
        assert_eq!(t.acked(), 2);
    }

    #[test]
    fn a_fallback_counts_toward_w_but_not_pw() {
        let mut w3 = Tally::new(3, 0, 3);
        w3.ack(By::Primary);
        w3.ack(By::Primary);
        assert_eq!(w3.ack(By::Fallback), Progress::Met);

        let mut pw3 = Tally::new(3, 3, 3);
        pw3.ack(By::Primary);
        pw3.ack(By::Primary);
        assert_eq!(pw3.ack(By::Fallback), Progress::Impossible);
        assert_eq!(pw3.acked(), 3);
    }

    #[test]
    fn pw_becomes_impossible_when_too_few_primary_slots_remain() {
        let mut t = Tally::new(2, 2, 3);
        assert_eq!(t.ack(By::Fallback), Progress::Pending);
        assert_eq!(t.fail(), Progress::Impossible);
    }

    #[test]
    fn zero_needed_is_met_at_once() {
        assert_eq!(Tally::new(0, 0, 3).progress(), Progress::Met);
    }
}
