//! The deployment's one audit chain on PostgreSQL. Every append locks the chain's head row
//! (`audit_head`, `FOR UPDATE`) inside the transaction of the mutation it records, so the
//! entries of every node link into a single chain in commit order, and an entry is durable
//! exactly when its mutation is. The lock is taken last in a transaction (after the
//! mutation's own rows), which keeps its hold short and the lock order the same everywhere.
//! Record times never go back: an entry's time is at least its predecessor's, whichever
//! node's clock wrote it. Checkpoints are signed by whichever node reaches the interval,
//! with the key ring the nodes share. Signing one takes the checkpoint lock (an advisory
//! lock), not the head: the newest checkpoint is the next one's `prev`, so signers go one
//! at a time, while appends go on meanwhile (a checkpoint covers the committed head).

use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::error::StoreError;
use crate::postgres::connection::{cached, pg, snapshot};
use crate::postgres::PgStore;
use crate::signing::PublicKeyRing;
use crate::store::audit::{
    canonical, make_checkpoint, AuditEntry, AuditEvent, AuditReport, AuditSigner, ChainVerifier, Checkpoint,
    GENESIS_SHA256,
};
use crate::store::to_sql;
use crate::store::usage::UsageRecord;

/// Entries read per page while verifying.
const VERIFY_PAGE: i64 = 4096;

/// The advisory lock every checkpoint signer holds ("dg-chkpt" in ASCII).
const CHECKPOINT_LOCK: i64 = 0x6467_2d63_686b_7074;

/// A batch as `dg_append`'s arguments (migrations.rs, v2): each entry's canonical JSON in
/// four parts around the three values only the chain head knows, and the usage rows as
/// columns. The database joins the parts with the head's values and hashes the result, so
/// the append is one statement: nothing waits on the network while the head is locked.
pub(crate) struct AppendArgs {
    pub(crate) time_ms: i64,
    pub(crate) parts: Vec<Vec<u8>>,
    pub(crate) tenants: Vec<Option<i64>>,
    pub(crate) usage_tenants: Vec<i64>,
    pub(crate) usage_requests: Vec<String>,
    pub(crate) usage_counters: Vec<String>,
    pub(crate) usage_keys: Vec<String>,
    pub(crate) usage_amounts: Vec<i64>,
    pub(crate) every: i64,
}

impl AppendArgs {
    /// The batch's arguments; `signer`'s interval makes the statement say when a checkpoint
    /// is due (never without a signer).
    pub(crate) fn new(
        events: Vec<AuditEvent>,
        usage: &[UsageRecord],
        signer: Option<&(Arc<dyn AuditSigner>, u64)>,
    ) -> Result<Self, StoreError> {
        let mut parts = Vec::with_capacity(events.len() * 4);
        let mut tenants = Vec::with_capacity(events.len());
        for event in events {
            tenants.push(event.tenant_id.map(to_sql));
            parts.extend(entry_parts(event)?);
        }
        Ok(Self {
            time_ms: crate::clock::record_time_ms(),
            parts,
            tenants,
            usage_tenants: usage.iter().map(|r| to_sql(r.tenant_id)).collect(),
            usage_requests: usage.iter().map(|r| r.request_id.clone()).collect(),
            usage_counters: usage.iter().map(|r| r.counter.clone()).collect(),
            usage_keys: usage.iter().map(|r| r.key_id.clone()).collect(),
            usage_amounts: usage.iter().map(|r| i64::try_from(r.amount).unwrap_or(i64::MAX)).collect(),
            every: signer.map_or(0, |(_, every)| to_sql(*every)),
        })
    }

    /// The nine parameters, in `dg_append`'s order.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.time_ms,
            &self.parts,
            &self.tenants,
            &self.usage_tenants,
            &self.usage_requests,
            &self.usage_counters,
            &self.usage_keys,
            &self.usage_amounts,
            &self.every,
        ]
    }
}

/// The chain head after an append, and whether a checkpoint is due.
pub(crate) struct Appended {
    pub(crate) seq: u64,
    pub(crate) sha256: String,
    pub(crate) time_ms: i64,
    pub(crate) checkpoint_due: bool,
}

impl Appended {
    /// Reads `head_seq, head_sha256, head_time_ms, checkpoint_due` from `row` at column
    /// `first`; `None` when the statement appended nothing.
    pub(crate) fn from_row(row: &tokio_postgres::Row, first: usize) -> Option<Self> {
        let seq: Option<i64> = row.get(first);
        Some(Self {
            seq: seq?.unsigned_abs(),
            sha256: row.get::<_, Option<String>>(first + 1)?,
            time_ms: row.get::<_, Option<i64>>(first + 2)?,
            checkpoint_due: row.get(first + 3),
        })
    }
}

