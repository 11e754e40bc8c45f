//! The run state machine: start, status, next, trigger, submit and precheck, exactly as
//! Decision Gate evaluates them. Pure: the caller loads the [`RunState`], hands it in,
//! and persists it afterwards; providers are the only outside calls.
//!
//! Failure atomicity: every operation works on a copy and writes it back only when the
//! operation's contract says the state changes, so an aborted trigger records nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::comparator::evaluate_comparator;
use crate::evidence::{
    EvidenceAnchorPolicy, EvidenceContext, EvidenceProvider, EvidenceProviderError, EvidenceResult, EvidenceValue,
    TrustLane, TrustRequirement,
};
use crate::hashing::{hash_bytes, hash_canonical_json, hash_canonical_json_with_limit, HashDigest, HashError};
use crate::ret::TriState;
use crate::spec::{
    AdvanceTo, ConditionSpec, GateOutcome, PacketPayload, ScenarioSpec, SpecError, StageSpec, TimeoutPolicy,
};
use crate::state::{
    DecisionOutcome, DecisionRecord, DispatchReceipt, DispatchTarget, EvidenceRecord, GateEvalRecord, GateEvaluation,
    GateTraceEntry, NextRequest, PacketEnvelope, PacketRecord, RunConfig, RunState, RunStatus, SafeSummary,
    ScenarioStatus, StatusRequest, SubmissionRecord, SubmitRequest, SubmitResult, ToolCallError, ToolCallErrorDetails,
    ToolCallRecord, TriggerEvent, TriggerKind, TriggerRecord, TriggerResult, VisibilityPolicy,
};
use crate::time::Timestamp;

/// Largest canonical evidence value accepted (larger fails the whole trigger).
pub const MAX_EVIDENCE_VALUE_BYTES: usize = 1024 * 1024;
/// Largest packet or submission payload.
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;

/// Engine settings that change evaluation (never IO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// Server-wide minimum trust lane.
    pub trust_requirement: TrustRequirement,
    /// Anchor requirements per provider.
    pub anchor_policy: EvidenceAnchorPolicy,
    /// Per-provider base requirements (dev-permissive exemptions).
    pub provider_trust_overrides: BTreeMap<String, TrustRequirement>,
}

impl EngineConfig {
    fn base_requirement(&self, provider_id: &str) -> TrustRequirement {
        self.provider_trust_overrides.get(provider_id).copied().unwrap_or(self.trust_requirement)
    }
}

/// Answer of a disclosure policy for one packet and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDecision {
    /// Disclose.
    Permit,
    /// Do not disclose: the decision becomes `fail`.
    Deny,
}

/// Decides whether a packet may be disclosed to a target.
pub trait DisclosurePolicy {
    /// Decides for one packet and target.
    ///
    /// # Errors
    /// A policy error message; treated like a deny that carries its own reason.
    fn authorize(
        &self,
        target: &DispatchTarget,
        envelope: &PacketEnvelope,
        payload: &PacketPayload,
    ) -> Result<PolicyDecision, String>;
}

/// Providers a scenario needs that are not configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMissing {
    /// Provider ids not available.
    pub missing_providers: Vec<String>,
    /// `provider.check` pairs required.
    pub required_capabilities: Vec<String>,
    /// Whether a policy blocked them.
    pub blocked_by_policy: bool,
}

/// Why an engine operation failed. Messages are the contract's.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    /// The spec breaks an invariant.
    #[error("invalid scenario spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// Run config names another scenario.
    #[error("scenario mismatch for run: {0}")]
    ScenarioMismatch(String),
    /// Run config names another namespace.
    #[error("namespace mismatch for run: {0}")]
    NamespaceMismatch(String),
    /// A trigger names another run.
    #[error("trigger run mismatch: {0}")]
    RunMismatch(String),
    /// An inactive run has no decision to replay.
    #[error("run is not active: {0:?}")]
    RunInactive(RunStatus),
    /// Submission id reused with other content (the conflict is recorded in the state).
    #[error("submission_id conflict: {0}")]
    SubmissionConflict(String),
    /// Sequence counter overflow.
    #[error("run state sequence overflow")]
    SequenceOverflow,
    /// Evidence too large.
    #[error("evidence payload exceeds size limit ({actual} > {max})")]
    EvidenceTooLarge {
        /// Limit.
        max: usize,
        /// Size.
        actual: usize,
    },
    /// Payload too large.
    #[error("payload exceeds size limit ({actual} > {max})")]
    PayloadTooLarge {
        /// Limit.
        max: usize,
        /// Size.
        actual: usize,
    },
    /// Stage id not in the spec.
    #[error("unknown stage identifier: {0}")]
    StageNotFound(String),
    /// No branch rule matched.
    #[error("gate resolution failed: {0}")]
    GateResolutionFailed(String),
    /// Timestamps of different kinds compared.
    #[error("trigger time kind mismatch: {0}")]
    TriggerTimeMismatch(String),
    /// Timeout arithmetic overflow.
    #[error("timeout calculation error: {0}")]
    TimeoutCalculation(String),
    /// Disclosure denied by policy.
    #[error("policy denied disclosure")]
    PolicyDenied,
    /// Disclosure policy failed.
    #[error("policy error: {0}")]
    Policy(String),
    /// Providers missing (the failed call is recorded in the state).
    #[error("provider validation failed: {0:?}")]
    ProviderMissing(ProviderMissing),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// An engine invariant was broken (a bug, never caused by input).
    #[error("internal engine error: {0}")]
    Internal(&'static str),
    /// External payload hash uses another algorithm.
    #[error("payload hashing error: {0}")]
    PayloadHash(String),
}

