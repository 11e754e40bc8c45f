//! Reads for people browsing (the admin UI, `admin/run_list`, `admin/audit_list`) on
//! PostgreSQL, with the bounds of the SQLite store: a page holds at most `MAX_PAGE` rows, an
//! audit search reads at most `AUDIT_SCAN_LIMIT` entries.

use tokio_postgres::types::ToSql;

use crate::document::decode;
use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::store::audit::AuditEntry;
use crate::store::browse::{AuditFilter, AuditPage, RunPage, RunQuery, AUDIT_SCAN_LIMIT, MAX_PAGE};
use crate::store::to_sql;

/// Entries read per round trip by an audit search.
const SCAN_PAGE: i64 = 1000;

impl PgStore {
    /// One page of runs matching `query`.
    ///
    /// # Errors
    /// The database's errors.
    pub fn runs_page(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut push = |clause: &str, value: Box<dyn ToSql + Sync + Send>, args: &mut Vec<_>| {
            args.push(value);
            clauses.push(clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(tenant) = query.tenant {
            push("tenant_id = ?", Box::new(to_sql(tenant)), &mut args);
        }
        if let Some(namespace) = query.namespace {
            push("namespace_id = ?", Box::new(to_sql(namespace)), &mut args);
        }
        if !query.within_namespaces.is_empty() {
            let ids: Vec<i64> = query.within_namespaces.iter().map(|id| to_sql(*id)).collect();
            push("namespace_id = ANY(?)", Box::new(ids), &mut args);
        }
        if let Some(scenario) = &query.scenario_id {
            push("scenario_id = ?", Box::new(scenario.clone()), &mut args);
        }
        if let Some(status) = &query.status {
            push("status = ?", Box::new(status.clone()), &mut args);
        }
        let filter = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let direction = if query.ascending { "ASC" } else { "DESC" };
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|arg| arg.as_ref() as &(dyn ToSql + Sync)).collect();
        let total: i64 = self
            .query("count runs", &format!("SELECT count(*) FROM runs{filter}"), &params)?
            .first()
            .map_or(0, |row| row.get(0));
        let rows = self.query(
            "list runs",
            &format!(
                "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, saved_at_ms FROM runs{filter}
                 ORDER BY {} {direction}, tenant_id, namespace_id, run_id LIMIT {} OFFSET {}",
                query.sort.column(),
                query.limit.min(MAX_PAGE),
                i64::try_from(query.offset).unwrap_or(i64::MAX),
            ),
            &params,
        )?;
        let runs = rows.iter().map(crate::postgres::runs::run_summary).collect();
        Ok(RunPage { total: total.unsigned_abs(), runs })
    }

    /// The newest audit entries (before `before_seq`) that `filter` keeps: at most `limit`
    /// (capped at `MAX_PAGE`), reading at most `AUDIT_SCAN_LIMIT` entries, each checked
    /// against its hash as it is read.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] (counted); the database's errors.
    pub fn audit_recent(
        &self,
        filter: &AuditFilter,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<AuditPage, StoreError> {
        let limit = usize::try_from(limit.min(MAX_PAGE)).unwrap_or(0);
        let scan_limit = u64::try_from(AUDIT_SCAN_LIMIT).unwrap_or(u64::MAX);
        let mut page = AuditPage { entries: Vec::new(), next_before_seq: None, scanned: 0 };
        let mut before = before_seq.map_or(i64::MAX, to_sql);
        loop {
            let rows = self.query(
                "search audit",
                "SELECT seq, entry_json, entry_sha256, tenant_id FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                &[&before, &SCAN_PAGE],
            )?;
            for row in &rows {
                let seq: i64 = row.get(0);
                // Every entry read counts towards the bound, whatever the filter keeps.
                page.scanned += 1;
                let tenant: Option<i64> = row.get(3);
                let tenant_kept = filter.tenant.is_none() || tenant.map(i64::unsigned_abs) == filter.tenant;
                let json: Option<Vec<u8>> = row.get(1);
                if let (Some(json), true) = (json, tenant_kept) {
                    let entry: AuditEntry = decode(&json, row.get::<_, &str>(2), "audit_log", || seq.to_string())
                        .map_err(|err| self.integrity_failed(err))?;
                    if filter.keeps(&entry) {
                        page.entries.push(entry);
                    }
                }
                before = seq;
                if page.entries.len() >= limit || page.scanned >= scan_limit {
                    page.next_before_seq = Some(seq.unsigned_abs());
                    return Ok(page);
                }
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < SCAN_PAGE {
                return Ok(page);
            }
        }
    }
}
