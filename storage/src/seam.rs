//! The storage seam: the operations every backend implements with the same guarantees
//! (canonical documents checked against their sha256 on every read, the same typed errors and
//! size limits, tenant scoping in every query, a mutation and its audit batch in one
//! transaction). [`crate::Store`] (SQLite) and [`crate::postgres::PgStore`] implement it; the
//! storage conformance suite (`storage/tests/conformance.rs`) runs the same tests on both.
//!
//! The daemon holds its store as `Arc<dyn StateStore>`; what only a data directory has (the
//! database file, WAL checkpoints, the witness file, USB backups) is reached through
//! [`StateStore::as_sqlite`].

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use dg_engine::data_shape::DataShapeRecord;
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::RunState;

use crate::copy_record::CopyRecord;
use crate::error::StoreError;
use crate::signing::PublicKeyRing;
use crate::store::audit::{AuditBatch, AuditEntry, AuditEvent, AuditReport, AuditSigner, Checkpoint};
use crate::store::browse::{AuditFilter, AuditPage, RunPage, RunQuery};
use crate::store::forwarding::StoredAuditEntry;
use crate::store::registry_cache::RegistrySnapshot;
use crate::store::subjects::OidcSubjectRecord;
use crate::store::tenancy::{NamespaceRecord, Status, TenantRecord};
use crate::store::usage::{UsageRecord, UsageRow};
use crate::store::{ApiKeyRecord, CheckReport, RunSummary, ScenarioRecord, Scope};

