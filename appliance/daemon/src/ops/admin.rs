//! Admin operations: the tenant and namespace registry, API key lifecycle, audit
//! verification and export, and usage reports. Reached as `admin/<operation>` JSON-RPC
//! methods and from the CLI; both go through `request::call`, so they are authorized by
//! the same policy table and audited the same way as tools.

use std::collections::BTreeMap;

use dg_identity::{keys, Operation, Role, Target};
use dg_storage::tenancy::Status;
use dg_storage::ApiKeyRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ops::request::RequestCtx;
use crate::ops::tools::{parse_args, to_output};
use crate::wire::{code, WireError};

/// Runs the admin operation named by `ctx.operation`.
///
/// # Errors
/// Bad arguments, refusals, storage errors.
pub fn call(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args = if args.is_null() { Value::Object(serde_json::Map::new()) } else { args };
    match ctx.operation {
        Operation::TenantCreate => tenant_create(ctx, args),
        Operation::TenantList => {
            ctx.authorize(Target::default())?;
            to_output(&ctx.app.store.list_tenants()?)
        }
        Operation::TenantDisable => tenant_status(ctx, args),
        Operation::TenantDelete => {
            let args: TenantArgs = parse_args(args)?;
            ctx.authorize(Target::default())?;
            ctx.app.store.delete_tenant(args.tenant_id).map_err(registry_error)?;
            Ok(json!({"deleted": {"tenant_id": args.tenant_id}}))
        }
        Operation::NamespaceCreate => {
            let args: NamespaceCreateArgs = parse_args(args)?;
            ctx.authorize(Target::tenant(args.tenant_id))?;
            ctx.app.store.create_namespace(args.tenant_id, args.namespace_id, &args.name).map_err(registry_error)?;
            Ok(json!({"created": {"tenant_id": args.tenant_id, "namespace_id": args.namespace_id}}))
        }
        Operation::NamespaceList => {
            let args: TenantArgs = parse_args(args)?;
            ctx.authorize(Target::tenant(args.tenant_id))?;
            to_output(&ctx.app.store.list_namespaces(args.tenant_id)?)
        }
        Operation::NamespaceDisable => {
            let args: NamespaceStatusArgs = parse_args(args)?;
            ctx.authorize(Target::tenant(args.tenant_id))?;
            let status = if args.enable { Status::Active } else { Status::Disabled };
            ctx.app.store.set_namespace_status(args.tenant_id, args.namespace_id, status).map_err(registry_error)?;
            Ok(json!({"tenant_id": args.tenant_id, "namespace_id": args.namespace_id, "status": status}))
        }
        Operation::NamespaceDelete => {
            let args: NamespaceStatusArgs = parse_args(args)?;
            ctx.authorize(Target::tenant(args.tenant_id))?;
            ctx.app.store.delete_namespace(args.tenant_id, args.namespace_id).map_err(registry_error)?;
            Ok(json!({"deleted": {"tenant_id": args.tenant_id, "namespace_id": args.namespace_id}}))
        }
        Operation::KeyIssue => key_issue(ctx, args),
        Operation::KeyList => key_list(ctx, args),
        Operation::KeyRevoke => key_revoke(ctx, args),
        Operation::KeyRotate => key_rotate(ctx, args),
        Operation::OidcSubjectSet => crate::ops::subjects::set(ctx, args),
        Operation::OidcSubjectList => crate::ops::subjects::list(ctx, args),
        Operation::OidcSubjectDelete => crate::ops::subjects::delete(ctx, args),
        Operation::AuditVerify => {
            ctx.authorize(Target::default())?;
            let ring = ctx.app.keys.ring().map_err(|err| WireError::new(code::INTERNAL, err.to_string()))?;
            to_output(&ctx.app.store.verify_audit(&ring)?)
        }
        Operation::AuditExport => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct ExportArgs {
                #[serde(default)]
                since_ms: i64,
            }
            let args: ExportArgs = parse_args(args)?;
            ctx.authorize(Target::default())?;
            let signer: std::sync::Arc<dyn dg_storage::audit::AuditSigner> = ctx.app.keys.clone();
            ctx.app.store.audit_checkpoint_now(&signer)?;
            let mut out = Vec::new();
            let entries = ctx.app.store.export_audit(args.since_ms, &mut out)?;
            Ok(json!({"entries": entries, "jsonl": String::from_utf8_lossy(&out)}))
        }
        Operation::UsageReport => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct UsageArgs {
                tenant_id: Option<u64>,
                #[serde(default)]
                since_ms: i64,
            }
            let args: UsageArgs = parse_args(args)?;
            ctx.authorize(Target { tenant: args.tenant_id, namespace: None })?;
            to_output(&ctx.app.store.usage_report(args.tenant_id, args.since_ms)?)
        }
        Operation::RunList => crate::ops::browse::run_list(ctx, args),
        Operation::RunGet => crate::ops::browse::run_get(ctx, args),
        Operation::ScenarioGet => crate::ops::browse::scenario_get(ctx, args),
        Operation::AuditList => crate::ops::browse::audit_list(ctx, args),
        _ => Err(WireError::new(code::METHOD_NOT_FOUND, "method not found")),
    }
}

