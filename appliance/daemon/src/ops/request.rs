//! One request's path through policy, quota and audit. Every tool call and admin
//! operation goes through [`call`]: the role gate, then the operation itself (which
//! names its target through [`RequestCtx::authorize`] before touching storage), then
//! the audit entry and usage record in one durable commit. If that commit fails the
//! request fails: nothing is acknowledged without its audit entry.
//!
//! The write path is explicit: a tool's mutation goes through [`RequestCtx::commit`],
//! which builds the request's audit entries and usage rows as a value
//! ([`AuditBatch`]) and hands it to the store's mutation, which commits both in one
//! transaction. Nothing rides on thread state, so a request that dies (a panic, caught
//! here) leaves nothing behind for the next request on its thread. The path fails
//! closed: a write attempted before an authorization decision is refused, and a
//! non-public operation that finishes without one is answered as an internal error;
//! both are audited.

use std::cell::{Cell, RefCell};

use dg_crypto::Sha256;
use dg_identity::policy::ScopeKind;
use dg_identity::{decide, Decision, Operation, Principal, Target, UsageCounter};
use dg_storage::audit::{AuditBatch, AuditEvent};
use dg_storage::usage::UsageRecord;
use dg_storage::StoreError;
use serde_json::Value;

use crate::app::App;
use crate::wire::{code, WireError};

/// What of this request's audit record a committed write already carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Nothing yet.
    Nothing,
    /// The authorization decisions (a failed step whose state change was saved).
    Decisions,
    /// The decisions and the call itself with its response hash.
    Call,
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
    recorded: Cell<Recorded>,
    /// A write was attempted before any authorization decision (refused).
    unauthorized_write: Cell<bool>,
    /// What the operation's audit entry records beside its outcome when it succeeds (where
    /// an exported runpack went).
    note: RefCell<String>,
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
            recorded: Cell::new(Recorded::Nothing),
            unauthorized_write: Cell::new(false),
            note: RefCell::new(String::new()),
        }
    }

    /// Records `note` in this request's audit entry when the operation succeeds (its
    /// `reason`: an export's bucket, key, version and retention).
    pub fn note(&self, note: String) {
        *self.note.borrow_mut() = note;
    }

    /// Commits a tool's mutation together with this request's audit record: `write` gets
    /// the [`AuditBatch`] (the authorization decisions, and with `response` the call
    /// itself with the response's hash and its usage rows) and must hand it to the
    /// store's mutation, which commits both in one transaction.
    ///
    /// # Errors
    /// `-32603` when no authorization allowed this request (nothing is written); else
    /// `write`'s error.
    pub fn commit<T>(
        &self,
        response: Option<&Value>,
        write: impl FnOnce(AuditBatch) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        let allowed = {
            let decisions = self.decisions.borrow();
            !decisions.is_empty() && decisions.iter().all(|(decision, _)| decision.allowed)
        };
        if !allowed {
            self.unauthorized_write.set(true);
            tracing::error!(operation = self.operation.name(), request_id = %self.request_id,
                "write refused: the operation wrote before it was authorized");
            return Err(WireError::new(code::INTERNAL, "internal error: write before authorization"));
        }
        let batch = self.audit_batch(response);
        let value = write(batch)?;
        self.recorded.set(if response.is_some() { Recorded::Call } else { Recorded::Decisions });
        Ok(value)
    }

    /// This request's audit record so far, for [`Self::commit`].
    fn audit_batch(&self, response: Option<&Value>) -> AuditBatch {
        let mut batch = AuditBatch { events: self.decision_events(), usage: Vec::new() };
        let Some(response) = response else { return batch };
        let target = self.decisions.borrow().last().map(|(_, target)| *target).unwrap_or_default();
        let mut call = self.event(self.action(), target, "ok", self.note.take());
        call.request_sha256.clone_from(&self.request_sha256);
        call.response_sha256 = sha256_of(response);
        batch.events.push(call);
        if let Some(tenant) = target.tenant.or(self.principal.tenant) {
            batch.usage = self.metered(tenant, true);
        }
        batch
    }

    /// The audit action of this operation.
    fn action(&self) -> &'static str {
        if self.operation.is_tool() {
            "tool_call"
        } else {
            "admin"
        }
    }

    /// The usage rows of a tool call (`tool_calls`, and its counter when it succeeded);
    /// none for other operations.
    fn metered(&self, tenant: u64, succeeded: bool) -> Vec<UsageRecord> {
        if !self.operation.is_tool() {
            return Vec::new();
        }
        let mut usage = vec![self.usage(tenant, UsageCounter::ToolCalls.as_str())];
        if let (true, Some(counter)) = (succeeded, self.operation.counter()) {
            usage.push(self.usage(tenant, counter.as_str()));
        }
        usage
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

    /// Refuses namespaces the tenant has not registered (an API key or a subject mapping
    /// scoped to one would be a mistake the operator should hear about).
    ///
    /// # Errors
    /// `-32602` naming the first unregistered namespace; storage errors.
    pub fn namespaces_registered(&self, tenant: Option<u64>, namespaces: &[u64]) -> Result<(), WireError> {
        let Some(tenant) = tenant.filter(|_| !namespaces.is_empty()) else { return Ok(()) };
        let registered: Vec<u64> =
            self.app.store.list_namespaces(tenant)?.into_iter().map(|ns| ns.namespace_id).collect();
        match namespaces.iter().find(|ns| !registered.contains(ns)) {
            Some(missing) => Err(WireError::invalid_params(format!(
                "invalid arguments at namespaces: namespace {missing} of tenant {tenant} is not registered"
            ))),
            None => Ok(()),
        }
    }

    /// Charges the counters that have a quota, before the work (one transaction, so
    /// concurrent requests never pass a quota); a replayed request id is not charged again.
    fn charge_quota(&self, tenant: u64, overrides: &std::collections::BTreeMap<String, u64>) -> Result<(), WireError> {
        if !self.operation.is_tool() {
            return Ok(());
        }
        let limit_of =
            |counter: &str| overrides.get(counter).copied().or_else(|| self.app.config.quotas.get(counter).copied());
        let mut counters = vec![UsageCounter::ToolCalls];
        counters.extend(self.operation.counter());
        // A quota (all time) and a plan's `block` entitlement (this month) are both checked
        // and charged before the work.
        let charges: Vec<(UsageRecord, Option<u64>, Option<u64>)> = counters
            .iter()
            .filter_map(|counter| {
                let quota = limit_of(counter.as_str());
                let monthly = self.app.config.billing.block_limit(tenant, counter.as_str());
                (quota.is_some() || monthly.is_some()).then(|| (self.usage(tenant, counter.as_str()), quota, monthly))
            })
            .collect();
        if charges.is_empty() {
            return Ok(());
        }
        let names = charges.iter().map(|(record, _, _)| record.counter.clone()).collect();
        match self.app.store.charge_usage_in_period(charges) {
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

/// Runs the operation, answering a panic as an internal error (logged): the request's
/// context is dropped with it, so nothing of it reaches a later request.
fn run_guarded(
    ctx: &RequestCtx<'_>,
    args: Value,
    run: impl FnOnce(&RequestCtx<'_>, Value) -> Result<Value, WireError>,
) -> Result<Value, WireError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(ctx, args))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(operation = ctx.operation.name(), request_id = %ctx.request_id, panic = %message,
            "the operation panicked; answered as an internal error");
        Err(WireError::new(code::INTERNAL, "internal error"))
    })
}

