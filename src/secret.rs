//! The cluster secret: 32 random bytes that every node of a cluster holds, in a file of their
//! own (hex, one line), never in the config or the logs. Keys for separate jobs are derived
//! from it (BLAKE3's key derivation), so no two uses share a key: the node links' pre-shared
//! key and the key that authenticates causal contexts.

use std::fmt;
use std::path::Path;

const LEN: usize = 32;

/// The secret itself; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ClusterSecret([u8; LEN]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A new secret from the operating system's random source.
    pub fn generate() -> Result<ClusterSecret, String> {
        let mut bytes = [0; LEN];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
        Ok(ClusterSecret(bytes))
    }

    /// The file's text: the secret in hex and a newline.
    pub fn to_file_text(&self) -> String {
        let mut text: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        text.push('\n');
        text
    }

    /// Reads a secret file. The error names the file and what is wrong, never its content.
    pub fn load(path: &Path) -> Result<ClusterSecret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the cluster secret {}: {e}", path.display()))?;
        ClusterSecret::parse(text.trim()).ok_or_else(|| {
            format!(
                "{} is not a cluster secret: expected {} hex digits on one line \
                 (make one with `quorumkv secret`)",
                path.display(),
                LEN * 2
            )
        })
    }

    fn parse(hex: &str) -> Option<ClusterSecret> {
        if hex.len() != LEN * 2 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0; LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterSecret(bytes))
    }

    /// The pre-shared key of the encrypted node links.
    pub fn link_key(&self) -> [u8; 32] {
        blake3::derive_key("quorumkv 2026-12 node link psk", &self.0)
    }

    /// The key that authenticates causal-context tokens.
    pub fn context_key(&self) -> [u8; 32] {
        blake3::derive_key("quorumkv 2026-12 causal context mac", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_survives_its_file_and_derives_distinct_keys() {
        let secret = ClusterSecret::generate().expect("random");
        let again = ClusterSecret::parse(secret.to_file_text().trim()).expect("parses");
        assert_eq!(secret.0, again.0);
        assert_ne!(secret.link_key(), secret.context_key());
        assert_eq!(format!("{secret:?}"), "ClusterSecret(..)");
    }

    #[test]
    fn anything_but_64_hex_digits_is_refused() {
        assert!(ClusterSecret::parse("abc").is_none());
        assert!(ClusterSecret::parse(&"zz".repeat(32)).is_none());
        assert!(ClusterSecret::parse(&"ab".repeat(33)).is_none());
        assert!(ClusterSecret::parse(&"é".repeat(32)).is_none());
    }
}
