//! Import of an open-source Decision Gate SQLite database (`decision-gate-store-sqlite`,
//! schema versions 3 and 4) into one tenant and namespace of the appliance, so sites can
//! migrate. Every source document's stored sha256 is checked before it is accepted;
//! runs that already exist in the target are left alone and reported.

use std::path::Path;

use dg_crypto::Sha256;
use dg_engine::data_shape::{DataShapeRecord, DataShapeSignature};
use dg_engine::state::RunState;
use dg_engine::time::Timestamp;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::StoreError;
use crate::seam::StateStore;
use crate::store::Scope;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Runs written to the appliance.
    pub runs_imported: u64,
    /// Runs skipped because the target already has them.
    pub runs_already_present: u64,
    /// Data shapes written.
    pub shapes_imported: u64,
    /// Data shapes skipped because the target already has them.
    pub shapes_already_present: u64,
    /// Source rows refused (hash mismatch, unparsable), with their key.
    pub refused: Vec<String>,
}

fn id_text(id: u64) -> String {
    id.to_string()
}

/// Imports every run and data shape of `source_scope` in the open-source database at
/// `source` into `target` (ids inside run states are rewritten to the target).
///
/// # Errors
/// The source cannot be opened or has an unsupported schema version; target store errors.
pub fn import_oss_database(
    store: &dyn StateStore,
    source: &Path,
    source_scope: Scope,
    target: Scope,
) -> Result<ImportReport, StoreError> {
    let conn = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(StoreError::sqlite("open source database"))?;
    let version: i64 = conn
        .query_row("SELECT version FROM store_meta", [], |row| row.get(0))
        .map_err(StoreError::sqlite("read source version"))?;
    if !(3..=4).contains(&version) {
        return Err(StoreError::Corrupt {
            table: "store_meta",
            key: source.display().to_string(),
            reason: format!("unsupported open-source schema version {version} (3 or 4 expected)"),
        });
    }
    let mut report = ImportReport::default();
    let (tenant, namespace) = (id_text(source_scope.tenant_id), id_text(source_scope.namespace_id));
    let mut runs = conn
        .prepare(
            "SELECT r.run_id, v.state_json, v.state_hash FROM runs r
             JOIN run_state_versions v ON v.tenant_id = r.tenant_id AND v.namespace_id = r.namespace_id
               AND v.run_id = r.run_id AND v.version = r.latest_version
             WHERE r.tenant_id = ?1 AND r.namespace_id = ?2 ORDER BY r.run_id",
        )
        .map_err(StoreError::sqlite("read source runs"))?;
    let rows = runs
        .query_map([&tenant, &namespace], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, String>(2)?))
        })
        .map_err(StoreError::sqlite("read source runs"))?;
    for row in rows {
        let (run_id, bytes, hash) = row.map_err(StoreError::sqlite("read source runs"))?;
        if hex::encode(Sha256::digest(&bytes)) != hash {
            report.refused.push(format!("run {run_id}: stored hash does not match its state"));
            continue;
        }
        let mut state: RunState = match serde_json::from_slice(&bytes) {
            Ok(state) => state,
            Err(err) => {
                report.refused.push(format!("run {run_id}: {err}"));
                continue;
            }
        };
        if state.run_id != run_id
            || state.tenant_id.get() != source_scope.tenant_id
            || state.namespace_id.get() != source_scope.namespace_id
        {
            report.refused.push(format!("run {run_id}: state ids do not match its row"));
            continue;
        }
        let (Some(tenant_id), Some(namespace_id)) =
            (std::num::NonZeroU64::new(target.tenant_id), std::num::NonZeroU64::new(target.namespace_id))
        else {
            return Err(StoreError::Conflict("target tenant and namespace must be >= 1".into()));
        };
        state.tenant_id = tenant_id;
        state.namespace_id = namespace_id;
        match store.create_run(&state, crate::store::audit::AuditBatch::none()) {
            Ok(_) => report.runs_imported += 1,
            Err(StoreError::Conflict(_)) => report.runs_already_present += 1,
            Err(err) => return Err(err),
        }
    }
    let signing_columns = version >= 4;
    let sql = if signing_columns {
        "SELECT schema_id, version, schema_json, schema_hash, description, signing_key_id, signing_signature, signing_algorithm, created_at_json
         FROM data_shapes WHERE tenant_id = ?1 AND namespace_id = ?2 ORDER BY schema_id, version"
    } else {
        "SELECT schema_id, version, schema_json, schema_hash, description, NULL, NULL, NULL, created_at_json
         FROM data_shapes WHERE tenant_id = ?1 AND namespace_id = ?2 ORDER BY schema_id, version"
    };
    let mut shapes = conn.prepare(sql).map_err(StoreError::sqlite("read source data shapes"))?;
    type ShapeRow =
        (String, String, Vec<u8>, String, Option<String>, Option<String>, Option<String>, Option<String>, String);
    let rows = shapes
        .query_map([&tenant, &namespace], |row| -> rusqlite::Result<ShapeRow> {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                row.get(8)?,
            ))
        })
        .map_err(StoreError::sqlite("read source data shapes"))?;
    for row in rows {
        let (schema_id, version, bytes, hash, description, key_id, signature, algorithm, created_at) =
            row.map_err(StoreError::sqlite("read source data shapes"))?;
        let key = format!("data shape {schema_id}@{version}");
        if hex::encode(Sha256::digest(&bytes)) != hash {
            report.refused.push(format!("{key}: stored hash does not match its schema"));
            continue;
        }
        let parsed = serde_json::from_slice(&bytes).and_then(|schema| {
            let created_at: Timestamp = serde_json::from_str(&created_at)?;
            Ok((schema, created_at))
        });
        let (schema, created_at) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                report.refused.push(format!("{key}: {err}"));
                continue;
            }
        };
        let (Some(tenant_id), Some(namespace_id)) =
            (std::num::NonZeroU64::new(target.tenant_id), std::num::NonZeroU64::new(target.namespace_id))
        else {
            return Err(StoreError::Conflict("target tenant and namespace must be >= 1".into()));
        };
        let record = DataShapeRecord {
            tenant_id,
            namespace_id,
            schema_id,
            version,
            schema,
            description,
            created_at,
            signing: match (key_id, signature) {
                (Some(key_id), Some(signature)) => Some(DataShapeSignature { key_id, signature, algorithm }),
                _ => None,
            },
        };
        match store.put_shape(&record, crate::store::audit::AuditBatch::none()) {
            Ok(()) => report.shapes_imported += 1,
            Err(StoreError::Conflict(_)) => report.shapes_already_present += 1,
            Err(err) => return Err(err),
        }
    }
    Ok(report)
}
