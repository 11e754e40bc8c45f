//! The tamper-evident audit log. Every entry is canonical JSON carrying its sequence
//! number and the sha256 of the entry before it, so editing, deleting, reordering or
//! inserting an entry breaks the chain. Signed checkpoints (Ed25519 over the entry count
//! and head hash, each naming the checkpoint before it) make truncation detectable, and
//! the newest checkpoint is also kept in a witness file beside the database. Pruning
//! keeps every entry's hash (a tombstone), so the chain stays verifiable; entries of a
//! tenant under legal hold are never pruned.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use dg_crypto::Sha256;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::StoreError;
use crate::signing::{KeyStore, PublicKeyRing};
use crate::store::audit_segments::{self, each_entry, Walk, SEALS_PER_CHECKPOINT};
use crate::store::usage::{record_usage, UsageRecord};
use crate::store::{exec, query_one, to_sql, Store};

/// Domain separator of checkpoint signatures.
const CHECKPOINT_CONTEXT: &[u8] = b"dg-audit-checkpoint-v1\n";

/// The hash before the first entry.
pub const GENESIS_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it gets its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEvent {
    /// Who: key id, `cert:<subject>`, `stdio`, `cli`, or `system`.
    pub principal: String,
    /// The principal's role, when it has one.
    pub role: Option<String>,
    /// Tenant acted on.
    pub tenant_id: Option<u64>,
    /// Namespace acted on.
    pub namespace_id: Option<u64>,
    /// `authz`, `tool_call`, `admin.<operation>`, `startup`, `shutdown`, `backup`, ...
    pub action: String,
    /// Tool or object acted on.
    pub target: String,
    /// `allow`/`deny` for decisions, `ok`/`error` for calls.
    pub outcome: String,
    /// Why (decision reason, error message).
    pub reason: String,
    /// Request id (client correlation id, else the server's).
    pub request_id: String,
    /// sha256 of the request's canonical arguments.
    pub request_sha256: Option<String>,
    /// sha256 of the canonical response.
    pub response_sha256: Option<String>,
}

/// What a mutation commits beside its own rows: its audit entries and usage records. Built
/// by the request path as a value and handed to the store's mutation, which commits all of
/// it in one transaction (a backend implements that once, in its write path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditBatch {
    /// Entries appended to the chain, in order.
    pub events: Vec<AuditEvent>,
    /// Usage rows recorded with them.
    pub usage: Vec<UsageRecord>,
}

impl AuditBatch {
    /// Nothing to record (imports, restores and the store's own tests).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there is nothing to record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.usage.is_empty()
    }
}

/// An entry as stored: the event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1-based position.
    pub seq: u64,
    /// sha256 of the previous entry's canonical JSON ([`GENESIS_SHA256`] for the first).
    pub prev_sha256: String,
    /// Wall-clock time (unix ms).
    pub time_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// Entries covered (the head's seq).
    pub entry_count: u64,
    /// sha256 of entry `entry_count`.
    pub head_sha256: String,
    /// Wall-clock time (unix ms).
    pub time_ms: i64,
    /// Signing key id (in the public key ring).
    pub key_id: String,
    /// sha256 of the previous checkpoint's canonical JSON ([`GENESIS_SHA256`] for the first).
    pub prev_checkpoint_sha256: String,
    /// Where `time_ms` came from: `system_clock`, or `system_clock_held` when the system
    /// clock was behind an earlier record (stepped back) and the time was held there.
    /// Absent in checkpoints of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_source: Option<String>,
}

/// How far the system clock may be behind the record time before a checkpoint says so.
const CLOCK_TOLERANCE_MS: i64 = 1000;

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// What is signed.
    #[serde(flatten)]
    pub body: CheckpointBody,
    /// Hex Ed25519 signature over the context string and the body's canonical JSON.
    pub signature: String,
}

impl Checkpoint {
    fn message(body: &CheckpointBody) -> Result<Vec<u8>, StoreError> {
        let mut message = CHECKPOINT_CONTEXT.to_vec();
        message.extend(canonical(body)?);
        Ok(message)
    }

