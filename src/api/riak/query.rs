//! Riak's query parameters: `r`, `w`, `dw`, `pr`, `pw`, `rw` (a number, `one`, `quorum`,
//! `all` or `default`), `timeout` (ms), `returnbody`, `basic_quorum`, `notfound_ok`, `vtag`.
//! Parameters Riak ignores (and those of features not served here) are ignored, as Riak does.

use std::time::Duration;

use super::{decode, RiakError};
use crate::api::params::{DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};
use crate::config::{BucketProps, Quorum};
use crate::coordinator::Knobs;

/// The decoded `name=value` pairs of a query string.
pub fn pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, RiakError> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(n)?, decode(v)?))
        })
        .collect()
}

/// The value of parameter `name`, if given.
pub fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// What an object request asks for beyond its knobs.
#[derive(Debug, Clone)]
pub struct ObjectQuery {
    pub knobs: Knobs,
    pub return_body: bool,
    pub vtag: Option<String>,
    /// `deletedvclock=true`: a 404 for a deleted key carries its vclock.
    pub deleted_vclock: bool,
}

/// Parses an object request's parameters against the bucket's settings.
pub fn object(pairs: &[(String, String)], props: BucketProps) -> Result<ObjectQuery, RiakError> {
    let n = props.n;
    let quorum = |name: &str, zero_ok: bool| -> Result<Option<u8>, RiakError> {
        let Some(v) = value(pairs, name) else {
            return Ok(None);
        };
        if v == "default" {
            return Ok(None);
        }
        let k = match Quorum::parse(v) {
            Some(Quorum::N(0)) if zero_ok => Some(0),
            Some(q) => q.resolve(n),
            None => None,
        };
        k.map(Some).ok_or_else(|| {
            let low = if zero_ok { 0 } else { 1 };
            RiakError::bad_request(format!(
                "{name} query parameter must be {low}..{n} or one, quorum, all, default; got {v:?}"
            ))
        })
    };
    let rw = quorum("rw", false)?;
    let r = quorum("r", false)?.or(rw).unwrap_or(props.r);
    let w = quorum("w", false)?.or(rw).unwrap_or(props.w);
    // Durable writes: a replica answers once the write is on its disk (`sync = "always"`),
    // so `dw` is checked and then met by `w`.
    quorum("dw", true)?;
    let pr = quorum("pr", true)?.unwrap_or(props.pr);
    let pw = quorum("pw", true)?.unwrap_or(props.pw);
    let timeout = match value(pairs, "timeout") {
        None => DEFAULT_TIMEOUT_MS,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
            .ok_or_else(|| {
                RiakError::bad_request(format!(
                    "timeout must be 1..{MAX_TIMEOUT_MS} milliseconds; got {v:?}"
                ))
            })?,
    };
    for name in ["basic_quorum", "notfound_ok"] {
        boolean(pairs, name)?;
    }
    Ok(ObjectQuery {
        knobs: Knobs {
            r,
            w,
            pr,
            pw,
            timeout: Duration::from_millis(timeout),
        },
        return_body: boolean(pairs, "returnbody")?.unwrap_or(false),
        vtag: value(pairs, "vtag").map(str::to_owned),
        deleted_vclock: boolean(pairs, "deletedvclock")?.unwrap_or(false),
    })
}

/// A `true`/`false` parameter, if given.
pub fn boolean(pairs: &[(String, String)], name: &str) -> Result<Option<bool>, RiakError> {
    match value(pairs, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(RiakError::bad_request(format!(
            "{name} must be true or false; got {v:?}"
        ))),
    }
}

/// A listing's `timeout`, in ms (60 s unless given).
pub fn listing_timeout(pairs: &[(String, String)]) -> Result<Duration, RiakError> {
    match value(pairs, "timeout") {
        None => Ok(Duration::from_millis(MAX_TIMEOUT_MS)),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=10 * MAX_TIMEOUT_MS).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| {
                RiakError::bad_request(format!(
                    "timeout must be a positive number of milliseconds; got {v:?}"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Conflict;

    fn props() -> BucketProps {
        BucketProps {
            n: 3,
            r: 2,
            w: 2,
            pr: 0,
            pw: 0,
            conflict: Conflict::Siblings,
        }
    }

    #[test]
    fn quorum_parameters_take_riak_names_and_fall_back_to_the_bucket() {
        let q = |s: &str| object(&pairs(Some(s)).expect("pairs"), props());
        let k = q("r=one&w=all&pw=quorum&returnbody=true")
            .expect("valid")
            .knobs;
        assert_eq!((k.r, k.w, k.pr, k.pw), (1, 3, 0, 2));
        let k = q("rw=1&r=default").expect("valid").knobs;
        assert_eq!((k.r, k.w), (1, 1));
        let k = q("chunked=true&timeout=250")
            .expect("unknown ones ignored")
            .knobs;
        assert_eq!((k.r, k.timeout), (2, Duration::from_millis(250)));
        for bad in [
            "r=4",
            "w=0",
            "pr=x",
            "timeout=0",
            "returnbody=yes",
            "notfound_ok=1",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }
}
