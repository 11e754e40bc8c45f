//! Reads for people browsing the appliance (the admin UI, `admin/run_list`,
//! `admin/audit_list`): runs filtered, sorted and paged; the newest audit entries
//! matching a filter. Every answer is bounded: a page holds at most [`MAX_PAGE`] rows and an
//! audit search reads at most [`AUDIT_SCAN_LIMIT`] entries.

use std::ops::ControlFlow;

use rusqlite::types::Value as SqlValue;
use serde::Serialize;

use crate::document::decode;
use crate::error::StoreError;
use crate::store::audit::AuditEntry;
use crate::store::audit_segments::{each_entry, Walk};
use crate::store::{to_sql, RunSummary, Store};

/// The most rows one page answers.
pub const MAX_PAGE: u32 = 200;
/// The most audit entries one search reads, newest first, before it answers with what it
/// found (and where to go on from).
pub const AUDIT_SCAN_LIMIT: usize = 20_000;

/// What a run list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunSort {
    /// Last save time.
    #[default]
    Saved,
    /// Run id.
    RunId,
    /// Scenario id.
    Scenario,
    /// Status.
    Status,
}

impl RunSort {
    /// Parses a sort key (`saved`, `run_id`, `scenario`, `status`).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "saved" => Self::Saved,
            "run_id" => Self::RunId,
            "scenario" => Self::Scenario,
            "status" => Self::Status,
            _ => return None,
        })
    }

    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::Saved => "saved_at_ms",
            Self::RunId => "run_id",
            Self::Scenario => "scenario_id",
            Self::Status => "status",
        }
    }
}

/// Which runs, in which order, which page.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only this tenant's runs (`None`: every tenant; organisation-wide callers only).
    pub tenant: Option<u64>,
    /// Only this namespace's.
    pub namespace: Option<u64>,
    /// Only runs in these namespaces (the caller's key is bound to them); empty: any.
    pub within_namespaces: Vec<u64>,
    /// Only runs of this scenario.
    pub scenario_id: Option<String>,
    /// Only runs with this status.
    pub status: Option<String>,
    /// Sort key.
    pub sort: RunSort,
    /// Ascending instead of descending.
    pub ascending: bool,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to answer (at most [`MAX_PAGE`]).
    pub limit: u32,
}

/// One page of runs and how many match in all.
#[derive(Debug, Clone, Serialize)]
pub struct RunPage {
    /// Runs matching the filter.
    pub total: u64,
    /// This page.
    pub runs: Vec<RunSummary>,
}

/// Which audit entries a search keeps.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant's entries.
    pub tenant: Option<u64>,
    /// Only this action (`tool_call`, `admin`, `ui_sign_in`, ...).
    pub action: Option<String>,
    /// Only this outcome (`ok`, `deny`, `error`).
    pub outcome: Option<String>,
    /// Only entries whose principal contains this text.
    pub principal: Option<String>,
    /// Only entries whose target contains this text.
    pub target: Option<String>,
}

impl AuditFilter {
    pub(crate) fn keeps(&self, entry: &AuditEntry) -> bool {
        self.action.as_ref().is_none_or(|a| &entry.event.action == a)
            && self.outcome.as_ref().is_none_or(|o| &entry.event.outcome == o)
            && self.principal.as_ref().is_none_or(|p| entry.event.principal.contains(p.as_str()))
            && self.target.as_ref().is_none_or(|t| entry.event.target.contains(t.as_str()))
    }
}

/// The newest entries matching a filter.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// Matching entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Where an older page starts (`before_seq` of the next search), when the search stopped
    /// before the chain's start.
    pub next_before_seq: Option<u64>,
    /// Entries read.
    pub scanned: u64,
}

impl Store {
    /// One page of runs matching `query`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn runs_page(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(tenant) = query.tenant {
            args.push(SqlValue::Integer(to_sql(tenant)));
            clauses.push(format!("tenant_id = ?{}", args.len()));
        }
        if let Some(namespace) = query.namespace {
            args.push(SqlValue::Integer(to_sql(namespace)));
            clauses.push(format!("namespace_id = ?{}", args.len()));
        }
        if !query.within_namespaces.is_empty() {
            let mut marks = Vec::new();
            for namespace in &query.within_namespaces {
                args.push(SqlValue::Integer(to_sql(*namespace)));
                marks.push(format!("?{}", args.len()));
            }
            clauses.push(format!("namespace_id IN ({})", marks.join(", ")));
        }
        if let Some(scenario) = &query.scenario_id {
            args.push(SqlValue::Text(scenario.clone()));
            clauses.push(format!("scenario_id = ?{}", args.len()));
        }
        if let Some(status) = &query.status {
            args.push(SqlValue::Text(status.clone()));
            clauses.push(format!("status = ?{}", args.len()));
        }
        let filter = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let direction = if query.ascending { "ASC" } else { "DESC" };
        let count_sql = format!("SELECT count(*) FROM runs{filter}");
        let page_sql = format!(
            "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, saved_at_ms FROM runs{filter}
             ORDER BY {} {direction}, tenant_id, namespace_id, run_id LIMIT {} OFFSET {}",
            query.sort.column(),
            query.limit.min(MAX_PAGE),
            i64::try_from(query.offset).unwrap_or(i64::MAX),
        );
        self.read(|conn| {
            let total: i64 = conn
                .query_row(&count_sql, rusqlite::params_from_iter(args.iter()), |row| row.get(0))
                .map_err(StoreError::sqlite("count runs"))?;
            let mut stmt = conn.prepare(&page_sql).map_err(StoreError::sqlite("list runs"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), RunSummary::from_row)
                .map_err(StoreError::sqlite("list runs"))?;
            let runs = rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite("list runs"))?;
            Ok(RunPage { total: total.unsigned_abs(), runs })
        })
    }

    /// The newest audit entries (before `before_seq`, when given) that `filter` keeps: at
    /// most `limit` (capped at [`MAX_PAGE`]), reading at most [`AUDIT_SCAN_LIMIT`] entries.
    /// Each entry's hash is checked as it is read.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] for an altered entry; SQLite errors.
    pub fn audit_recent(
        &self,
        filter: &AuditFilter,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<AuditPage, StoreError> {
        let limit = usize::try_from(limit.min(MAX_PAGE)).unwrap_or(0);
        let scan_limit = u64::try_from(AUDIT_SCAN_LIMIT).unwrap_or(u64::MAX);
        self.read(|conn| {
            let mut page = AuditPage { entries: Vec::new(), next_before_seq: None, scanned: 0 };
            each_entry(conn, Walk::Before(before_seq.unwrap_or(u64::MAX)), &mut |stored| {
                // Every entry walked counts towards the bound, whatever the filter keeps.
                page.scanned += 1;
                let tenant_kept = filter.tenant.is_none() || stored.tenant_id == filter.tenant;
                if let (Some(json), true) = (&stored.json, tenant_kept) {
                    let entry: AuditEntry = decode(json, &stored.sha256, "audit_log", || stored.seq.to_string())?;
                    if filter.keeps(&entry) {
                        page.entries.push(entry);
                    }
                }
                if page.entries.len() >= limit || page.scanned >= scan_limit {
                    page.next_before_seq = Some(stored.seq);
                    return Ok(ControlFlow::Break(()));
                }
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(page)
        })
    }
}