impl EngineError {
    /// True when the operation still changed the state (a recorded failed tool call) and
    /// the caller must persist it before reporting the error.
    #[must_use]
    pub fn state_changed(&self) -> bool {
        matches!(self, Self::SubmissionConflict(_) | Self::ProviderMissing(_))
    }
}

/// Result of a precheck: the predicted decision and the gate evaluations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecheckResult {
    /// Predicted outcome.
    pub decision: DecisionOutcome,
    /// Gate evaluations.
    pub gate_evaluations: Vec<GateEvaluation>,
}

/// Tells the engine which providers exist, so a trigger can refuse a scenario whose
/// providers are gone before it records anything.
pub trait ProviderAvailability {
    /// Whether the provider is configured and allowed.
    fn is_available(&self, provider_id: &str) -> bool;
}

/// A scenario bound to its providers and settings, ready to run.
pub struct ControlPlane<'a> {
    spec: &'a ScenarioSpec,
    config: &'a EngineConfig,
    evidence: &'a dyn EvidenceProvider,
    availability: Option<&'a dyn ProviderAvailability>,
    policy: Option<&'a dyn DisclosurePolicy>,
}

fn next_seq<T>(items: &[T]) -> Result<u64, EngineError> {
    u64::try_from(items.len()).ok().and_then(|n| n.checked_add(1)).ok_or(EngineError::SequenceOverflow)
}

fn next_call_id(state: &RunState) -> String {
    format!("call-{}", state.tool_calls.len() + 1)
}

fn tool_call<Req: Serialize, Resp: Serialize>(
    method: &str,
    request: &Req,
    response: &Resp,
    called_at: Timestamp,
    call_id: String,
    correlation_id: Option<String>,
    error: Option<ToolCallError>,
) -> Result<ToolCallRecord, EngineError> {
    Ok(ToolCallRecord {
        call_id,
        method: method.to_string(),
        request_hash: hash_canonical_json(request)?,
        response_hash: hash_canonical_json(response)?,
        called_at,
        correlation_id,
        error,
    })
}

/// Content hash of a packet or submission payload.
///
/// # Errors
/// Payload too large, or an external hash of another algorithm.
pub fn payload_hash(payload: &PacketPayload) -> Result<HashDigest, EngineError> {
    match payload {
        PacketPayload::Json { value } => match hash_canonical_json_with_limit(value, MAX_PAYLOAD_BYTES) {
            Ok(hash) => Ok(hash),
            Err(HashError::SizeLimitExceeded { limit, actual }) => {
                Err(EngineError::PayloadTooLarge { max: limit, actual })
            }
            Err(err) => Err(EngineError::Hash(err)),
        },
        PacketPayload::Bytes { bytes } => {
            if bytes.len() > MAX_PAYLOAD_BYTES {
                return Err(EngineError::PayloadTooLarge { max: MAX_PAYLOAD_BYTES, actual: bytes.len() });
            }
            Ok(hash_bytes(bytes))
        }
        PacketPayload::External { content_ref } => Ok(content_ref.content_hash.clone()),
    }
}

/// Recomputes `evidence_hash` from the value.
///
/// # Errors
/// [`EngineError::EvidenceTooLarge`] over 1 MiB canonical.
pub fn normalize_evidence(result: &EvidenceResult) -> Result<EvidenceResult, EngineError> {
    let mut normalized = result.clone();
    if let Some(value) = &result.value {
        let hash = match value {
            EvidenceValue::Json(json) => match hash_canonical_json_with_limit(json, MAX_EVIDENCE_VALUE_BYTES) {
                Ok(hash) => hash,
                Err(HashError::SizeLimitExceeded { limit, actual }) => {
                    return Err(EngineError::EvidenceTooLarge { max: limit, actual })
                }
                Err(err) => return Err(EngineError::Hash(err)),
            },
            EvidenceValue::Bytes(bytes) => {
                if bytes.len() > MAX_EVIDENCE_VALUE_BYTES {
                    return Err(EngineError::EvidenceTooLarge { max: MAX_EVIDENCE_VALUE_BYTES, actual: bytes.len() });
                }
                hash_bytes(bytes)
            }
        };
        normalized.evidence_hash = Some(hash);
    }
    Ok(normalized)
}

