//! Runs: the filtered, sorted, paged list (`admin/run_list`), one run's stages, gate
//! evaluations, decisions and packets (`admin/run_get`, `admin/scenario_get`), runpack
//! export (`runpack_export`) and the signed bundle's download (the operation behind
//! `GET /runpacks/...`).

use std::fmt::Write as _;

use dg_identity::Operation;
use serde_json::{json, Value};

use crate::ui::html::{self, esc, json_text as text, url_part};
use crate::ui::{scope_of as scope, PageCtx, UiResponse};

const STATUSES: [&str; 3] = ["active", "completed", "failed"];
const SORTS: [(&str, &str); 4] =
    [("saved", "Last saved"), ("run_id", "Run"), ("scenario", "Scenario"), ("status", "Status")];
const PAGE: u64 = 50;

fn number(text: Option<&str>) -> Option<u64> {
    text.and_then(|t| t.parse::<u64>().ok())
}

/// A timestamp of the wire format (`{"kind": ..., "value": ...}`) as text.
#[must_use]
pub fn timestamp(value: &Value) -> String {
    match (value.get("kind").and_then(Value::as_str), value.get("value")) {
        (Some("unix_millis"), Some(ms)) => ms.as_i64().map_or_else(|| ms.to_string(), html::time_ms),
        (Some(kind), Some(v)) => format!("{kind} {v}"),
        _ => value.to_string(),
    }
}

/// `GET /ui/runs`.
pub fn list(ctx: &PageCtx<'_>) -> UiResponse {
    let principal = ctx.calls.principal();
    let tenant = number(ctx.param("tenant")).or(principal.tenant);
    let namespace = number(ctx.param("namespace"));
    let scenario = ctx.param("scenario").map(str::to_string);
    let status = ctx.param("status").filter(|s| STATUSES.contains(s)).map(str::to_string);
    let sort = ctx.param("sort").filter(|s| SORTS.iter().any(|(k, _)| k == s)).unwrap_or("saved").to_string();
    let ascending = ctx.param("order") == Some("asc");
    let page = number(ctx.param("page")).unwrap_or(1).max(1);
    let params = json!({
        "tenant_id": tenant, "namespace_id": namespace, "scenario_id": scenario, "status": status,
        "sort": sort, "order": if ascending { "asc" } else { "desc" },
        "offset": (page - 1) * PAGE, "limit": PAGE,
    });
    let found = match ctx.calls.admin(Operation::RunList, params) {
        Ok(found) => found,
        Err(err) => return ctx.failed("Runs", "/ui/runs", &err),
    };
    let query_for = |sort_key: &str, asc: bool, page: u64| -> String {
        let mut q = String::from("/ui/runs?");
        for (name, value) in [
            ("tenant", tenant.map(|t| t.to_string())),
            ("namespace", namespace.map(|n| n.to_string())),
            ("scenario", scenario.clone()),
            ("status", status.clone()),
        ] {
            if let Some(value) = value {
                let _ = write!(q, "{name}={}&", url_part(&value));
            }
        }
        let _ = write!(q, "sort={sort_key}&order={}&page={page}", if asc { "asc" } else { "desc" });
        q
    };
    let mut body = String::new();
    if let Some(done) = ctx.param("done") {
        body.push_str(&html::notice(done_text(done), false));
    }
    // Filters (a GET form: the filter is in the URL, so a result can be bookmarked).
    let mut status_options = vec![(String::new(), "any".to_string())];
    status_options.extend(STATUSES.iter().map(|s| ((*s).to_string(), (*s).to_string())));
    let sort_options: Vec<(String, String)> = SORTS.iter().map(|(k, l)| ((*k).to_string(), (*l).to_string())).collect();
    let order_options =
        vec![("desc".to_string(), "descending".to_string()), ("asc".to_string(), "ascending".to_string())];
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/ui/runs\" class=\"filters\" role=\"search\" aria-label=\"Filter runs\">{}{}{}{}{}{}<button type=\"submit\">Filter</button></form>",
        html::input("tenant", "Tenant", &tenant.map(|t| t.to_string()).unwrap_or_default(), "number", false),
        html::input("namespace", "Namespace", &namespace.map(|n| n.to_string()).unwrap_or_default(), "number", false),
        html::input("scenario", "Scenario", scenario.as_deref().unwrap_or(""), "text", false),
        html::select("status", "Status", &status_options, status.as_deref().unwrap_or("")),
        html::select("sort", "Sort by", &sort_options, &sort),
        html::select("order", "Order", &order_options, if ascending { "asc" } else { "desc" }),
    );
    let total = found.get("total").and_then(Value::as_u64).unwrap_or(0);
    let pages = total.div_ceil(PAGE).max(1);
    let headers: Vec<String> = [
        ("Tenant", None),
        ("Namespace", None),
        ("Run", Some("run_id")),
        ("Scenario", Some("scenario")),
        ("Status", Some("status")),
        ("Version", None),
        ("Last saved", Some("saved")),
    ]
    .iter()
    .map(|(label, key)| match key {
        Some(key) => {
            let now_sorted = *key == sort;
            let next_asc = if now_sorted { !ascending } else { true };
            let state = match (now_sorted, ascending) {
                (true, true) => " (sorted ascending)",
                (true, false) => " (sorted descending)",
                _ => "",
            };
            format!("<a href=\"{}\">{label}{state}</a>", esc(&query_for(key, next_asc, 1)))
        }
        None => (*label).to_string(),
    })
    .collect();
    let rows = html::rows_of(&found, "runs", |run| {
        let t = text(run, "/scope/tenant_id");
        let ns = text(run, "/scope/namespace_id");
        let id = text(run, "/run_id");
        vec![
            esc(&t),
            esc(&ns),
            html::link(&format!("/ui/runs/{t}/{ns}/{}", url_part(&id)), &id),
            esc(&text(run, "/scenario_id")),
            esc(&text(run, "/status")),
            esc(&text(run, "/version")),
            esc(&run.get("saved_at_ms").and_then(Value::as_i64).map(html::time_ms).unwrap_or_default()),
        ]
    });
    body.push_str(&html::table(&format!("{total} runs; page {page} of {pages}"), &headers, &rows));
    let _ = write!(body, "<nav class=\"pager\" aria-label=\"Pages\">");
    if page > 1 {
        let _ =
            write!(body, "<a href=\"{}\" rel=\"prev\">Previous page</a>", esc(&query_for(&sort, ascending, page - 1)));
    }
    let _ = write!(body, "<span>Page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(body, "<a href=\"{}\" rel=\"next\">Next page</a>", esc(&query_for(&sort, ascending, page + 1)));
    }
    body.push_str("</nav>");
    ctx.page("Runs", "/ui/runs", &body)
}

