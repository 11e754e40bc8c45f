//! Forward-only schema versions of the PostgreSQL backend. Every step runs in one transaction
//! that first takes a transaction-scoped advisory lock, so nodes starting at once migrate one
//! after the other: the first applies the steps, the others find the schema current. A schema
//! newer than this build is refused, as on SQLite.

use deadpool_postgres::Object;

use crate::error::StoreError;
use crate::postgres::connection::pg;
use crate::store::audit::GENESIS_SHA256;

/// Highest PostgreSQL schema version this build knows.
pub const PG_SCHEMA_VERSION: i64 = 1;

/// The advisory lock every migration holds ("dg-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0064_672d_6d69_6772;

/// Each step's SQL; index `i` moves version `i` to `i + 1`. The tables are those of the SQLite
/// schema (`store/migrations.rs`) with PostgreSQL's types; documents are `bytea` holding the
/// canonical JSON exactly, beside their sha256. Text compares byte by byte (`COLLATE "C"`), as
/// in SQLite, whatever the database's locale: orderings and page cursors are the same.
const MIGRATIONS: [&str; 1] = [
    // v1: the whole first schema.
    r#"
    CREATE TABLE dg_meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version bigint NOT NULL, instance_id text COLLATE "C" NOT NULL,
        registry_generation bigint NOT NULL DEFAULT 0,
        last_backup_at_ms bigint, forward_cursor_seq bigint
    );
    CREATE TABLE runs (
        tenant_id bigint NOT NULL, namespace_id bigint NOT NULL, run_id text COLLATE "C" NOT NULL,
        scenario_id text COLLATE "C" NOT NULL, status text COLLATE "C" NOT NULL, version bigint NOT NULL,
        state_json bytea NOT NULL, state_sha256 text COLLATE "C" NOT NULL, saved_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, run_id)
    );
    CREATE TABLE scenarios (
        tenant_id bigint NOT NULL, namespace_id bigint NOT NULL, scenario_id text COLLATE "C" NOT NULL,
        spec_json bytea NOT NULL, spec_sha256 text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, scenario_id)
    );
    CREATE TABLE data_shapes (
        tenant_id bigint NOT NULL, namespace_id bigint NOT NULL, schema_id text COLLATE "C" NOT NULL,
        version text COLLATE "C" NOT NULL, record_json bytea NOT NULL, record_sha256 text COLLATE "C" NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, schema_id, version)
    );
    CREATE TABLE api_keys (
        key_id text COLLATE "C" PRIMARY KEY, record_json bytea NOT NULL, record_sha256 text COLLATE "C" NOT NULL,
        secret_sha256 text COLLATE "C" NOT NULL UNIQUE
    );
    CREATE TABLE tenant_usage (
        tenant_id bigint PRIMARY KEY, run_bytes bigint NOT NULL,
        runs_active bigint NOT NULL DEFAULT 0, runs_completed bigint NOT NULL DEFAULT 0,
        runs_failed bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE tenants (
        tenant_id bigint PRIMARY KEY, name text COLLATE "C" NOT NULL UNIQUE, status text COLLATE "C" NOT NULL,
        quotas_json text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL
    );
    CREATE TABLE namespaces (
        tenant_id bigint NOT NULL REFERENCES tenants (tenant_id), namespace_id bigint NOT NULL,
        name text COLLATE "C" NOT NULL, status text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id)
    );
    CREATE TABLE audit_head (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        seq bigint NOT NULL, sha256 text COLLATE "C" NOT NULL, time_ms bigint NOT NULL
    );
    CREATE TABLE audit_log (
        seq bigint PRIMARY KEY, entry_json bytea, entry_sha256 text COLLATE "C" NOT NULL,
        tenant_id bigint, time_ms bigint NOT NULL
    );
    CREATE TABLE audit_checkpoints (entry_count bigint PRIMARY KEY, checkpoint_json bytea NOT NULL);
    CREATE TABLE audit_holds (tenant_id bigint PRIMARY KEY, reason text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL);
    CREATE TABLE usage_ledger (
        tenant_id bigint NOT NULL, request_id text COLLATE "C" NOT NULL, counter text COLLATE "C" NOT NULL, key_id text COLLATE "C" NOT NULL,
        amount bigint NOT NULL, at_ms bigint NOT NULL, PRIMARY KEY (tenant_id, request_id, counter)
    );
    CREATE TABLE usage_totals (
        tenant_id bigint NOT NULL, counter text COLLATE "C" NOT NULL, total bigint NOT NULL, PRIMARY KEY (tenant_id, counter)
    );
    CREATE TABLE usage_periods (
        tenant_id bigint NOT NULL, counter text COLLATE "C" NOT NULL, period text COLLATE "C" NOT NULL, total bigint NOT NULL,
        PRIMARY KEY (tenant_id, counter, period)
    );
    CREATE TABLE oidc_subjects (
        subject text COLLATE "C" PRIMARY KEY, tenant_id bigint, record_json bytea NOT NULL, record_sha256 text COLLATE "C" NOT NULL
    );
    CREATE INDEX oidc_subjects_by_tenant ON oidc_subjects (tenant_id);
    -- The registry generation: bumped in the same transaction as any change to API keys,
    -- tenants or namespaces, on whichever node makes it, and announced to every node.
    CREATE FUNCTION dg_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE dg_meta SET registry_generation = registry_generation + 1;
        PERFORM pg_notify('dg_registry', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION dg_registry_changed();
    CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
        FOR EACH STATEMENT EXECUTE FUNCTION dg_registry_changed();
    CREATE TRIGGER namespaces_changed AFTER INSERT OR UPDATE OR DELETE ON namespaces
        FOR EACH STATEMENT EXECUTE FUNCTION dg_registry_changed();
    "#,
];