/// An entry's canonical JSON in four parts: before `prev_sha256`'s value, between it and
/// `seq`'s, between `seq`'s and `time_ms`'s, and after. Joined with the three values (the
/// hash between its quotes, the numbers as decimal digits) they are exactly the canonical
/// JSON of the entry with those values: RFC 8785 sorts the keys, which are fixed, and writes
/// these integers as plain digits. A key can be found by its quoted name followed by a
/// colon, which no string value holds unescaped.
pub(crate) fn entry_parts(event: AuditEvent) -> Result<[Vec<u8>; 4], StoreError> {
    let bytes = canonical(&AuditEntry { seq: 0, prev_sha256: String::new(), time_ms: 0, event })?;
    let find = |marker: &[u8], from: usize| {
        bytes
            .get(from..)
            .and_then(|rest| rest.windows(marker.len()).position(|w| w == marker))
            .map(|at| from + at)
            .ok_or_else(|| StoreError::Canonical(format!("audit entry without {}", String::from_utf8_lossy(marker))))
    };
    const PREV: &[u8] = br#""prev_sha256":""#;
    const SEQ: &[u8] = br#""seq":"#;
    const TIME: &[u8] = br#""time_ms":"#;
    // The keys in RFC 8785's order: prev_sha256 < seq < time_ms.
    let prev = find(PREV, 0)? + PREV.len();
    let seq = find(SEQ, prev)? + SEQ.len();
    let time = find(TIME, seq)? + TIME.len();
    let zero = |at: usize| bytes.get(at) == Some(&b'0');
    if bytes.get(prev) != Some(&b'"') || !zero(seq) || !zero(time) {
        return Err(StoreError::Canonical("audit entry's chain fields are not where expected".into()));
    }
    Ok([bytes[..prev].to_vec(), bytes[prev..seq].to_vec(), bytes[seq + 1..time].to_vec(), bytes[time + 1..].to_vec()])
}

/// Appends `events` and records `usage` in the caller's transaction (one statement), and
/// signs a checkpoint in it when one is due. Returns the new head's seq. The head is the
/// last row a transaction locks (after its run and tenant rows).
pub(crate) async fn append_in(
    tx: &Transaction<'_>,
    events: Vec<AuditEvent>,
    usage: &[UsageRecord],
    signer: Option<&(Arc<dyn AuditSigner>, u64)>,
) -> Result<u64, StoreError> {
    let args = AppendArgs::new(events, usage, signer)?;
    let row = cached::query_one(tx, "SELECT * FROM dg_append($1, $2, $3, $4, $5, $6, $7, $8, $9)", &args.params())
        .await
        .map_err(pg("append audit entries"))?;
    let Some(head) = Appended::from_row(&row, 0) else {
        return Err(StoreError::Canonical("audit append returned no head".into()));
    };
    if let Some((signer, _)) = signer.filter(|_| head.checkpoint_due) {
        lock_checkpoints(tx).await?;
        sign_at(tx, signer.as_ref(), (head.seq, head.sha256), head.time_ms).await?;
    }
    Ok(head.seq)
}

async fn last_checkpoint(tx: &Transaction<'_>) -> Result<Option<Checkpoint>, StoreError> {
    let row =
        cached::query_opt(tx, "SELECT checkpoint_json FROM audit_checkpoints ORDER BY entry_count DESC LIMIT 1", &[])
            .await
            .map_err(pg("read checkpoint"))?;
    row.map(|row| parse_checkpoint(&row.get::<_, Vec<u8>>(0), "last")).transpose()
}

fn parse_checkpoint(bytes: &[u8], key: &str) -> Result<Checkpoint, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        table: "audit_checkpoints",
        key: key.to_string(),
        reason: err.to_string(),
    })
}

/// Waits for the checkpoint lock, held to the end of `tx`.
async fn lock_checkpoints(tx: &Transaction<'_>) -> Result<(), StoreError> {
    cached::execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&CHECKPOINT_LOCK])
        .await
        .map_err(pg("take the checkpoint lock"))?;
    Ok(())
}