/// What a backend stores and how (see the module documentation).
pub trait StateStore: Send + Sync {
    /// Whether the backend answers.
    ///
    /// # Errors
    /// The backend's errors.
    fn ping(&self) -> Result<(), StoreError>;
    /// Integrity failures met by reads since start.
    fn integrity_failures(&self) -> u64;
    /// A new run (version 1), with its audit batch in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when it exists, size limits, the backend's errors.
    fn create_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError>;
    /// A new run a request started: as `create_run`, and refused when its namespace is no
    /// longer registered as the write commits (deleted after the request's authorization).
    ///
    /// # Errors
    /// [`StoreError::Missing`] when the namespace is gone; as `create_run`.
    fn start_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError>;
    /// A run saved over `expected_version`; a concurrent writer makes it a conflict.
    ///
    /// # Errors
    /// [`StoreError::Conflict`], size limits, the backend's errors.
    fn update_run(&self, state: &RunState, expected_version: u64, audit: AuditBatch) -> Result<u64, StoreError>;
    /// A run and its version, checked.
    ///
    /// # Errors
    /// [`StoreError::Integrity`], the backend's errors.
    fn get_run(&self, scope: Scope, run_id: &str) -> Result<Option<(RunState, u64)>, StoreError>;
    /// Runs of a scope (every scope when `None`).
    ///
    /// # Errors
    /// The backend's errors.
    fn list_runs(&self, scope: Option<Scope>) -> Result<Vec<RunSummary>, StoreError>;
    /// Runs by status, every status listed.
    ///
    /// # Errors
    /// The backend's errors.
    fn count_runs_by_status(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Registers a scenario (idempotent; a different spec under the id conflicts).
    ///
    /// # Errors
    /// [`StoreError::Conflict`], size limits, the backend's errors.
    fn put_scenario(&self, scope: Scope, spec: &ScenarioSpec, audit: AuditBatch) -> Result<bool, StoreError>;
    /// A scenario of exactly this scope, checked.
    ///
    /// # Errors
    /// [`StoreError::Integrity`], the backend's errors.
    fn get_scenario(&self, scope: Scope, scenario_id: &str) -> Result<Option<ScenarioRecord>, StoreError>;
    /// Sets the checkpoint signer and interval.
    fn set_audit_signer(&self, signer: Arc<dyn AuditSigner>, checkpoint_every: u64);
    /// Appends events and usage in one transaction.
    ///
    /// # Errors
    /// The backend's errors.
    fn append_audit(&self, events: Vec<AuditEvent>, usage: Vec<UsageRecord>) -> Result<u64, StoreError>;
    /// Signs a checkpoint at the head when entries were added since the last.
    ///
    /// # Errors
    /// The backend's or the signer's errors.
    fn audit_checkpoint_now(&self, signer: &Arc<dyn AuditSigner>) -> Result<Option<Checkpoint>, StoreError>;
    /// Verifies the whole chain and its checkpoints.
    ///
    /// # Errors
    /// The backend's errors while reading.
    fn verify_audit(&self, ring: &PublicKeyRing) -> Result<AuditReport, StoreError>;
    /// Charges usage against all-time and period quotas: all or nothing, once per request id.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`], the backend's errors.
    fn charge_usage_in_period(&self, records: Vec<(UsageRecord, Option<u64>, Option<u64>)>)
        -> Result<bool, StoreError>;
    /// A tenant's running total of one counter.
    ///
    /// # Errors
    /// The backend's errors.
    fn usage_total(&self, tenant_id: u64, counter: &str) -> Result<u64, StoreError>;

    // ----- the registry: tenants, namespaces, API keys, OIDC subjects, data shapes -----

    /// Registers a tenant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when taken.
    fn create_tenant(&self, tenant_id: u64, name: &str, quotas: &BTreeMap<String, u64>) -> Result<(), StoreError>;
    /// Every tenant, by id.
    ///
    /// # Errors
    /// The backend's errors.
    fn list_tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// One tenant.
    ///
    /// # Errors
    /// The backend's errors.
    fn get_tenant(&self, tenant_id: u64) -> Result<Option<TenantRecord>, StoreError>;
    /// Enables or disables a tenant.
    ///
    /// # Errors
    /// [`StoreError::Missing`].
    fn set_tenant_status(&self, tenant_id: u64, status: Status) -> Result<(), StoreError>;
    /// Deletes an empty tenant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when not empty, [`StoreError::Missing`].
    fn delete_tenant(&self, tenant_id: u64) -> Result<(), StoreError>;
    /// Registers a namespace.
    ///
    /// # Errors
    /// [`StoreError::Missing`] tenant, [`StoreError::Conflict`] when taken.
    fn create_namespace(&self, tenant_id: u64, namespace_id: u64, name: &str) -> Result<(), StoreError>;
    /// A tenant's namespaces.
    ///
    /// # Errors
    /// The backend's errors.
    fn list_namespaces(&self, tenant_id: u64) -> Result<Vec<NamespaceRecord>, StoreError>;
    /// Enables or disables a namespace.
    ///
    /// # Errors
    /// [`StoreError::Missing`].
    fn set_namespace_status(&self, tenant_id: u64, namespace_id: u64, status: Status) -> Result<(), StoreError>;
    /// Deletes an empty namespace.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when not empty, [`StoreError::Missing`].
    fn delete_namespace(&self, tenant_id: u64, namespace_id: u64) -> Result<(), StoreError>;
    /// Quota overrides of an active tenant (and namespace); `None` when unknown or disabled.
    ///
    /// # Errors
    /// The backend's errors.
    fn active_tenant_quotas(
        &self,
        tenant_id: u64,
        namespace_id: Option<u64>,
    ) -> Result<Option<BTreeMap<String, u64>>, StoreError>;
    /// Stores a new API key (its secret's hash only).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a duplicate id or secret.
    fn put_api_key(&self, record: &ApiKeyRecord, secret_sha256: &str) -> Result<(), StoreError>;
    /// Replaces a key's record.
    ///
    /// # Errors
    /// [`StoreError::Missing`].
    fn update_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError>;
    /// The key whose secret hashes to `secret_sha256`, checked.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn find_api_key(&self, secret_sha256: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Every key, by id.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// This request's registry snapshot (one read of the registry generation).
    ///
    /// # Errors
    /// The backend's errors.
    fn registry_snapshot(&self) -> Result<RegistrySnapshot, StoreError>;
    /// The same request's snapshot on another thread, at the generation it read.
    fn registry_snapshot_at(&self, generation: i64) -> RegistrySnapshot;
    /// Sets a subject's mapping.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`].
    fn put_oidc_subject(&self, record: &OidcSubjectRecord) -> Result<(), StoreError>;
    /// Removes a subject's mapping.
    ///
    /// # Errors
    /// [`StoreError::Missing`].
    fn delete_oidc_subject(&self, subject: &str) -> Result<(), StoreError>;
    /// A subject's mapping, checked.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn find_oidc_subject(&self, subject: &str) -> Result<Option<OidcSubjectRecord>, StoreError>;
    /// Mapped subjects of one tenant or all.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn list_oidc_subjects(&self, tenant_id: Option<u64>) -> Result<Vec<OidcSubjectRecord>, StoreError>;
    /// Registers a data shape (immutable).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on reuse, size limits.
    fn put_shape(&self, record: &DataShapeRecord, audit: AuditBatch) -> Result<(), StoreError>;
    /// A data shape, checked.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn get_shape(&self, scope: Scope, schema_id: &str, version: &str) -> Result<Option<DataShapeRecord>, StoreError>;
    /// Data shapes of a scope after a cursor.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn list_shapes(
        &self,
        scope: Scope,
        cursor: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<DataShapeRecord>, StoreError>;

    // ----- scenarios, browsing, the ledger, the chain's operator side, facts -----

    /// A verified spec, kept in memory after its first read (stored specs never change).
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn scenario_spec(&self, scope: Scope, scenario_id: &str) -> Result<Option<Arc<ScenarioSpec>>, StoreError>;
    /// Scenarios of a namespace visible to a tenant, after a cursor.
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn list_scenarios(
        &self,
        tenant_id: u64,
        namespace_id: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScenarioRecord>, StoreError>;
    /// One page of runs.
    ///
    /// # Errors
    /// The backend's errors.
    fn runs_page(&self, query: &RunQuery) -> Result<RunPage, StoreError>;
    /// The newest audit entries a filter keeps (bounded scan).
    ///
    /// # Errors
    /// [`StoreError::Integrity`].
    fn audit_recent(&self, filter: &AuditFilter, before_seq: Option<u64>, limit: u32) -> Result<AuditPage, StoreError>;
    /// Stored entries after a position, as written.
    ///
    /// # Errors
    /// The backend's errors.
    fn audit_page(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredAuditEntry>, StoreError>;
    /// The newest entry's position and time.
    ///
    /// # Errors
    /// The backend's errors.
    fn audit_head(&self) -> Result<(u64, i64), StoreError>;
    /// The audit forwarding cursor.
    ///
    /// # Errors
    /// The backend's errors.
    fn forward_cursor(&self) -> Result<u64, StoreError>;
    /// Moves the forwarding cursor forward.
    ///
    /// # Errors
    /// The backend's errors.
    fn set_forward_cursor(&self, seq: u64) -> Result<(), StoreError>;
    /// Exports the chain from a time, with what verifies it offline.
    ///
    /// # Errors
    /// The backend's or write errors.
    fn export_audit(&self, since_ms: i64, out: &mut dyn Write) -> Result<u64, StoreError>;
    /// Prunes old entries to their hashes behind a signed checkpoint, sparing held tenants.
    ///
    /// # Errors
    /// The backend's errors.
    fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Sets or releases a tenant's legal hold.
    ///
    /// # Errors
    /// The backend's errors.
    fn set_legal_hold(&self, tenant_id: u64, reason: Option<&str>) -> Result<(), StoreError>;
    /// Entries from a position as values.
    ///
    /// # Errors
    /// The backend's errors.
    fn audit_entries(&self, since_seq: u64) -> Result<Vec<AuditEntry>, StoreError>;
    /// Charges usage against all-time quotas.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`].
    fn charge_usage(&self, records: Vec<(UsageRecord, Option<u64>)>) -> Result<bool, StoreError>;
    /// Takes back what a request charged.
    ///
    /// # Errors
    /// The backend's errors.
    fn refund_usage(&self, tenant_id: u64, request_id: &str, counters: Vec<String>) -> Result<(), StoreError>;
    /// Usage per tenant, key and counter since a time.
    ///
    /// # Errors
    /// The backend's errors.
    fn usage_report(&self, tenant_id: Option<u64>, since_ms: i64) -> Result<Vec<UsageRow>, StoreError>;
    /// Samples stored bytes into the current billing period.
    ///
    /// # Errors
    /// The backend's errors.
    fn sample_storage_usage(&self) -> Result<(), StoreError>;
    /// Every tenant's totals of one billing period.
    ///
    /// # Errors
    /// The backend's errors.
    fn usage_for_period(&self, period: &str) -> Result<Vec<(u64, String, u64)>, StoreError>;
    /// Records a verified backup.
    ///
    /// # Errors
    /// The backend's errors.
    fn record_backup(&self) -> Result<(), StoreError>;
    /// When the last verified backup was made.
    ///
    /// # Errors
    /// The backend's errors.
    fn last_backup_at_ms(&self) -> Result<Option<i64>, StoreError>;
    /// Every document against its hash, and the kept run totals against a recount.
    ///
    /// # Errors
    /// The backend's errors while reading.
    fn check(&self) -> Result<CheckReport, StoreError>;
    /// The deployment's id.
    fn instance_id(&self) -> &str;
    /// Finishes queued writes (SQLite's writer); nothing to do where each call commits itself.
    fn close(&self);
    /// Whether the store holds no state a copy could overwrite.
    ///
    /// # Errors
    /// The backend's errors.
    fn is_empty_store(&self) -> Result<bool, StoreError>;
    /// Every row as [`CopyRecord`]s, in load order (`store copy`).
    ///
    /// # Errors
    /// The backend's errors, or the visitor's.
    fn dump(&self, visit: &mut dyn FnMut(CopyRecord) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// Writes copied rows (one transaction per batch).
    ///
    /// # Errors
    /// The backend's errors.
    fn load(&self, batch: Vec<CopyRecord>) -> Result<(), StoreError>;
    /// After the last batch: what is derived from the rows, set from them.
    ///
    /// # Errors
    /// The backend's errors.
    fn finish_load(&self) -> Result<(), StoreError>;
    /// The SQLite store, for what only a data directory has (its file, WAL checkpoints,
    /// the witness file, USB backups); `None` on PostgreSQL.
    fn as_sqlite(&self) -> Option<&crate::Store>;
}

/// Both backends implement the seam with their inherent methods of the same names.
macro_rules! implement_seam {
    ($store:ty, close: $close:expr, sqlite: $sqlite:expr) => {
        impl StateStore for $store {
            fn close(&self) {
                ($close)(self);
            }
            fn as_sqlite(&self) -> Option<&crate::Store> {
                ($sqlite)(self)
            }
            fn ping(&self) -> Result<(), StoreError> {
                <$store>::ping(self)
            }
            fn integrity_failures(&self) -> u64 {
                <$store>::integrity_failures(self)
            }
            fn create_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
                <$store>::create_run(self, state, audit)
            }
            fn start_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
                <$store>::start_run(self, state, audit)
            }
            fn update_run(&self, state: &RunState, expected: u64, audit: AuditBatch) -> Result<u64, StoreError> {
                <$store>::update_run(self, state, expected, audit)
            }
            fn get_run(&self, scope: Scope, run_id: &str) -> Result<Option<(RunState, u64)>, StoreError> {
                <$store>::get_run(self, scope, run_id)
            }
            fn list_runs(&self, scope: Option<Scope>) -> Result<Vec<RunSummary>, StoreError> {
                <$store>::list_runs(self, scope)
            }
            fn count_runs_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
                <$store>::count_runs_by_status(self)
            }
            fn put_scenario(&self, scope: Scope, spec: &ScenarioSpec, audit: AuditBatch) -> Result<bool, StoreError> {
                <$store>::put_scenario(self, scope, spec, audit)
            }
            fn get_scenario(&self, scope: Scope, scenario_id: &str) -> Result<Option<ScenarioRecord>, StoreError> {
                <$store>::get_scenario(self, scope, scenario_id)
            }
            fn set_audit_signer(&self, signer: Arc<dyn AuditSigner>, checkpoint_every: u64) {
                <$store>::set_audit_signer(self, signer, checkpoint_every);
            }
            fn append_audit(&self, events: Vec<AuditEvent>, usage: Vec<UsageRecord>) -> Result<u64, StoreError> {
                <$store>::append_audit(self, events, usage)
            }
            fn audit_checkpoint_now(&self, signer: &Arc<dyn AuditSigner>) -> Result<Option<Checkpoint>, StoreError> {
                <$store>::audit_checkpoint_now(self, signer)
            }
            fn verify_audit(&self, ring: &PublicKeyRing) -> Result<AuditReport, StoreError> {
                <$store>::verify_audit(self, ring)
            }
            fn charge_usage_in_period(
                &self,
                records: Vec<(UsageRecord, Option<u64>, Option<u64>)>,
            ) -> Result<bool, StoreError> {
                <$store>::charge_usage_in_period(self, records)
            }
            fn usage_total(&self, tenant_id: u64, counter: &str) -> Result<u64, StoreError> {
                <$store>::usage_total(self, tenant_id, counter)
            }
            fn create_tenant(&self, id: u64, name: &str, quotas: &BTreeMap<String, u64>) -> Result<(), StoreError> {
                <$store>::create_tenant(self, id, name, quotas)
            }
            fn list_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
                <$store>::list_tenants(self)
            }
            fn get_tenant(&self, id: u64) -> Result<Option<TenantRecord>, StoreError> {
                <$store>::get_tenant(self, id)
            }
            fn set_tenant_status(&self, id: u64, status: Status) -> Result<(), StoreError> {
                <$store>::set_tenant_status(self, id, status)
            }
            fn delete_tenant(&self, id: u64) -> Result<(), StoreError> {
                <$store>::delete_tenant(self, id)
            }
            fn create_namespace(&self, tenant: u64, namespace: u64, name: &str) -> Result<(), StoreError> {
                <$store>::create_namespace(self, tenant, namespace, name)
            }
            fn list_namespaces(&self, tenant: u64) -> Result<Vec<NamespaceRecord>, StoreError> {
                <$store>::list_namespaces(self, tenant)
            }
            fn set_namespace_status(&self, tenant: u64, namespace: u64, status: Status) -> Result<(), StoreError> {
                <$store>::set_namespace_status(self, tenant, namespace, status)
            }
            fn delete_namespace(&self, tenant: u64, namespace: u64) -> Result<(), StoreError> {
                <$store>::delete_namespace(self, tenant, namespace)
            }
            fn active_tenant_quotas(
                &self,
                tenant: u64,
                namespace: Option<u64>,
            ) -> Result<Option<BTreeMap<String, u64>>, StoreError> {
                <$store>::active_tenant_quotas(self, tenant, namespace)
            }
            fn put_api_key(&self, record: &ApiKeyRecord, secret_sha256: &str) -> Result<(), StoreError> {
                <$store>::put_api_key(self, record, secret_sha256)
            }
            fn update_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
                <$store>::update_api_key(self, record)
            }
            fn find_api_key(&self, secret_sha256: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
                <$store>::find_api_key(self, secret_sha256)
            }
            fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
                <$store>::list_api_keys(self)
            }
            fn registry_snapshot(&self) -> Result<RegistrySnapshot, StoreError> {
                <$store>::registry_snapshot(self)
            }
            fn registry_snapshot_at(&self, generation: i64) -> RegistrySnapshot {
                <$store>::registry_snapshot_at(self, generation)
            }
            fn put_oidc_subject(&self, record: &OidcSubjectRecord) -> Result<(), StoreError> {
                <$store>::put_oidc_subject(self, record)
            }
            fn delete_oidc_subject(&self, subject: &str) -> Result<(), StoreError> {
                <$store>::delete_oidc_subject(self, subject)
            }
            fn find_oidc_subject(&self, subject: &str) -> Result<Option<OidcSubjectRecord>, StoreError> {
                <$store>::find_oidc_subject(self, subject)
            }
            fn list_oidc_subjects(&self, tenant: Option<u64>) -> Result<Vec<OidcSubjectRecord>, StoreError> {
                <$store>::list_oidc_subjects(self, tenant)
            }
            fn put_shape(&self, record: &DataShapeRecord, audit: AuditBatch) -> Result<(), StoreError> {
                <$store>::put_shape(self, record, audit)
            }
            fn get_shape(&self, scope: Scope, id: &str, version: &str) -> Result<Option<DataShapeRecord>, StoreError> {
                <$store>::get_shape(self, scope, id, version)
            }
            fn list_shapes(
                &self,
                scope: Scope,
                cursor: Option<(&str, &str)>,
                limit: usize,
            ) -> Result<Vec<DataShapeRecord>, StoreError> {
                <$store>::list_shapes(self, scope, cursor, limit)
            }
            fn scenario_spec(&self, scope: Scope, id: &str) -> Result<Option<Arc<ScenarioSpec>>, StoreError> {
                <$store>::scenario_spec(self, scope, id)
            }
            fn list_scenarios(
                &self,
                tenant: u64,
                namespace: u64,
                cursor: Option<&str>,
                limit: usize,
            ) -> Result<Vec<ScenarioRecord>, StoreError> {
                <$store>::list_scenarios(self, tenant, namespace, cursor, limit)
            }
            fn runs_page(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
                <$store>::runs_page(self, query)
            }
            fn audit_recent(
                &self,
                filter: &AuditFilter,
                before: Option<u64>,
                limit: u32,
            ) -> Result<AuditPage, StoreError> {
                <$store>::audit_recent(self, filter, before, limit)
            }
            fn audit_page(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredAuditEntry>, StoreError> {
                <$store>::audit_page(self, after_seq, limit)
            }
            fn audit_head(&self) -> Result<(u64, i64), StoreError> {
                <$store>::audit_head(self)
            }
            fn forward_cursor(&self) -> Result<u64, StoreError> {
                <$store>::forward_cursor(self)
            }
            fn set_forward_cursor(&self, seq: u64) -> Result<(), StoreError> {
                <$store>::set_forward_cursor(self, seq)
            }
            fn export_audit(&self, since_ms: i64, out: &mut dyn Write) -> Result<u64, StoreError> {
                <$store>::export_audit(self, since_ms, out)
            }
            fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
                <$store>::prune_audit(self, before_ms)
            }
            fn set_legal_hold(&self, tenant: u64, reason: Option<&str>) -> Result<(), StoreError> {
                <$store>::set_legal_hold(self, tenant, reason)
            }
            fn audit_entries(&self, since_seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
                <$store>::audit_entries(self, since_seq)
            }
            fn charge_usage(&self, records: Vec<(UsageRecord, Option<u64>)>) -> Result<bool, StoreError> {
                <$store>::charge_usage(self, records)
            }
            fn refund_usage(&self, tenant: u64, request_id: &str, counters: Vec<String>) -> Result<(), StoreError> {
                <$store>::refund_usage(self, tenant, request_id, counters)
            }
            fn usage_report(&self, tenant: Option<u64>, since_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
                <$store>::usage_report(self, tenant, since_ms)
            }
            fn sample_storage_usage(&self) -> Result<(), StoreError> {
                <$store>::sample_storage_usage(self)
            }
            fn usage_for_period(&self, period: &str) -> Result<Vec<(u64, String, u64)>, StoreError> {
                <$store>::usage_for_period(self, period)
            }
            fn record_backup(&self) -> Result<(), StoreError> {
                <$store>::record_backup(self)
            }
            fn last_backup_at_ms(&self) -> Result<Option<i64>, StoreError> {
                <$store>::last_backup_at_ms(self)
            }
            fn check(&self) -> Result<CheckReport, StoreError> {
                <$store>::check(self)
            }
            fn instance_id(&self) -> &str {
                <$store>::instance_id(self)
            }
            fn is_empty_store(&self) -> Result<bool, StoreError> {
                <$store>::is_empty_store(self)
            }
            fn dump(&self, visit: &mut dyn FnMut(CopyRecord) -> Result<(), StoreError>) -> Result<(), StoreError> {
                <$store>::dump(self, visit)
            }
            fn load(&self, batch: Vec<CopyRecord>) -> Result<(), StoreError> {
                <$store>::load(self, batch)
            }
            fn finish_load(&self) -> Result<(), StoreError> {
                <$store>::finish_load(self)
            }
        }
    };
}

implement_seam!(crate::Store, close: crate::Store::close, sqlite: Some);
implement_seam!(crate::postgres::PgStore, close: |_: &crate::postgres::PgStore| {}, sqlite: |_| None);
