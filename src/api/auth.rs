//! Client authentication and authorisation: `Authorization: Bearer <token>`, each token
//! granted `read`, `write` and `admin` per bucket (or `*`), from the `[security] tokens_file`.
//!
//! The file holds only each token's BLAKE3 hash; a presented token is hashed and looked up,
//! so neither the file nor the lookup's timing gives a token away. What each endpoint needs:
//! `GET /kv/{b}/..` read on b; `PUT`/`DELETE` write on b; `/admin/preflist|replica/{b}/..`
//! admin on b; every other `/admin/*` and `/metrics` admin on `*`; `/health` is open (load
//! balancers probe it). No file, no checks: allowed only on loopback (config validation).
//!
//! The Riak surface: objects and key listings as `/kv` (read or write on b); a bucket's
//! properties read on b, changed with admin on b; the bucket listing admin on `*`; `/` and
//! `/ping` open; `/stats` any valid token (clients read it when they connect). Riak's
//! clients send HTTP basic auth: the password is the token (the user name is not checked).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Admin,
}

/// The tokens file: `[[token]] name, blake3, grants = { carts = ["read", "write"], "*" = ["admin"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    /// Hex of the BLAKE3 hash of the token.
    blake3: String,
    grants: BTreeMap<String, Vec<Access>>,
}

/// Who a token is and what it may do.
#[derive(Debug)]
struct Holder {
    name: String,
    grants: BTreeMap<String, Vec<Access>>,
}

impl Holder {
    fn may(&self, access: Access, bucket: &str) -> bool {
        [bucket, "*"]
            .iter()
            .filter_map(|b| self.grants.get(*b))
            .any(|granted| granted.contains(&access))
    }
}

/// The grant table, keyed by token hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Holder>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
        let file: TokensFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut by_hash = HashMap::new();
        for entry in file.token {
            let hash = blake3::Hash::from_hex(entry.blake3.trim()).map_err(|_| {
                format!(
                    "{}: token {:?}: blake3 must be 64 hex digits (`quorumkv token` prints it)",
                    path.display(),
                    entry.name
                )
            })?;
            let holder = Holder {
                name: entry.name,
                grants: entry.grants,
            };
            by_hash.insert(*hash.as_bytes(), holder);
        }
        Ok(Tokens { by_hash })
    }

    fn holder(&self, token: &str) -> Option<&Holder> {
        self.by_hash.get(blake3::hash(token.as_bytes()).as_bytes())
    }
}

/// A new random token and the hash its tokens-file entry holds.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
    let token: String = std::iter::once("qkv_".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let hash = blake3::hash(token.as_bytes()).to_hex().to_string();
    Ok((token, hash))
}

/// What a request needs: an access on a bucket (`*`: any grant will do for `None`, a
/// valid token), or nothing.
fn needs(method: &Method, path: &str) -> Option<(Access, String)> {
    let mut parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.first() == Some(&"types") && parts.get(2) == Some(&"buckets") {
        parts.drain(..2);
    }
    let reads = method == Method::GET || method == Method::HEAD;
    let riak_bucket = |raw: &str| super::riak::decode(raw).unwrap_or_else(|_| raw.to_owned());
    match parts.as_slice() {
        ["buckets"] => return Some((Access::Admin, "*".to_owned())),
        ["buckets", b, "props"] if reads => return Some((Access::Read, riak_bucket(b))),
        ["buckets", b, "props"] => return Some((Access::Admin, riak_bucket(b))),
        ["buckets", b, ..] if reads => return Some((Access::Read, riak_bucket(b))),
        ["buckets", b, ..] => return Some((Access::Write, riak_bucket(b))),
        [""] | ["ping"] => return None,
        _ => {}
    }
    let mut parts = parts.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("health"), None, _) => None,
        (Some("kv"), Some(bucket), _) => {
            let access = if method == Method::GET || method == Method::HEAD {
                Access::Read
            } else {
                Access::Write
            };
            Some((access, bucket.to_owned()))
        }
        (Some("admin"), Some("preflist" | "replica"), Some(bucket)) => {
            Some((Access::Admin, bucket.to_owned()))
        }
        _ => Some((Access::Admin, "*".to_owned())),
    }
}

