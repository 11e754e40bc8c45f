//! Canonical JSON (the RFC 8785 variant Decision Gate uses) and sha256 digests.
//!
//! Decision Gate hashes the `serde_jcs 0.1.0` encoding of a value re-serialized from its
//! typed form: object members sorted by their serialized key bytes, no whitespace,
//! integers printed verbatim (even beyond 2^53), floats in ECMAScript form. We use that
//! exact encoding (written by [`crate::canonical`], checked against that crate version)
//! so every digest matches the reference runpacks bit for bit.

use dg_crypto::Sha256;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The only hash algorithm Decision Gate defines; kept as an enum so the wire spelling
/// (`"sha256"`) is checked on input rather than trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// SHA-256, lowercase hex.
    #[default]
    Sha256,
}

/// A digest as it appears on the wire: `{"algorithm":"sha256","value":"<hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashDigest {
    /// Algorithm that produced `value`.
    pub algorithm: HashAlgorithm,
    /// Lowercase hex digest.
    pub value: String,
}

impl HashDigest {
    /// Wraps a raw sha256 output.
    #[must_use]
    pub fn sha256(bytes: [u8; 32]) -> Self {
        Self { algorithm: HashAlgorithm::Sha256, value: hex::encode(bytes) }
    }
}

/// Why a value could not be canonicalised or hashed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HashError {
    /// The value could not be turned into JSON (a non-string map key, a non-finite float).
    #[error("canonical json serialization failed: {0}")]
    Canonicalization(String),
    /// The canonical encoding is larger than the caller allows.
    #[error("canonical json exceeds size limit ({actual} > {limit})")]
    SizeLimitExceeded {
        /// Maximum allowed bytes.
        limit: usize,
        /// Actual canonical size.
        actual: usize,
    },
}

/// Returns the canonical JSON bytes of any serializable value.
///
/// # Errors
/// [`HashError::Canonicalization`] when the value has no JSON form.
pub fn canonical_json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, HashError> {
    // The writer sorts members itself, so the typed value is written directly; going
    // through `serde_json::Value` first (as the open-source server does) gives the same
    // bytes, which `direct_and_value_paths_agree` below checks.
    crate::canonical::to_vec(value).map_err(|err| HashError::Canonicalization(err.to_string()))
}

/// Canonical bytes, refusing anything larger than `limit`.
///
/// # Errors
/// [`HashError::SizeLimitExceeded`] over the limit, or a canonicalisation error.
pub fn canonical_json_bytes_with_limit<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>, HashError> {
    let bytes = canonical_json_bytes(value)?;
    if bytes.len() > limit {
        return Err(HashError::SizeLimitExceeded { limit, actual: bytes.len() });
    }
    Ok(bytes)
}

/// sha256 of raw bytes, as a wire digest.
#[must_use]
pub fn hash_bytes(bytes: &[u8]) -> HashDigest {
    HashDigest::sha256(Sha256::digest(bytes))
}

/// sha256 of the canonical JSON of a value.
///
/// # Errors
/// A canonicalisation error.
pub fn hash_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<HashDigest, HashError> {
    Ok(hash_bytes(&canonical_json_bytes(value)?))
}

/// sha256 of the canonical JSON of a value no larger than `limit` bytes.
///
/// # Errors
/// [`HashError::SizeLimitExceeded`] or a canonicalisation error.
pub fn hash_canonical_json_with_limit<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<HashDigest, HashError> {
    Ok(hash_bytes(&canonical_json_bytes_with_limit(value, limit)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn true_hashes_like_its_four_bytes() {
        let digest = hash_canonical_json(&json!(true)).unwrap();
        assert_eq!(digest.value, "b5bea41b6c623f7c09f1bf24dcae58ebab3c0cdd90ad966bc43a45b44867e12b");
    }

    #[test]
    fn floats_that_are_integers_print_as_integers() {
        assert_eq!(canonical_json_bytes(&json!(1.0)).unwrap(), b"1");
        assert_eq!(canonical_json_bytes(&json!(1e2)).unwrap(), b"100");
        assert_eq!(canonical_json_bytes(&json!(-0.0)).unwrap(), b"0");
    }

    #[test]
    fn big_integers_are_printed_verbatim() {
        assert_eq!(canonical_json_bytes(&json!(18446744073709551615u64)).unwrap(), b"18446744073709551615");
    }

    #[test]
    fn keys_sorted_and_no_whitespace() {
        let bytes = canonical_json_bytes(&json!({"b": [1, "x/y"], "a": {"d": null, "c": "\n"}})).unwrap();
        assert_eq!(bytes, br#"{"a":{"c":"\n","d":null},"b":[1,"x/y"]}"#);
    }

    #[test]
    fn direct_and_value_paths_agree() {
        #[derive(Serialize)]
        struct Typed {
            zeta: Option<u64>,
            alpha: Vec<serde_json::Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            big: u64,
            neg: i64,
            nested: std::collections::BTreeMap<String, f64>,
        }
        let typed = Typed {
            zeta: None,
            alpha: vec![json!({"b": 1.5, "a": [true, null, "\u{e9}/x"]}), json!(1e21), json!(-0.0)],
            skipped: None,
            big: u64::MAX,
            neg: i64::MIN,
            nested: [("é".to_string(), 0.1), ("e".to_string(), 2.0)].into_iter().collect(),
        };
        let via_value = serde_jcs::to_vec(&serde_json::to_value(&typed).unwrap()).unwrap();
        assert_eq!(canonical_json_bytes(&typed).unwrap(), via_value);
    }

    #[test]
    fn size_limit_is_enforced() {
        let err = canonical_json_bytes_with_limit(&json!("abcdef"), 4).unwrap_err();
        assert_eq!(err, HashError::SizeLimitExceeded { limit: 4, actual: 8 });
    }
}
