//! Runpacks (manifest v1): the portable record of one run. The builder produces the exact
//! files the open-source server writes (canonical JSON, fixed order, root hash over the
//! file-hash list); the verifier checks them. In memory only: writing files is the
//! storage crate's job.
//!
//! Beyond the open-source verifier, [`verify_runpack`] also binds the manifest's
//! metadata to the artifacts it can be derived from (scenario, run, tenant, namespace,
//! spec hash, artifact list) and rejects missing or extra files, while untouched
//! open-source runpacks still pass. Metadata that no artifact implies (`generated_at`,
//! `security`) can only be protected by a signature, which signed bundles add.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::evidence::EvidenceAnchorPolicy;
use crate::hashing::{canonical_json_bytes, hash_bytes, hash_canonical_json, HashAlgorithm, HashDigest, HashError};
use crate::spec::{NamespaceId, ScenarioSpec, TenantId};
use crate::state::{DecisionRecord, GateEvalRecord, RunState};
use crate::time::Timestamp;

/// Largest artifact the verifier reads.
pub const MAX_ARTIFACT_BYTES: usize = 16 * 1024 * 1024;

/// Path of the verifier report artifact.
pub const VERIFIER_REPORT_PATH: &str = "artifacts/verifier_report.json";

/// Fixed artifact paths and kinds, in write order.
pub const ARTIFACT_LAYOUT: [(&str, ArtifactKind); 7] = [
    ("artifacts/scenario_spec.json", ArtifactKind::ScenarioSpec),
    ("artifacts/triggers.json", ArtifactKind::TriggerLog),
    ("artifacts/gate_evals.json", ArtifactKind::GateEvalLog),
    ("artifacts/decisions.json", ArtifactKind::DecisionLog),
    ("artifacts/packets.json", ArtifactKind::PacketLog),
    ("artifacts/submissions.json", ArtifactKind::SubmissionLog),
    ("artifacts/tool_calls.json", ArtifactKind::ToolTranscript),
];

/// Kind of runpack artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// The scenario spec.
    ScenarioSpec,
    /// Trigger log.
    TriggerLog,
    /// Gate evaluation log.
    GateEvalLog,
    /// Decision log.
    DecisionLog,
    /// Packet log.
    PacketLog,
    /// Dispatch log (never produced).
    DispatchLog,
    /// Evidence log (never produced).
    EvidenceLog,
    /// Submission log.
    SubmissionLog,
    /// Tool-call transcript.
    ToolTranscript,
    /// Verification report.
    VerifierReport,
    /// Custom (never produced).
    Custom,
}

/// Verification mode recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifierMode {
    /// Everything needed is in the runpack.
    OfflineStrict,
    /// Unused.
    OfflineWithFetch,
}

/// Security posture of the exporting server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunpackSecurity {
    /// Whether dev-permissive mode was on.
    pub dev_permissive: bool,
    /// `dg_registry` or `assetcore_catalog`.
    pub namespace_authority: String,
}

/// One entry of the integrity list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// Relative path.
    pub path: String,
    /// sha256 of the file bytes.
    pub hash: HashDigest,
}

/// File hashes and the root hash over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunpackIntegrity {
    /// Every file, in write order.
    pub file_hashes: Vec<FileHash>,
    /// sha256 of the canonical `file_hashes` array.
    pub root_hash: HashDigest,
}

/// One artifact entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// Same as `path`.
    pub artifact_id: String,
    /// Kind.
    pub kind: ArtifactKind,
    /// Relative path.
    pub path: String,
    /// MIME type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// sha256 of the file.
    pub hash: HashDigest,
    /// Always true.
    pub required: bool,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunpackManifest {
    /// `v1`.
    pub manifest_version: String,
    /// Caller-supplied export time.
    pub generated_at: Timestamp,
    /// Scenario.
    pub scenario_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Run.
    pub run_id: String,
    /// Hash of the spec.
    pub spec_hash: HashDigest,
    /// `sha256`.
    pub hash_algorithm: HashAlgorithm,
    /// `offline_strict`.
    pub verifier_mode: VerifierMode,
    /// Anchor policy in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_policy: Option<EvidenceAnchorPolicy>,
    /// Security posture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<RunpackSecurity>,
    /// Integrity block.
    pub integrity: RunpackIntegrity,
    /// Artifact list.
    pub artifacts: Vec<ArtifactEntry>,
}

