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

/// Whether a stored document names the row that holds it, for `store check`: `row_key` is
/// the row's key as both backends' checks render it (`tenant/namespace/run_id`,
/// `tenant/namespace/scenario_id`, `tenant/namespace/schema_id@version`, the key id, the
/// subject), and the document's own ids rendered the same way must equal it. A scenario
/// names no tenant, so only its namespace and id are compared. Other tables pass.
#[must_use]
pub fn names_its_row(table: &str, row_key: &str, document: &serde_json::Value) -> bool {
    own_key(table, row_key, document).as_deref() == Some(row_key)
}

/// The document's ids rendered as its table's row key (`names_its_row`).
fn own_key(table: &str, row_key: &str, document: &serde_json::Value) -> Option<String> {
    let text = |field: &str| match document.get(field) {
        Some(serde_json::Value::String(value)) => Some(value.clone()),
        Some(serde_json::Value::Number(value)) => Some(value.to_string()),
        _ => None,
    };
    Some(match table {
        "runs" => format!("{}/{}/{}", text("tenant_id")?, text("namespace_id")?, text("run_id")?),
        "scenarios" => {
            let (tenant, _) = row_key.split_once('/')?;
            format!("{tenant}/{}/{}", text("namespace_id")?, text("scenario_id")?)
        }
        "data_shapes" => {
            format!("{}/{}/{}@{}", text("tenant_id")?, text("namespace_id")?, text("schema_id")?, text("version")?)
        }
        "api_keys" => text("key_id")?,
        "oidc_subjects" => text("subject")?,
        _ => row_key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::names_its_row;
    use serde_json::json;

    #[test]
    fn a_document_names_its_row_only_with_every_id_of_the_rows_key() {
        let run = json!({"tenant_id": 1, "namespace_id": 2, "run_id": "r/1"});
        assert!(names_its_row("runs", "1/2/r/1", &run));
        assert!(!names_its_row("runs", "9/2/r/1", &run));
        assert!(!names_its_row("runs", "1/2/r", &json!({"tenant_id": 1, "namespace_id": 2})));
        let spec = json!({"namespace_id": 2, "scenario_id": "sc"});
        assert!(names_its_row("scenarios", "0/2/sc", &spec));
        assert!(!names_its_row("scenarios", "0/3/sc", &spec));
        let shape = json!({"tenant_id": 1, "namespace_id": 2, "schema_id": "s", "version": "1"});
        assert!(names_its_row("data_shapes", "1/2/s@1", &shape));
        assert!(!names_its_row("data_shapes", "1/2/s@2", &shape));
        assert!(names_its_row("api_keys", "k1", &json!({"key_id": "k1"})));
        assert!(!names_its_row("oidc_subjects", "oidc:a#b", &json!({"subject": "oidc:a#c"})));
    }
}