/// The schema version of the database (0 for one without the appliance's tables).
async fn current_version(client: &impl deadpool_postgres::GenericClient) -> Result<i64, StoreError> {
    let row =
        client.query_one("SELECT to_regclass('dg_meta') IS NOT NULL", &[]).await.map_err(pg("read schema version"))?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client.query_opt("SELECT version FROM dg_meta", &[]).await.map_err(pg("read schema version"))?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// Brings the database to [`PG_SCHEMA_VERSION`] under the migration lock; returns the
/// version found before.
///
/// # Errors
/// [`StoreError::NewerSchema`], or the database's errors (nothing of a failed step stays).
pub(crate) async fn migrate(client: &mut Object, instance_id: &str) -> Result<i64, StoreError> {
    let mut found = None;
    loop {
        let tx = client.transaction().await.map_err(pg("begin migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg("take migration lock"))?;
        let version = current_version(&tx).await?;
        found.get_or_insert(version);
        if version > PG_SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found: version, supported: PG_SCHEMA_VERSION });
        }
        if version == PG_SCHEMA_VERSION {
            tx.commit().await.map_err(pg("end migration"))?;
            return Ok(found.unwrap_or(version));
        }
        let index = usize::try_from(version).map_err(|_| StoreError::NewerSchema { found: version, supported: 0 })?;
        tx.batch_execute(MIGRATIONS[index]).await.map_err(pg("apply migration"))?;
        let next = version + 1;
        if version == 0 {
            tx.execute("INSERT INTO dg_meta (version, instance_id) VALUES (1, $1)", &[&instance_id])
                .await
                .map_err(pg("record schema version"))?;
            tx.execute("INSERT INTO audit_head (seq, sha256, time_ms) VALUES (0, $1, 0)", &[&GENESIS_SHA256])
                .await
                .map_err(pg("start the audit chain"))?;
        } else {
            tx.execute("UPDATE dg_meta SET version = $1", &[&next]).await.map_err(pg("record schema version"))?;
        }
        tx.commit().await.map_err(pg("commit migration"))?;
    }
}

/// The schema version, without changing anything.
///
/// # Errors
/// The database's errors.
pub(crate) async fn version(client: &Object) -> Result<i64, StoreError> {
    current_version(client).await
}