    /// Checks the signature against a key ring.
    ///
    /// # Errors
    /// A message naming the key problem.
    pub fn verify_signature(&self, ring: &PublicKeyRing) -> Result<(), String> {
        let message = Self::message(&self.body).map_err(|err| err.to_string())?;
        ring.verify(&self.body.key_id, &message, &self.signature).map_err(|err| err.to_string())
    }

    pub(crate) fn sha256(&self) -> Result<String, StoreError> {
        Ok(hex::encode(Sha256::digest(canonical(self)?)))
    }
}

/// Signs checkpoints (the appliance's Ed25519 key store).
pub trait AuditSigner: Send + Sync {
    /// The id of the key [`AuditSigner::sign`] will use.
    ///
    /// # Errors
    /// A message when the key cannot be read.
    fn key_id(&self) -> Result<String, String>;

    /// Returns the key id and hex signature of `message`.
    ///
    /// # Errors
    /// A message when the key cannot be used.
    fn sign(&self, message: &[u8]) -> Result<(String, String), String>;
}

impl AuditSigner for KeyStore {
    fn key_id(&self) -> Result<String, String> {
        self.active().map(|key| key.key_id).map_err(|err| err.to_string())
    }

    fn sign(&self, message: &[u8]) -> Result<(String, String), String> {
        let key = self.active().map_err(|err| err.to_string())?;
        let signature = key.sign_hex(message).map_err(|err| err.to_string())?;
        Ok((key.key_id.clone(), signature))
    }
}

pub(crate) fn canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    dg_engine::canonical_json_bytes(value).map_err(|err| StoreError::Canonical(err.to_string()))
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The first broken link found by a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// Entry number (seq) where the chain breaks.
    pub entry: u64,
    /// What is wrong.
    pub reason: String,
}

/// Result of verifying the chain (database or export).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AuditReport {
    /// Entries seen.
    pub entries: u64,
    /// Entries pruned to a hash (tombstones).
    pub pruned: u64,
    /// Signed checkpoints verified.
    pub checkpoints: u64,
    /// Newest signed entry count.
    pub signed_through: u64,
    /// The first problem, if any.
    pub first_break: Option<ChainBreak>,
}

impl AuditReport {
    /// Whether the chain verified.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.first_break.is_none()
    }

    pub(crate) fn fail(&mut self, entry: u64, reason: impl Into<String>) {
        if self.first_break.is_none() {
            self.first_break = Some(ChainBreak { entry, reason: reason.into() });
        }
    }
}

/// Walks entries in order and checks each link: used for the database and for exports.
pub struct ChainVerifier {
    expected_seq: Option<u64>,
    prev_sha256: String,
    hashes: std::collections::BTreeMap<u64, String>,
    /// The report so far.
    pub report: AuditReport,
}

impl ChainVerifier {
    /// Starts at `first_seq` whose predecessor hash is `anchor` (genesis for a whole log).
    #[must_use]
    pub fn new(first_seq: u64, anchor: &str) -> Self {
        Self {
            expected_seq: Some(first_seq),
            prev_sha256: anchor.to_string(),
            hashes: std::collections::BTreeMap::new(),
            report: AuditReport::default(),
        }
    }

    /// Feeds the next entry: its seq, its canonical bytes (`None` when pruned) and the
    /// hash recorded for it.
    pub fn entry(&mut self, seq: u64, bytes: Option<&[u8]>, recorded_sha256: &str) {
        self.report.entries += 1;
        if self.expected_seq != Some(seq) {
            let expected = self.expected_seq.unwrap_or(0);
            self.report.fail(expected, format!("entry {expected} is missing (next stored entry is {seq})"));
        }
        self.expected_seq = seq.checked_add(1);
        match bytes {
            None => self.report.pruned += 1,
            Some(bytes) => {
                let actual = hex::encode(Sha256::digest(bytes));
                if actual != recorded_sha256 {
                    self.report.fail(seq, "entry content does not match its recorded sha256 (edited)");
                }
                match serde_json::from_slice::<AuditEntry>(bytes) {
                    Err(err) => self.report.fail(seq, format!("entry is not a valid audit entry: {err}")),
                    Ok(entry) => {
                        if canonical(&entry).ok().as_deref() != Some(bytes) {
                            self.report.fail(seq, "entry is not in canonical form (edited)");
                        }
                        if entry.seq != seq {
                            self.report
                                .fail(seq, format!("entry claims position {} (reordered or inserted)", entry.seq));
                        }
                        if entry.prev_sha256 != self.prev_sha256 {
                            self.report.fail(
                                seq,
                                "entry does not link to the entry before it (inserted, deleted or reordered)",
                            );
                        }
                    }
                }
            }
        }
        self.prev_sha256 = recorded_sha256.to_string();
        self.hashes.insert(seq, recorded_sha256.to_string());
    }