fn apply_trust(mut record: EvidenceRecord, requirement: TrustRequirement) -> EvidenceRecord {
    if record.result.lane.satisfies(requirement) {
        return record;
    }
    record.status = TriState::Unknown;
    if record.result.error.is_none() {
        record.result.error = Some(EvidenceProviderError {
            code: "trust_lane".to_string(),
            message: format!(
                "evidence lane {} does not satisfy {}",
                record.result.lane.debug_name(),
                requirement.min_lane.debug_name()
            ),
            details: None,
        });
    }
    record
}

fn gate_outcome_matches(status: TriState, outcome: GateOutcome) -> bool {
    matches!(
        (status, outcome),
        (TriState::True, GateOutcome::True)
            | (TriState::False, GateOutcome::False)
            | (TriState::Unknown, GateOutcome::Unknown)
    )
}

fn hold_summary(unmet_gates: Vec<String>) -> SafeSummary {
    SafeSummary {
        status: "hold".to_string(),
        unmet_gates,
        retry_hint: Some("await_evidence".to_string()),
        policy_tags: Vec::new(),
    }
}

fn timeout_expired(entered_at: Timestamp, now: Timestamp, timeout_ms: u64) -> Result<bool, EngineError> {
    match (entered_at, now) {
        (Timestamp::UnixMillis(start), Timestamp::UnixMillis(now)) => {
            let timeout = i64::try_from(timeout_ms)
                .map_err(|_| EngineError::TimeoutCalculation("timeout_ms exceeds i64 range".to_string()))?;
            let deadline = start
                .checked_add(timeout)
                .ok_or_else(|| EngineError::TimeoutCalculation("timeout deadline overflow".to_string()))?;
            Ok(now >= deadline)
        }
        (Timestamp::Logical(start), Timestamp::Logical(now)) => {
            let deadline = start
                .checked_add(timeout_ms)
                .ok_or_else(|| EngineError::TimeoutCalculation("timeout deadline overflow".to_string()))?;
            Ok(now >= deadline)
        }
        _ => Err(EngineError::TriggerTimeMismatch("timeout evaluation requires matching timestamp kinds".to_string())),
    }
}

fn packets_for_decision(state: &RunState, decision_id: &str) -> Vec<PacketRecord> {
    state.packets.iter().filter(|packet| packet.decision_id == decision_id).cloned().collect()
}

/// Everything one trigger appends or changes, computed before anything is applied.
struct TriggerStep {
    trigger: TriggerRecord,
    gate_evals: Vec<GateEvalRecord>,
    decision: Option<DecisionRecord>,
    packets: Vec<PacketRecord>,
    status: RunStatus,
    current_stage_id: String,
    stage_entered_at: Timestamp,
}

impl TriggerStep {
    fn new(state: &RunState, trigger: TriggerRecord) -> Self {
        Self {
            trigger,
            gate_evals: Vec::new(),
            decision: None,
            packets: Vec::new(),
            status: state.status,
            current_stage_id: state.current_stage_id.clone(),
            stage_entered_at: state.stage_entered_at,
        }
    }

    /// The answer to the trigger. Every evaluation path sets a decision before asking; a
    /// step without one is an engine bug and is refused rather than invented.
    fn result(&self) -> Result<TriggerResult, EngineError> {
        let decision = self.decision.clone().ok_or(EngineError::Internal("trigger step has no decision"))?;
        Ok(TriggerResult { decision, packets: self.packets.clone(), status: self.status })
    }

    fn apply(self, state: &mut RunState) {
        state.triggers.push(self.trigger);
        state.gate_evals.extend(self.gate_evals);
        if let Some(decision) = self.decision {
            state.decisions.push(decision);
        }
        state.packets.extend(self.packets);
        state.status = self.status;
        state.current_stage_id = self.current_stage_id;
        state.stage_entered_at = self.stage_entered_at;
    }
}

impl<'a> ControlPlane<'a> {
    /// Binds a scenario to its providers, validating the spec's invariants.
    ///
    /// # Errors
    /// [`EngineError::InvalidSpec`].
    pub fn new(
        spec: &'a ScenarioSpec,
        config: &'a EngineConfig,
        evidence: &'a dyn EvidenceProvider,
    ) -> Result<Self, EngineError> {
        spec.validate()?;
        Ok(Self { spec, config, evidence, availability: None, policy: None })
    }

