//! Bucket properties set over the API (Riak's `/buckets/{b}/props`), kept in the cluster's
//! metadata: what such a setting holds, how it lays over the config's `[defaults]` and
//! `[buckets.NAME]`, and the checks a change must pass before it is applied. Plain data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{BucketDefaults, BucketOverride, BucketProps, Conflict, Quorum};

/// The properties of one bucket set over the API; `None` leaves the config's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropsSet {
    pub n: Option<u8>,
    pub r: Option<Quorum>,
    pub w: Option<Quorum>,
    pub pr: Option<Quorum>,
    pub pw: Option<Quorum>,
    pub dw: Option<Quorum>,
    pub rw: Option<Quorum>,
    pub conflict: Option<Conflict>,
    /// Properties quorumkv does not act on, kept as the client gave them (JSON text) and
    /// returned, never dropped.
    pub other: BTreeMap<String, String>,
}

impl PropsSet {
    /// `self` with `change` laid over it: a change sets only what it names.
    pub fn overlay(&self, change: &PropsSet) -> PropsSet {
        let mut other = self.other.clone();
        other.extend(change.other.clone());
        PropsSet {
            n: change.n.or(self.n),
            r: change.r.or(self.r),
            w: change.w.or(self.w),
            pr: change.pr.or(self.pr),
            pw: change.pw.or(self.pw),
            dw: change.dw.or(self.dw),
            rw: change.rw.or(self.rw),
            conflict: change.conflict.or(self.conflict),
            other,
        }
    }
}

/// A bucket's settings as a person reads them: each quorum in the form it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub n: u8,
    pub r: Quorum,
    pub w: Quorum,
    pub pr: Quorum,
    pub pw: Quorum,
    pub dw: Quorum,
    pub rw: Quorum,
    pub conflict: Conflict,
    pub other: BTreeMap<String, String>,
}

impl Settings {
    /// The API's setting over the config's bucket section over the config's defaults.
    pub fn layered(
        defaults: &BucketDefaults,
        config: Option<&BucketOverride>,
        set: Option<&PropsSet>,
    ) -> Settings {
        let none = BucketOverride::default();
        let config = config.unwrap_or(&none);
        let empty = PropsSet::default();
        let set = set.unwrap_or(&empty);
        Settings {
            n: set.n.or(config.n).unwrap_or(defaults.n),
            r: set.r.or(config.r).unwrap_or(defaults.r),
            w: set.w.or(config.w).unwrap_or(defaults.w),
            pr: set.pr.unwrap_or(Quorum::N(0)),
            pw: set.pw.unwrap_or(Quorum::N(0)),
            // quorumkv's writes are durable when `w` replicas answer (with `sync = "always"`),
            // so `dw` is `w`'s unless it was set; `rw` likewise follows `w`.
            dw: set.dw.or(set.w).or(config.w).unwrap_or(defaults.w),
            rw: set.rw.or(set.w).or(config.w).unwrap_or(defaults.w),
            conflict: set
                .conflict
                .or(config.conflict)
                .unwrap_or(defaults.conflict),
            other: set.other.clone(),
        }
    }

    /// Whether the settings can serve requests with at most `max_n` replicas per partition.
    pub fn check(&self, max_n: u8) -> Result<(), String> {
        if !(1..=max_n).contains(&self.n) {
            return Err(format!(
                "n_val must be between 1 and {max_n} (the cluster's largest n), got {}",
                self.n
            ));
        }
        for (name, q) in [
            ("r", self.r),
            ("w", self.w),
            ("dw", self.dw),
            ("rw", self.rw),
        ] {
            if q.resolve(self.n).is_none() {
                return Err(format!(
                    "{name} must be 1..{} or one, quorum, all; got {q}",
                    self.n
                ));
            }
        }
        for (name, q) in [("pr", self.pr), ("pw", self.pw)] {
            if q != Quorum::N(0) && q.resolve(self.n).is_none() {
                return Err(format!(
                    "{name} must be 0..{} or one, quorum, all; got {q}",
                    self.n
                ));
            }
        }
        Ok(())
    }

    /// The numbers requests use (a setting that does not resolve, which `check` keeps out,
    /// falls back to 1).
    pub fn resolve(&self) -> BucketProps {
        let primaries = |q: Quorum| match q {
            Quorum::N(0) => 0,
            q => q.resolve(self.n).unwrap_or(0),
        };
        BucketProps {
            n: self.n,
            r: self.r.resolve(self.n).unwrap_or(1),
            w: self.w.resolve(self.n).unwrap_or(1),
            pr: primaries(self.pr),
            pw: primaries(self.pw),
            conflict: self.conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_setting_wins_over_the_config_and_a_change_sets_only_what_it_names() {
        let defaults = BucketDefaults::default();
        let config = BucketOverride {
            n: Some(2),
            conflict: Some(Conflict::Lww),
            ..BucketOverride::default()
        };
        let first = PropsSet {
            r: Some(Quorum::One),
            other: [("young_vclock".to_owned(), "20".to_owned())].into(),
            ..PropsSet::default()
        };
        let set = first.overlay(&PropsSet {
            conflict: Some(Conflict::Siblings),
            ..PropsSet::default()
        });
        let s = Settings::layered(&defaults, Some(&config), Some(&set));
        assert_eq!((s.n, s.r, s.w), (2, Quorum::One, Quorum::Quorum));
        assert_eq!(s.conflict, Conflict::Siblings);
        assert_eq!(s.other["young_vclock"], "20");
        let props = s.resolve();
        assert_eq!((props.n, props.r, props.w, props.pr), (2, 1, 2, 0));
        let cleared = Settings::layered(&defaults, Some(&config), None);
        assert_eq!(cleared.conflict, Conflict::Lww);
    }

    #[test]
    fn settings_that_cannot_serve_a_request_are_refused() {
        let defaults = BucketDefaults::default();
        let with = |set: PropsSet| Settings::layered(&defaults, None, Some(&set)).check(3);
        assert!(with(PropsSet::default()).is_ok());
        assert!(with(PropsSet {
            n: Some(4),
            ..PropsSet::default()
        })
        .is_err());
        assert!(with(PropsSet {
            n: Some(1),
            r: Some(Quorum::N(2)),
            ..PropsSet::default()
        })
        .is_err());
        assert!(with(PropsSet {
            n: Some(1),
            pw: Some(Quorum::N(0)),
            ..PropsSet::default()
        })
        .is_ok());
    }
}