/// Signs and stores a checkpoint of `head` (the caller holds the checkpoint lock), unless
/// the newest checkpoint covers it already (a signer that held the lock before).
async fn sign_at(
    tx: &Transaction<'_>,
    signer: &dyn AuditSigner,
    head: (u64, String),
    time_ms: i64,
) -> Result<Checkpoint, StoreError> {
    let prev = match last_checkpoint(tx).await? {
        Some(last) if last.body.entry_count >= head.0 => return Ok(last),
        Some(last) => last.sha256()?,
        None => GENESIS_SHA256.to_string(),
    };
    let checkpoint = make_checkpoint(signer, &head, prev, time_ms)?;
    cached::execute(
        tx,
        "INSERT INTO audit_checkpoints (entry_count, checkpoint_json) VALUES ($1, $2)",
        &[&to_sql(head.0), &canonical(&checkpoint)?],
    )
    .await
    .map_err(pg("write audit checkpoint"))?;
    Ok(checkpoint)
}

/// What a checkpoint signer does when another holds the checkpoint lock.
#[derive(Clone, Copy)]
enum SignerBusy {
    /// Wait for it, then sign whatever it left uncovered.
    Wait,
    /// Leave it to that one.
    Skip,
}

impl PgStore {
    /// Appends events to the chain and records usage in one transaction.
    ///
    /// # Errors
    /// The database's errors (nothing is recorded then).
    pub fn append_audit(&self, events: Vec<AuditEvent>, usage: Vec<UsageRecord>) -> Result<u64, StoreError> {
        let signer = self.signer();
        self.conn.block_on(async {
            let (_permit, mut client) = self.conn.writer("append audit").await?;
            let tx = client.transaction().await.map_err(pg("begin audit append"))?;
            let seq = append_in(&tx, events, &usage, signer.as_ref()).await?;
            tx.commit().await.map_err(pg("commit audit append"))?;
            Ok(seq)
        })
    }

    /// Signs a checkpoint at the head if entries were added since the last one; returns the
    /// newest checkpoint. Waits for another signer (node or thread) to finish first.
    ///
    /// # Errors
    /// The database's or the signer's errors.
    pub fn audit_checkpoint_now(&self, signer: &Arc<dyn AuditSigner>) -> Result<Option<Checkpoint>, StoreError> {
        self.checkpoint_committed_head(signer, SignerBusy::Wait)
    }

    /// After a run write whose group crossed the interval: signs a checkpoint of the head as
    /// committed, unless another signer holds the checkpoint lock (its checkpoint covers
    /// the head it read; a later write that finds the interval passed again signs the next).
    /// The write is committed either way: a failure here is reported, not the write's.
    pub(crate) fn checkpoint_after_write(&self, signer: &Arc<dyn AuditSigner>) {
        if let Err(err) = self.checkpoint_committed_head(signer, SignerBusy::Skip) {
            eprintln!("dg-storage: audit checkpoint after a run write failed (the next one due retries): {err}");
        }
    }