    /// Adds a disclosure policy.
    #[must_use]
    pub fn with_policy(mut self, policy: &'a dyn DisclosurePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Adds a provider availability check run before every trigger.
    #[must_use]
    pub fn with_availability(mut self, availability: &'a dyn ProviderAvailability) -> Self {
        self.availability = Some(availability);
        self
    }

    /// The bound scenario.
    #[must_use]
    pub fn spec(&self) -> &ScenarioSpec {
        self.spec
    }

    /// Creates a run at the first stage. The caller checks that the run does not exist yet.
    ///
    /// # Errors
    /// Scenario/namespace mismatch, or a failure issuing entry packets.
    pub fn start_run(
        &self,
        config: RunConfig,
        started_at: Timestamp,
        issue_entry_packets: bool,
    ) -> Result<RunState, EngineError> {
        if config.scenario_id != self.spec.scenario_id {
            return Err(EngineError::ScenarioMismatch(config.scenario_id));
        }
        if config.namespace_id != self.spec.namespace_id {
            return Err(EngineError::NamespaceMismatch(config.namespace_id.to_string()));
        }
        let initial_stage = self.spec.stages.first().ok_or(SpecError::NoStages)?.stage_id.clone();
        let mut state = RunState {
            tenant_id: config.tenant_id,
            namespace_id: config.namespace_id,
            run_id: config.run_id,
            scenario_id: config.scenario_id,
            spec_hash: self.spec.canonical_hash()?,
            current_stage_id: initial_stage.clone(),
            stage_entered_at: started_at,
            status: RunStatus::Active,
            dispatch_targets: config.dispatch_targets,
            triggers: Vec::new(),
            gate_evals: Vec::new(),
            decisions: Vec::new(),
            packets: Vec::new(),
            submissions: Vec::new(),
            tool_calls: Vec::new(),
        };
        if issue_entry_packets {
            let event = TriggerEvent {
                trigger_id: "init".to_string(),
                tenant_id: state.tenant_id,
                namespace_id: state.namespace_id,
                run_id: state.run_id.clone(),
                kind: TriggerKind::ExternalEvent,
                time: started_at,
                source_id: "system".to_string(),
                payload: None,
                correlation_id: None,
            };
            state.triggers.push(TriggerRecord { seq: next_seq(&state.triggers)?, event });
            let seq = next_seq(&state.decisions)?;
            let decision = DecisionRecord {
                decision_id: format!("decision-{seq}"),
                seq,
                trigger_id: "init".to_string(),
                stage_id: initial_stage.clone(),
                decided_at: started_at,
                outcome: DecisionOutcome::Start { stage_id: initial_stage.clone() },
                correlation_id: None,
            };
            let packets = self.issue_stage_packets(&state, &decision, &initial_stage)?;
            state.packets.extend(packets);
            state.decisions.push(decision);
        }
        Ok(state)
    }

    /// Status of a run; records a `scenario.status` tool call in the state.
    ///
    /// # Errors
    /// Hashing failures only.
    pub fn status(&self, state: &mut RunState, request: &StatusRequest) -> Result<ScenarioStatus, EngineError> {
        let status = ScenarioStatus::from_state(state);
        let record = tool_call(
            "scenario.status",
            request,
            &status,
            request.requested_at,
            next_call_id(state),
            request.correlation_id.clone(),
            None,
        )?;
        state.tool_calls.push(record);
        Ok(status)
    }

    /// Pull-mode `scenario_next`: a trigger of kind `agent_request_next`.
    ///
    /// # Errors
    /// See [`Self::trigger`].
    pub fn next(&self, state: &mut RunState, request: &NextRequest) -> Result<TriggerResult, EngineError> {
        let trigger = TriggerEvent {
            trigger_id: request.trigger_id.clone(),
            tenant_id: request.tenant_id,
            namespace_id: request.namespace_id,
            run_id: request.run_id.clone(),
            kind: TriggerKind::AgentRequestNext,
            time: request.time,
            source_id: request.agent_id.clone(),
            payload: None,
            correlation_id: request.correlation_id.clone(),
        };
        self.run_trigger(state, "scenario.next", request, &trigger, request.time, request.correlation_id.clone())
    }

    /// `scenario_trigger`: evaluates a caller-supplied trigger.
    ///
    /// # Errors
    /// Provider missing (recorded), run mismatch, timestamp kinds, branch resolution,
    /// evidence size; all but the first leave the state untouched.
    pub fn trigger(&self, state: &mut RunState, trigger: &TriggerEvent) -> Result<TriggerResult, EngineError> {
        self.run_trigger(state, "scenario.trigger", trigger, trigger, trigger.time, trigger.correlation_id.clone())
    }

    fn missing_providers(&self) -> Option<ProviderMissing> {
        let availability = self.availability?;
        let mut missing = Vec::new();
        let mut capabilities = Vec::new();
        for condition in &self.spec.conditions {
            let provider = &condition.query.provider_id;
            if !availability.is_available(provider) {
                if !missing.contains(provider) {
                    missing.push(provider.clone());
                }
                capabilities.push(format!("{provider}.{}", condition.query.check_id));
            }
        }
        if missing.is_empty() {
            return None;
        }
        Some(ProviderMissing {
            missing_providers: missing,
            required_capabilities: capabilities,
            blocked_by_policy: false,
        })
    }

    fn run_trigger<Req: Serialize>(
        &self,
        state: &mut RunState,
        method: &str,
        request: &Req,
        trigger: &TriggerEvent,
        called_at: Timestamp,
        correlation_id: Option<String>,
    ) -> Result<TriggerResult, EngineError> {
        if let Some(missing) = self.missing_providers() {
            let error = ToolCallError {
                code: "provider_missing".to_string(),
                message: "required evidence providers are missing or blocked".to_string(),
                details: Some(ToolCallErrorDetails::ProviderMissing {
                    missing_providers: missing.missing_providers.clone(),
                    required_capabilities: missing.required_capabilities.clone(),
                    blocked_by_policy: missing.blocked_by_policy,
                }),
            };
            let record = tool_call(
                method,
                request,
                &error,
                called_at,
                next_call_id(state),
                correlation_id,
                Some(error.clone()),
            )?;
            state.tool_calls.push(record);
            return Err(EngineError::ProviderMissing(missing));
        }
        // Everything is computed against the unchanged state first and applied only when
        // the whole step succeeded, so a failed trigger records nothing (and no copy of
        // the growing state is made per trigger).
        let (step, result) = self.evaluate_trigger(state, trigger)?;
        let record = tool_call(method, request, &result, called_at, next_call_id(state), correlation_id, None)?;
        if let Some(step) = step {
            step.apply(state);
        }
        state.tool_calls.push(record);
        Ok(result)
    }

    fn evaluate_trigger(
        &self,
        state: &RunState,
        trigger: &TriggerEvent,
    ) -> Result<(Option<TriggerStep>, TriggerResult), EngineError> {
        if state.status != RunStatus::Active {
            let decision = state.decisions.last().cloned().ok_or(EngineError::RunInactive(state.status))?;
            let packets = packets_for_decision(state, &decision.decision_id);
            return Ok((None, TriggerResult { decision, packets, status: state.status }));
        }
        if trigger.run_id != state.run_id {
            return Err(EngineError::RunMismatch(trigger.run_id.clone()));
        }
        if let Some(decision) = state.decisions.iter().find(|d| d.trigger_id == trigger.trigger_id).cloned() {
            let packets = packets_for_decision(state, &decision.decision_id);
            return Ok((None, TriggerResult { decision, packets, status: state.status }));
        }
        let record = TriggerRecord { seq: next_seq(&state.triggers)?, event: trigger.clone() };
        let stage = self.stage(&state.current_stage_id)?;
        let mut step = TriggerStep::new(state, record);
        if self.handle_timeout(state, trigger, stage, &mut step)? {
            let result = step.result()?;
            return Ok((Some(step), result));
        }
        let context = EvidenceContext {
            tenant_id: state.tenant_id,
            namespace_id: state.namespace_id,
            run_id: state.run_id.clone(),
            scenario_id: state.scenario_id.clone(),
            stage_id: state.current_stage_id.clone(),
            trigger_id: trigger.trigger_id.clone(),
            trigger_time: trigger.time,
            correlation_id: trigger.correlation_id.clone(),
        };
        let conditions = self.stage_conditions(stage)?;
        let evidence = self.query_conditions(&conditions, &context)?;
        let evaluations = self.evaluate_gates(stage, &conditions, &evidence);
        let outcomes: Vec<(String, TriState)> =
            evaluations.iter().map(|(evaluation, _)| (evaluation.gate_id.clone(), evaluation.status)).collect();
        let all_true = outcomes.iter().all(|(_, status)| *status == TriState::True);
        for (evaluation, records) in evaluations {
            step.gate_evals.push(GateEvalRecord {
                trigger_id: trigger.trigger_id.clone(),
                stage_id: state.current_stage_id.clone(),
                evaluation,
                evidence: records,
            });
        }
        if all_true {
            self.advance(state, trigger, stage, &outcomes, false, &mut step)?;
        } else {
            let unmet = outcomes.iter().filter(|(_, s)| *s != TriState::True).map(|(id, _)| id.clone()).collect();
            step.decision =
                Some(self.decision(state, trigger, DecisionOutcome::Hold { summary: hold_summary(unmet) })?);
        }
        let result = step.result()?;
        Ok((Some(step), result))
    }

    fn decision(
        &self,
        state: &RunState,
        trigger: &TriggerEvent,
        outcome: DecisionOutcome,
    ) -> Result<DecisionRecord, EngineError> {
        let seq = next_seq(&state.decisions)?;
        Ok(DecisionRecord {
            decision_id: format!("decision-{seq}"),
            seq,
            trigger_id: trigger.trigger_id.clone(),
            stage_id: state.current_stage_id.clone(),
            decided_at: trigger.time,
            outcome,
            correlation_id: trigger.correlation_id.clone(),
        })
    }

    /// Resolves the successor and either advances (issuing packets) or completes.
    fn advance(
        &self,
        state: &RunState,
        trigger: &TriggerEvent,
        stage: &StageSpec,
        outcomes: &[(String, TriState)],
        timeout: bool,
        step: &mut TriggerStep,
    ) -> Result<(), EngineError> {
        let Some(next_stage) = self.resolve_next_stage(stage, outcomes)? else {
            step.decision = Some(self.decision(
                state,
                trigger,
                DecisionOutcome::Complete { stage_id: state.current_stage_id.clone() },
            )?);
            step.status = RunStatus::Completed;
            return Ok(());
        };
        let decision = self.decision(
            state,
            trigger,
            DecisionOutcome::Advance {
                from_stage: state.current_stage_id.clone(),
                to_stage: next_stage.clone(),
                timeout,
            },
        )?;
        match self.issue_stage_packets(state, &decision, &next_stage) {
            Ok(packets) => {
                step.packets = packets;
                step.current_stage_id = next_stage;
                step.stage_entered_at = trigger.time;
                step.decision = Some(decision);
            }
            Err(err) => {
                step.status = RunStatus::Failed;
                step.decision =
                    Some(DecisionRecord { outcome: DecisionOutcome::Fail { reason: err.to_string() }, ..decision });
            }
        }
        Ok(())
    }

    /// Applies an expired stage timeout; returns whether it decided the trigger.
    fn handle_timeout(
        &self,
        state: &RunState,
        trigger: &TriggerEvent,
        stage: &StageSpec,
        step: &mut TriggerStep,
    ) -> Result<bool, EngineError> {
        if trigger.kind != TriggerKind::Tick {
            return Ok(false);
        }
        let Some(timeout) = &stage.timeout else {
            return Ok(false);
        };
        if !timeout_expired(state.stage_entered_at, trigger.time, timeout.timeout_ms)? {
            return Ok(false);
        }
        let synthetic = |status: TriState| -> Vec<(String, TriState)> {
            stage.gates.iter().map(|gate| (gate.gate_id.clone(), status)).collect()
        };
        match stage.on_timeout {
            TimeoutPolicy::Fail => {
                step.decision =
                    Some(self.decision(state, trigger, DecisionOutcome::Fail { reason: "timeout".to_string() })?);
                step.status = RunStatus::Failed;
            }
            TimeoutPolicy::AdvanceWithFlag => {
                self.advance(state, trigger, stage, &synthetic(TriState::True), true, step)?
            }
            TimeoutPolicy::AlternateBranch => {
                self.advance(state, trigger, stage, &synthetic(TriState::Unknown), true, step)?;
            }
        }
        Ok(true)
    }

    fn stage(&self, stage_id: &str) -> Result<&'a StageSpec, EngineError> {
        self.spec.stage(stage_id).ok_or_else(|| EngineError::StageNotFound(stage_id.to_string()))
    }