    /// Whether the newest entry fed was recorded with `sha256`.
    pub(crate) fn links_to(&self, sha256: &str) -> bool {
        self.prev_sha256 == sha256
    }

    /// Checks the checkpoints against the entries fed so far and the key ring.
    pub fn checkpoints(&mut self, checkpoints: &[Checkpoint], ring: &PublicKeyRing, prev_anchor: Option<&str>) {
        let last_seq = self.expected_seq.map_or(0, |next| next.saturating_sub(1));
        let mut prev = prev_anchor.map(str::to_string);
        for checkpoint in checkpoints {
            let body = &checkpoint.body;
            if let Err(reason) = checkpoint.verify_signature(ring) {
                self.report.fail(
                    body.entry_count,
                    format!("checkpoint at entry {} has a bad signature: {reason}", body.entry_count),
                );
                continue;
            }
            if let Some(prev) = &prev {
                if &body.prev_checkpoint_sha256 != prev {
                    self.report.fail(
                        body.entry_count,
                        format!("the checkpoint before entry {} was deleted or altered", body.entry_count),
                    );
                }
            }
            prev = checkpoint.sha256().ok();
            self.report.checkpoints += 1;
            if body.entry_count > last_seq {
                self.report.fail(
                    last_seq + 1,
                    format!(
                        "log truncated: a signed checkpoint covers {} entries but the log ends at {last_seq}",
                        body.entry_count
                    ),
                );
                continue;
            }
            match self.hashes.get(&body.entry_count) {
                Some(hash) if *hash == body.head_sha256 => {
                    self.report.signed_through = self.report.signed_through.max(body.entry_count)
                }
                Some(_) => self
                    .report
                    .fail(body.entry_count, format!("entry {} differs from its signed checkpoint", body.entry_count)),
                None => {}
            }
        }
    }
}

/// The default number of entries between automatic checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 256;

impl Store {
    /// Sets the key that signs checkpoints and how many entries may pass between two.
    pub fn set_audit_signer(&self, signer: Arc<dyn AuditSigner>, checkpoint_every: u64) {
        if let Ok(mut slot) = self.audit_signer.write() {
            *slot = Some((signer, checkpoint_every.max(1)));
        }
    }

    /// The witness file holding the newest checkpoint, beside the database.
    #[must_use]
    pub fn audit_witness_path(&self) -> PathBuf {
        let mut name = self.path().file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
        name.push(".audit-head.json");
        self.path().with_file_name(name)
    }

    /// Appends events to the chain and records usage in the same durable commit. Fails
    /// (and records nothing) if the write fails: callers fail the request then.
    ///
    /// # Errors
    /// Storage errors (a full disk included).
    pub fn append_audit(&self, events: Vec<AuditEvent>, usage: Vec<UsageRecord>) -> Result<u64, StoreError> {
        let signer = self.audit_signer.read().ok().and_then(|slot| slot.clone());
        let checkpoint = Arc::new(std::sync::Mutex::new(None));
        let made = checkpoint.clone();
        let seq = self.writer.submit(Box::new(move |conn| {
            let (seq, signed) = append_in(conn, events, &usage, signer.as_ref())?;
            if let (Some(signed), Ok(mut slot)) = (signed, made.lock()) {
                *slot = Some(signed);
            }
            Ok(i64::try_from(seq).unwrap_or(i64::MAX))
        }))?;
        let made = checkpoint.lock().ok().and_then(|mut slot| slot.take());
        if let Some(made) = made {
            self.write_witness(&made);
        }
        Ok(to_u64(seq))
    }

