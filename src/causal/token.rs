//! The opaque `X-Causal-Context` token of API.md: a causal context the cluster issued for one
//! key.
//!
//! Bytes, before base64url (no padding):
//! `version u8 (2) | actor count varint | (actor, counter varint)* | tag [32]`
//! where the tag is BLAKE3 keyed with the cluster's [`ContextKey`] over the length-prefixed
//! bucket and key and every byte before it. A token is therefore accepted only for the key it
//! was issued for, by the cluster that issued it, unchanged: a client cannot forge counters or
//! invent actors, so no token can wrap a counter or bloat a key's clock. Everything is checked
//! before it is used, and a token longer than [`MAX_TOKEN_LEN`] is refused before decoding.
//!
//! The Riak surface carries the same bytes as `X-Riak-Vclock`, in standard padded base64
//! (Riak's clients decode and re-encode it so): [`encode_vclock`], [`decode_vclock`].

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::codec::{put_bytes, put_varint, Reader};
use super::dvvset::VersionVector;
use super::error::TokenError;

const VERSION: u8 = 2;
const TAG_LEN: usize = 32;
/// Longest token accepted, in characters: room for hundreds of actors, far more than a key's
/// replicas and fallbacks ever produce.
pub const MAX_TOKEN_LEN: usize = 8192;

/// The key that authenticates tokens: derived from the cluster secret, or, on a cluster
/// without one, from its settings (which catches damage and other clusters' tokens, not a
/// forger who has the config).
#[derive(Clone)]
pub struct ContextKey([u8; 32]);

impl ContextKey {
    pub fn new(key: [u8; 32]) -> ContextKey {
        ContextKey(key)
    }

    /// For a cluster without a secret: a key anyone with the config can compute.
    pub fn from_settings(cluster_hash: u64) -> ContextKey {
        ContextKey(blake3::derive_key(
            "quorumkv 2026-12 causal context mac without a secret",
            &cluster_hash.to_le_bytes(),
        ))
    }

    fn tag(&self, bucket: &[u8], key: &[u8], body: &[u8]) -> blake3::Hash {
        let mut bound = Vec::with_capacity(bucket.len() + key.len() + 8);
        put_bytes(&mut bound, bucket);
        put_bytes(&mut bound, key);
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&bound);
        h.update(body);
        h.finalize()
    }
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

/// Encodes `context` as the token for (`bucket`, `key`).
pub fn encode(mac: &ContextKey, bucket: &[u8], key: &[u8], context: &VersionVector) -> String {
    URL_SAFE_NO_PAD.encode(seal(mac, bucket, key, context))
}

/// [`encode`] for `X-Riak-Vclock`.
pub fn encode_vclock(
    mac: &ContextKey,
    bucket: &[u8],
    key: &[u8],
    context: &VersionVector,
) -> String {
    STANDARD.encode(seal(mac, bucket, key, context))
}

/// Decodes a token a client sent for (`bucket`, `key`).
pub fn decode(
    mac: &ContextKey,
    bucket: &[u8],
    key: &[u8],
    token: &str,
) -> Result<VersionVector, TokenError> {
    check_len(token)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::NotBase64)?;
    open(mac, bucket, key, &bytes)
}

/// [`decode`] for `X-Riak-Vclock`.
pub fn decode_vclock(
    mac: &ContextKey,
    bucket: &[u8],
    key: &[u8],
    vclock: &str,
) -> Result<VersionVector, TokenError> {
    check_len(vclock)?;
    let bytes = STANDARD.decode(vclock).map_err(|_| TokenError::NotBase64)?;
    open(mac, bucket, key, &bytes)
}

fn check_len(token: &str) -> Result<(), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge { max: MAX_TOKEN_LEN });
    }
    Ok(())
}

/// The token's bytes: the context, then the tag binding it to the key and the cluster.
fn seal(mac: &ContextKey, bucket: &[u8], key: &[u8], context: &VersionVector) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_varint(&mut out, context.len() as u64);
    for (actor, counter) in context.iter() {
        put_bytes(&mut out, actor.as_str().as_bytes());
        put_varint(&mut out, counter);
    }
    let tag = mac.tag(bucket, key, &out);
    out.extend_from_slice(tag.as_bytes());
    out
}