    /// Conditions referenced by a stage's gates, once each, in first-use order.
    fn stage_conditions(&self, stage: &StageSpec) -> Result<Vec<&'a ConditionSpec>, EngineError> {
        let mut ids: Vec<&str> = Vec::new();
        for gate in &stage.gates {
            for leaf in gate.requirement.condition_leaves() {
                if !ids.contains(&leaf) {
                    ids.push(leaf);
                }
            }
        }
        ids.into_iter()
            .map(|id| self.spec.condition(id).ok_or_else(|| EngineError::GateResolutionFailed(id.to_string())))
            .collect()
    }

    fn query_conditions(
        &self,
        conditions: &[&ConditionSpec],
        context: &EvidenceContext,
    ) -> Result<Vec<EvidenceRecord>, EngineError> {
        let mut records = Vec::with_capacity(conditions.len());
        for condition in conditions {
            let mut result = match self.evidence.query(&condition.query, context) {
                Ok(result) => result,
                Err(err) => EvidenceResult::from(err),
            };
            if result.error.is_none() {
                if let Some(requirement) = self.config.anchor_policy.requirement_for(&condition.query.provider_id) {
                    if let Err(message) = EvidenceAnchorPolicy::check(requirement, &result) {
                        result = EvidenceResult::from_error("anchor_invalid", message);
                    }
                }
            }
            records.push(self.evidence_record(condition, result)?);
        }
        Ok(records)
    }

    fn evidence_record(
        &self,
        condition: &ConditionSpec,
        mut result: EvidenceResult,
    ) -> Result<EvidenceRecord, EngineError> {
        if result.error.is_some() {
            result.value = None;
            result.evidence_hash = None;
            result.content_type = None;
        }
        let normalized = normalize_evidence(&result)?;
        let status = if normalized.error.is_some() {
            TriState::Unknown
        } else {
            evaluate_comparator(condition.comparator, condition.expected.as_ref(), &normalized)
        };
        Ok(EvidenceRecord { condition_id: condition.condition_id.clone(), status, result: normalized })
    }

    /// Evaluates each gate of the stage over the collected evidence, applying trust lanes.
    fn evaluate_gates(
        &self,
        stage: &StageSpec,
        conditions: &[&ConditionSpec],
        evidence: &[EvidenceRecord],
    ) -> Vec<(GateEvaluation, Vec<EvidenceRecord>)> {
        let default = self.config.trust_requirement;
        let condition_requirements: BTreeMap<&str, TrustRequirement> = conditions
            .iter()
            .map(|condition| {
                let base = self.config.base_requirement(&condition.query.provider_id);
                (condition.condition_id.as_str(), base.stricter(condition.trust.unwrap_or(base)))
            })
            .collect();
        let mut out = Vec::with_capacity(stage.gates.len());
        for gate in &stage.gates {
            let gate_requirement = default.stricter(gate.trust.unwrap_or(default));
            let leaves = gate.requirement.condition_leaves();
            let mut records: Vec<EvidenceRecord> = evidence
                .iter()
                .filter(|record| leaves.contains(&record.condition_id.as_str()))
                .map(|record| {
                    let requirement = condition_requirements
                        .get(record.condition_id.as_str())
                        .copied()
                        .unwrap_or(default)
                        .stricter(gate_requirement);
                    apply_trust(record.clone(), requirement)
                })
                .collect();
            records.sort_by(|a, b| a.condition_id.cmp(&b.condition_id));
            let mut trace = Vec::new();
            let status = gate.requirement.evaluate(&mut |id| {
                let status = records
                    .iter()
                    .find(|record| record.condition_id == id)
                    .map_or(TriState::Unknown, |record| record.status);
                trace.push(GateTraceEntry { condition_id: id.to_string(), status });
                status
            });
            out.push((GateEvaluation { gate_id: gate.gate_id.clone(), status, trace }, records));
        }
        out
    }

    fn resolve_next_stage(
        &self,
        stage: &StageSpec,
        outcomes: &[(String, TriState)],
    ) -> Result<Option<String>, EngineError> {
        match &stage.advance_to {
            AdvanceTo::Linear => {
                let index = self
                    .spec
                    .stages
                    .iter()
                    .position(|candidate| candidate.stage_id == stage.stage_id)
                    .ok_or_else(|| EngineError::StageNotFound(stage.stage_id.clone()))?;
                Ok(self.spec.stages.get(index + 1).map(|next| next.stage_id.clone()))
            }
            AdvanceTo::Fixed { stage_id } => Ok(Some(stage_id.clone())),
            AdvanceTo::Branch { branches, default } => {
                for rule in branches {
                    let status = outcomes
                        .iter()
                        .find(|(gate_id, _)| *gate_id == rule.gate_id)
                        .map_or(TriState::Unknown, |(_, status)| *status);
                    if gate_outcome_matches(status, rule.outcome) {
                        return Ok(Some(rule.next_stage_id.clone()));
                    }
                }
                default
                    .clone()
                    .map(Some)
                    .ok_or_else(|| EngineError::GateResolutionFailed("no branch matched".to_string()))
            }
            AdvanceTo::Terminal => Ok(None),
        }
    }

    fn issue_stage_packets(
        &self,
        state: &RunState,
        decision: &DecisionRecord,
        stage_id: &str,
    ) -> Result<Vec<PacketRecord>, EngineError> {
        let stage = self.stage(stage_id)?;
        let mut packets = Vec::with_capacity(stage.entry_packets.len());
        for spec in &stage.entry_packets {
            let envelope = PacketEnvelope {
                scenario_id: self.spec.scenario_id.clone(),
                run_id: state.run_id.clone(),
                stage_id: stage_id.to_string(),
                packet_id: spec.packet_id.clone(),
                schema_id: spec.schema_id.clone(),
                content_type: spec.content_type.clone(),
                content_hash: payload_hash(&spec.payload)?,
                visibility: VisibilityPolicy {
                    labels: spec.visibility_labels.clone(),
                    policy_tags: spec.policy_tags.clone(),
                },
                expiry: spec.expiry,
                correlation_id: decision.correlation_id.clone(),
                issued_at: decision.decided_at,
            };
            let mut receipts = Vec::with_capacity(state.dispatch_targets.len());
            for target in &state.dispatch_targets {
                if let Some(policy) = self.policy {
                    match policy.authorize(target, &envelope, &spec.payload) {
                        Ok(PolicyDecision::Permit) => {}
                        Ok(PolicyDecision::Deny) => return Err(EngineError::PolicyDenied),
                        Err(message) => return Err(EngineError::Policy(message)),
                    }
                }
                receipts.push(DispatchReceipt {
                    dispatch_id: format!("mcp-{}", spec.packet_id),
                    target: target.clone(),
                    receipt_hash: hash_canonical_json(&envelope)?,
                    dispatched_at: envelope.issued_at,
                    dispatcher: "mcp".to_string(),
                });
            }
            packets.push(PacketRecord {
                envelope,
                payload: spec.payload.clone(),
                receipts,
                decision_id: decision.decision_id.clone(),
            });
        }
        Ok(packets)
    }

    /// Records a submission; idempotent on identical content, a recorded conflict otherwise.
    ///
    /// # Errors
    /// [`EngineError::SubmissionConflict`] (state changed: persist it) or a payload error.
    pub fn submit(&self, state: &mut RunState, request: &SubmitRequest) -> Result<SubmitResult, EngineError> {
        let call_id = next_call_id(state);
        if let Some(existing) =
            state.submissions.iter().find(|record| record.submission_id == request.submission_id).cloned()
        {
            if existing.content_type == request.content_type && existing.payload == request.payload {
                let result = SubmitResult { record: existing };
                let record = tool_call(
                    "scenario.submit",
                    request,
                    &result,
                    request.submitted_at,
                    call_id,
                    request.correlation_id.clone(),
                    None,
                )?;
                state.tool_calls.push(record);
                return Ok(result);
            }
            let error = ToolCallError {
                code: "submission_conflict".to_string(),
                message: "submission_id conflicts with existing record".to_string(),
                details: Some(ToolCallErrorDetails::Message {
                    info: format!("submission_id={}", request.submission_id),
                }),
            };
            let record = tool_call(
                "scenario.submit",
                request,
                &error,
                request.submitted_at,
                call_id,
                request.correlation_id.clone(),
                Some(error.clone()),
            )?;
            state.tool_calls.push(record);
            return Err(EngineError::SubmissionConflict(request.submission_id.clone()));
        }
        let record = SubmissionRecord {
            submission_id: request.submission_id.clone(),
            run_id: request.run_id.clone(),
            payload: request.payload.clone(),
            content_type: request.content_type.clone(),
            content_hash: payload_hash(&request.payload)?,
            submitted_at: request.submitted_at,
            correlation_id: request.correlation_id.clone(),
        };
        let result = SubmitResult { record: record.clone() };
        let call = tool_call(
            "scenario.submit",
            request,
            &result,
            request.submitted_at,
            call_id,
            request.correlation_id.clone(),
            None,
        )?;
        state.submissions.push(record);
        state.tool_calls.push(call);
        Ok(result)
    }

    /// Evaluates a stage over asserted evidence without a run: nothing is queried and
    /// nothing recorded. Conditions missing from `evidence` have no value.
    ///
    /// # Errors
    /// Unknown stage, branch not matched, evidence too large.
    pub fn precheck(
        &self,
        stage_id: Option<&str>,
        evidence: &BTreeMap<String, EvidenceResult>,
    ) -> Result<PrecheckResult, EngineError> {
        let stage = match stage_id {
            Some(id) => self.stage(id)?,
            None => self.spec.stages.first().ok_or(SpecError::NoStages)?,
        };
        let conditions = self.stage_conditions(stage)?;
        let mut records = Vec::with_capacity(conditions.len());
        for condition in &conditions {
            let result = evidence
                .get(&condition.condition_id)
                .cloned()
                .unwrap_or_else(|| EvidenceResult::empty(TrustLane::Asserted));
            records.push(self.evidence_record(condition, result)?);
        }
        let evaluations = self.evaluate_gates(stage, &conditions, &records);
        let outcomes: Vec<(String, TriState)> =
            evaluations.iter().map(|(evaluation, _)| (evaluation.gate_id.clone(), evaluation.status)).collect();
        let gate_evaluations: Vec<GateEvaluation> = evaluations.into_iter().map(|(evaluation, _)| evaluation).collect();
        let decision = if outcomes.iter().all(|(_, status)| *status == TriState::True) {
            match self.resolve_next_stage(stage, &outcomes)? {
                Some(to_stage) => {
                    DecisionOutcome::Advance { from_stage: stage.stage_id.clone(), to_stage, timeout: false }
                }
                None => DecisionOutcome::Complete { stage_id: stage.stage_id.clone() },
            }
        } else {
            let unmet = outcomes.iter().filter(|(_, s)| *s != TriState::True).map(|(id, _)| id.clone()).collect();
            DecisionOutcome::Hold { summary: hold_summary(unmet) }
        };
        Ok(PrecheckResult { decision, gate_evaluations })
    }
}
