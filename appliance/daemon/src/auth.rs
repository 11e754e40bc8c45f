//! Who is calling: API-key principals (HTTP) and the local operator (stdio). Every tool
//! call names a tenant and namespace; `Principal::may_access` is checked before any work.

use dg_storage::{ApiKeyRecord, Store};

use crate::keys;
use crate::wire::{code, WireError};

/// Roles (the full policy table comes with the identity work; admin keys exist today).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, every tenant.
    OrgAdmin,
    /// Everything within one tenant.
    TenantAdmin,
    /// Read-only.
    Auditor,
    /// Run tools within its namespaces.
    Service,
}

impl Role {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "org_admin" => Some(Self::OrgAdmin),
            "tenant_admin" => Some(Self::TenantAdmin),
            "auditor" => Some(Self::Auditor),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id, or `stdio` for the local operator.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Tenant the principal is bound to (`None` = all).
    pub tenant: Option<u64>,
    /// Namespaces allowed (empty = all of the tenant's).
    pub namespaces: Vec<u64>,
}

impl Principal {
    /// The local operator on stdio (whoever can run the binary against the data dir).
    #[must_use]
    pub fn local_operator() -> Self {
        Self { id: "stdio".to_string(), role: Role::OrgAdmin, tenant: None, namespaces: Vec::new() }
    }

    /// Whether the principal may act in a tenant and namespace.
    #[must_use]
    pub fn may_access(&self, tenant: Option<u64>, namespace: Option<u64>) -> bool {
        if self.role == Role::OrgAdmin {
            return true;
        }
        let tenant_ok = match (self.tenant, tenant) {
            (Some(own), Some(requested)) => own == requested,
            (None, _) => true,
            (Some(_), None) => false,
        };
        let namespace_ok = match namespace {
            Some(ns) => self.namespaces.is_empty() || self.namespaces.contains(&ns),
            None => true,
        };
        tenant_ok && namespace_ok
    }

    /// Whether the role may change state.
    #[must_use]
    pub fn may_write(&self) -> bool {
        self.role != Role::Auditor
    }
}

/// Authenticates an `Authorization` header value.
///
/// # Errors
/// `-32001` for a missing, malformed, unknown, revoked or expired key.
pub fn authenticate(store: &Store, header: Option<&str>, now_ms: i64) -> Result<Principal, WireError> {
    let unauthenticated = || WireError::new(code::UNAUTHENTICATED, "unauthenticated");
    let token = header.and_then(keys::bearer_token).ok_or_else(unauthenticated)?;
    keys::parse(token).map_err(|_| unauthenticated())?;
    let record: ApiKeyRecord = store.find_api_key(&keys::token_hash(token))?.ok_or_else(unauthenticated)?;
    if record.revoked_at_ms.is_some_and(|at| at <= now_ms) || record.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return Err(unauthenticated());
    }
    let role = Role::parse(&record.role).ok_or_else(unauthenticated)?;
    Ok(Principal { id: record.key_id, role, tenant: record.tenant_id, namespaces: record.namespaces })
}
