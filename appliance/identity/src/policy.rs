//! The policy table: every tool and admin operation, the roles that may perform it, and
//! how far its target may be from the caller's own tenant and namespaces. [`decide`] is
//! the one authorization decision of the appliance; it runs before any work or storage
//! access and returns a reason for the audit log either way.

use serde::Serialize;

use crate::principal::{Principal, Role};

/// How an operation's target relates to tenants and namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// Not tenant data (provider contracts, docs): any allowed role.
    Public,
    /// Acts on a tenant and namespace: tenant-bound callers stay in their own tenant, and
    /// callers bound to namespaces stay in those.
    Namespace,
    /// Acts on a whole tenant: tenant-bound callers stay in their own tenant.
    Tenant,
    /// Acts on the whole appliance: organisation-wide callers only.
    Org,
}

/// What kind of operation a row is: how it is reached and how it is metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// A Decision Gate tool (`tools/call`, listed by `tools/list` in table order): audited
    /// as `tool_call` and metered (`tool_calls` plus the row's counter).
    Tool,
    /// An admin operation (`admin/<name>`, the CLI): audited as `admin`, not metered.
    Admin,
    /// The runpack bundle download (`GET /runpacks/...`).
    Download,
}

/// The usage counters of the ledger (`usage_ledger.counter`); a tool adds to `tool_calls`
/// and to its row's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageCounter {
    /// Every tool call.
    ToolCalls,
    /// `scenario_start`.
    RunsStarted,
    /// `evidence_query`.
    EvidenceQueries,
    /// `runpack_export` and bundle downloads.
    RunpackExports,
    /// `schemas_register`.
    SchemasWritten,
    /// `scenario_define`.
    RegistryEntries,
}

impl UsageCounter {
    /// Every counter, in the ledger's order.
    pub const ALL: [Self; 6] = [
        Self::ToolCalls,
        Self::RunsStarted,
        Self::EvidenceQueries,
        Self::RunpackExports,
        Self::SchemasWritten,
        Self::RegistryEntries,
    ];

    /// Its name in the ledger, quotas and reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolCalls => "tool_calls",
            Self::RunsStarted => "runs_started",
            Self::EvidenceQueries => "evidence_queries",
            Self::RunpackExports => "runpack_exports",
            Self::SchemasWritten => "schemas_written",
            Self::RegistryEntries => "registry_entries",
        }
    }
}

macro_rules! operations {
    ($( $variant:ident => $name:literal, $kind:ident, $scope:ident, $writes:literal, $counter:expr, [$($role:ident),*]; )*) => {
        /// Every operation a caller can ask for: the 18 Decision Gate tools, the runpack
        /// download, and the admin operations.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Operation { $( #[doc = $name] $variant, )* }

        /// One row of the operation table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub struct PolicyRow {
            /// The operation.
            #[serde(skip)]
            pub operation: Operation,
            /// Its wire name (tool name, or admin method without the `admin/` prefix).
            pub name: &'static str,
            /// Tool, admin operation or download.
            pub kind: OperationKind,
            /// Target scope.
            pub scope: ScopeKind,
            /// Whether it changes state (quota-checked and audited as a mutation).
            pub writes: bool,
            /// The usage counter it adds to besides `tool_calls` (tools and the download).
            pub counter: Option<UsageCounter>,
            /// Roles that may perform it.
            pub roles: &'static [Role],
        }

        /// The operation table, one row per operation: the one place an operation is
        /// declared. The tool catalogue's order, the policy, the dispatch (an exhaustive
        /// `match` on [`Operation`] in the daemon), the usage counters and the audit
        /// action all derive from it.
        pub const POLICY: &[PolicyRow] = &[
            $( PolicyRow { operation: Operation::$variant, name: $name, kind: OperationKind::$kind, scope: ScopeKind::$scope, writes: $writes, counter: $counter, roles: &[$(Role::$role),*] }, )*
        ];
    };
}

