//! The audit chain: the newest entries with filters (`audit_list`), verification with its
//! result (`audit_verify`), and the export as a JSONL download (`audit_export`).

use std::fmt::Write as _;

use dg_identity::Operation;
use serde_json::{json, Value};

use crate::ui::html::{self, esc, json_text as text, url_part};
use crate::ui::{PageCtx, UiResponse};

const FILTERS: [(&str, &str); 5] = [
    ("action", "Action"),
    ("outcome", "Outcome"),
    ("principal", "Principal contains"),
    ("target", "Target contains"),
    ("tenant", "Tenant"),
];

/// `GET /ui/audit`.
pub fn list(ctx: &PageCtx<'_>) -> UiResponse {
    let params = json!({
        "action": ctx.param("action"),
        "outcome": ctx.param("outcome"),
        "principal": ctx.param("principal"),
        "target": ctx.param("target"),
        "tenant_id": ctx.param("tenant").and_then(|t| t.parse::<u64>().ok()),
        "before_seq": ctx.param("before").and_then(|b| b.parse::<u64>().ok()),
        "limit": 50,
    });
    let found = match ctx.calls.admin(Operation::AuditList, params) {
        Ok(found) => found,
        Err(err) => return ctx.failed("Audit", "/ui/audit", &err),
    };
    let mut body = String::from(
        "<p><a href=\"/ui/audit/verify\">Verify the chain</a> · <a href=\"/ui/audit/export\" download>Download the export (JSONL)</a></p>",
    );
    let mut fields = String::new();
    for (name, label) in FILTERS {
        fields.push_str(&html::input(
            name,
            label,
            ctx.param(name).unwrap_or(""),
            if name == "tenant" { "number" } else { "text" },
            false,
        ));
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/ui/audit\" class=\"filters\" role=\"search\" aria-label=\"Filter audit entries\">{fields}<button type=\"submit\">Filter</button></form>"
    );
    let rows = html::rows_of(&found, "entries", |e| {
        vec![
            esc(&text(e, "seq")),
            esc(&e.get("time_ms").and_then(Value::as_i64).map(html::time_ms).unwrap_or_default()),
            esc(&text(e, "principal")),
            esc(&text(e, "role")),
            esc(&text(e, "action")),
            esc(&text(e, "target")),
            esc(&text(e, "outcome")),
            esc(&text(e, "reason")),
            esc(&text(e, "tenant_id")),
        ]
    });
    let headers =
        ["Seq", "Time", "Principal", "Role", "Action", "Target", "Outcome", "Reason", "Tenant"].map(String::from);
    body.push_str(&html::table("Newest audit entries first", &headers, &rows));
    if let Some(before) = found.get("next_before_seq").and_then(Value::as_u64) {
        let mut next = String::from("/ui/audit?");
        for (name, _) in FILTERS {
            if let Some(value) = ctx.param(name) {
                let _ = write!(next, "{name}={}&", url_part(value));
            }
        }
        let _ = write!(next, "before={before}");
        let _ = write!(body, "<nav class=\"pager\" aria-label=\"Pages\">{}</nav>", html::link(&next, "Older entries"));
    }
    ctx.page("Audit", "/ui/audit", &body)
}

/// `GET /ui/audit/verify`: the chain and its checkpoints verified now.
pub fn verify(ctx: &PageCtx<'_>) -> UiResponse {
    match ctx.calls.admin(Operation::AuditVerify, json!({})) {
        Ok(report) => {
            let ok = report.get("problems").and_then(Value::as_array).is_none_or(Vec::is_empty)
                && report.get("ok").and_then(Value::as_bool).unwrap_or(true);
            let verdict = if ok {
                "<p class=\"status-ok\" id=\"verdict\">Verified: the chain is intact.</p>"
            } else {
                "<p class=\"status-bad\" id=\"verdict\">Verification FAILED: see the problems below.</p>"
            };
            let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
            let body = format!("{verdict}<h2>Report</h2><pre><code>{}</code></pre>", esc(&pretty));
            ctx.page("Audit verification", "/ui/audit", &body)
        }
        Err(err) => ctx.failed("Audit verification", "/ui/audit", &err),
    }
}

/// `GET /ui/audit/export`: the chain as JSONL, with a fresh checkpoint.
pub fn export(ctx: &PageCtx<'_>) -> UiResponse {
    match ctx.calls.admin(Operation::AuditExport, json!({})) {
        Ok(found) => {
            let jsonl = found.get("jsonl").and_then(Value::as_str).unwrap_or("").as_bytes().to_vec();
            UiResponse::attachment("application/x-ndjson", "audit-export.jsonl", jsonl)
        }
        Err(err) => ctx.failed("Audit export", "/ui/audit", &err),
    }
}
