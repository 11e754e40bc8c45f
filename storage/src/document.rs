//! Stored documents: canonical JSON bytes plus their sha256, verified on every read.

use dg_crypto::Sha256;
use serde::de::DeserializeOwned;
use serde::Serialize;

use dg_engine::data_shape::DataShapeRecord;
use dg_engine::spec::ScenarioSpec;

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

/// A stored scenario, checked as [`decode`] does and against its row's key: the spec must
/// name the row's scenario id and namespace (a document moved under another key, hash and
/// all, is refused). Both backends read scenarios through this.
///
/// # Errors
/// As [`decode`]; [`StoreError::Integrity`] when the spec names another key.
pub fn decode_scenario(
    stored: &[u8],
    stored_sha256: &str,
    (tenant_id, namespace_id): (u64, u64),
    scenario_id: &str,
) -> Result<ScenarioSpec, StoreError> {
    let key = || format!("{tenant_id}/{namespace_id}/{scenario_id}");
    let spec: ScenarioSpec = decode(stored, stored_sha256, "scenarios", key)?;
    if spec.scenario_id != scenario_id || spec.namespace_id.get() != namespace_id {
        return Err(StoreError::Integrity { table: "scenarios", key: key() });
    }
    Ok(spec)
}

/// A stored data shape, checked as [`decode`] does and against its row's key (tenant,
/// namespace, schema id and version). The row's key is (tenant, namespace) with the ids
/// (document.rs sits below `store`, so it takes plain ids, not a `Scope`). Both backends read shapes through this.
///
/// # Errors
/// As [`decode`]; [`StoreError::Integrity`] when the record names another key.
pub fn decode_shape(
    stored: &[u8],
    stored_sha256: &str,
    (tenant_id, namespace_id): (u64, u64),
    schema_id: &str,
    version: &str,
) -> Result<DataShapeRecord, StoreError> {
    let key = || format!("{tenant_id}/{namespace_id}/{schema_id}@{version}");
    let record: DataShapeRecord = decode(stored, stored_sha256, "data_shapes", key)?;
    if record.tenant_id.get() != tenant_id
        || record.namespace_id.get() != namespace_id
        || record.schema_id != schema_id
        || record.version != version
    {
        return Err(StoreError::Integrity { table: "data_shapes", key: key() });
    }
    Ok(record)
}