operations! {
    ScenarioDefine => "scenario_define", Tool, Namespace, true, Some(UsageCounter::RegistryEntries), [OrgAdmin, TenantAdmin, Service];
    ScenarioStart => "scenario_start", Tool, Namespace, true, Some(UsageCounter::RunsStarted), [OrgAdmin, TenantAdmin, Service];
    ScenarioStatus => "scenario_status", Tool, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    ScenarioNext => "scenario_next", Tool, Namespace, true, None, [OrgAdmin, TenantAdmin, Service];
    ScenarioSubmit => "scenario_submit", Tool, Namespace, true, None, [OrgAdmin, TenantAdmin, Service];
    ScenarioTrigger => "scenario_trigger", Tool, Namespace, true, None, [OrgAdmin, TenantAdmin, Service];
    EvidenceQuery => "evidence_query", Tool, Namespace, true, Some(UsageCounter::EvidenceQueries), [OrgAdmin, TenantAdmin, Service];
    // Auditors read: they verify and download runpacks, but an export writes into the
    // runpack store (and may replace one of the same name), so it is not theirs.
    RunpackExport => "runpack_export", Tool, Namespace, true, Some(UsageCounter::RunpackExports), [OrgAdmin, TenantAdmin, Service];
    RunpackVerify => "runpack_verify", Tool, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    ProvidersList => "providers_list", Tool, Public, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    ProviderContractGet => "provider_contract_get", Tool, Public, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    ProviderCheckSchemaGet => "provider_check_schema_get", Tool, Public, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    SchemasRegister => "schemas_register", Tool, Namespace, true, Some(UsageCounter::SchemasWritten), [OrgAdmin, TenantAdmin, Service];
    SchemasList => "schemas_list", Tool, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    SchemasGet => "schemas_get", Tool, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    ScenariosList => "scenarios_list", Tool, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    Precheck => "precheck", Tool, Namespace, false, None, [OrgAdmin, TenantAdmin, Service];
    DocsSearch => "decision_gate_docs_search", Tool, Public, false, None, [OrgAdmin, TenantAdmin, Auditor, Service];
    RunpackDownload => "runpack_download", Download, Namespace, false, Some(UsageCounter::RunpackExports), [OrgAdmin, TenantAdmin, Auditor, Service];
    TenantCreate => "tenant_create", Admin, Org, true, None, [OrgAdmin];
    TenantList => "tenant_list", Admin, Org, false, None, [OrgAdmin];
    TenantDisable => "tenant_disable", Admin, Org, true, None, [OrgAdmin];
    TenantDelete => "tenant_delete", Admin, Org, true, None, [OrgAdmin];
    NamespaceCreate => "namespace_create", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    NamespaceList => "namespace_list", Admin, Tenant, false, None, [OrgAdmin, TenantAdmin, Auditor];
    NamespaceDisable => "namespace_disable", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    NamespaceDelete => "namespace_delete", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    KeyIssue => "key_issue", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    KeyList => "key_list", Admin, Tenant, false, None, [OrgAdmin, TenantAdmin, Auditor];
    KeyRevoke => "key_revoke", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    KeyRotate => "key_rotate", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    // The OIDC subject mapping: who an identity provider's subject is here (wins over the
    // token's claims). Like keys: a tenant admin maps subjects into its own tenant only.
    OidcSubjectSet => "oidc_subject_set", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    OidcSubjectList => "oidc_subject_list", Admin, Tenant, false, None, [OrgAdmin, TenantAdmin, Auditor];
    OidcSubjectDelete => "oidc_subject_delete", Admin, Tenant, true, None, [OrgAdmin, TenantAdmin];
    AuditVerify => "audit_verify", Admin, Org, false, None, [OrgAdmin, Auditor];
    AuditExport => "audit_export", Admin, Org, false, None, [OrgAdmin, Auditor];
    UsageReport => "usage_report", Admin, Tenant, false, None, [OrgAdmin, TenantAdmin, Auditor];
    // Browsing (the admin UI, operators' scripts): runs filtered and paged, one run's whole
    // state, one scenario's canonical spec, the newest audit entries.
    RunList => "run_list", Admin, Tenant, false, None, [OrgAdmin, TenantAdmin, Auditor];
    RunGet => "run_get", Admin, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor];
    ScenarioGet => "scenario_get", Admin, Namespace, false, None, [OrgAdmin, TenantAdmin, Auditor];
    AuditList => "audit_list", Admin, Org, false, None, [OrgAdmin, Auditor];
}

