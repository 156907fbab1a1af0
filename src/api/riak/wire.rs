//! How a Riak object looks on the wire: the metadata headers a write carries (kept as
//! `Sibling::meta`), and the answer to a read: one value with its headers, or `300` with
//! every sibling as a `multipart/mixed` part (or the `text/plain` list of their vtags).

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::RiakError;
use crate::causal::token::{self, ContextKey};
use crate::causal::{KeyState, Sibling};

pub const VCLOCK_HEADER: &str = "x-riak-vclock";
const META_PREFIX: &str = "x-riak-meta-";
const INDEX_PREFIX: &str = "x-riak-index-";
const DELETED_HEADER: &str = "x-riak-deleted";
const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// The metadata headers of a write (`X-Riak-Meta-*`, `X-Riak-Index-*`, `Link`), in order,
/// names lower-cased. Index names must end in `_bin` or `_int`, and `_int` values be integers.
pub fn meta_from(headers: &HeaderMap) -> Result<Vec<(String, String)>, RiakError> {
    let mut meta = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let kept =
            name == "link" || name.starts_with(META_PREFIX) || name.starts_with(INDEX_PREFIX);
        if !kept {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| RiakError::bad_request(format!("header {name} is not visible ASCII")))?;
        if let Some(field) = name.strip_prefix(INDEX_PREFIX) {
            check_index(field, value)?;
        }
        meta.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(meta)
}

fn check_index(field: &str, value: &str) -> Result<(), RiakError> {
    if field.ends_with("_int") {
        for v in value.split(',').map(str::trim) {
            if v.parse::<i64>().is_err() {
                return Err(RiakError::bad_request(format!(
                    "Could not parse index value {v:?} of {field}: an _int index takes integers"
                )));
            }
        }
        Ok(())
    } else if field.ends_with("_bin") {
        Ok(())
    } else {
        Err(RiakError::bad_request(format!(
            "Invalid index name {field:?}: index names end in _bin or _int"
        )))
    }
}

/// A sibling's version tag: stable for the sibling, different for any other write.
pub fn vtag(s: &Sibling) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&s.write_id.to_le_bytes());
    h.update(&s.modified_ms.to_le_bytes());
    h.update(&[u8::from(s.tombstone)]);
    h.update(s.content_type.as_bytes());
    h.update(&[0]);
    h.update(&s.data);
    format!("{:016x}", h.digest())
}

/// An HTTP date, as `Last-Modified` takes it.
pub fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The siblings Riak shows: every value, tombstones too (marked deleted), a write applied
/// twice shown once, oldest first.
pub fn siblings(state: &KeyState) -> Vec<&Sibling> {
    let all: Vec<&Sibling> = match state {
        KeyState::Siblings(set) => set.values().collect(),
        KeyState::Lww(reg) => vec![&reg.value],
    };
    let mut shown: Vec<&Sibling> = all
        .iter()
        .enumerate()
        .filter(|(i, s)| !all[..*i].iter().any(|e| e.same_write(s)))
        .map(|(_, s)| *s)
        .collect();
    shown.sort_by(|a, b| (a.modified_ms, &a.data).cmp(&(b.modified_ms, &b.data)));
    shown
}

/// A sibling's own headers: content type, vtag, last-modified, deleted, metadata (all links
/// in one `Link` header: one per link would pass clients' header-count limits).
fn sibling_headers(s: &Sibling, quoted_etag: bool) -> Vec<(String, String)> {
    let content_type = if s.content_type.is_empty() {
        FALLBACK_CONTENT_TYPE
    } else {
        &s.content_type
    };
    let tag = vtag(s);
    let mut out = vec![
        ("content-type".to_owned(), content_type.to_owned()),
        (
            "etag".to_owned(),
            if quoted_etag {
                format!("\"{tag}\"")
            } else {
                tag
            },
        ),
        ("last-modified".to_owned(), http_date(s.modified_ms)),
    ];
    if s.tombstone {
        out.push((DELETED_HEADER.to_owned(), "true".to_owned()));
    }
    let links: Vec<&str> = s
        .meta
        .iter()
        .filter(|(n, _)| n == "link")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    if !links.is_empty() {
        out.push(("link".to_owned(), links.join(", ")));
    }
    out.extend(s.meta.iter().filter(|(n, _)| n != "link").cloned());
    out
}

fn insert_all(headers: &mut HeaderMap, pairs: Vec<(String, String)>) {
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
}

/// The `X-Riak-Vclock` for a state of (`bucket`, `key`).
pub fn vclock(mac: &ContextKey, bucket: &str, key: &str, state: &KeyState) -> String {
    token::encode_vclock(mac, bucket.as_bytes(), key.as_bytes(), &state.context())
}

