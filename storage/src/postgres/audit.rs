//! The deployment's one audit chain on PostgreSQL. Every append locks the chain's head row
//! (`audit_head`, `FOR UPDATE`) inside the transaction of the mutation it records, so the
//! entries of every node link into a single chain in commit order, and an entry is durable
//! exactly when its mutation is. The lock is taken last in a transaction (after the
//! mutation's own rows), which keeps its hold short and the lock order the same everywhere.
//! Record times never go back: an entry's time is at least its predecessor's, whichever
//! node's clock wrote it. Checkpoints are signed by whichever node reaches the interval,
//! with the key ring the nodes share.

use std::sync::Arc;

use deadpool_postgres::Transaction;
use dg_crypto::Sha256;
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

/// Appends `events` and records `usage` in the caller's transaction; signs a checkpoint when
/// `every` entries have passed since the last. Returns the new head's seq. Round trips: one
/// to lock the head (it answers the newest checkpoint too), one for the inserts and the head's
/// move sent together (pipelined) beside the usage rows, and a checkpoint's when one is due.
/// The head is the last row a transaction locks (after its run and tenant rows).
pub(crate) async fn append_in(
    tx: &Transaction<'_>,
    events: Vec<AuditEvent>,
    usage: &[UsageRecord],
    signer: Option<&(Arc<dyn AuditSigner>, u64)>,
) -> Result<u64, StoreError> {
    let row = cached::query_one(
        tx,
        "SELECT h.seq, h.sha256, h.time_ms, (SELECT max(entry_count) FROM audit_checkpoints)
         FROM audit_head h FOR UPDATE OF h",
        &[],
    )
    .await
    .map_err(pg("lock the audit chain head"))?;
    let (mut seq, mut sha, head_time): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
    let last_checkpoint = row.get::<_, Option<i64>>(3).map_or(0, i64::unsigned_abs);
    let time_ms = crate::clock::record_time_ms().max(head_time);
    // The entries, hashed here; then every statement at once.
    let mut rows: Vec<(i64, Vec<u8>, String, Option<i64>)> = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let tenant = event.tenant_id.map(to_sql);
        let entry = AuditEntry { seq: seq.unsigned_abs(), prev_sha256: sha, time_ms, event };
        let bytes = canonical(&entry)?;
        sha = hex::encode(Sha256::digest(&bytes));
        rows.push((seq, bytes, sha.clone(), tenant));
    }
    let params: Vec<[&(dyn ToSql + Sync); 5]> = rows
        .iter()
        .map(|(seq, bytes, sha, tenant)| [seq as &(dyn ToSql + Sync), bytes, sha, tenant, &time_ms])
        .collect();
    let inserts = params.iter().map(|params| {
        cached::execute(
            tx,
            "INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES ($1, $2, $3, $4, $5)",
            params,
        )
    });
    let head_params: [&(dyn ToSql + Sync); 3] = [&seq, &sha, &time_ms];
    let head = cached::execute(tx, "UPDATE audit_head SET seq = $1, sha256 = $2, time_ms = $3", &head_params);
    // The usage rows one after the other (rows locked in the batch's order, as a quota's
    // charge locks them), beside the inserts and the head's move: those touch only new rows
    // and the head this transaction holds, so sending them together cannot deadlock.
    let usage_rows = async {
        for record in usage {
            crate::postgres::usage::record(tx, record, time_ms).await?;
        }
        Ok(())
    };
    let (_, _, ()) = futures_util::future::try_join3(futures_util::future::try_join_all(inserts), head, usage_rows)
        .await
        .map_err(pg("append audit entries"))?;
    if let Some((signer, every)) = signer {
        if seq.unsigned_abs() >= last_checkpoint.saturating_add(*every) {
            sign_at(tx, signer.as_ref(), (seq.unsigned_abs(), sha), time_ms).await?;
        }
    }
    Ok(seq.unsigned_abs())
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

/// Signs and stores a checkpoint of `head` (the head row is locked by the caller).
async fn sign_at(
    tx: &Transaction<'_>,
    signer: &dyn AuditSigner,
    head: (u64, String),
    time_ms: i64,
) -> Result<Checkpoint, StoreError> {
    let prev = match last_checkpoint(tx).await? {
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

impl PgStore {
    /// Appends events to the chain and records usage in one transaction.
    ///
    /// # Errors
    /// The database's errors (nothing is recorded then).
    pub fn append_audit(&self, events: Vec<AuditEvent>, usage: Vec<UsageRecord>) -> Result<u64, StoreError> {
        let signer = self.signer();
        self.conn.block_on(async {
            let mut client = self.conn.client("append audit").await?;
            let tx = client.transaction().await.map_err(pg("begin audit append"))?;
            let seq = append_in(&tx, events, &usage, signer.as_ref()).await?;
            tx.commit().await.map_err(pg("commit audit append"))?;
            Ok(seq)
        })
    }

    /// Signs a checkpoint at the head if entries were added since the last one; returns the
    /// newest checkpoint.
    ///
    /// # Errors
    /// The database's or the signer's errors.
    pub fn audit_checkpoint_now(&self, signer: &Arc<dyn AuditSigner>) -> Result<Option<Checkpoint>, StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("audit checkpoint").await?;
            let tx = client.transaction().await.map_err(pg("begin audit checkpoint"))?;
            let row = cached::query_one(&tx, "SELECT seq, sha256, time_ms FROM audit_head FOR UPDATE", &[])
                .await
                .map_err(pg("lock the audit chain head"))?;
            let (seq, sha, head_time): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
            let made = match last_checkpoint(&tx).await? {
                Some(last) if last.body.entry_count >= seq.unsigned_abs() => Some(last),
                _ if seq == 0 => None,
                _ => {
                    let time_ms = crate::clock::record_time_ms().max(head_time);
                    Some(sign_at(&tx, signer.as_ref(), (seq.unsigned_abs(), sha), time_ms).await?)
                }
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