    /// Runs a mutation and appends `audit` (its entries and usage rows) in the same
    /// transaction: the mutation is durable exactly when its audit entries are, and one
    /// fails with the other. The one write path of every audited mutation.
    ///
    /// # Errors
    /// The mutation's error, or storage errors of the append.
    pub(crate) fn submit_with_audit(
        &self,
        audit: AuditBatch,
        mutation: impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static,
    ) -> Result<i64, StoreError> {
        if audit.is_empty() {
            return self.writer.submit(Box::new(mutation));
        }
        let signer = self.audit_signer.read().ok().and_then(|slot| slot.clone());
        let checkpoint = Arc::new(std::sync::Mutex::new(None));
        let made = checkpoint.clone();
        let value = self.writer.submit(Box::new(move |conn| {
            let value = mutation(conn)?;
            let (_, signed) = append_in(conn, audit.events, &audit.usage, signer.as_ref())?;
            if let (Some(signed), Ok(mut slot)) = (signed, made.lock()) {
                *slot = Some(signed);
            }
            Ok(value)
        }))?;
        let made = checkpoint.lock().ok().and_then(|mut slot| slot.take());
        if let Some(made) = made {
            self.write_witness(&made);
        }
        Ok(value)
    }

    /// Signs a checkpoint at the current head if entries were added since the last one
    /// (on a timer, at shutdown and before an export). Returns the newest checkpoint.
    ///
    /// # Errors
    /// Storage or signing errors.
    pub fn audit_checkpoint_now(&self, signer: &Arc<dyn AuditSigner>) -> Result<Option<Checkpoint>, StoreError> {
        let signer = signer.clone();
        let made = Arc::new(std::sync::Mutex::new(None));
        let slot = made.clone();
        self.writer.submit(Box::new(move |conn| {
            let head = head(conn)?;
            let last = last_checkpoint(conn)?;
            let checkpoint = match last {
                Some(last) if last.body.entry_count >= head.0 => last,
                _ if head.0 == 0 => return Ok(0),
                _ => sign_checkpoint(conn, signer.as_ref(), &head)?,
            };
            audit_segments::seal_due(conn, checkpoint.body.entry_count, SEALS_PER_CHECKPOINT);
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(checkpoint);
            }
            Ok(1)
        }))?;
        let made = made.lock().ok().and_then(|mut slot| slot.take());
        if let Some(made) = &made {
            self.write_witness(made);
        }
        Ok(made)
    }

    fn write_witness(&self, checkpoint: &Checkpoint) {
        let path = self.audit_witness_path();
        let current = crate::fsutil::read_bounded(&path, 1024 * 1024, crate::fsutil::Links::Refuse)
            .ok()
            .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok());
        if current.is_some_and(|c| c.body.entry_count >= checkpoint.body.entry_count) {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec_pretty(checkpoint) {
            if let Err(err) = crate::fsutil::write_atomic(&path, &bytes, 0o600) {
                tracing_free_warn(&format!("cannot write audit witness {}: {err}", path.display()));
            }
        }
    }

    /// Verifies the whole chain, every checkpoint and the witness file.
    ///
    /// # Errors
    /// SQLite errors while reading.
    pub fn verify_audit(&self, ring: &PublicKeyRing) -> Result<AuditReport, StoreError> {
        let witness =
            crate::fsutil::read_bounded(&self.audit_witness_path(), 1024 * 1024, crate::fsutil::Links::Refuse).ok();
        self.read(|conn| {
            let mut verifier = ChainVerifier::new(1, GENESIS_SHA256);
            let walked = each_entry(conn, Walk::From(1), &mut |entry| {
                verifier.entry(entry.seq, entry.json.as_deref(), &entry.sha256);
                Ok(ControlFlow::Continue(()))
            });
            match walked {
                Ok(()) => {}
                // A damaged segment is a break in the chain, reported like one.
                Err(StoreError::Integrity { table, key }) => verifier
                    .report
                    .fail(key.parse().unwrap_or(0), format!("the sealed entries from {key} are damaged ({table})")),
                Err(err) => return Err(err),
            }
            let checkpoints = all_checkpoints(conn, 0)?;
            verifier.checkpoints(&checkpoints, ring, Some(GENESIS_SHA256));
            if let Some(witness) = witness {
                match serde_json::from_slice::<Checkpoint>(&witness) {
                    Err(err) => verifier.report.fail(0, format!("audit witness file is unreadable: {err}")),
                    Ok(witness) => {
                        let known = checkpoints.iter().any(|c| c == &witness);
                        let counted = verifier.report.checkpoints;
                        verifier.checkpoints(std::slice::from_ref(&witness), ring, None);
                        // The witness repeats a checkpoint; it is not another one.
                        verifier.report.checkpoints = counted;
                        if !known {
                            verifier.report.fail(
                                witness.body.entry_count,
                                format!(
                                    "the signed checkpoint at entry {} (witness file) is missing from the database",
                                    witness.body.entry_count
                                ),
                            );
                        }
                    }
                }
            }
            Ok(verifier.report)
        })
    }

    /// Writes entries from `since_ms` as JSON lines, with the checkpoints that let them be
    /// verified offline: a header, the entries, then the checkpoints covering them.
    ///
    /// The export ends at the newest signed checkpoint: an entry appended after it (by a
    /// timer, another request) could not be verified offline, so it belongs to the next
    /// export. Everything is read in one snapshot, so an append meanwhile never shows.
    ///
    /// # Errors
    /// SQLite or write errors.
    pub fn export_audit(&self, since_ms: i64, out: &mut dyn Write) -> Result<u64, StoreError> {
        let io = |source| StoreError::Io { operation: "write audit export", source };
        self.read(|conn| {
            let snapshot = conn.unchecked_transaction().map_err(StoreError::sqlite("begin audit export"))?;
            let signed_through = to_u64(
                query_one(conn, "SELECT coalesce(max(entry_count), 0) FROM audit_checkpoints", [], |row| row.get(0))
                    .map_err(StoreError::sqlite("export audit"))?,
            );
            let first = audit_segments::first_since(conn, since_ms)?.map_or(i64::MAX, to_sql);
            let anchor = match first.checked_sub(1).filter(|seq| *seq > 0) {
                Some(before) => audit_segments::entry_at(conn, to_u64(before))?.map(|entry| entry.sha256),
                None => None,
            }
            .unwrap_or_else(|| GENESIS_SHA256.to_string());
            let header = serde_json::json!({"type": "header", "format": "dg-audit-export-v1", "instance_id": self.instance_id(),
                                            "first_seq": to_u64(first.min(i64::MAX - 1)), "anchor_sha256": anchor, "since_ms": since_ms});
            writeln!(out, "{header}").map_err(io)?;
            let mut count = 0;
            each_entry(conn, Walk::From(to_u64(first)), &mut |stored| {
                if stored.seq > signed_through {
                    return Ok(ControlFlow::Break(()));
                }
                let entry: serde_json::Value = match stored.json {
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
                        table: "audit_log",
                        key: stored.seq.to_string(),
                        reason: err.to_string(),
                    })?,
                    None => serde_json::Value::Null,
                };
                let line = serde_json::json!({"type": "entry", "seq": stored.seq, "sha256": stored.sha256, "entry": entry});
                writeln!(out, "{line}").map_err(io)?;
                count += 1;
                Ok(ControlFlow::Continue(()))
            })?;
            let prev_checkpoint = query_one(
                conn,
                "SELECT checkpoint_json FROM audit_checkpoints WHERE entry_count < ?1 ORDER BY entry_count DESC LIMIT 1",
                [first],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(StoreError::sqlite("export audit"))?;
            if let Some(prev) = prev_checkpoint {
                let checkpoint: Checkpoint = serde_json::from_slice(&prev)
                    .map_err(|err| StoreError::Corrupt { table: "audit_checkpoints", key: "previous".into(), reason: err.to_string() })?;
                let line = serde_json::json!({"type": "previous_checkpoint", "checkpoint": checkpoint});
                writeln!(out, "{line}").map_err(io)?;
            }
            for checkpoint in all_checkpoints(conn, first)? {
                writeln!(out, "{}", serde_json::json!({"type": "checkpoint", "checkpoint": checkpoint})).map_err(io)?;
            }
            snapshot.commit().map_err(StoreError::sqlite("end audit export"))?;
            Ok(count)
        })
    }

    /// Prunes entries older than `before_ms` down to their hashes, up to the newest signed
    /// checkpoint older than that, skipping tenants under legal hold. Returns how many.
    ///
    /// # Errors
    /// Storage errors.
    pub fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let pruned = self.writer.submit(Box::new(move |conn| {
            // The newest checkpoint whose entry is older than `before_ms` (times never go
            // back along the chain).
            let Some(older) = audit_segments::last_before(conn, before_ms)? else { return Ok(0) };
            let bound: Option<i64> = query_one(
                conn,
                "SELECT max(entry_count) FROM audit_checkpoints WHERE entry_count <= ?1",
                [to_sql(older)],
                |row| row.get(0),
            )
            .map_err(StoreError::sqlite("find prune bound"))?;
            let Some(bound) = bound else { return Ok(0) };
            let held: Vec<u64> = {
                let mut stmt = conn
                    .prepare_cached("SELECT tenant_id FROM audit_holds")
                    .map_err(StoreError::sqlite("read legal holds"))?;
                let rows =
                    stmt.query_map([], |row| row.get::<_, i64>(0)).map_err(StoreError::sqlite("read legal holds"))?;
                rows.map(|row| row.map(to_u64))
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::sqlite("read legal holds"))?
            };
            let sealed = audit_segments::prune_sealed(conn, to_u64(bound), &held)?;
            let rows = exec(
                conn,
                "UPDATE audit_log SET entry_json = NULL WHERE seq <= ?1 AND entry_json IS NOT NULL
                   AND (tenant_id IS NULL OR tenant_id NOT IN (SELECT tenant_id FROM audit_holds))",
                [bound],
            )
            .map_err(StoreError::sqlite("prune audit"))?;
            Ok(i64::try_from(sealed + u64::try_from(rows).unwrap_or(u64::MAX)).unwrap_or(i64::MAX))
        }))?;
        Ok(to_u64(pruned))
    }

    /// Puts a tenant's audit entries under legal hold (never pruned) or releases them.
    ///
    /// # Errors
    /// Storage errors.
    pub fn set_legal_hold(&self, tenant_id: u64, reason: Option<&str>) -> Result<(), StoreError> {
        let reason = reason.map(str::to_string);
        self.writer.submit(Box::new(move |conn| {
            match &reason {
                Some(reason) => exec(
                    conn,
                    "INSERT INTO audit_holds (tenant_id, reason, created_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id) DO UPDATE SET reason = ?2",
                    params![to_sql(tenant_id), reason, now_ms()],
                ),
                None => exec(conn, "DELETE FROM audit_holds WHERE tenant_id = ?1", [to_sql(tenant_id)]),
            }
            .map_err(StoreError::sqlite("set legal hold"))?;
            Ok(1)
        }))?;
        Ok(())
    }

    /// Audit entries as parsed values (pruned ones skipped), for tests and reports.
    ///
    /// # Errors
    /// Storage errors.
    pub fn audit_entries(&self, since_seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|conn| {
            let mut out = Vec::new();
            each_entry(conn, Walk::From(since_seq), &mut |stored| {
                if let Some(bytes) = stored.json {
                    out.push(serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
                        table: "audit_log",
                        key: stored.seq.to_string(),
                        reason: err.to_string(),
                    })?);
                }
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(out)
        })
    }
}

