//! Forward-only schema migrations. Version 0 is an empty file; each step moves one
//! version up inside a transaction. Before migrating an existing database a backup copy
//! is taken beside it; a database from a newer version is refused.

use rusqlite::Connection;

use crate::error::StoreError;

/// Highest schema version this build knows.
pub const CURRENT_VERSION: i64 = 3;

/// Each migration's SQL; index `i` moves version `i` to `i + 1`.
const MIGRATIONS: [&str; 3] = [
    // v1: the first schema.
    r"
    CREATE TABLE store_meta (version INTEGER NOT NULL, instance_id TEXT NOT NULL);
    CREATE TABLE runs (
        tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, run_id TEXT NOT NULL,
        scenario_id TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL,
        state_json BLOB NOT NULL, state_sha256 TEXT NOT NULL, saved_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, run_id)
    ) WITHOUT ROWID;
    CREATE TABLE scenarios (
        tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, scenario_id TEXT NOT NULL,
        spec_json BLOB NOT NULL, spec_sha256 TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, scenario_id)
    ) WITHOUT ROWID;
    CREATE TABLE data_shapes (
        tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, schema_id TEXT NOT NULL,
        version TEXT NOT NULL, record_json BLOB NOT NULL, record_sha256 TEXT NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, schema_id, version)
    ) WITHOUT ROWID;
    ",
    // v2: API keys (stored only as hashes).
    r"
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY NOT NULL, record_json BLOB NOT NULL, record_sha256 TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE
    );
    ",
    // v3: per-tenant run-state usage, kept exact by every run write.
    r"
    CREATE TABLE tenant_usage (tenant_id INTEGER PRIMARY KEY NOT NULL, run_bytes INTEGER NOT NULL);
    INSERT INTO tenant_usage (tenant_id, run_bytes) SELECT tenant_id, sum(length(state_json)) FROM runs GROUP BY tenant_id;
    ",
];

/// Reads the schema version (0 for an empty database).
///
/// # Errors
/// SQLite errors.
pub fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='store_meta'", [], |row| row.get(0))
        .map_err(StoreError::sqlite("read schema version"))?;
    if !has_meta {
        return Ok(0);
    }
    conn.query_row("SELECT version FROM store_meta", [], |row| row.get(0))
        .map_err(StoreError::sqlite("read schema version"))
}

/// Brings the database to [`CURRENT_VERSION`]. `backup_path` receives a copy of an
/// existing database before its first migration step.
///
/// # Errors
/// [`StoreError::NewerSchema`], SQLite or backup I/O errors.
pub fn migrate(
    conn: &mut Connection,
    backup_path: Option<&std::path::Path>,
    instance_id: &str,
) -> Result<i64, StoreError> {
    let version = current_version(conn)?;
    if version > CURRENT_VERSION {
        return Err(StoreError::NewerSchema { found: version, supported: CURRENT_VERSION });
    }
    if version == CURRENT_VERSION {
        return Ok(version);
    }
    if version > 0 {
        if let Some(path) = backup_path {
            let escaped = path.to_string_lossy().replace('\'', "''");
            conn.execute_batch(&format!("VACUUM INTO '{escaped}'"))
                .map_err(StoreError::sqlite("backup before migration"))?;
        }
    }
    for step in version..CURRENT_VERSION {
        let tx = conn.transaction().map_err(StoreError::sqlite("begin migration"))?;
        let index =
            usize::try_from(step).map_err(|_| StoreError::NewerSchema { found: step, supported: CURRENT_VERSION })?;
        tx.execute_batch(MIGRATIONS[index]).map_err(StoreError::sqlite("apply migration"))?;
        if step == 0 {
            tx.execute("INSERT INTO store_meta (version, instance_id) VALUES (1, ?1)", [instance_id])
                .map_err(StoreError::sqlite("record schema version"))?;
        } else {
            tx.execute("UPDATE store_meta SET version = ?1", [step + 1])
                .map_err(StoreError::sqlite("record schema version"))?;
        }
        tx.commit().map_err(StoreError::sqlite("commit migration"))?;
    }
    Ok(CURRENT_VERSION)
}
