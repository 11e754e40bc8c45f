//! Stored documents: canonical JSON bytes plus their sha256, verified on every read.

use dg_crypto::Sha256;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// A document ready to store.
pub struct Document {
    /// Canonical JSON bytes.
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
}

/// Canonicalises a value for storage, refusing anything over `limit` bytes.
///
/// # Errors
/// [`StoreError::Canonical`] or [`StoreError::TooLarge`].
pub fn encode<T: Serialize>(value: &T, what: &'static str, limit: usize) -> Result<Document, StoreError> {
    let bytes = dg_engine::canonical_json_bytes(value).map_err(|err| StoreError::Canonical(err.to_string()))?;
    if bytes.len() > limit {
        return Err(StoreError::TooLarge { what, actual: bytes.len(), limit });
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Document { bytes, sha256 })
}

/// Checks a stored document (canonical JSON, or its compact form: `compact.rs`) against its
/// stored hash, then parses it.
///
/// # Errors
/// [`StoreError::Integrity`] on a hash mismatch or a damaged compact form (the bytes are
/// never parsed then), or [`StoreError::Corrupt`] when they do not parse.
pub fn decode<T: DeserializeOwned>(
    stored: &[u8],
    stored_sha256: &str,
    table: &'static str,
    key: impl Fn() -> String,
) -> Result<T, StoreError> {
    let bytes = crate::compact::unpack(stored, table, &key)?;
    if hex::encode(Sha256::digest(&bytes)) != stored_sha256 {
        return Err(StoreError::Integrity { table, key: key() });
    }
    serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt { table, key: key(), reason: err.to_string() })
}