fn tracing_free_warn(message: &str) {
    // The storage crate does not log; a failed witness write is reported on stderr and
    // caught by `audit verify` (the witness lags the database, never leads it).
    eprintln!("dg-storage: {message}");
}

/// The signer and checkpoint interval a store was given.
type SignerSlot = (Arc<dyn AuditSigner>, u64);

/// Appends events and usage inside the caller's transaction; signs a checkpoint when due.
fn append_in(
    conn: &Connection,
    events: Vec<AuditEvent>,
    usage: &[UsageRecord],
    signer: Option<&SignerSlot>,
) -> Result<(u64, Option<Checkpoint>), StoreError> {
    let mut head = head(conn)?;
    // Never earlier than an earlier record, whatever the wall clock did (`clock.rs`).
    let time_ms = crate::clock::record_time_ms();
    for event in events {
        let seq = head.0 + 1;
        let entry = AuditEntry { seq, prev_sha256: head.1.clone(), time_ms, event };
        let bytes = canonical(&entry)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        exec(
            conn,
            "INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![to_sql(seq), bytes, sha, entry.event.tenant_id.map(to_sql), time_ms],
        )
        .map_err(StoreError::sqlite("append audit entry"))?;
        head = (seq, sha);
    }
    for record in usage {
        record_usage(conn, record, time_ms)?;
    }
    let mut signed = None;
    if let Some((signer, every)) = signer {
        let last = last_checkpoint_count(conn)?;
        if head.0 >= last + every {
            signed = Some(sign_checkpoint(conn, signer.as_ref(), &head)?);
            audit_segments::seal_due(conn, head.0, SEALS_PER_CHECKPOINT);
        }
    }
    Ok((head.0, signed))
}

