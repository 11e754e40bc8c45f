//! One request's path through policy, quota and audit. Every tool call and admin
//! operation goes through [`call`]: the role gate, then the operation itself (which
//! names its target through [`RequestCtx::authorize`] before touching storage), then
//! the audit entry and usage record in one durable commit. If that commit fails the
//! request fails: nothing is acknowledged without its audit entry.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dg_identity::policy::ScopeKind;
use dg_identity::{decide, Decision, Operation, Principal, Target};
use dg_storage::audit::AuditEvent;
use dg_storage::usage::UsageRecord;
use dg_storage::StoreError;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::wire::{code, WireError};

/// The usage counter an operation adds to, besides `tool_calls`.
#[must_use]
pub fn counter_of(operation: Operation) -> Option<&'static str> {
    match operation {
        Operation::ScenarioStart => Some("runs_started"),
        Operation::EvidenceQuery => Some("evidence_queries"),
        Operation::RunpackExport | Operation::RunpackDownload => Some("runpack_exports"),
        Operation::SchemasRegister => Some("schemas_written"),
        Operation::ScenarioDefine => Some("registry_entries"),
        _ => None,
    }
}

/// Whether an operation is one of the 18 Decision Gate tools.
fn is_tool(operation: Operation) -> bool {
    crate::tools::is_known_tool(operation.name())
}

/// What one request carries through its operation.
pub struct RequestCtx<'a> {
    /// The application.
    pub app: &'a App,
    /// Who is calling.
    pub principal: &'a Principal,
    /// What is asked for.
    pub operation: Operation,
    /// Idempotency and audit key: the client's correlation id, else the server's.
    pub request_id: String,
    decisions: RefCell<Vec<(Decision, Target)>>,
    charged: RefCell<Option<(u64, Vec<String>)>>,
    request_sha256: Option<String>,
    /// The response's hash, declared by the tool just before its final write.
    response_sha256: Arc<Mutex<Option<String>>>,
    /// Whether the entries that rode on a write included the tool call itself.
    call_recorded: Arc<AtomicBool>,
}

