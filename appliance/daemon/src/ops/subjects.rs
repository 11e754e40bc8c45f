//! Admin operations on the OIDC subject mapping (`oidc_subject_set`, `_list`, `_delete`):
//! who an identity provider's subject is here. The rules are those of API keys: a tenant
//! admin maps subjects into its own tenant only and never to `org_admin`, `org_admin` is
//! organisation-wide, a mapping's namespaces must be registered, and a subject mapped in
//! another tenant cannot be taken over.

use dg_identity::{Role, Target};
use dg_storage::subjects::OidcSubjectRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ops::request::RequestCtx;
use crate::ops::tools::{parse_args, to_output};
use crate::wire::{code, WireError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    /// `oidc:<iss>#<sub>`, as recorded in the audit log.
    subject: String,
    role: Role,
    tenant_id: Option<u64>,
    #[serde(default)]
    namespaces: Vec<u64>,
    #[serde(default)]
    label: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteArgs {
    subject: String,
    tenant_id: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    tenant_id: Option<u64>,
}

/// `oidc_subject_set`.
///
/// # Errors
/// Bad arguments, refusals, storage errors.
pub fn set(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: SetArgs = parse_args(args)?;
    let target = Target { tenant: args.tenant_id, namespace: None };
    ctx.authorize(target)?;
    check_subject(&args.subject)?;
    match (args.role, args.tenant_id) {
        (Role::OrgAdmin, Some(_)) => {
            return Err(WireError::invalid_params("invalid arguments at tenant_id: org_admin is organisation-wide"))
        }
        (Role::TenantAdmin | Role::Service | Role::Auditor, None) => {
            return Err(WireError::invalid_params("invalid arguments at tenant_id: this role needs a tenant"))
        }
        _ => {}
    }
    if args.role == Role::Service && args.namespaces.is_empty() {
        return Err(WireError::invalid_params(
            "invalid arguments at namespaces: a service subject needs its namespaces",
        ));
    }
    if ctx.principal.role != Role::OrgAdmin && args.role == Role::OrgAdmin {
        ctx.deny(target, "only org_admin may map subjects to org_admin");
        return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
    }
    if let Some(existing) = ctx.app.store.find_oidc_subject(&args.subject)? {
        if !may_manage(ctx, &existing) {
            ctx.deny(target, "the subject is mapped in another tenant or to org_admin");
            return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
        }
    }
    ctx.namespaces_registered(args.tenant_id, &args.namespaces)?;
    if args.label.len() > 128 {
        return Err(WireError::invalid_params("invalid arguments at label: at most 128 bytes"));
    }
    let record = OidcSubjectRecord {
        subject: args.subject,
        role: args.role.as_str().to_string(),
        tenant_id: args.tenant_id,
        namespaces: args.namespaces,
        label: args.label,
        updated_at_ms: dg_storage::now_ms(),
    };
    ctx.app.store.put_oidc_subject(&record)?;
    Ok(json!({"subject": to_output(&record)?}))
}

/// `oidc_subject_list`.
///
/// # Errors
/// Refusals, storage errors.
pub fn list(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: ListArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: args.tenant_id, namespace: None })?;
    to_output(&ctx.app.store.list_oidc_subjects(args.tenant_id)?)
}

/// `oidc_subject_delete`: the caller names the tenant the subject is mapped in (none for
/// an organisation-wide mapping); authorized for that tenant before the lookup, so a
/// mapping elsewhere answers "not found", exactly like one that does not exist.
///
/// # Errors
/// Refusals, not found, storage errors.
pub fn delete(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: DeleteArgs = parse_args(args)?;
    let target = Target { tenant: args.tenant_id, namespace: None };
    ctx.authorize(target)?;
    let existing = ctx.app.store.find_oidc_subject(&args.subject)?.filter(|found| found.tenant_id == args.tenant_id);
    let Some(existing) = existing else {
        return Err(WireError::new(code::NOT_FOUND, format!("oidc subject {} not found", args.subject)));
    };
    if !may_manage(ctx, &existing) {
        ctx.deny(target, "only org_admin may manage org_admin subjects");
        return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
    }
    ctx.app.store.delete_oidc_subject(&args.subject)?;
    Ok(json!({"deleted": {"subject": args.subject}}))
}

/// Whether the caller may replace or remove an existing mapping.
fn may_manage(ctx: &RequestCtx<'_>, existing: &OidcSubjectRecord) -> bool {
    ctx.principal.role == Role::OrgAdmin
        || (existing.role != Role::OrgAdmin.as_str()
            && existing.tenant_id.is_some()
            && existing.tenant_id == ctx.principal.tenant)
}

fn check_subject(subject: &str) -> Result<(), WireError> {
    let well_formed = subject
        .strip_prefix("oidc:")
        .and_then(|rest| rest.split_once('#'))
        .is_some_and(|(issuer, sub)| issuer.starts_with("https://") && !sub.is_empty());
    if !well_formed
        || subject.len() > dg_storage::subjects::MAX_SUBJECT_ID_BYTES
        || subject.chars().any(char::is_control)
    {
        return Err(WireError::invalid_params(
            "invalid arguments at subject: expected oidc:<issuer>#<sub>, as the audit log records it",
        ));
    }
    Ok(())
}