/// The token of an `Authorization` header: `Bearer <token>`, or HTTP basic auth (as Riak's
/// clients send it) whose password is the token.
fn presented_token(value: &str) -> Option<String> {
    use base64::Engine;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// The middleware: 401 without a known token, 403 without the grant.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(tokens) = state.tokens.as_ref() else {
        return next.run(request).await;
    };
    let Some((access, bucket)) = needs(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(presented_token);
    let Some(holder) = presented.as_deref().and_then(|t| tokens.holder(t)) else {
        let mut refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a valid token: Authorization: Bearer <token>",
        )
        .into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    };
    // `/stats`: Riak's clients read it as they connect, whatever their grants.
    let any_token = request.uri().path() == "/stats";
    if !any_token && !holder.may(access, &bucket) {
        tracing::debug!(token = %holder.name, ?access, %bucket, "request refused: no grant");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has no {access:?} grant on bucket {bucket:?}",
                holder.name
            ),
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_needs_its_grant() {
        assert_eq!(needs(&Method::GET, "/health"), None);
        assert_eq!(
            needs(&Method::GET, "/kv/carts/a"),
            Some((Access::Read, "carts".into()))
        );
        assert_eq!(
            needs(&Method::PUT, "/kv/carts/a"),
            Some((Access::Write, "carts".into()))
        );
        assert_eq!(
            needs(&Method::DELETE, "/kv/carts/a"),
            Some((Access::Write, "carts".into()))
        );
        assert_eq!(
            needs(&Method::GET, "/admin/replica/carts/a"),
            Some((Access::Admin, "carts".into()))
        );
        assert_eq!(
            needs(&Method::GET, "/admin/status"),
            Some((Access::Admin, "*".into()))
        );
        assert_eq!(
            needs(&Method::GET, "/metrics"),
            Some((Access::Admin, "*".into()))
        );
        assert_eq!(
            needs(&Method::GET, "/nowhere"),
            Some((Access::Admin, "*".into()))
        );
    }

    #[test]
    fn the_riak_surface_needs_the_same_grants() {
        let read = |b: &str| Some((Access::Read, b.to_owned()));
        assert_eq!(needs(&Method::GET, "/buckets/carts/keys/a"), read("carts"));
        assert_eq!(
            needs(&Method::HEAD, "/types/default/buckets/my+carts/keys/a"),
            read("my carts")
        );
        assert_eq!(
            needs(&Method::POST, "/buckets/carts/keys"),
            Some((Access::Write, "carts".into()))
        );
        assert_eq!(
            needs(&Method::GET, "/buckets/carts/keys?keys=true"),
            read("carts")
        );
        assert_eq!(needs(&Method::GET, "/buckets/carts/props"), read("carts"));
        assert_eq!(
            needs(&Method::PUT, "/buckets/carts/props"),
            Some((Access::Admin, "carts".into()))
        );
        assert_eq!(
            needs(&Method::GET, "/buckets"),
            Some((Access::Admin, "*".into()))
        );
        assert_eq!(needs(&Method::GET, "/ping"), None);
        assert_eq!(needs(&Method::GET, "/"), None);
    }

    #[test]
    fn basic_auth_presents_its_password_as_the_token() {
        assert_eq!(presented_token("Bearer qkv_1 "), Some("qkv_1".into()));
        // "riak:qkv_2"
        assert_eq!(
            presented_token("Basic cmlhazpxa3ZfMg=="),
            Some("qkv_2".into())
        );
        assert_eq!(presented_token("Basic !!"), None);
        assert_eq!(presented_token("Digest x"), None);
    }

    #[test]
    fn a_wildcard_grant_covers_every_bucket() {
        let holder = Holder {
            name: "ops".into(),
            grants: [("*".to_owned(), vec![Access::Read])].into_iter().collect(),
        };
        assert!(holder.may(Access::Read, "carts"));
        assert!(!holder.may(Access::Write, "carts"));
    }
}
