//! The Riak-compatible HTTP surface (Riak KV's plain-KV endpoints), served beside `/kv` by
//! every node, through the same coordinator and the same causality: `X-Riak-Vclock` is the
//! causal context token, Riak's bucket properties are the cluster's bucket metadata.
//!
//! - `object`: `/buckets/{b}/keys/{k}` reads, writes, deletes, and new keys;
//! - `props`: `/buckets/{b}/props`;
//! - `listing`: `/buckets?buckets=` and `/buckets/{b}/keys?keys=` through a coverage plan;
//! - `info`: `/`, `/ping`, `/stats`;
//! - `wire`: the object's headers and multipart answers; `query`: Riak's query parameters.
//!
//! Every path also answers under `/types/default/`; other bucket types do not exist here.
//! Errors are `text/plain`, as Riak's are (its clients show the body as it is).

mod info;
mod listing;
mod object;
mod props;
mod query;
mod wire;

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use percent_encoding::percent_decode_str;

use super::error::ApiError;
use super::{params, AppState};
use crate::rpc::Failure;

/// The Riak version `/stats` reports: clients enable what Riak had by then (bucket types,
/// streaming lists, client timeouts) from it.
pub const RIAK_KV_VERSION: &str = "2.0.0";

/// The object routes (counted and timed with `/kv`'s), under `/buckets` and
/// `/types/{type}/buckets`.
pub fn object_routes() -> Router<AppState> {
    let mut router = Router::new();
    for prefix in ["", "/types/{type}"] {
        router = router.route(
            &format!("{prefix}/buckets/{{bucket}}/keys/{{key}}"),
            get(object::get)
                .put(object::put)
                .post(object::put)
                .delete(object::delete),
        );
    }
    router
}

/// The other Riak routes: the resource map, ping, stats, properties, listings.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/", get(info::resources))
        .route("/ping", get(info::ping))
        .route("/stats", get(info::stats));
    for prefix in ["", "/types/{type}"] {
        router = router
            .route(&format!("{prefix}/buckets"), get(listing::buckets))
            .route(
                &format!("{prefix}/buckets/{{bucket}}/props"),
                get(props::get).put(props::put).delete(props::delete),
            )
            .route(
                &format!("{prefix}/buckets/{{bucket}}/keys"),
                get(listing::keys).post(object::create),
            )
            .route(
                &format!("{prefix}/buckets/{{bucket}}/index/{{*query}}"),
                get(object::index),
            );
    }
    router
}

/// An error as Riak gives it: a status and a line of text.
#[derive(Debug)]
pub struct RiakError {
    pub status: StatusCode,
    pub message: String,
}

impl RiakError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> RiakError {
        RiakError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> RiakError {
        RiakError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> RiakError {
        RiakError::new(StatusCode::NOT_FOUND, "not found")
    }
}

impl From<ApiError> for RiakError {
    fn from(e: ApiError) -> Self {
        RiakError::new(e.status, e.message)
    }
}

impl From<Failure> for RiakError {
    fn from(f: Failure) -> Self {
        ApiError::from(f).into()
    }
}

impl IntoResponse for RiakError {
    fn into_response(self) -> Response {
        let mut r = (self.status, format!("{}\n", self.message)).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    }
}

/// The bucket (and key) a Riak path names, decoded as Riak decodes them (`+` is a space:
/// its clients quote names with `quote_plus`).
#[derive(Debug, PartialEq, Eq)]
pub struct Names {
    /// The path up to and including the bucket, for `Location` answers.
    pub prefix: String,
    pub bucket: String,
    pub key: Option<String>,
}

/// Parses `[/types/{t}]/buckets/{b}[/keys/{k}|/props|...]`; only the `default` type exists.
pub fn names(uri: &Uri) -> Result<Names, RiakError> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let at = match segments.as_slice() {
        ["types", t, "buckets", _, ..] => {
            if decode(t)? != "default" {
                return Err(RiakError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown bucket type {:?}: only \"default\" exists",
                        decode(t)?
                    ),
                ));
            }
            3
        }
        ["buckets", _, ..] => 1,
        _ => return Err(RiakError::not_found()),
    };
    let bucket = checked("bucket", &decode(segments[at])?)?;
    let key = match &segments[at + 1..] {
        ["keys", k] => Some(checked("key", &decode(k)?)?),
        _ => None,
    };
    Ok(Names {
        prefix: format!("/{}", segments[..=at].join("/")),
        bucket,
        key,
    })
}

/// A path segment or query value, form-decoded.
pub fn decode(raw: &str) -> Result<String, RiakError> {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| RiakError::bad_request("names must be UTF-8 once decoded"))
}

fn checked(what: &'static str, name: &str) -> Result<String, RiakError> {
    params::check_name(what, name).map_err(RiakError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_as_riak_decodes_them() {
        let uri: Uri = "/types/default/buckets/my+b%C3%BAcket/keys/a%2Bb+c"
            .parse()
            .expect("uri");
        let n = names(&uri).expect("names");
        assert_eq!(n.bucket, "my búcket");
        assert_eq!(n.key.as_deref(), Some("a+b c"));
        assert_eq!(n.prefix, "/types/default/buckets/my+b%C3%BAcket");
        let other: Uri = "/types/maps/buckets/b/keys/k".parse().expect("uri");
        assert_eq!(
            names(&other).map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
        let props: Uri = "/buckets/b/props".parse().expect("uri");
        assert_eq!(names(&props).expect("names").key, None);
    }
}