/// Checks and reads a token's bytes.
fn open(
    mac: &ContextKey,
    bucket: &[u8],
    key: &[u8],
    bytes: &[u8],
) -> Result<VersionVector, TokenError> {
    let body_len = bytes
        .len()
        .checked_sub(TAG_LEN)
        .filter(|&n| n >= 2)
        .ok_or(TokenError::NotIssued)?;
    let (body, tag) = bytes.split_at(body_len);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| TokenError::NotIssued)?;
    // Hash equality is constant-time: the comparison tells a forger nothing.
    if mac.tag(bucket, key, body) != blake3::Hash::from_bytes(tag) {
        return Err(TokenError::NotIssued);
    }
    if body[0] != VERSION {
        return Err(TokenError::UnknownVersion(body[0]));
    }
    let mut r = Reader { buf: &body[1..] };
    let malformed = |_| TokenError::Malformed("bad entry");
    let count = r.varint().map_err(malformed)?;
    let mut context = VersionVector::new();
    let mut previous = None;
    for _ in 0..count {
        let actor = r.actor().map_err(malformed)?;
        let counter = r.varint().map_err(malformed)?;
        if previous.as_ref().is_some_and(|p| *p >= actor) {
            return Err(TokenError::Malformed("actors out of order"));
        }
        if counter == 0 {
            return Err(TokenError::Malformed("zero counter"));
        }
        previous = Some(actor.clone());
        context.witness(actor, counter);
    }
    if !r.buf.is_empty() {
        return Err(TokenError::Malformed("trailing bytes"));
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::super::dvvset::Actor;
    use super::*;

    fn context() -> VersionVector {
        [(Actor::new("n1#1"), 5), (Actor::new("n2#1"), 12)]
            .into_iter()
            .collect()
    }

    fn mac() -> ContextKey {
        ContextKey::new([9; 32])
    }

    #[test]
    fn round_trip_and_compact() {
        let token = encode(&mac(), b"carts", b"alice", &context());
        assert!(token.len() < 90, "{token}");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode(&mac(), b"carts", b"alice", &token), Ok(context()));
    }

    #[test]
    fn a_token_of_another_key_bucket_or_cluster_is_refused() {
        let token = encode(&mac(), b"carts", b"alice", &context());
        let refused = Err(TokenError::NotIssued);
        assert_eq!(decode(&mac(), b"carts", b"bob", &token), refused);
        assert_eq!(decode(&mac(), b"cart", b"salice", &token), refused);
        let other = ContextKey::new([8; 32]);
        assert_eq!(decode(&other, b"carts", b"alice", &token), refused);
    }

    #[test]
    fn a_forged_counter_is_refused() {
        // What a client could mint before tokens were authenticated: a huge counter.
        let forged: VersionVector = [(Actor::new("n1#1"), u64::MAX)].into_iter().collect();
        let mine = encode(&ContextKey::new([0; 32]), b"b", b"k", &forged);
        assert_eq!(
            decode(&mac(), b"b", b"k", &mine),
            Err(TokenError::NotIssued)
        );
    }

    #[test]
    fn truncation_and_damage_are_refused() {
        let token = encode(&mac(), b"b", b"k", &context());
        for cut in 0..token.len() {
            assert!(
                decode(&mac(), b"b", b"k", &token[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut chars: Vec<char> = token.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let damaged: String = chars.into_iter().collect();
        assert!(decode(&mac(), b"b", b"k", &damaged).is_err());
        assert_eq!(
            decode(&mac(), b"b", b"k", "not base64!"),
            Err(TokenError::NotBase64)
        );
        let huge = "A".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            decode(&mac(), b"b", b"k", &huge),
            Err(TokenError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn garbage_with_a_valid_tag_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300)) {
            let mut bytes = body.clone();
            bytes.extend_from_slice(mac().tag(b"b", b"k", &body).as_bytes());
            let _ = decode(&mac(), b"b", b"k", &URL_SAFE_NO_PAD.encode(&bytes));
            let mut versioned = vec![VERSION];
            versioned.extend_from_slice(&body);
            let mut bytes = versioned.clone();
            bytes.extend_from_slice(mac().tag(b"b", b"k", &versioned).as_bytes());
            let _ = decode(&mac(), b"b", b"k", &URL_SAFE_NO_PAD.encode(&bytes));
        }
    }

    #[test]
    fn an_empty_context_has_a_token_too() {
        let token = encode(&mac(), b"b", b"k", &VersionVector::new());
        assert_eq!(decode(&mac(), b"b", b"k", &token), Ok(VersionVector::new()));
    }
}
