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

macro_rules! operations {
    ($( $variant:ident => $name:literal, $scope:ident, $writes:literal, [$($role:ident),*]; )*) => {
        /// Every operation a caller can ask for: the 18 Decision Gate tools, the runpack
        /// download, and the admin operations.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Operation { $( #[doc = $name] $variant, )* }

        /// One row of the policy table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub struct PolicyRow {
            /// The operation.
            #[serde(skip)]
            pub operation: Operation,
            /// Its wire name (tool name, or admin method without the `admin/` prefix).
            pub name: &'static str,
            /// Target scope.
            pub scope: ScopeKind,
            /// Whether it changes state (quota-checked and audited as a mutation).
            pub writes: bool,
            /// Roles that may perform it.
            pub roles: &'static [Role],
        }

        /// The policy table, one row per operation.
        pub const POLICY: &[PolicyRow] = &[
            $( PolicyRow { operation: Operation::$variant, name: $name, scope: ScopeKind::$scope, writes: $writes, roles: &[$(Role::$role),*] }, )*
        ];
    };
}

operations! {
    ScenarioDefine => "scenario_define", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    ScenarioStart => "scenario_start", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    ScenarioStatus => "scenario_status", Namespace, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    ScenarioNext => "scenario_next", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    ScenarioSubmit => "scenario_submit", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    ScenarioTrigger => "scenario_trigger", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    EvidenceQuery => "evidence_query", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    RunpackExport => "runpack_export", Namespace, true, [OrgAdmin, TenantAdmin, Auditor, Service];
    RunpackVerify => "runpack_verify", Namespace, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    ProvidersList => "providers_list", Public, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    ProviderContractGet => "provider_contract_get", Public, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    ProviderCheckSchemaGet => "provider_check_schema_get", Public, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    SchemasRegister => "schemas_register", Namespace, true, [OrgAdmin, TenantAdmin, Service];
    SchemasList => "schemas_list", Namespace, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    SchemasGet => "schemas_get", Namespace, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    ScenariosList => "scenarios_list", Namespace, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    Precheck => "precheck", Namespace, false, [OrgAdmin, TenantAdmin, Service];
    DocsSearch => "decision_gate_docs_search", Public, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    RunpackDownload => "runpack_download", Namespace, false, [OrgAdmin, TenantAdmin, Auditor, Service];
    TenantCreate => "tenant_create", Org, true, [OrgAdmin];
    TenantList => "tenant_list", Org, false, [OrgAdmin];
    TenantDisable => "tenant_disable", Org, true, [OrgAdmin];
    TenantDelete => "tenant_delete", Org, true, [OrgAdmin];
    NamespaceCreate => "namespace_create", Tenant, true, [OrgAdmin, TenantAdmin];
    NamespaceList => "namespace_list", Tenant, false, [OrgAdmin, TenantAdmin, Auditor];
    NamespaceDisable => "namespace_disable", Tenant, true, [OrgAdmin, TenantAdmin];
    NamespaceDelete => "namespace_delete", Tenant, true, [OrgAdmin, TenantAdmin];
    KeyIssue => "key_issue", Tenant, true, [OrgAdmin, TenantAdmin];
    KeyList => "key_list", Tenant, false, [OrgAdmin, TenantAdmin, Auditor];
    KeyRevoke => "key_revoke", Tenant, true, [OrgAdmin, TenantAdmin];
    KeyRotate => "key_rotate", Tenant, true, [OrgAdmin, TenantAdmin];
    AuditVerify => "audit_verify", Org, false, [OrgAdmin, Auditor];
    AuditExport => "audit_export", Org, false, [OrgAdmin, Auditor];
    UsageReport => "usage_report", Tenant, false, [OrgAdmin, TenantAdmin, Auditor];
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
        assert_eq!(POLICY.iter().filter(|r| r.operation as usize <= Operation::DocsSearch as usize).count(), 18);
    }

    #[test]
    fn auditors_never_write_scenarios() {
        let auditor = principal(Role::Auditor, Some(1), &[]);
        for op in [Operation::ScenarioStart, Operation::ScenarioNext, Operation::ScenarioDefine, Operation::KeyIssue] {
            assert!(!decide(&auditor, op, Target::namespace(1, 1)).allowed, "{op:?}");
        }
        assert!(decide(&auditor, Operation::ScenarioStatus, Target::namespace(1, 1)).allowed);
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