fn head(conn: &Connection) -> Result<(u64, String), StoreError> {
    Ok(audit_segments::newest(conn)?.map_or_else(|| (0, GENESIS_SHA256.to_string()), |(seq, sha, _)| (seq, sha)))
}

/// How many entries the newest checkpoint covers (0 when there is none); the key
/// column alone, so the per-append check parses nothing.
fn last_checkpoint_count(conn: &Connection) -> Result<u64, StoreError> {
    let count: Option<i64> = query_one(conn, "SELECT max(entry_count) FROM audit_checkpoints", [], |row| row.get(0))
        .map_err(StoreError::sqlite("read audit checkpoint"))?;
    Ok(count.map_or(0, to_u64))
}

fn last_checkpoint(conn: &Connection) -> Result<Option<Checkpoint>, StoreError> {
    let bytes: Option<Vec<u8>> =
        query_one(conn, "SELECT checkpoint_json FROM audit_checkpoints ORDER BY entry_count DESC LIMIT 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(StoreError::sqlite("read audit checkpoint"))?;
    bytes.map(|b| serde_json::from_slice(&b)).transpose().map_err(|err| StoreError::Corrupt {
        table: "audit_checkpoints",
        key: "last".into(),
        reason: err.to_string(),
    })
}

fn all_checkpoints(conn: &Connection, from_count: i64) -> Result<Vec<Checkpoint>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT entry_count, checkpoint_json FROM audit_checkpoints WHERE entry_count >= ?1 ORDER BY entry_count",
        )
        .map_err(StoreError::sqlite("read audit checkpoints"))?;
    let rows = stmt
        .query_map([from_count], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))
        .map_err(StoreError::sqlite("read audit checkpoints"))?;
    let mut out = Vec::new();
    for row in rows {
        let (count, bytes) = row.map_err(StoreError::sqlite("read audit checkpoints"))?;
        out.push(serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
            table: "audit_checkpoints",
            key: count.to_string(),
            reason: err.to_string(),
        })?);
    }
    Ok(out)
}

