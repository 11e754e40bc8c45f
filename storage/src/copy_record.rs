//! The rows `store copy` moves between backends (`copy.rs`), as every backend stores them.

/// One row of state, as every backend stores it. Each field is the stored column of the
/// same name (`store/migrations.rs`, `postgres/migrations.rs`).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyRecord {
    /// A tenant (quotas as their stored JSON).
    Tenant { tenant_id: i64, name: String, status: String, quotas_json: String, created_at_ms: i64 },
    /// A namespace.
    Namespace { tenant_id: i64, namespace_id: i64, name: String, status: String, created_at_ms: i64 },
    /// An API key: its record and its secret's hash.
    ApiKey { key_id: String, record_json: Vec<u8>, record_sha256: String, secret_sha256: String },
    /// An OIDC subject mapping.
    OidcSubject { subject: String, tenant_id: Option<i64>, record_json: Vec<u8>, record_sha256: String },
    /// A scenario.
    Scenario {
        tenant_id: i64,
        namespace_id: i64,
        scenario_id: String,
        spec_json: Vec<u8>,
        spec_sha256: String,
        created_at_ms: i64,
    },
    /// A data shape.
    Shape {
        tenant_id: i64,
        namespace_id: i64,
        schema_id: String,
        version: String,
        record_json: Vec<u8>,
        record_sha256: String,
    },
    /// A run (`state_json` canonical JSON, whatever form the source kept it in).
    Run {
        tenant_id: i64,
        namespace_id: i64,
        run_id: String,
        scenario_id: String,
        status: String,
        version: i64,
        state_json: Vec<u8>,
        state_sha256: String,
        saved_at_ms: i64,
    },
    /// An audit entry (`None`: pruned to its hash).
    AuditEntry { seq: i64, entry_json: Option<Vec<u8>>, entry_sha256: String, tenant_id: Option<i64>, time_ms: i64 },
    /// A signed checkpoint.
    Checkpoint { entry_count: i64, checkpoint_json: Vec<u8> },
    /// A legal hold.
    Hold { tenant_id: i64, reason: String, created_at_ms: i64 },
    /// A usage ledger row.
    Usage { tenant_id: i64, request_id: String, counter: String, key_id: String, amount: i64, at_ms: i64 },
    /// A billing period's total (storage samples included).
    Period { tenant_id: i64, counter: String, period: String, total: i64 },
    /// The last verified backup and the forwarding cursor.
    Meta { last_backup_at_ms: Option<i64>, forward_cursor_seq: Option<i64> },
}

impl CopyRecord {
    /// The kind's name in reports.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tenant { .. } => "tenants",
            Self::Namespace { .. } => "namespaces",
            Self::ApiKey { .. } => "api_keys",
            Self::OidcSubject { .. } => "oidc_subjects",
            Self::Scenario { .. } => "scenarios",
            Self::Shape { .. } => "data_shapes",
            Self::Run { .. } => "runs",
            Self::AuditEntry { .. } => "audit_entries",
            Self::Checkpoint { .. } => "audit_checkpoints",
            Self::Hold { .. } => "legal_holds",
            Self::Usage { .. } => "usage_ledger",
            Self::Period { .. } => "usage_periods",
            Self::Meta { .. } => "meta",
        }
    }
}