    /// A checkpoint of the committed head, under the checkpoint lock only: appends of
    /// every node go on meanwhile, as they never wait for this lock while holding the head.
    fn checkpoint_committed_head(
        &self,
        signer: &Arc<dyn AuditSigner>,
        busy: SignerBusy,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("audit checkpoint").await?;
            let tx = client.transaction().await.map_err(pg("begin audit checkpoint"))?;
            let locked = match busy {
                SignerBusy::Wait => {
                    lock_checkpoints(&tx).await?;
                    true
                }
                SignerBusy::Skip => cached::query_one(&tx, "SELECT pg_try_advisory_xact_lock($1)", &[&CHECKPOINT_LOCK])
                    .await
                    .map_err(pg("take the checkpoint lock"))?
                    .get::<_, bool>(0),
            };
            if !locked {
                return Ok(None);
            }
            // Read after the lock: at least the head any earlier signer covered.
            let row = cached::query_one(&tx, "SELECT seq, sha256, time_ms FROM audit_head", &[])
                .await
                .map_err(pg("read the audit chain head"))?;
            let (seq, sha, head_time): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
            let made = if seq == 0 {
                None
            } else {
                let time_ms = crate::clock::record_time_ms().max(head_time);
                Some(sign_at(&tx, signer.as_ref(), (seq.unsigned_abs(), sha), time_ms).await?)
            };
            tx.commit().await.map_err(pg("commit audit checkpoint"))?;
            Ok(made)
        })
    }

    /// Verifies the whole chain and every checkpoint, reading the entries in pages inside one
    /// repeatable-read snapshot (appends by other nodes meanwhile are not seen half-way).
    ///
    /// # Errors
    /// The database's errors while reading.
    pub fn verify_audit(&self, ring: &PublicKeyRing) -> Result<AuditReport, StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("verify audit").await?;
            let tx = snapshot(&mut client, "begin audit verification").await?;
            let mut verifier = ChainVerifier::new(1, GENESIS_SHA256);
            let mut after = 0i64;
            loop {
                let rows = cached::query(
                    &tx,
                    "SELECT seq, entry_json, entry_sha256 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &VERIFY_PAGE],
                )
                .await
                .map_err(pg("read audit entries"))?;
                for row in &rows {
                    let seq: i64 = row.get(0);
                    let json: Option<Vec<u8>> = row.get(1);
                    let sha: String = row.get(2);
                    verifier.entry(seq.unsigned_abs(), json.as_deref(), &sha);
                    after = seq;
                }
                if i64::try_from(rows.len()).unwrap_or(i64::MAX) < VERIFY_PAGE {
                    break;
                }
            }
            let head = cached::query_one(&tx, "SELECT seq, sha256 FROM audit_head", &[])
                .await
                .map_err(pg("read audit head"))?;
            let (head_seq, head_sha): (i64, String) = (head.get(0), head.get(1));
            let rows = cached::query(
                &tx,
                "SELECT entry_count, checkpoint_json FROM audit_checkpoints ORDER BY entry_count",
                &[],
            )
            .await
            .map_err(pg("read audit checkpoints"))?;
            let mut checkpoints = Vec::with_capacity(rows.len());
            for row in &rows {
                let count: i64 = row.get(0);
                checkpoints.push(parse_checkpoint(&row.get::<_, Vec<u8>>(1), &count.to_string())?);
            }
            verifier.checkpoints(&checkpoints, ring, Some(GENESIS_SHA256));
            // The head row plays the SQLite witness file's part: a tail cut together with its
            // checkpoints is still seen (reported after the checkpoints' own findings, which
            // name the first missing entry when they cover it).
            if head_seq > after {
                verifier.report.fail(
                    after.unsigned_abs() + 1,
                    format!("log truncated: the chain head records entry {head_seq} but the log ends at {after}"),
                );
            } else if head_seq < after {
                verifier.report.fail(
                    head_seq.unsigned_abs() + 1,
                    format!("entries past the chain head: it records entry {head_seq}, the log ends at {after}"),
                );
            } else if head_seq > 0 && !verifier.links_to(&head_sha) {
                verifier.report.fail(head_seq.unsigned_abs(), "the chain head's sha256 is not the newest entry's");
            }
            tx.commit().await.map_err(pg("end audit verification"))?;
            Ok(verifier.report)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(reason: String, target: String, tenant: Option<u64>, role: Option<String>) -> AuditEvent {
        AuditEvent {
            principal: "k1".into(),
            role,
            tenant_id: tenant,
            namespace_id: tenant.map(|t| t + 1),
            action: "tool_call".into(),
            target,
            outcome: "ok".into(),
            reason,
            request_id: "r-1".into(),
            request_sha256: None,
            response_sha256: Some("ab".repeat(32)),
        }
    }

    proptest! {
        /// The parts joined with the head's values, as `dg_append` joins them, are the
        /// canonical JSON the node itself would hash, whatever the event's strings hold
        /// (the keys' own spellings among them).
        #[test]
        fn the_parts_joined_with_the_heads_values_are_the_entrys_canonical_json(
            reason in prop_oneof![
                Just(r#""seq":0,"time_ms":0,"prev_sha256":"""#.to_string()),
                Just("\"seq\":".to_string()),
                ".{0,40}",
            ],
            target in ".{0,20}",
            tenant in proptest::option::of(0u64..u64::MAX / 2),
            role in proptest::option::of("[a-z\"\\\\]{0,8}"),
            seq in 1u64..(1 << 53),
            time_ms in 0i64..(1 << 53),
            prev in "[0-9a-f]{64}",
        ) {
            let event = event(reason, target, tenant, role);
            let [a, b, c, d] = entry_parts(event.clone()).unwrap();
            let joined = [a, prev.clone().into_bytes(), b, seq.to_string().into_bytes(), c, time_ms.to_string().into_bytes(), d].concat();
            let expected = canonical(&AuditEntry { seq, prev_sha256: prev, time_ms, event }).unwrap();
            prop_assert_eq!(String::from_utf8(joined).unwrap(), String::from_utf8(expected).unwrap());
        }
    }
}