/// How a read is answered.
pub struct Answer<'a> {
    pub state: &'a KeyState,
    pub vclock: String,
    /// The client takes `multipart/mixed` (else siblings are listed as vtags).
    pub multipart: bool,
    /// `?vtag=`: just that sibling.
    pub vtag: Option<&'a str>,
    /// The status of a single value: 200, or 201 for a new key.
    pub single_status: StatusCode,
}

impl Answer<'_> {
    /// 200 (one value), 300 (siblings), or 404 (nothing but tombstones).
    pub fn respond(self) -> Result<Response, RiakError> {
        let shown = siblings(self.state);
        let live = shown.iter().filter(|s| !s.tombstone).count();
        let mut response = if let Some(wanted) = self.vtag {
            let one = shown
                .iter()
                .find(|s| vtag(s) == wanted)
                .ok_or_else(RiakError::not_found)?;
            single(one, StatusCode::OK)
        } else {
            match (shown.as_slice(), live) {
                (_, 0) => return Err(RiakError::not_found()),
                ([one], _) => single(one, self.single_status),
                (many, _) if self.multipart => multipart(many),
                (many, _) => {
                    let mut text = String::from("Siblings:\n");
                    for s in many {
                        text.push_str(&vtag(s));
                        text.push('\n');
                    }
                    let mut r = (StatusCode::MULTIPLE_CHOICES, text).into_response();
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
            }
        };
        if let Ok(v) = HeaderValue::from_str(&self.vclock) {
            response.headers_mut().insert(VCLOCK_HEADER, v);
        }
        Ok(response)
    }
}

fn single(s: &Sibling, status: StatusCode) -> Response {
    let mut r = (status, s.data.clone()).into_response();
    insert_all(r.headers_mut(), sibling_headers(s, true));
    r
}

fn multipart(siblings: &[&Sibling]) -> Response {
    let boundary = format!("qkv{:016x}", fastrand::u64(..));
    let mut body = Vec::new();
    for s in siblings {
        body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        for (name, value) in sibling_headers(s, false) {
            body.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&s.data);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut r = (StatusCode::MULTIPLE_CHOICES, body).into_response();
    if let Ok(ct) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Actor, DvvSet, VersionVector};

    fn sib(data: &str, ms: u64) -> Sibling {
        Sibling::value(data.as_bytes().to_vec(), "text/plain", ms)
    }

    #[test]
    fn links_come_back_in_one_header_and_metadata_as_written() {
        let s = sib("v", 1_000).with_meta(vec![
            ("link".into(), "</buckets/b/keys/a>; riaktag=\"x\"".into()),
            ("x-riak-meta-color".into(), "blue".into()),
            ("link".into(), "</buckets/b/keys/c>; riaktag=\"y\"".into()),
        ]);
        let headers = sibling_headers(&s, true);
        let links: Vec<&(String, String)> = headers.iter().filter(|(n, _)| n == "link").collect();
        assert_eq!(links.len(), 1);
        assert_eq!(
            links[0].1,
            "</buckets/b/keys/a>; riaktag=\"x\", </buckets/b/keys/c>; riaktag=\"y\""
        );
        assert!(headers.contains(&("x-riak-meta-color".into(), "blue".into())));
        assert!(headers.contains(&(
            "last-modified".into(),
            "Thu, 01 Jan 1970 00:00:01 GMT".into()
        )));
    }

    #[test]
    fn siblings_show_tombstones_beside_values_and_a_lone_tombstone_is_not_found() {
        let a = Actor::new("a");
        let blind = VersionVector::new();
        let one = DvvSet::new().update(&blind, sib("x", 1), &a);
        let deleted = one.update(&one.join(), Sibling::tombstone(2), &a);
        let state = KeyState::Siblings(deleted.clone());
        let answer = |state| Answer {
            state,
            vclock: String::new(),
            multipart: true,
            vtag: None,
            single_status: StatusCode::OK,
        };
        let gone = answer(&state).respond();
        assert!(matches!(gone, Err(e) if e.status == StatusCode::NOT_FOUND));
        let both = KeyState::Siblings(deleted.update(&blind, sib("y", 3), &a));
        assert_eq!(siblings(&both).len(), 2);
        let r = answer(&both).respond().expect("300");
        assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    }

    #[test]
    fn indexes_are_checked() {
        let mut h = HeaderMap::new();
        h.insert("x-riak-index-age_int", HeaderValue::from_static("1, 2"));
        h.insert("x-riak-index-name_bin", HeaderValue::from_static("a"));
        assert_eq!(meta_from(&h).expect("valid").len(), 2);
        h.insert("x-riak-index-age_int", HeaderValue::from_static("old"));
        assert!(meta_from(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("x-riak-index-age", HeaderValue::from_static("1"));
        assert!(meta_from(&h).is_err());
    }
}