fn done_text(done: &str) -> &'static str {
    match done {
        "exported" => "Runpack exported. Its signed bundle can be downloaded below.",
        _ => "Done.",
    }
}

/// `GET /ui/runs/{tenant}/{namespace}/{run}`.
pub fn detail(ctx: &PageCtx<'_>, t: &str, ns: &str, run: &str) -> UiResponse {
    let title = format!("Run {run}");
    let Some((tenant, namespace)) = scope(t, ns) else {
        return UiResponse::html(
            404,
            html::page(&title, "/ui/runs", Some(&ctx.viewer()), &html::notice("No such run.", true)),
        );
    };
    let found = match ctx
        .calls
        .admin(Operation::RunGet, json!({"tenant_id": tenant, "namespace_id": namespace, "run_id": run}))
    {
        Ok(found) => found,
        Err(err) => return ctx.failed(&title, "/ui/runs", &err),
    };
    let state = found.get("state").cloned().unwrap_or(Value::Null);
    let scenario_id = text(&state, "/scenario_id");
    let current = text(&state, "/current_stage_id");
    let mut body = String::new();
    if let Some(done) = ctx.param("done") {
        body.push_str(&html::notice(done_text(done), false));
    }
    body.push_str(&html::facts(&[
        ("Tenant / namespace", format!("{tenant} / {namespace}")),
        (
            "Scenario",
            html::link(&format!("/ui/scenarios/{tenant}/{namespace}/{}", url_part(&scenario_id)), &scenario_id),
        ),
        ("Status", esc(&text(&state, "/status"))),
        ("Current stage", esc(&current)),
        ("Stage entered at", esc(&state.get("stage_entered_at").map(timestamp).unwrap_or_default())),
        ("Spec hash", format!("<code>{}</code>", esc(&text(&state, "/spec_hash/value")))),
        ("Write version", esc(&text(&found, "/version"))),
    ]));
    // Runpack: export (writers) and the signed bundle.
    body.push_str("<h2>Runpack</h2>");
    let base = format!("/ui/runs/{tenant}/{namespace}/{}", url_part(run));
    if ctx.calls.may(Operation::RunpackExport) {
        let fields = html::hidden("scenario_id", &scenario_id);
        body.push_str(&html::post_form(
            &format!("{base}/export"),
            &ctx.session.csrf_token,
            &fields,
            "Export runpack",
            "inline",
        ));
    }
    let _ = write!(
        body,
        "<p><a href=\"{}\" download>Download the signed bundle</a> (the last exported runpack of this run; \
         check it offline with <code>dg-appliance runpack verify BUNDLE --pubkey keyring.json</code>).</p>",
        esc(&format!("{base}/bundle"))
    );
    // Stages, from the scenario's spec.
    if let Ok(spec) = ctx.calls.admin(
        Operation::ScenarioGet,
        json!({"tenant_id": tenant, "namespace_id": namespace, "scenario_id": scenario_id}),
    ) {
        let spec: Value = spec
            .get("canonical_json")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let rows = html::rows_of(&spec, "stages", |stage| {
            let id = text(stage, "/stage_id");
            let gates: Vec<String> = stage
                .get("gates")
                .and_then(Value::as_array)
                .map(|g| g.iter().map(|gate| text(gate, "/gate_id")).collect())
                .unwrap_or_default();
            let mark = if id == current { "the run is here" } else { "" };
            vec![esc(&id), esc(&gates.join(", ")), esc(&text(stage, "/advance_to/kind")), mark.to_string()]
        });
        let headers = ["Stage", "Gates", "Advances to", "Current"].map(String::from);
        body.push_str("<h2>Stages</h2>");
        body.push_str(&html::table("Stages of the scenario", &headers, &rows));
    }
    let section = |title: &str, key: &str, headers: &[&str], row: &dyn Fn(&Value) -> Vec<String>| -> String {
        let rows = html::rows_of(&state, key, row);
        let headers: Vec<String> = headers.iter().map(|h| (*h).to_string()).collect();
        format!("<h2>{}</h2>{}", esc(title), html::table(title, &headers, &rows))
    };
    body.push_str(&section("Decisions", "decisions", &["Seq", "Stage", "Trigger", "Decided at", "Outcome"], &|d| {
        vec![
            esc(&text(d, "/seq")),
            esc(&text(d, "/stage_id")),
            esc(&text(d, "/trigger_id")),
            esc(&d.get("decided_at").map(timestamp).unwrap_or_default()),
            format!("<code>{}</code>", esc(&d.get("outcome").map(Value::to_string).unwrap_or_default())),
        ]
    }));
    body.push_str(&section(
        "Gate evaluations",
        "gate_evals",
        &["Trigger", "Stage", "Gate", "Result", "Conditions"],
        &|g| {
            let trace: Vec<String> = g
                .pointer("/evaluation/trace")
                .and_then(Value::as_array)
                .map(|t| t.iter().map(|c| format!("{}: {}", text(c, "/condition_id"), text(c, "/status"))).collect())
                .unwrap_or_default();
            vec![
                esc(&text(g, "/trigger_id")),
                esc(&text(g, "/stage_id")),
                esc(&text(g, "/evaluation/gate_id")),
                esc(&text(g, "/evaluation/status")),
                esc(&trace.join("; ")),
            ]
        },
    ));
    body.push_str(&section("Triggers", "triggers", &["Seq", "Trigger", "Kind", "Time", "Source"], &|t| {
        vec![
            esc(&text(t, "/seq")),
            esc(&text(t, "/event/trigger_id")),
            esc(&text(t, "/event/kind")),
            esc(&t.pointer("/event/time").map(timestamp).unwrap_or_default()),
            esc(&text(t, "/event/source_id")),
        ]
    }));
    body.push_str(&section("Packets", "packets", &["Packet", "Stage", "Schema", "Content hash", "Decision"], &|p| {
        vec![
            esc(&text(p, "/envelope/packet_id")),
            esc(&text(p, "/envelope/stage_id")),
            esc(&text(p, "/envelope/schema_id")),
            format!("<code>{}</code>", esc(&text(p, "/envelope/content_hash/value"))),
            esc(&text(p, "/decision_id")),
        ]
    }));
    ctx.page(&title, "/ui/runs", &body)
}

