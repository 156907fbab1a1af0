//! Errors of the causality layer. All of them are the client's or the peer's doing, never a
//! reason to panic: bad tokens and sibling overflow are answered 400/409-style upstream, a state
//! that does not decode is treated as corrupt and repaired from another replica.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CausalError {
    #[error("write refused: it would leave {count} siblings, more than the limit of {max}; read the key and write back with its causal context to merge them")]
    TooManySiblings { count: usize, max: usize },
}

/// Why a context token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("causal context token is longer than {max} characters")]
    TooLarge { max: usize },
    #[error("causal context token is not base64url")]
    NotBase64,
    #[error("causal context token was not issued by this cluster for this key (damaged, truncated, forged, or another key's)")]
    NotIssued,
    #[error("causal context token has unknown version {0}")]
    UnknownVersion(u8),
    #[error("causal context token is malformed: {0}")]
    Malformed(&'static str),
}

/// Why stored or received bytes are not a valid state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated")]
    Truncated,
    #[error("unknown format tag {0:#04x}")]
    UnknownTag(u8),
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    #[error("malformed: {0}")]
    Malformed(&'static str),
}