fn registry_error(err: dg_storage::StoreError) -> WireError {
    match err {
        dg_storage::StoreError::Missing(what) => WireError::new(code::NOT_FOUND, format!("not found: {what}")),
        other => other.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantArgs {
    tenant_id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantCreateArgs {
    tenant_id: u64,
    name: String,
    #[serde(default)]
    quotas: BTreeMap<String, u64>,
}

fn tenant_create(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: TenantCreateArgs = parse_args(args)?;
    ctx.authorize(Target::default())?;
    for counter in args.quotas.keys() {
        if !dg_storage::usage::COUNTERS.contains(&counter.as_str()) {
            return Err(WireError::invalid_params(format!(
                "invalid arguments at quotas.{counter}: unknown usage counter"
            )));
        }
    }
    if args.name.trim().is_empty() || args.name.len() > 128 {
        return Err(WireError::invalid_params("invalid arguments at name: 1 to 128 characters"));
    }
    ctx.app.store.create_tenant(args.tenant_id, &args.name, &args.quotas).map_err(registry_error)?;
    Ok(json!({"created": {"tenant_id": args.tenant_id, "name": args.name}}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantStatusArgs {
    tenant_id: u64,
    #[serde(default)]
    enable: bool,
}

fn tenant_status(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: TenantStatusArgs = parse_args(args)?;
    ctx.authorize(Target::default())?;
    let status = if args.enable { Status::Active } else { Status::Disabled };
    ctx.app.store.set_tenant_status(args.tenant_id, status).map_err(registry_error)?;
    Ok(json!({"tenant_id": args.tenant_id, "status": status}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceCreateArgs {
    tenant_id: u64,
    namespace_id: u64,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceStatusArgs {
    tenant_id: u64,
    namespace_id: u64,
    #[serde(default)]
    enable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIssueArgs {
    role: Role,
    tenant_id: Option<u64>,
    #[serde(default)]
    namespaces: Vec<u64>,
    #[serde(default)]
    label: String,
    /// Lifetime from now.
    expires_in_ms: Option<u64>,
}

/// Stores a new key with `template`'s scopes and returns its token (shown once).
fn store_new_key(ctx: &RequestCtx<'_>, template: &ApiKeyRecord) -> Result<(ApiKeyRecord, String), WireError> {
    let issued = keys::issue();
    let record = ApiKeyRecord { key_id: issued.key_id.clone(), ..template.clone() };
    ctx.app.store.put_api_key(&record, &keys::token_hash(&issued.token))?;
    Ok((record, issued.token))
}

/// The shortest key lifetime `key_issue` accepts: a key is never expired when issued.
const MIN_KEY_LIFETIME_MS: u64 = 1_000;

fn key_issue(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: KeyIssueArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: args.tenant_id, namespace: None })?;
    if args.role != Role::OrgAdmin && args.tenant_id.is_none() && args.role != Role::Auditor {
        return Err(WireError::invalid_params(
            "invalid arguments at tenant_id: tenant_admin and service keys need a tenant",
        ));
    }
    if args.role == Role::OrgAdmin && args.tenant_id.is_some() {
        return Err(WireError::invalid_params("invalid arguments at tenant_id: org_admin keys are organisation-wide"));
    }
    if ctx.principal.role != Role::OrgAdmin && args.role == Role::OrgAdmin {
        ctx.deny(Target { tenant: args.tenant_id, namespace: None }, "only org_admin may issue org_admin keys");
        return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
    }
    // A key that is expired when issued, or scoped to a namespace that does not exist,
    // is a mistake the operator should hear about, not a key.
    if args.expires_in_ms.is_some_and(|ms| ms < MIN_KEY_LIFETIME_MS) {
        return Err(WireError::invalid_params(format!(
            "invalid arguments at expires_in_ms: a key must live at least {} s",
            MIN_KEY_LIFETIME_MS / 1000
        )));
    }
    ctx.namespaces_registered(args.tenant_id, &args.namespaces)?;
    let now = dg_storage::now_ms();
    let template = ApiKeyRecord {
        key_id: String::new(),
        label: args.label,
        role: args.role.as_str().to_string(),
        tenant_id: args.tenant_id,
        namespaces: args.namespaces,
        created_at_ms: now,
        expires_at_ms: args.expires_in_ms.map(|ms| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))),
        revoked_at_ms: None,
    };
    let (record, token) = store_new_key(ctx, &template)?;
    Ok(json!({"key": to_output(&record)?, "token": token}))
}

fn key_list(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KeyListArgs {
        tenant_id: Option<u64>,
    }
    let args: KeyListArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: args.tenant_id, namespace: None })?;
    let keys: Vec<ApiKeyRecord> = ctx
        .app
        .store
        .list_api_keys()?
        .into_iter()
        .filter(|key| args.tenant_id.is_none() || key.tenant_id == args.tenant_id)
        .collect();
    to_output(&keys)
}

/// Finds a key and authorizes acting on it (its tenant is the target).
fn authorized_key(ctx: &RequestCtx<'_>, key_id: &str) -> Result<ApiKeyRecord, WireError> {
    let found = ctx.app.store.list_api_keys()?.into_iter().find(|key| key.key_id == key_id);
    match found {
        Some(record) => {
            ctx.authorize(Target { tenant: record.tenant_id, namespace: None })?;
            if ctx.principal.role != Role::OrgAdmin && record.role == Role::OrgAdmin.as_str() {
                ctx.deny(Target::default(), "only org_admin may manage org_admin keys");
                return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
            }
            Ok(record)
        }
        None => {
            // Same answer as another tenant's key, so key ids cannot be probed; org
            // admins learn that it does not exist.
            if ctx.principal.role == Role::OrgAdmin {
                ctx.authorize(Target::default())?;
                return Err(WireError::new(code::NOT_FOUND, format!("api key {key_id} not found")));
            }
            ctx.deny(Target::default(), "unknown key id");
            Err(WireError::new(code::UNAUTHORIZED, "unauthorized"))
        }
    }
}

fn key_revoke(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RevokeArgs {
        key_id: String,
    }
    let args: RevokeArgs = parse_args(args)?;
    let mut record = authorized_key(ctx, &args.key_id)?;
    if record.revoked_at_ms.is_none() {
        record.revoked_at_ms = Some(dg_storage::now_ms());
        ctx.app.store.update_api_key(&record)?;
    }
    Ok(json!({"key": to_output(&record)?}))
}

fn key_rotate(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RotateArgs {
        key_id: String,
        /// How long the old key keeps working.
        overlap_ms: u64,
    }
    let args: RotateArgs = parse_args(args)?;
    let mut old = authorized_key(ctx, &args.key_id)?;
    let now = dg_storage::now_ms();
    if !crate::ops::auth::key_usable(&old, now) {
        return Err(WireError::new(code::CONFLICT, format!("api key {} is revoked or expired", old.key_id)));
    }
    let template = ApiKeyRecord {
        created_at_ms: now,
        label: format!("{} (rotated from {})", old.label, old.key_id),
        ..old.clone()
    };
    let (record, token) = store_new_key(ctx, &template)?;
    let until = now.saturating_add(i64::try_from(args.overlap_ms).unwrap_or(i64::MAX));
    old.expires_at_ms = Some(old.expires_at_ms.map_or(until, |at| at.min(until)));
    ctx.app.store.update_api_key(&old)?;
    Ok(json!({"key": to_output(&record)?, "token": token, "old_key": to_output(&old)?}))
}