impl Operation {
    /// This operation's row of the policy table.
    #[must_use]
    pub fn row(self) -> &'static PolicyRow {
        // Every variant has exactly one row (a unit test checks it); the first row is a
        // harmless, never-used fallback that keeps this function total.
        POLICY.iter().find(|row| row.operation == self).unwrap_or(&POLICY[0])
    }

    /// Wire name.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Looks an operation up by wire name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        POLICY.iter().find(|row| row.name == name).map(|row| row.operation)
    }

    /// Whether the operation changes state.
    #[must_use]
    pub fn writes(self) -> bool {
        self.row().writes
    }

    /// Whether it is one of the Decision Gate tools.
    #[must_use]
    pub fn is_tool(self) -> bool {
        self.row().kind == OperationKind::Tool
    }

    /// The usage counter it adds to besides `tool_calls`.
    #[must_use]
    pub fn counter(self) -> Option<UsageCounter> {
        self.row().counter
    }

    /// The tools, in the catalogue's order (`tools/list`).
    pub fn tools() -> impl Iterator<Item = Self> {
        POLICY.iter().filter(|row| row.kind == OperationKind::Tool).map(|row| row.operation)
    }

    /// Looks a tool up by name (`tools/call`): `None` for an unknown name and for every
    /// operation that is not a tool.
    #[must_use]
    pub fn tool(name: &str) -> Option<Self> {
        Self::from_name(name).filter(|operation| operation.is_tool())
    }

    /// Looks an admin operation up by name (`admin/<name>`).
    #[must_use]
    pub fn admin(name: &str) -> Option<Self> {
        Self::from_name(name).filter(|operation| operation.row().kind == OperationKind::Admin)
    }
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Target {
    /// Tenant (`None` for every-tenant scenarios and org-wide operations).
    pub tenant: Option<u64>,
    /// Namespace.
    pub namespace: Option<u64>,
}

impl Target {
    /// A tenant and namespace.
    #[must_use]
    pub fn namespace(tenant: u64, namespace: u64) -> Self {
        Self { tenant: Some(tenant), namespace: Some(namespace) }
    }

    /// A whole tenant.
    #[must_use]
    pub fn tenant(tenant: u64) -> Self {
        Self { tenant: Some(tenant), namespace: None }
    }
}

/// The outcome of [`decide`], with the reason recorded in the audit log (never sent to
/// the caller, who sees only "unauthorized").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the operation may proceed.
    pub allowed: bool,
    /// Why.
    pub reason: String,
}

impl Decision {
    fn allow(reason: &str) -> Self {
        Self { allowed: true, reason: reason.to_string() }
    }

    fn deny(reason: impl Into<String>) -> Self {
        Self { allowed: false, reason: reason.into() }
    }
}

