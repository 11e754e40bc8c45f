//! Run state and everything a run appends to it: triggers, gate evaluations, decisions,
//! packets, submissions and tool-call records. All lists are append-only and their
//! sequence numbers are `len + 1` at append time.

use serde::{Deserialize, Serialize};

use crate::evidence::{EvidenceResult, ProviderCallError};
use crate::hashing::HashDigest;
use crate::ret::TriState;
use crate::spec::{NamespaceId, PacketPayload, TenantId};
use crate::time::Timestamp;

/// Input of `scenario_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Tenant owning the run.
    pub tenant_id: TenantId,
    /// Namespace of the run (must equal the spec's).
    pub namespace_id: NamespaceId,
    /// Run identifier.
    pub run_id: String,
    /// Scenario to run.
    pub scenario_id: String,
    /// Where disclosed packets are recorded as dispatched.
    pub dispatch_targets: Vec<DispatchTarget>,
    /// Accepted, unused by the engine.
    pub policy_tags: Vec<String>,
}

/// A disclosure target (tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DispatchTarget {
    /// An agent.
    Agent {
        /// Agent id.
        agent_id: String,
    },
    /// A session.
    Session {
        /// Session id.
        session_id: String,
    },
    /// An external system.
    External {
        /// System name.
        system: String,
        /// Target within the system.
        target: String,
    },
    /// A channel.
    Channel {
        /// Channel name.
        channel: String,
    },
}

/// Lifecycle status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepting triggers.
    Active,
    /// Finished successfully.
    Completed,
    /// Finished by failure.
    Failed,
}

impl RunStatus {
    /// The wire spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// The whole persisted state of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Run id.
    pub run_id: String,
    /// Scenario id.
    pub scenario_id: String,
    /// Hash of the spec at run start.
    pub spec_hash: HashDigest,
    /// Current stage.
    pub current_stage_id: String,
    /// When the current stage was entered.
    pub stage_entered_at: Timestamp,
    /// Status.
    pub status: RunStatus,
    /// Copied from the run config.
    pub dispatch_targets: Vec<DispatchTarget>,
    /// Trigger log.
    pub triggers: Vec<TriggerRecord>,
    /// Gate evaluation log.
    pub gate_evals: Vec<GateEvalRecord>,
    /// Decision log.
    pub decisions: Vec<DecisionRecord>,
    /// Packet log.
    pub packets: Vec<PacketRecord>,
    /// Submission log.
    pub submissions: Vec<SubmissionRecord>,
    /// Tool-call transcript.
    pub tool_calls: Vec<ToolCallRecord>,
}

/// Kind of trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// An agent asked for the next step.
    AgentRequestNext,
    /// A clock tick (the only kind that checks timeouts).
    Tick,
    /// An external event.
    ExternalEvent,
    /// A backend event.
    BackendEvent,
}

/// A trigger as supplied by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerEvent {
    /// Idempotency key of the trigger.
    pub trigger_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Run.
    pub run_id: String,
    /// Kind.
    pub kind: TriggerKind,
    /// Trigger time.
    pub time: Timestamp,
    /// Who sent it.
    pub source_id: String,
    /// Stored, never interpreted.
    #[serde(default)]
    pub payload: Option<PacketPayload>,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// A logged trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// 1-based sequence.
    pub seq: u64,
    /// The trigger.
    pub event: TriggerEvent,
}

/// Status of one condition visit inside a gate trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateTraceEntry {
    /// Condition visited.
    pub condition_id: String,
    /// Its status.
    pub status: TriState,
}

/// One gate's evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateEvaluation {
    /// Gate.
    pub gate_id: String,
    /// Result.
    pub status: TriState,
    /// Every leaf visit in order.
    pub trace: Vec<GateTraceEntry>,
}

/// A condition's evidence and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// Condition.
    pub condition_id: String,
    /// Status after comparator and trust.
    pub status: TriState,
    /// Normalised provider result.
    pub result: EvidenceResult,
}

/// A logged gate evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEvalRecord {
    /// Trigger that caused it.
    pub trigger_id: String,
    /// Stage evaluated.
    pub stage_id: String,
    /// Gate result.
    pub evaluation: GateEvaluation,
    /// Evidence of the gate's conditions, sorted by condition id.
    pub evidence: Vec<EvidenceRecord>,
}

/// Non-evidence explanation of a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeSummary {
    /// Always `hold`.
    pub status: String,
    /// Gates not True, in stage order.
    pub unmet_gates: Vec<String>,
    /// `await_evidence`.
    #[serde(default)]
    pub retry_hint: Option<String>,
    /// Always empty.
    pub policy_tags: Vec<String>,
}

/// Outcome of a decision (tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionOutcome {
    /// Run started.
    Start {
        /// Initial stage.
        stage_id: String,
    },
    /// Run completed.
    Complete {
        /// Final stage.
        stage_id: String,
    },
    /// Moved to another stage.
    Advance {
        /// From.
        from_stage: String,
        /// To.
        to_stage: String,
        /// Whether a timeout forced it.
        timeout: bool,
    },
    /// Stayed.
    Hold {
        /// Why.
        summary: SafeSummary,
    },
    /// Run failed.
    Fail {
        /// Why.
        reason: String,
    },
}

impl DecisionOutcome {
    /// The `kind` spelling.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::Complete { .. } => "complete",
            Self::Advance { .. } => "advance",
            Self::Hold { .. } => "hold",
            Self::Fail { .. } => "fail",
        }
    }
}

