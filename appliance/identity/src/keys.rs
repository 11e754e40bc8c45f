//! API keys. A key reads `dgk_<key id>_<secret>_<checksum>`: the prefix and checksum let
//! anyone (a log scanner, a secret scanner) recognise a leaked key offline; the secret is
//! 256 random bits; only the sha256 of the whole token is stored.

use dg_crypto::Sha256;
use thiserror::Error;

/// Visible prefix of every appliance API key.
pub const KEY_PREFIX: &str = "dgk_";

/// A freshly issued key: shown once, never stored.
pub struct IssuedKey {
    /// Public id.
    pub key_id: String,
    /// The whole token.
    pub token: String,
}

/// Why a presented token is not a well-formed key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyFormatError {
    /// Wrong prefix.
    #[error("not an appliance API key (missing dgk_ prefix)")]
    Prefix,
    /// Wrong number of parts or lengths.
    #[error("malformed API key")]
    Shape,
    /// Checksum mismatch: a typo or a truncated copy.
    #[error("API key checksum mismatch")]
    Checksum,
}

fn checksum(key_id: &str, secret: &str) -> String {
    let digest = Sha256::digest(format!("{KEY_PREFIX}{key_id}_{secret}").as_bytes());
    hex::encode(&digest[..4])
}

/// Issues a new key.
#[must_use]
pub fn issue() -> IssuedKey {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    dg_crypto::fill_random(&mut id);
    dg_crypto::fill_random(&mut secret);
    let key_id = hex::encode(id);
    let secret = hex::encode(secret);
    let sum = checksum(&key_id, &secret);
    IssuedKey { token: format!("{KEY_PREFIX}{key_id}_{secret}_{sum}"), key_id }
}

/// Checks a token's shape and checksum and returns its key id (no storage access).
///
/// # Errors
/// [`KeyFormatError`].
pub fn parse(token: &str) -> Result<&str, KeyFormatError> {
    let rest = token.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
    let mut parts = rest.split('_');
    let (Some(key_id), Some(secret), Some(sum), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(KeyFormatError::Shape);
    };
    let hex_of =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_of(key_id, 16) || !hex_of(secret, 64) || !hex_of(sum, 8) {
        return Err(KeyFormatError::Shape);
    }
    if checksum(key_id, secret) != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(key_id)
}

/// What is stored for a token: its sha256.
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Extracts the token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive, at most 8 KiB).
#[must_use]
pub fn bearer_token(header: &str) -> Option<&str> {
    if header.len() > 8 * 1024 {
        return None;
    }
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_and_typos_do_not() {
        let key = issue();
        assert_eq!(parse(&key.token).unwrap(), key.key_id);
        let mut typo = key.token.clone().into_bytes();
        let last = typo.len() - 10;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(&String::from_utf8(typo).unwrap()), Err(KeyFormatError::Checksum));
        assert_eq!(parse("sk_live_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(parse("dgk_1_2_3"), Err(KeyFormatError::Shape));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token(&format!("Bearer {}", "a".repeat(9000))), None);
    }
}