fn sign_checkpoint(
    conn: &Connection,
    signer: &dyn AuditSigner,
    head: &(u64, String),
) -> Result<Checkpoint, StoreError> {
    let prev = match last_checkpoint(conn)? {
        Some(last) => last.sha256()?,
        None => GENESIS_SHA256.to_string(),
    };
    let checkpoint = make_checkpoint(signer, head, prev, crate::clock::record_time_ms())?;
    exec(
        conn,
        "INSERT INTO audit_checkpoints (entry_count, checkpoint_json) VALUES (?1, ?2)",
        params![to_sql(head.0), canonical(&checkpoint)?],
    )
    .map_err(StoreError::sqlite("write audit checkpoint"))?;
    Ok(checkpoint)
}

/// Signs a checkpoint of `head` (seq, sha256) linked to the previous checkpoint's sha256, at
/// record time `time_ms`: the one place a checkpoint is made, whichever backend stores it.
///
/// # Errors
/// [`StoreError::Signing`] (the key cannot be used, or changed while signing).
pub(crate) fn make_checkpoint(
    signer: &dyn AuditSigner,
    head: &(u64, String),
    prev_checkpoint_sha256: String,
    time_ms: i64,
) -> Result<Checkpoint, StoreError> {
    // Where the time came from: the system clock, or held at the previous record's time
    // because the system clock was behind it (stepped back).
    let held = now_ms() + CLOCK_TOLERANCE_MS < time_ms;
    let mut body = CheckpointBody {
        entry_count: head.0,
        head_sha256: head.1.clone(),
        time_ms,
        key_id: String::new(),
        prev_checkpoint_sha256,
        time_source: Some(if held { "system_clock_held" } else { "system_clock" }.to_string()),
    };
    // The key id is part of what is signed.
    body.key_id = signer.key_id().map_err(StoreError::Signing)?;
    let (used, signature) = signer.sign(&Checkpoint::message(&body)?).map_err(StoreError::Signing)?;
    if used != body.key_id {
        return Err(StoreError::Signing("the signing key changed while signing a checkpoint".into()));
    }
    Ok(Checkpoint { body, signature })
}