/// A logged decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// `decision-<seq>`.
    pub decision_id: String,
    /// 1-based sequence.
    pub seq: u64,
    /// Trigger decided on.
    pub trigger_id: String,
    /// Stage at decision time.
    pub stage_id: String,
    /// Trigger time.
    pub decided_at: Timestamp,
    /// Outcome.
    pub outcome: DecisionOutcome,
    /// From the trigger.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// Visibility of a disclosed packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisibilityPolicy {
    /// Labels.
    pub labels: Vec<String>,
    /// Policy tags.
    pub policy_tags: Vec<String>,
}

/// Metadata of a disclosed packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketEnvelope {
    /// Scenario.
    pub scenario_id: String,
    /// Run.
    pub run_id: String,
    /// Stage entered.
    pub stage_id: String,
    /// Packet.
    pub packet_id: String,
    /// Payload schema.
    pub schema_id: String,
    /// MIME type.
    pub content_type: String,
    /// Hash of the payload.
    pub content_hash: HashDigest,
    /// Visibility.
    pub visibility: VisibilityPolicy,
    /// Expiry.
    #[serde(default)]
    pub expiry: Option<Timestamp>,
    /// From the decision.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Decision time.
    pub issued_at: Timestamp,
}

/// Record that a packet was handed to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchReceipt {
    /// `mcp-<packet_id>`.
    pub dispatch_id: String,
    /// Target.
    pub target: DispatchTarget,
    /// Hash of the envelope.
    pub receipt_hash: HashDigest,
    /// Envelope issue time.
    pub dispatched_at: Timestamp,
    /// `mcp`.
    pub dispatcher: String,
}

/// A disclosed packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacketRecord {
    /// Envelope.
    pub envelope: PacketEnvelope,
    /// Payload.
    pub payload: PacketPayload,
    /// Dispatch receipts.
    pub receipts: Vec<DispatchReceipt>,
    /// Decision that issued it.
    pub decision_id: String,
}

/// A logged submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRecord {
    /// Idempotency key.
    pub submission_id: String,
    /// Run.
    pub run_id: String,
    /// Payload.
    pub payload: PacketPayload,
    /// MIME type.
    pub content_type: String,
    /// Hash of the payload.
    pub content_hash: HashDigest,
    /// Caller time.
    pub submitted_at: Timestamp,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// Details of a failed tool call (tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolCallErrorDetails {
    /// Providers missing or blocked.
    ProviderMissing {
        /// Providers not configured.
        missing_providers: Vec<String>,
        /// Capabilities required.
        required_capabilities: Vec<String>,
        /// Whether policy blocked them.
        blocked_by_policy: bool,
    },
    /// A message.
    Message {
        /// Text.
        info: String,
    },
}

/// Error part of a tool-call record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallError {
    /// Code.
    pub code: String,
    /// Message.
    pub message: String,
    /// Details.
    #[serde(default)]
    pub details: Option<ToolCallErrorDetails>,
}

/// A logged tool call (hashes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// `call-<n>`.
    pub call_id: String,
    /// Dotted method name (`scenario.trigger`).
    pub method: String,
    /// Hash of the request.
    pub request_hash: HashDigest,
    /// Hash of the response or error.
    pub response_hash: HashDigest,
    /// Request time.
    pub called_at: Timestamp,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Error, if the call failed.
    #[serde(default)]
    pub error: Option<ToolCallError>,
}

/// `scenario_status` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Run.
    pub run_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Caller time.
    pub requested_at: Timestamp,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// `scenario_next` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextRequest {
    /// Run.
    pub run_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Idempotency key.
    pub trigger_id: String,
    /// Asking agent.
    pub agent_id: String,
    /// Caller time.
    pub time: Timestamp,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// `scenario_submit` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Run.
    pub run_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Idempotency key.
    pub submission_id: String,
    /// Payload.
    pub payload: PacketPayload,
    /// MIME type.
    pub content_type: String,
    /// Caller time.
    pub submitted_at: Timestamp,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// Result of `scenario_next` and `scenario_trigger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerResult {
    /// Decision.
    pub decision: DecisionRecord,
    /// Packets issued by it.
    pub packets: Vec<PacketRecord>,
    /// Run status afterwards.
    pub status: RunStatus,
}

/// Result of `scenario_submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The (new or existing) record.
    pub record: SubmissionRecord,
}

/// Result of `scenario_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioStatus {
    /// Run.
    pub run_id: String,
    /// Scenario.
    pub scenario_id: String,
    /// Current stage.
    pub current_stage_id: String,
    /// Status.
    pub status: RunStatus,
    /// Last decision.
    pub last_decision: Option<DecisionRecord>,
    /// Every packet ever issued.
    pub issued_packet_ids: Vec<String>,
    /// Hold summary of the last decision.
    pub safe_summary: Option<SafeSummary>,
}

impl ScenarioStatus {
    /// Derives the status view of a run.
    #[must_use]
    pub fn from_state(state: &RunState) -> Self {
        let last_decision = state.decisions.last().cloned();
        let safe_summary = last_decision.as_ref().and_then(|decision| match &decision.outcome {
            DecisionOutcome::Hold { summary } => Some(summary.clone()),
            _ => None,
        });
        Self {
            run_id: state.run_id.clone(),
            scenario_id: state.scenario_id.clone(),
            current_stage_id: state.current_stage_id.clone(),
            status: state.status,
            last_decision,
            issued_packet_ids: state.packets.iter().map(|packet| packet.envelope.packet_id.clone()).collect(),
            safe_summary,
        }
    }
}

impl From<ProviderCallError> for EvidenceResult {
    fn from(err: ProviderCallError) -> Self {
        EvidenceResult::from_error("provider_error", format!("evidence provider error: {}", err.0))
    }
}
