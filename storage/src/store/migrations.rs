//! Forward-only schema migrations. Version 0 is an empty file; each step moves one
//! version up inside a transaction. Before migrating an existing database a backup copy
//! is taken beside it; a database from a newer version is refused.

use rusqlite::Connection;

use crate::error::StoreError;

/// Highest schema version this build knows.
pub const CURRENT_VERSION: i64 = 8;

/// Each migration's SQL; index `i` moves version `i` to `i + 1`.
const MIGRATIONS: [&str; 8] = [
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
    // v4: the tenant and namespace registry (tenants and namespaces already holding data
    // are registered, so nothing becomes unreachable), the hash-chained audit log and its
    // signed checkpoints, legal holds, and the usage ledger with its running totals.
    r"
    CREATE TABLE tenants (
        tenant_id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
        quotas_json TEXT NOT NULL, created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE namespaces (
        tenant_id INTEGER NOT NULL REFERENCES tenants (tenant_id), namespace_id INTEGER NOT NULL,
        name TEXT NOT NULL, status TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id)
    ) WITHOUT ROWID;
    INSERT INTO tenants (tenant_id, name, status, quotas_json, created_at_ms)
        SELECT DISTINCT tenant_id, 'tenant-' || tenant_id, 'active', '{}', 0 FROM
        (SELECT tenant_id FROM runs UNION SELECT tenant_id FROM data_shapes UNION SELECT tenant_id FROM scenarios WHERE tenant_id > 0);
    INSERT INTO namespaces (tenant_id, namespace_id, name, status, created_at_ms)
        SELECT DISTINCT tenant_id, namespace_id, 'namespace-' || namespace_id, 'active', 0 FROM
        (SELECT tenant_id, namespace_id FROM runs UNION SELECT tenant_id, namespace_id FROM data_shapes
         UNION SELECT tenant_id, namespace_id FROM scenarios WHERE tenant_id > 0);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY NOT NULL, entry_json BLOB, entry_sha256 TEXT NOT NULL,
        tenant_id INTEGER, time_ms INTEGER NOT NULL
    );
    CREATE INDEX audit_by_time ON audit_log (time_ms);
    CREATE TABLE audit_checkpoints (entry_count INTEGER PRIMARY KEY NOT NULL, checkpoint_json BLOB NOT NULL);
    CREATE TABLE audit_holds (tenant_id INTEGER PRIMARY KEY NOT NULL, reason TEXT NOT NULL, created_at_ms INTEGER NOT NULL);
    CREATE TABLE usage_ledger (
        tenant_id INTEGER NOT NULL, request_id TEXT NOT NULL, counter TEXT NOT NULL, key_id TEXT NOT NULL,
        amount INTEGER NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (tenant_id, request_id, counter)
    ) WITHOUT ROWID;
    CREATE INDEX usage_by_time ON usage_ledger (tenant_id, at_ms);
    CREATE TABLE usage_totals (
        tenant_id INTEGER NOT NULL, counter TEXT NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (tenant_id, counter)
    ) WITHOUT ROWID;
    ",
    // v5: the tables holding documents (run states, scenario specs, data shapes) become
    // rowid tables with their key as a unique index. In a WITHOUT ROWID table the document
    // is part of the key b-tree: a document over ~1 KiB spills to overflow pages, and every
    // comparison on the way to a row reads those pages again (SQLite reads overflow pages
    // straight from the file). A rowid table keeps documents up to ~4 KiB in one leaf page
    // and searches only the small key index. The time indexes of the audit log and the
    // usage ledger go: they cost a page write on every request, and only the rare export,
    // prune and usage report read by time (a scan there is fine).
    // The registry generation: bumped by triggers in the same transaction as any change to
    // API keys, tenants or namespaces, whoever makes it, so the daemon's in-memory copy of
    // them is checked with one read per request (`registry_cache.rs`).
    r"
    ALTER TABLE store_meta ADD COLUMN registry_generation INTEGER NOT NULL DEFAULT 0;
    CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER tenants_inserted AFTER INSERT ON tenants BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER tenants_updated AFTER UPDATE ON tenants BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER tenants_deleted AFTER DELETE ON tenants BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER namespaces_inserted AFTER INSERT ON namespaces BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER namespaces_updated AFTER UPDATE ON namespaces BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    CREATE TRIGGER namespaces_deleted AFTER DELETE ON namespaces BEGIN UPDATE store_meta SET registry_generation = registry_generation + 1; END;
    DROP INDEX audit_by_time;
    DROP INDEX usage_by_time;
    CREATE TABLE runs_v5 (
        tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, run_id TEXT NOT NULL,
        scenario_id TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL,
        state_json BLOB NOT NULL, state_sha256 TEXT NOT NULL, saved_at_ms INTEGER NOT NULL,
        UNIQUE (tenant_id, namespace_id, run_id)
    );
    INSERT INTO runs_v5 (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
        SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms
        FROM runs ORDER BY tenant_id, namespace_id, run_id;
    DROP TABLE runs;
    ALTER TABLE runs_v5 RENAME TO runs;
    CREATE TABLE scenarios_v5 (
        tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, scenario_id TEXT NOT NULL,
        spec_json BLOB NOT NULL, spec_sha256 TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
        UNIQUE (tenant_id, namespace_id, scenario_id)
    );
    INSERT INTO scenarios_v5 (tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms)
        SELECT tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms
        FROM scenarios ORDER BY tenant_id, namespace_id, scenario_id;
    DROP TABLE scenarios;
    ALTER TABLE scenarios_v5 RENAME TO scenarios;
    CREATE TABLE data_shapes_v5 (
        tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, schema_id TEXT NOT NULL,
        version TEXT NOT NULL, record_json BLOB NOT NULL, record_sha256 TEXT NOT NULL,
        UNIQUE (tenant_id, namespace_id, schema_id, version)
    );
    INSERT INTO data_shapes_v5 (tenant_id, namespace_id, schema_id, version, record_json, record_sha256)
        SELECT tenant_id, namespace_id, schema_id, version, record_json, record_sha256
        FROM data_shapes ORDER BY tenant_id, namespace_id, schema_id, version;
    DROP TABLE data_shapes;
    ALTER TABLE data_shapes_v5 RENAME TO data_shapes;
    ",
    // v6: runs by status beside each tenant's run bytes, kept exact by every run write in
    // the row it already updates (`run_counts.rs`), so `/metrics` no longer scans every run.
    r"
    ALTER TABLE tenant_usage ADD COLUMN runs_active INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tenant_usage ADD COLUMN runs_completed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tenant_usage ADD COLUMN runs_failed INTEGER NOT NULL DEFAULT 0;
    INSERT OR IGNORE INTO tenant_usage (tenant_id, run_bytes) SELECT tenant_id, sum(length(state_json)) FROM runs GROUP BY tenant_id;
    UPDATE tenant_usage SET
        runs_active = (SELECT count(*) FROM runs WHERE runs.tenant_id = tenant_usage.tenant_id AND status = 'active'),
        runs_completed = (SELECT count(*) FROM runs WHERE runs.tenant_id = tenant_usage.tenant_id AND status = 'completed'),
        runs_failed = (SELECT count(*) FROM runs WHERE runs.tenant_id = tenant_usage.tenant_id AND status = 'failed');
    ",
    // v7: the OIDC subject mapping (`subjects.rs`): an identity provider's subject → role,
    // tenant and namespaces, set by administrators; hash-checked documents like API keys.
    // And when the data directory was last backed up (`meta.rs`), for the backup-age alert,
    // usage by billing period (`periods.rs`), filled from the ledger, and the audit
    // forwarding cursor (`forwarding.rs`).
    r"
    ALTER TABLE store_meta ADD COLUMN last_backup_at_ms INTEGER;
    ALTER TABLE store_meta ADD COLUMN forward_cursor_seq INTEGER;
    CREATE TABLE usage_periods (
        tenant_id INTEGER NOT NULL, counter TEXT NOT NULL, period TEXT NOT NULL, total INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, counter, period)
    ) WITHOUT ROWID;
    INSERT INTO usage_periods (tenant_id, counter, period, total)
        SELECT tenant_id, counter, strftime('%Y-%m', at_ms / 1000, 'unixepoch'), sum(amount)
        FROM usage_ledger GROUP BY 1, 2, 3;
    CREATE TABLE oidc_subjects (
        subject TEXT PRIMARY KEY NOT NULL, tenant_id INTEGER,
        record_json BLOB NOT NULL, record_sha256 TEXT NOT NULL
    );
    CREATE INDEX oidc_subjects_by_tenant ON oidc_subjects (tenant_id);
    ",
    // v8: sealed audit segments (`audit_segments.rs`): entries behind the newest checkpoint
    // and the newest 4,096, many to a row, each with its recorded hash, tenant and time.
    r"
    CREATE TABLE audit_segments (
        first_seq INTEGER PRIMARY KEY NOT NULL, last_seq INTEGER NOT NULL, last_sha256 TEXT NOT NULL,
        min_time_ms INTEGER NOT NULL, max_time_ms INTEGER NOT NULL, bodies INTEGER NOT NULL, frame BLOB NOT NULL
    );
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