/// Verification outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    /// No errors.
    Pass,
    /// At least one error.
    Fail,
}

/// `{"checked_files":N,"errors":[..],"status":"pass"|"fail"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationReport {
    /// Files read and hashed.
    pub checked_files: u64,
    /// Every problem found.
    pub errors: Vec<String>,
    /// Pass iff no errors.
    pub status: VerificationStatus,
}

/// A runpack in memory: the manifest and every file's bytes in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runpack {
    /// The manifest.
    pub manifest: RunpackManifest,
    /// Canonical bytes of the manifest.
    pub manifest_bytes: Vec<u8>,
    /// Artifact files, in write order.
    pub files: Vec<(String, Vec<u8>)>,
    /// Verification report, when requested.
    pub report: Option<VerificationReport>,
}

/// What the exporter adds beyond the run itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Export time.
    pub generated_at: Timestamp,
    /// Run the verifier and include its report.
    pub include_verification: bool,
    /// Anchor policy to record.
    pub anchor_policy: Option<EvidenceAnchorPolicy>,
    /// Security posture to record.
    pub security: Option<RunpackSecurity>,
}

/// Why a runpack could not be built or parsed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RunpackError {
    /// Run state and spec disagree.
    #[error("run state spec hash mismatch")]
    SpecHashMismatch,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The manifest is not a v1 manifest.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
}

fn root_hash(file_hashes: &[FileHash]) -> Result<HashDigest, HashError> {
    hash_canonical_json(file_hashes)
}