/// `POST /ui/runs/{tenant}/{namespace}/{run}/export`: `runpack_export` now, then back to
/// the run.
pub fn export(ctx: &PageCtx<'_>, t: &str, ns: &str, run: &str) -> UiResponse {
    let title = format!("Run {run}");
    let Some((tenant, namespace)) = scope(t, ns) else {
        return UiResponse::text(404, "no such run");
    };
    let arguments = json!({
        "scenario_id": ctx.field("scenario_id").unwrap_or(""),
        "tenant_id": tenant, "namespace_id": namespace, "run_id": run,
        "generated_at": {"kind": "unix_millis", "value": dg_storage::now_ms()},
        "include_verification": false,
    });
    match ctx.calls.tool(Operation::RunpackExport, arguments) {
        Ok(_) => UiResponse::redirect(&format!("/ui/runs/{tenant}/{namespace}/{}?done=exported", url_part(run))),
        Err(err) => ctx.failed(&title, "/ui/runs", &err),
    }
}

/// `GET /ui/runs/{tenant}/{namespace}/{run}/bundle`: the signed bundle, as a file.
pub fn bundle(ctx: &PageCtx<'_>, t: &str, ns: &str, run: &str) -> UiResponse {
    let title = format!("Run {run}");
    let Some((tenant, namespace)) = scope(t, ns) else {
        return UiResponse::text(404, "no such run");
    };
    match ctx.calls.runpack_bundle(tenant, namespace, run) {
        Ok((bytes, bundle_run)) => UiResponse::attachment(
            "application/zstd",
            &crate::ops::tools::runpack::download_file_name(&bundle_run),
            bytes,
        ),
        Err(err) if err.code == crate::wire::code::NOT_FOUND => ctx.failed(
            &title,
            "/ui/runs",
            &crate::wire::WireError::new(err.code, "no runpack of this run has been exported yet"),
        ),
        Err(err) => ctx.failed(&title, "/ui/runs", &err),
    }
}