/// Runs one operation for `principal` with policy, quota and audit around it.
///
/// # Errors
/// The operation's error, `-32003` when denied, `-32603` when the operation panicked or
/// wrote or finished without an authorization decision, or `-32050` when the audit entry
/// could not be written (the operation's effect may then be durable, but it is not
/// acknowledged; retrying with the same request id is counted once).
pub fn call(
    app: &App,
    principal: &Principal,
    request_id: String,
    operation: Operation,
    args: Value,
    run: impl FnOnce(&RequestCtx<'_>, Value) -> Result<Value, WireError>,
) -> Result<Value, WireError> {
    let started = std::time::Instant::now();
    let outcome = call_audited(app, principal, request_id, operation, args, run);
    app.slo.record(operation, started.elapsed());
    outcome
}

fn call_audited(
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
    let mut outcome = if !row.roles.contains(&principal.role) {
        // The role gate needs no target: decided before the arguments are even read.
        ctx.decisions.borrow_mut().push((decide(principal, operation, Target::default()), Target::default()));
        Err(WireError::new(code::UNAUTHORIZED, "unauthorized"))
    } else if row.scope == ScopeKind::Public {
        ctx.authorize(Target::default()).and_then(|()| run_guarded(&ctx, args, run))
    } else {
        run_guarded(&ctx, args, run)
    };
    // Fail closed: a non-public operation that finished (or tried to write) without an
    // authorization decision is a bug in its handler, never an answer.
    let undecided = ctx.decisions.borrow().is_empty();
    let mut reason_override = None;
    if undecided && (outcome.is_ok() || ctx.unauthorized_write.get()) {
        tracing::error!(operation = operation.name(), request_id = %ctx.request_id,
            "the operation recorded no authorization decision; refused");
        reason_override = Some("the operation recorded no authorization decision".to_string());
        outcome = Err(WireError::new(code::INTERNAL, "internal error: no authorization decision"));
    }
    let recorded = ctx.recorded.get();
    if outcome.is_err() {
        if let Some((tenant, counters)) = ctx.charged.borrow_mut().take() {
            if let Err(err) = app.store.refund_usage(tenant, &ctx.request_id, counters) {
                tracing::warn!(error = %err, request_id = %ctx.request_id, "usage refund failed");
            }
        }
    }
    if recorded == Recorded::Call && outcome.is_ok() {
        return outcome;
    }
    let decisions = ctx.decisions.borrow().clone();
    let denied = decisions.iter().any(|(decision, _)| !decision.allowed);
    let target = decisions.last().map(|(_, target)| *target).unwrap_or_default();
    let mut events: Vec<AuditEvent> = if recorded == Recorded::Nothing { ctx.decision_events() } else { Vec::new() };
    let mut usage = Vec::new();
    if !denied {
        let (result, reason) = match &outcome {
            Ok(_) => ("ok", ctx.note.take()),
            Err(err) => ("error", reason_override.unwrap_or_else(|| format!("{} {}", err.code, err.message))),
        };
        let mut event = ctx.event(ctx.action(), target, result, reason);
        event.request_sha256.clone_from(&ctx.request_sha256);
        event.response_sha256 = outcome.as_ref().ok().and_then(sha256_of);
        events.push(event);
        // The ledger counts tool calls; admin operations are audited but not metered.
        if let Some(tenant) = target.tenant.or(principal.tenant) {
            usage = ctx.metered(tenant, outcome.is_ok());
        }
    }
    if let Err(err) = app.store.append_audit(events, usage) {
        app.metrics.audit_failure();
        tracing::error!(error = %err, request_id = %ctx.request_id, "audit write failed; failing the request");
        let answer = WireError::new(code::INTERNAL, format!("audit log unavailable, request not acknowledged: {err}"));
        // A full disk clears when space returns, an unreachable database when it is back: the
        // same request (same id) may be retried.
        return Err(if err.is_disk_full() || err.is_unavailable() { answer.transient() } else { answer });
    }
    outcome
}