/// Decides whether `principal` may perform `operation` on `target`. Pure: the registry
/// check (does the tenant exist and is it active) follows separately.
#[must_use]
pub fn decide(principal: &Principal, operation: Operation, target: Target) -> Decision {
    let row = operation.row();
    if !row.roles.contains(&principal.role) {
        return Decision::deny(format!("role {} may not perform {}", principal.role.as_str(), row.name));
    }
    if row.scope == ScopeKind::Public {
        return Decision::allow("public operation");
    }
    if principal.role == Role::OrgAdmin {
        return Decision::allow("org_admin");
    }
    if row.scope == ScopeKind::Org {
        return match principal.tenant {
            None => Decision::allow("organisation-wide principal"),
            Some(_) => Decision::deny(format!("{} is organisation-wide; the principal is tenant-bound", row.name)),
        };
    }
    let Some(own) = principal.tenant else {
        // Organisation-wide principals other than org_admin (an org auditor) reach every
        // tenant with the operations their role allows.
        return Decision::allow("organisation-wide principal");
    };
    match target.tenant {
        Some(tenant) if tenant == own => {}
        Some(_) => return Decision::deny("target tenant is not the principal's tenant"),
        None => return Decision::deny("target spans every tenant; the principal is tenant-bound"),
    }
    if row.scope == ScopeKind::Namespace {
        match target.namespace {
            Some(ns) if principal.namespaces.is_empty() || principal.namespaces.contains(&ns) => {}
            Some(_) => return Decision::deny("target namespace is outside the principal's namespaces"),
            None => return Decision::deny("operation names no namespace"),
        }
    }
    Decision::allow("within the principal's tenant and namespaces")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, tenant: Option<u64>, namespaces: &[u64]) -> Principal {
        Principal { id: "k".into(), role, tenant, namespaces: namespaces.to_vec() }
    }

    #[test]
    fn every_operation_has_exactly_one_row_and_a_unique_name() {
        for row in POLICY {
            assert_eq!(POLICY.iter().filter(|r| r.operation == row.operation).count(), 1, "{}", row.name);
            assert_eq!(POLICY.iter().filter(|r| r.name == row.name).count(), 1, "{}", row.name);
            assert_eq!(Operation::from_name(row.name), Some(row.operation));
            assert!(row.roles.contains(&Role::OrgAdmin), "org_admin may do everything: {}", row.name);
        }
        assert_eq!(Operation::tools().count(), 18);
        for row in POLICY {
            assert!(
                !(row.counter.is_some() && row.kind == OperationKind::Admin),
                "admin rows are not metered: {}",
                row.name
            );
        }
    }

    #[test]
    fn auditors_never_write_scenarios() {
        let auditor = principal(Role::Auditor, Some(1), &[]);
        for op in [
            Operation::ScenarioStart,
            Operation::ScenarioNext,
            Operation::ScenarioDefine,
            Operation::KeyIssue,
            Operation::RunpackExport,
        ] {
            assert!(!decide(&auditor, op, Target::namespace(1, 1)).allowed, "{op:?}");
        }
        assert!(decide(&auditor, Operation::ScenarioStatus, Target::namespace(1, 1)).allowed);
        assert!(decide(&auditor, Operation::RunpackVerify, Target::namespace(1, 1)).allowed);
        assert!(decide(&auditor, Operation::RunpackDownload, Target::namespace(1, 1)).allowed);
        // Every operation an auditor may perform is a read.
        for row in POLICY.iter().filter(|row| row.roles.contains(&Role::Auditor)) {
            assert!(!row.writes, "{} writes but auditors may perform it", row.name);
        }
    }

    #[test]
    fn tenant_bound_principals_stay_home() {
        let service = principal(Role::Service, Some(1), &[5]);
        assert!(decide(&service, Operation::ScenarioStart, Target::namespace(1, 5)).allowed);
        assert!(!decide(&service, Operation::ScenarioStart, Target::namespace(1, 6)).allowed);
        assert!(!decide(&service, Operation::ScenarioStart, Target::namespace(7, 5)).allowed);
        assert!(!decide(&service, Operation::ScenarioDefine, Target { tenant: None, namespace: Some(5) }).allowed);
        assert!(!decide(&service, Operation::KeyIssue, Target::tenant(1)).allowed);
        let admin = principal(Role::TenantAdmin, Some(1), &[]);
        assert!(decide(&admin, Operation::KeyIssue, Target::tenant(1)).allowed);
        assert!(!decide(&admin, Operation::KeyIssue, Target::tenant(2)).allowed);
        assert!(!decide(&admin, Operation::TenantCreate, Target::default()).allowed);
        assert!(!decide(&admin, Operation::AuditExport, Target::default()).allowed);
    }

    #[test]
    fn org_admin_reaches_everything() {
        let admin = principal(Role::OrgAdmin, None, &[]);
        for row in POLICY {
            assert!(decide(&admin, row.operation, Target::namespace(9, 9)).allowed, "{}", row.name);
        }
    }
}