/// Longest line of an audit export (an entry is a few hundred bytes).
const MAX_EXPORT_LINE: u64 = 1024 * 1024;

/// Verifies an audit export (`Store::export_audit`) offline with nothing but a key ring:
/// every entry's hash and link, every checkpoint's signature and head, and that the last
/// entry is covered by a signed checkpoint (so nothing was cut from the end).
///
/// # Errors
/// A message when the export cannot be read at all (a broken chain is a report), or a
/// line longer than `MAX_EXPORT_LINE`.
pub fn verify_export(mut input: impl std::io::BufRead, ring: &PublicKeyRing) -> Result<AuditReport, String> {
    let mut verifier: Option<ChainVerifier> = None;
    let mut checkpoints = Vec::new();
    let mut previous: Option<Checkpoint> = None;
    let mut last_seq = 0u64;
    let mut raw = Vec::new();
    for index in 0.. {
        // One line at most MAX_EXPORT_LINE bytes: a file with no newline is refused, not
        // read whole into memory.
        raw.clear();
        let read =
            std::io::BufRead::read_until(&mut std::io::Read::take(&mut input, MAX_EXPORT_LINE + 1), b'\n', &mut raw)
                .map_err(|err| format!("line {}: {err}", index + 1))?;
        if read == 0 {
            break;
        }
        if raw.len() as u64 > MAX_EXPORT_LINE {
            return Err(format!("line {}: longer than {MAX_EXPORT_LINE} bytes; not an audit export", index + 1));
        }
        let line = std::str::from_utf8(&raw).map_err(|_| format!("line {}: not UTF-8", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|err| format!("line {}: not JSON: {err}", index + 1))?;
        match value.get("type").and_then(serde_json::Value::as_str) {
            Some("header") => {
                if verifier.is_some() {
                    return Err(format!("line {}: a second header", index + 1));
                }
                let first = value.get("first_seq").and_then(serde_json::Value::as_u64).unwrap_or(1);
                let anchor = value.get("anchor_sha256").and_then(serde_json::Value::as_str).unwrap_or(GENESIS_SHA256);
                verifier = Some(ChainVerifier::new(first, anchor));
            }
            Some("entry") => {
                let verifier =
                    verifier.as_mut().ok_or_else(|| format!("line {}: entry before the header", index + 1))?;
                let seq = value.get("seq").and_then(serde_json::Value::as_u64).unwrap_or(0);
                let sha = value.get("sha256").and_then(serde_json::Value::as_str).unwrap_or_default();
                let bytes = match value.get("entry") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(entry) => Some(canonical(entry).map_err(|err| err.to_string())?),
                };
                verifier.entry(seq, bytes.as_deref(), sha);
                last_seq = seq;
            }
            Some(kind @ ("checkpoint" | "previous_checkpoint")) => {
                let checkpoint: Checkpoint =
                    serde_json::from_value(value.get("checkpoint").cloned().unwrap_or_default())
                        .map_err(|err| format!("line {}: bad checkpoint: {err}", index + 1))?;
                if kind == "checkpoint" {
                    checkpoints.push(checkpoint);
                } else {
                    previous = Some(checkpoint);
                }
            }
            _ => return Err(format!("line {}: unknown record type", index + 1)),
        }
    }
    let mut verifier = verifier.ok_or("the export has no header")?;
    let anchor = match &previous {
        Some(previous) => {
            if let Err(reason) = previous.verify_signature(ring) {
                verifier
                    .report
                    .fail(previous.body.entry_count, format!("previous checkpoint has a bad signature: {reason}"));
            }
            previous.sha256().ok()
        }
        None => None,
    };
    verifier.checkpoints(&checkpoints, ring, anchor.as_deref());
    if verifier.report.entries > 0 && verifier.report.signed_through < last_seq {
        verifier.report.fail(
            last_seq,
            format!("entries after {} are not covered by a signed checkpoint", verifier.report.signed_through),
        );
    }
    Ok(verifier.report)
}
