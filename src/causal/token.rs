//! The opaque `X-Causal-Context` token of API.md: a causal context bound to one key.
//!
//! Bytes, before base64url (no padding):
//! `version u8 (1) | key binding u32 | actor count varint | (actor, counter varint)* | crc32 u32`
//! where the key binding is the crc32 of the length-prefixed bucket and key, and the final crc32
//! covers every byte before it. The binding makes a token of one key useless on another; the
//! checksum catches truncation and damage. Everything is checked before it is used, and a
//! token longer than [`MAX_TOKEN_LEN`] is refused before decoding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::codec::{put_bytes, put_varint, Reader};
use super::dvvset::VersionVector;
use super::error::TokenError;

const VERSION: u8 = 1;
/// Longest token accepted, in characters: room for hundreds of actors, far more than a key's
/// replicas and fallbacks ever produce.
pub const MAX_TOKEN_LEN: usize = 8192;

fn key_binding(bucket: &[u8], key: &[u8]) -> u32 {
    let mut bound = Vec::with_capacity(bucket.len() + key.len() + 4);
    put_bytes(&mut bound, bucket);
    put_bytes(&mut bound, key);
    crc32fast::hash(&bound)
}

/// Encodes `context` as the token for (`bucket`, `key`).
pub fn encode(bucket: &[u8], key: &[u8], context: &VersionVector) -> String {
    let mut out = vec![VERSION];
    out.extend_from_slice(&key_binding(bucket, key).to_le_bytes());
    put_varint(&mut out, context.len() as u64);
    for (actor, counter) in context.iter() {
        put_bytes(&mut out, actor.as_str().as_bytes());
        put_varint(&mut out, counter);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    URL_SAFE_NO_PAD.encode(out)
}

/// Decodes a token a client sent for (`bucket`, `key`).
pub fn decode(bucket: &[u8], key: &[u8], token: &str) -> Result<VersionVector, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge { max: MAX_TOKEN_LEN });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::NotBase64)?;
    let body_len = bytes.len().checked_sub(4).ok_or(TokenError::Damaged)?;
    let (body, crc) = bytes.split_at(body_len);
    if body.len() < 6 || crc32fast::hash(body).to_le_bytes() != crc {
        return Err(TokenError::Damaged);
    }
    if body[0] != VERSION {
        return Err(TokenError::UnknownVersion(body[0]));
    }
    if body[1..5] != key_binding(bucket, key).to_le_bytes() {
        return Err(TokenError::WrongKey);
    }
    let mut r = Reader { buf: &body[5..] };
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

    #[test]
    fn round_trip_and_compact() {
        let token = encode(b"carts", b"alice", &context());
        assert!(token.len() < 60, "{token}");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode(b"carts", b"alice", &token), Ok(context()));
    }

    #[test]
    fn a_token_of_another_key_or_bucket_is_refused() {
        let token = encode(b"carts", b"alice", &context());
        assert_eq!(decode(b"carts", b"bob", &token), Err(TokenError::WrongKey));
        assert_eq!(
            decode(b"cart", b"salice", &token),
            Err(TokenError::WrongKey)
        );
    }

    #[test]
    fn truncation_and_damage_are_refused() {
        let token = encode(b"b", b"k", &context());
        for cut in 0..token.len() {
            assert!(decode(b"b", b"k", &token[..cut]).is_err(), "cut at {cut}");
        }
        let mut chars: Vec<char> = token.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let damaged: String = chars.into_iter().collect();
        assert!(decode(b"b", b"k", &damaged).is_err());
        assert_eq!(
            decode(b"b", b"k", "not base64!"),
            Err(TokenError::NotBase64)
        );
        let huge = "A".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            decode(b"b", b"k", &huge),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_empty_context_has_a_token_too() {
        let token = encode(b"b", b"k", &VersionVector::new());
        assert_eq!(decode(b"b", b"k", &token), Ok(VersionVector::new()));
    }
}
