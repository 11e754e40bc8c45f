//! Moving a deployment's state between backends (`dg-appliance store copy`): SQLite →
//! PostgreSQL when a single box grows into several nodes, and back. The source is read row
//! by row as [`CopyRecord`]s (documents as their canonical JSON, audit entries and
//! checkpoints byte for byte with their recorded hashes), written into an empty target in
//! batches, then checked on arrival: every document against its hash (`check`), the audit
//! chain and its signed checkpoints (`verify_audit`), and the target's counts and chain head
//! against the source's.

use serde::Serialize;

pub use crate::copy_record::CopyRecord;
use crate::error::StoreError;
use crate::seam::StateStore;
use crate::signing::PublicKeyRing;
use crate::store::audit::AuditReport;

/// Rows written per batch.
const BATCH: usize = 500;

/// What a copy moved and found on arrival.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// Rows copied, by kind.
    pub rows: std::collections::BTreeMap<&'static str, u64>,
    /// Documents whose hash the target checked.
    pub documents_checked: u64,
    /// The target's audit chain, verified.
    pub audit: AuditReport,
}

/// Copies `from` into the empty `to`, then checks the target: every document against its
/// hash, the audit chain and checkpoints against `ring`, and the counts and chain head
/// against the source.
///
/// # Errors
/// A non-empty target ([`StoreError::Conflict`]), either backend's errors, or
/// [`StoreError::Integrity`] when the target does not check out (its contents are then not
/// to be used: drop them and copy again).
pub fn copy_store(from: &dyn StateStore, to: &dyn StateStore, ring: &PublicKeyRing) -> Result<CopyReport, StoreError> {
    let report = snapshot_store(from, to, ring)?;
    let source_audit = from.verify_audit(ring)?;
    let same_head = from.audit_head()? == to.audit_head()?;
    if report.audit.entries != source_audit.entries || !same_head {
        return Err(StoreError::Integrity {
            table: "copy",
            key: format!(
                "the target's audit chain differs from the source's: {:?} against {source_audit:?}",
                report.audit
            ),
        });
    }
    let source = from.check()?;
    if source.documents_checked != report.documents_checked {
        return Err(StoreError::Integrity {
            table: "copy",
            key: format!(
                "{} documents in the source, {} in the target",
                source.documents_checked, report.documents_checked
            ),
        });
    }
    Ok(report)
}

/// Copies one consistent snapshot of `from` (which may go on serving: each backend's `dump`
/// reads one snapshot) into the empty `to`, and checks the target on its own: every
/// document against its hash, the audit chain and checkpoints against `ring`. The backup of a
/// PostgreSQL deployment is made this way (`backup::create`); [`copy_store`] adds the
/// comparisons with a source that no longer changes.
///
/// # Errors
/// As [`copy_store`].
pub fn snapshot_store(
    from: &dyn StateStore,
    to: &dyn StateStore,
    ring: &PublicKeyRing,
) -> Result<CopyReport, StoreError> {
    if !to.is_empty_store()? {
        return Err(StoreError::Conflict("the target store is not empty: copy only into a new database".into()));
    }
    let mut rows = std::collections::BTreeMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    from.dump(&mut |record| {
        *rows.entry(record.kind()).or_insert(0u64) += 1;
        batch.push(record);
        if batch.len() >= BATCH {
            to.load(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    to.load(batch)?;
    to.finish_load()?;
    let checked = to.check()?;
    if !checked.ok() {
        return Err(StoreError::Integrity {
            table: "copy",
            key: format!("the target does not check out: {:?} {:?}", checked.failures, checked.usage_drift),
        });
    }
    let audit = to.verify_audit(ring)?;
    if !audit.ok() {
        return Err(StoreError::Integrity {
            table: "copy",
            key: format!("the target's audit chain does not verify: {audit:?}"),
        });
    }
    Ok(CopyReport { rows, documents_checked: checked.documents_checked, audit })
}