/// Builds the runpack of a run, byte-identical to the open-source exporter.
///
/// # Errors
/// Spec/run mismatch or a hashing failure.
pub fn build_runpack(spec: &ScenarioSpec, state: &RunState, options: &ExportOptions) -> Result<Runpack, RunpackError> {
    let spec_hash = spec.canonical_hash()?;
    if spec_hash != state.spec_hash {
        return Err(RunpackError::SpecHashMismatch);
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::with_capacity(8);
    let contents: [Vec<u8>; 7] = [
        canonical_json_bytes(spec)?,
        canonical_json_bytes(&state.triggers)?,
        canonical_json_bytes(&state.gate_evals)?,
        canonical_json_bytes(&state.decisions)?,
        canonical_json_bytes(&state.packets)?,
        canonical_json_bytes(&state.submissions)?,
        canonical_json_bytes(&state.tool_calls)?,
    ];
    let mut artifacts = Vec::with_capacity(8);
    let mut file_hashes = Vec::with_capacity(8);
    for ((path, kind), bytes) in ARTIFACT_LAYOUT.iter().zip(contents) {
        push_artifact(&mut artifacts, &mut file_hashes, path, *kind, &bytes);
        files.push(((*path).to_string(), bytes));
    }
    let mut manifest = RunpackManifest {
        manifest_version: "v1".to_string(),
        generated_at: options.generated_at,
        scenario_id: spec.scenario_id.clone(),
        tenant_id: state.tenant_id,
        namespace_id: state.namespace_id,
        run_id: state.run_id.clone(),
        spec_hash,
        hash_algorithm: HashAlgorithm::Sha256,
        verifier_mode: VerifierMode::OfflineStrict,
        anchor_policy: options.anchor_policy.clone(),
        security: options.security.clone(),
        integrity: RunpackIntegrity { root_hash: root_hash(&file_hashes)?, file_hashes },
        artifacts,
    };
    let mut report = None;
    if options.include_verification {
        let files_map: BTreeMap<String, Vec<u8>> = files.iter().cloned().collect();
        let verification = verify_manifest_files(&manifest, &files_map, false);
        let bytes = canonical_json_bytes(&verification)?;
        push_artifact(
            &mut manifest.artifacts,
            &mut manifest.integrity.file_hashes,
            VERIFIER_REPORT_PATH,
            ArtifactKind::VerifierReport,
            &bytes,
        );
        manifest.integrity.root_hash = root_hash(&manifest.integrity.file_hashes)?;
        files.push((VERIFIER_REPORT_PATH.to_string(), bytes));
        report = Some(verification);
    }
    let manifest_bytes = canonical_json_bytes(&manifest)?;
    Ok(Runpack { manifest, manifest_bytes, files, report })
}

fn push_artifact(
    artifacts: &mut Vec<ArtifactEntry>,
    file_hashes: &mut Vec<FileHash>,
    path: &str,
    kind: ArtifactKind,
    bytes: &[u8],
) {
    let hash = hash_bytes(bytes);
    artifacts.push(ArtifactEntry {
        artifact_id: path.to_string(),
        kind,
        path: path.to_string(),
        content_type: Some("application/json".to_string()),
        hash: hash.clone(),
        required: true,
    });
    file_hashes.push(FileHash { path: path.to_string(), hash });
}

/// Parses manifest bytes.
///
/// # Errors
/// [`RunpackError::InvalidManifest`] with the parser's reason.
pub fn parse_manifest(bytes: &[u8]) -> Result<RunpackManifest, RunpackError> {
    serde_json::from_slice(bytes).map_err(|err| RunpackError::InvalidManifest(err.to_string()))
}

/// Whether a manifest path is a plain relative path inside the runpack.
#[must_use]
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains('\0')
        && path.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Verifies a runpack: `files` holds every file of the runpack except the manifest.
/// Untouched open-source runpacks pass; any altered, missing or extra file, or manifest
/// metadata that contradicts the artifacts, fails with a specific error.
///
/// # Errors
/// [`RunpackError::InvalidManifest`] when the manifest cannot be parsed at all.
pub fn verify_runpack(
    manifest_bytes: &[u8],
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<VerificationReport, RunpackError> {
    verify_runpack_prechecked(manifest_bytes, files, &Prechecked::default())
}

/// The path of the decision log inside a runpack.
pub const DECISION_LOG_PATH: &str = "artifacts/decisions.json";

/// Work a caller already did on the runpack's files while it had them first (for
/// example while streaming them out of a bundle), so [`verify_runpack_prechecked`] does
/// not repeat it.
#[derive(Debug, Default)]
pub struct Prechecked {
    /// sha256 of files, computed from exactly the bytes in `files`; a file without one
    /// is hashed during verification.
    pub digests: BTreeMap<String, HashDigest>,
    /// [`decision_log_errors`] of exactly the bytes of [`DECISION_LOG_PATH`] in `files`;
    /// `None` runs the check during verification.
    pub decision_log_errors: Option<Vec<String>>,
}

/// [`verify_runpack`] reusing what the caller already checked (see [`Prechecked`]).
///
/// # Errors
/// [`RunpackError::InvalidManifest`] when the manifest cannot be parsed at all.
pub fn verify_runpack_prechecked(
    manifest_bytes: &[u8],
    files: &BTreeMap<String, Vec<u8>>,
    prechecked: &Prechecked,
) -> Result<VerificationReport, RunpackError> {
    let manifest = parse_manifest(manifest_bytes)?;
    Ok(verify_manifest_files_with(&manifest, files, prechecked, true))
}

fn fail_report(errors: Vec<String>, checked_files: u64) -> VerificationReport {
    let status = if errors.is_empty() { VerificationStatus::Pass } else { VerificationStatus::Fail };
    VerificationReport { checked_files, errors, status }
}

/// Core of verification; `strict` adds the appliance's checks beyond the open-source ones.
fn verify_manifest_files(
    manifest: &RunpackManifest,
    files: &BTreeMap<String, Vec<u8>>,
    strict: bool,
) -> VerificationReport {
    verify_manifest_files_with(manifest, files, &Prechecked::default(), strict)
}

fn verify_manifest_files_with(
    manifest: &RunpackManifest,
    files: &BTreeMap<String, Vec<u8>>,
    prechecked: &Prechecked,
    strict: bool,
) -> VerificationReport {
    let digests = &prechecked.digests;
    if manifest.manifest_version != "v1" {
        return fail_report(vec![format!("unsupported manifest version: {}", manifest.manifest_version)], 0);
    }
    let mut errors = Vec::new();
    let mut checked = 0u64;
    for entry in &manifest.integrity.file_hashes {
        if !is_safe_relative_path(&entry.path) {
            errors.push(format!("artifact read failed for {}: path escapes runpack root", entry.path));
            continue;
        }
        match files.get(&entry.path) {
            None => errors.push(format!("artifact read failed for {}: file not found", entry.path)),
            Some(bytes) if bytes.len() > MAX_ARTIFACT_BYTES => {
                errors.push(format!("artifact read failed for {}: exceeds size limit", entry.path));
            }
            Some(bytes) => {
                checked += 1;
                let digest = digests.get(&entry.path).cloned().unwrap_or_else(|| hash_bytes(bytes));
                if digest != entry.hash {
                    errors.push(format!("hash mismatch for {}", entry.path));
                }
            }
        }
    }
    match root_hash(&manifest.integrity.file_hashes) {
        Ok(root) if root == manifest.integrity.root_hash => {}
        _ => errors.push("root hash mismatch".to_string()),
    }
    // The structural checks each parse a large artifact; they are independent, so the
    // appliance's extra metadata checks run on a second core while the decision log and
    // anchors are checked here. Errors keep the same order as a sequential run.
    let strict_errors = std::thread::scope(|scope| {
        let extra = strict.then(|| {
            scope.spawn(|| {
                let mut found = Vec::new();
                check_file_set(manifest, files, &mut found);
                check_metadata(manifest, files, &mut found);
                found
            })
        });
        match (&prechecked.decision_log_errors, files.get(DECISION_LOG_PATH)) {
            (Some(found), Some(_)) => errors.extend(found.iter().cloned()),
            (_, bytes) => check_decision_log(bytes.map(Vec::as_slice), &mut errors),
        }
        if let Some(policy) = &manifest.anchor_policy {
            check_anchors(policy, files, &mut errors);
        }
        // A panic in the checker thread is reported, never swallowed into a pass.
        extra.map(|handle| handle.join().unwrap_or_else(|_| vec!["runpack metadata check failed".to_string()]))
    });
    errors.extend(strict_errors.unwrap_or_default());
    fail_report(errors, checked)
}

/// The decision-log rule on its own: the log parses as decision records and no trigger
/// is decided twice. Public so a reader can run it as soon as it has the log's bytes
/// (see [`Prechecked`]); the errors are the ones verification would report.
#[must_use]
pub fn decision_log_errors(bytes: &[u8]) -> Vec<String> {
    let mut errors = Vec::new();
    check_decision_log(Some(bytes), &mut errors);
    errors
}

fn check_decision_log(bytes: Option<&[u8]>, errors: &mut Vec<String>) {
    let Some(bytes) = bytes else {
        errors.push("decision log read failed: file not found".to_string());
        return;
    };
    match serde_json::from_slice::<Vec<DecisionRecord>>(bytes) {
        Err(err) => errors.push(format!("invalid decision log: {err}")),
        Ok(decisions) => {
            let mut seen = BTreeSet::new();
            for decision in decisions {
                if !seen.insert(decision.trigger_id.clone()) {
                    errors.push(format!("duplicate decision for trigger {}", decision.trigger_id));
                }
            }
        }
    }
}

fn check_anchors(policy: &EvidenceAnchorPolicy, files: &BTreeMap<String, Vec<u8>>, errors: &mut Vec<String>) {
    let spec = files.get("artifacts/scenario_spec.json").and_then(|b| serde_json::from_slice::<ScenarioSpec>(b).ok());
    let evals =
        files.get("artifacts/gate_evals.json").and_then(|b| serde_json::from_slice::<Vec<GateEvalRecord>>(b).ok());
    let (Some(spec), Some(evals)) = (spec, evals) else {
        errors.push("anchor verification failed: scenario spec or gate evaluations unreadable".to_string());
        return;
    };
    for record in &evals {
        for evidence in &record.evidence {
            if evidence.result.error.is_some() {
                continue;
            }
            let Some(condition) = spec.condition(&evidence.condition_id) else { continue };
            if let Some(requirement) = policy.requirement_for(&condition.query.provider_id) {
                if let Err(message) = EvidenceAnchorPolicy::check(requirement, &evidence.result) {
                    errors.push(format!(
                        "anchor invalid for condition {} (trigger {}, stage {}): {message}",
                        evidence.condition_id, record.trigger_id, record.stage_id
                    ));
                }
            }
        }
    }
}

/// Every file present is listed, every listed file is present once, and the artifact list
/// agrees with the integrity list.
fn check_file_set(manifest: &RunpackManifest, files: &BTreeMap<String, Vec<u8>>, errors: &mut Vec<String>) {
    let listed: BTreeSet<&str> = manifest.integrity.file_hashes.iter().map(|entry| entry.path.as_str()).collect();
    if listed.len() != manifest.integrity.file_hashes.len() {
        errors.push("duplicate path in integrity.file_hashes".to_string());
    }
    for path in files.keys() {
        if !listed.contains(path.as_str()) {
            errors.push(format!("unexpected file not covered by manifest: {path}"));
        }
    }
    for (path, _) in ARTIFACT_LAYOUT {
        if !listed.contains(path) {
            errors.push(format!("required artifact missing from manifest: {path}"));
        }
    }
    if manifest.artifacts.len() != manifest.integrity.file_hashes.len() {
        errors.push("manifest artifacts list does not match integrity.file_hashes".to_string());
    }
    for (artifact, file) in manifest.artifacts.iter().zip(&manifest.integrity.file_hashes) {
        if artifact.path != file.path || artifact.artifact_id != file.path || artifact.hash != file.hash {
            errors.push(format!("manifest artifact entry disagrees with integrity list: {}", artifact.path));
        }
        let expected_kind = ARTIFACT_LAYOUT
            .iter()
            .find(|(path, _)| *path == artifact.path)
            .map(|(_, kind)| *kind)
            .or((artifact.path == VERIFIER_REPORT_PATH).then_some(ArtifactKind::VerifierReport));
        if expected_kind != Some(artifact.kind) {
            errors.push(format!("manifest artifact kind does not match path: {}", artifact.path));
        }
    }
}

/// Binds manifest metadata to what the artifacts say.
fn check_metadata(manifest: &RunpackManifest, files: &BTreeMap<String, Vec<u8>>, errors: &mut Vec<String>) {
    if let Some(bytes) = files.get("artifacts/scenario_spec.json") {
        if hash_bytes(bytes) != manifest.spec_hash {
            errors.push("manifest spec_hash does not match artifacts/scenario_spec.json".to_string());
        }
        match serde_json::from_slice::<ScenarioSpec>(bytes) {
            Ok(spec) => {
                if spec.scenario_id != manifest.scenario_id {
                    errors.push("manifest scenario_id does not match the scenario spec".to_string());
                }
                if spec.namespace_id != manifest.namespace_id {
                    errors.push("manifest namespace_id does not match the scenario spec".to_string());
                }
            }
            Err(err) => errors.push(format!("invalid scenario spec artifact: {err}")),
        }
    }
    // Only the ids are needed here: parse just them (serde skips the rest quickly).
    #[derive(Deserialize)]
    struct EventIds {
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        run_id: String,
    }
    #[derive(Deserialize)]
    struct TriggerIds {
        event: EventIds,
    }
    #[derive(Deserialize)]
    struct EnvelopeIds {
        run_id: String,
        scenario_id: String,
    }
    #[derive(Deserialize)]
    struct PacketIds {
        envelope: EnvelopeIds,
    }
    let mut scopes: Vec<(TenantId, NamespaceId, String)> = Vec::new();
    if let Some(Ok(triggers)) =
        files.get("artifacts/triggers.json").map(|b| serde_json::from_slice::<Vec<TriggerIds>>(b))
    {
        scopes.extend(triggers.into_iter().map(|t| (t.event.tenant_id, t.event.namespace_id, t.event.run_id)));
    } else {
        errors.push("invalid trigger log".to_string());
    }
    for (tenant, namespace, run) in &scopes {
        if *tenant != manifest.tenant_id || *namespace != manifest.namespace_id || *run != manifest.run_id {
            errors.push("manifest tenant_id/namespace_id/run_id do not match the trigger log".to_string());
            break;
        }
    }
    if let Some(Ok(packets)) = files.get("artifacts/packets.json").map(|b| serde_json::from_slice::<Vec<PacketIds>>(b))
    {
        if packets
            .iter()
            .any(|p| p.envelope.run_id != manifest.run_id || p.envelope.scenario_id != manifest.scenario_id)
        {
            errors.push("manifest run_id/scenario_id do not match the packet log".to_string());
        }
    } else {
        errors.push("invalid packet log".to_string());
    }
}

/// Splits a runpack into the manifest and its files, as maps for [`verify_runpack`].
#[must_use]
pub fn files_map(runpack: &Runpack) -> BTreeMap<String, Vec<u8>> {
    runpack.files.iter().cloned().collect()
}