impl<'a> RequestCtx<'a> {
    /// A context for one operation.
    #[must_use]
    pub fn new(app: &'a App, principal: &'a Principal, operation: Operation, request_id: String) -> Self {
        Self {
            app,
            principal,
            operation,
            request_id,
            decisions: RefCell::new(Vec::new()),
            charged: RefCell::new(None),
            request_sha256: None,
            response_sha256: Arc::new(Mutex::new(None)),
            call_recorded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Declares the response before the tool's final write, so the audit entry of the
    /// call (with the response hash) commits in the same transaction as the write.
    pub fn responding(&self, output: &Value) {
        if let Ok(mut slot) = self.response_sha256.lock() {
            *slot = sha256_of(output);
        }
    }

    /// Attaches this request's audit entries to its next write (tools only): the
    /// decisions so far, and the call itself once the tool has declared its response.
    fn attach_audit(&self, tenant: u64) {
        let decisions = self.decision_events();
        let target = self.decisions.borrow().last().map(|(_, target)| *target).unwrap_or_default();
        let mut call = self.event("tool_call", target, "ok", String::new());
        call.request_sha256.clone_from(&self.request_sha256);
        let mut usage = vec![self.usage(tenant, "tool_calls")];
        usage.extend(counter_of(self.operation).map(|counter| self.usage(tenant, counter)));
        let (response, recorded) = (self.response_sha256.clone(), self.call_recorded.clone());
        self.app.store.attach_audit(Arc::new(move || {
            let mut events = decisions.clone();
            let declared = response.lock().ok().and_then(|slot| slot.clone());
            recorded.store(declared.is_some(), Ordering::SeqCst);
            match declared {
                Some(hash) => {
                    let mut call = call.clone();
                    call.response_sha256 = Some(hash);
                    events.push(call);
                    (events, usage.clone())
                }
                None => (events, Vec::new()),
            }
        }));
    }

    /// The authorization decision for `target`: the policy table, then the registry
    /// (the tenant and namespace must exist and be active), then the tenant's quotas for
    /// a mutation. Recorded for the audit log either way; the caller sees only
    /// "unauthorized" so nothing about other tenants leaks.
    ///
    /// # Errors
    /// `-32003` when denied; storage errors.
    pub fn authorize(&self, target: Target) -> Result<(), WireError> {
        let mut decision = decide(self.principal, self.operation, target);
        let mut quotas = None;
        if decision.allowed
            && self.operation.row().scope != ScopeKind::Public
            && self.operation.row().scope != ScopeKind::Org
        {
            if let Some(tenant) = target.tenant {
                match self.app.store.active_tenant_quotas(tenant, target.namespace)? {
                    Some(found) => quotas = Some((tenant, found)),
                    None => {
                        decision = Decision {
                            allowed: false,
                            reason: "tenant or namespace is not registered, or is disabled".to_string(),
                        };
                    }
                }
            }
        }
        let allowed = decision.allowed;
        self.decisions.borrow_mut().push((decision, target));
        if !allowed {
            return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
        }
        if let Some((tenant, overrides)) = quotas {
            self.charge_quota(tenant, &overrides)?;
            if is_tool(self.operation) {
                self.attach_audit(tenant);
            }
        }
        Ok(())
    }

    /// Records a denial decided by the operation itself (a rule beyond the policy table).
    /// It replaces an allow decided for the same request, so a request has one decision.
    pub fn deny(&self, target: Target, reason: &str) {
        let mut decisions = self.decisions.borrow_mut();
        if decisions.last().is_some_and(|(decision, _)| decision.allowed) {
            decisions.pop();
        }
        decisions.push((Decision { allowed: false, reason: reason.to_string() }, target));
    }

    /// Charges the counters that have a quota, before the work (one transaction, so
    /// concurrent requests never pass a quota); a replayed request id is not charged again.
    fn charge_quota(&self, tenant: u64, overrides: &std::collections::BTreeMap<String, u64>) -> Result<(), WireError> {
        if !is_tool(self.operation) {
            return Ok(());
        }
        let limit_of =
            |counter: &str| overrides.get(counter).copied().or_else(|| self.app.config.quotas.get(counter).copied());
        let mut counters = vec!["tool_calls"];
        counters.extend(counter_of(self.operation));
        let charges: Vec<(UsageRecord, Option<u64>)> = counters
            .iter()
            .filter_map(|counter| limit_of(counter).map(|limit| (self.usage(tenant, counter), Some(limit))))
            .collect();
        if charges.is_empty() {
            return Ok(());
        }
        let names = charges.iter().map(|(record, _)| record.counter.clone()).collect();
        match self.app.store.charge_usage(charges) {
            Ok(true) => {
                *self.charged.borrow_mut() = Some((tenant, names));
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(StoreError::QuotaExceeded { counter, requested, limit, .. }) => {
                let target = self.decisions.borrow().last().map_or(Target::tenant(tenant), |(_, target)| *target);
                self.deny(target, &format!("quota {counter} exceeded: {requested} > {limit}"));
                Err(WireError::new(code::UNAUTHORIZED, "unauthorized"))
            }
            Err(err) => Err(err.into()),
        }
    }

    fn usage(&self, tenant: u64, counter: &str) -> UsageRecord {
        UsageRecord {
            tenant_id: tenant,
            key_id: self.principal.id.clone(),
            request_id: self.request_id.clone(),
            counter: counter.to_string(),
            amount: 1,
        }
    }

    /// One `authz` audit event per decision made so far.
    fn decision_events(&self) -> Vec<AuditEvent> {
        self.decisions
            .borrow()
            .iter()
            .map(|(decision, target)| {
                self.event("authz", *target, if decision.allowed { "allow" } else { "deny" }, decision.reason.clone())
            })
            .collect()
    }

    fn event(&self, action: &str, target: Target, outcome: &str, reason: String) -> AuditEvent {
        AuditEvent {
            principal: self.principal.id.clone(),
            role: Some(self.principal.role.as_str().to_string()),
            tenant_id: target.tenant,
            namespace_id: target.namespace,
            action: action.to_string(),
            target: self.operation.name().to_string(),
            outcome: outcome.to_string(),
            reason,
            request_id: self.request_id.clone(),
            request_sha256: None,
            response_sha256: None,
        }
    }
}

fn sha256_of(value: &Value) -> Option<String> {
    dg_engine::canonical_json_bytes(value).ok().map(|bytes| hex::encode(Sha256::digest(bytes)))
}

/// Runs one operation for `principal` with policy, quota and audit around it.
///
/// # Errors
/// The operation's error, `-32003` when denied, or `-32050` when the audit entry could
/// not be written (the operation's effect may then be durable, but it is not
/// acknowledged; retrying with the same request id is counted once).
pub fn call(
    app: &App,
    principal: &Principal,
    request_id: String,
    operation: Operation,
    args: Value,
    run: impl FnOnce(&RequestCtx<'_>, Value) -> Result<Value, WireError>,
) -> Result<Value, WireError> {
    let mut ctx = RequestCtx::new(app, principal, operation, request_id);
    ctx.request_sha256 = sha256_of(&args);
    let row = operation.row();
    let outcome = if !row.roles.contains(&principal.role) {
        // The role gate needs no target: decided before the arguments are even read.
        ctx.decisions.borrow_mut().push((decide(principal, operation, Target::default()), Target::default()));
        Err(WireError::new(code::UNAUTHORIZED, "unauthorized"))
    } else if row.scope == ScopeKind::Public {
        ctx.authorize(Target::default()).and_then(|()| run(&ctx, args))
    } else {
        run(&ctx, args)
    };
    // Whatever rode on the tool's write is committed with it; the rest is written now.
    let rode_along = app.store.detach_audit();
    let call_recorded = rode_along && ctx.call_recorded.load(Ordering::SeqCst);
    if outcome.is_err() {
        if let Some((tenant, counters)) = ctx.charged.borrow_mut().take() {
            if let Err(err) = app.store.refund_usage(tenant, &ctx.request_id, counters) {
                tracing::warn!(error = %err, request_id = %ctx.request_id, "usage refund failed");
            }
        }
    }
    if call_recorded && outcome.is_ok() {
        return outcome;
    }
    let decisions = ctx.decisions.borrow().clone();
    let denied = decisions.iter().any(|(decision, _)| !decision.allowed);
    let target = decisions.last().map(|(_, target)| *target).unwrap_or_default();
    let mut events: Vec<AuditEvent> = if rode_along { Vec::new() } else { ctx.decision_events() };
    let mut usage = Vec::new();
    if !denied {
        let action = if is_tool(operation) { "tool_call" } else { "admin" };
        let (result, reason) = match &outcome {
            Ok(_) => ("ok", String::new()),
            Err(err) => ("error", format!("{} {}", err.code, err.message)),
        };
        let mut event = ctx.event(action, target, result, reason);
        event.request_sha256.clone_from(&ctx.request_sha256);
        event.response_sha256 = outcome.as_ref().ok().and_then(sha256_of);
        events.push(event);
        // The ledger counts tool calls; admin operations are audited but not metered.
        if let Some(tenant) = target.tenant.or(principal.tenant).filter(|_| is_tool(operation)) {
            usage.push(ctx.usage(tenant, "tool_calls"));
            if let (Ok(_), Some(counter)) = (&outcome, counter_of(operation)) {
                usage.push(ctx.usage(tenant, counter));
            }
        }
    }
    if let Err(err) = app.store.append_audit(events, usage) {
        app.metrics.audit_failure();
        tracing::error!(error = %err, request_id = %ctx.request_id, "audit write failed; failing the request");
        return Err(WireError::new(code::INTERNAL, format!("audit log unavailable, request not acknowledged: {err}")));
    }
    outcome
}
