//! Roles and principals: who a request comes from, and what it is bound to.

use serde::{Deserialize, Serialize};

/// The four roles of the appliance. Every operation's allowed roles are listed in the
/// policy table ([`crate::policy::POLICY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, every tenant: the operator of the appliance.
    OrgAdmin,
    /// Everything within one tenant (a project administrator).
    TenantAdmin,
    /// Read-only: run status, runpacks, audit and usage.
    Auditor,
    /// Runs the scenario tools within its namespaces (an agent or a pipeline).
    Service,
}

impl Role {
    /// Every role, in order of decreasing power.
    pub const ALL: [Role; 4] = [Role::OrgAdmin, Role::TenantAdmin, Role::Auditor, Role::Service];

    /// Parses the stored role name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "org_admin" => Some(Self::OrgAdmin),
            "tenant_admin" => Some(Self::TenantAdmin),
            "auditor" => Some(Self::Auditor),
            "service" => Some(Self::Service),
            _ => None,
        }
    }

    /// The stored and displayed name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrgAdmin => "org_admin",
            Self::TenantAdmin => "tenant_admin",
            Self::Auditor => "auditor",
            Self::Service => "service",
        }
    }
}

/// An authenticated caller: an API key, a client certificate or the local operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Key id, `cert:<subject>` for a client certificate, or `stdio` for the local operator.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Tenant the principal is bound to (`None` = organisation-wide).
    pub tenant: Option<u64>,
    /// Namespaces allowed within the tenant (empty = all of the tenant's).
    pub namespaces: Vec<u64>,
}

impl Principal {
    /// The local operator on stdio and the CLI: whoever may read the data directory.
    #[must_use]
    pub fn local_operator() -> Self {
        Self { id: "stdio".to_string(), role: Role::OrgAdmin, tenant: None, namespaces: Vec::new() }
    }
}
