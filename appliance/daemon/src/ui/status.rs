//! Usage per tenant (`usage_report`), health and readiness, and who is signed in.

use dg_identity::Operation;
use serde_json::{json, Value};

use crate::ui::html::{self, esc};
use crate::ui::{PageCtx, UiResponse};

/// `GET /ui/usage?tenant=`.
pub fn usage(ctx: &PageCtx<'_>) -> UiResponse {
    let tenant = ctx.param("tenant").and_then(|t| t.parse::<u64>().ok()).or(ctx.calls.principal().tenant);
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/usage\" class=\"filters\" aria-label=\"Choose a tenant\">{}<button type=\"submit\">Show</button></form>",
        html::input("tenant", "Tenant (empty: all)", &tenant.map(|t| t.to_string()).unwrap_or_default(), "number", false)
    );
    match ctx.calls.admin(Operation::UsageReport, json!({"tenant_id": tenant})) {
        Ok(Value::Array(rows)) => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    ["tenant_id", "key_id", "counter", "total", "requests"]
                        .iter()
                        .map(|k| {
                            esc(&row
                                .get(*k)
                                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                                .unwrap_or_default())
                        })
                        .collect()
                })
                .collect();
            let headers = ["Tenant", "Key", "Counter", "Total", "Requests"].map(String::from);
            body.push_str(&html::table("Usage by tenant, key and counter", &headers, &rows));
            ctx.page("Usage", "/ui/usage", &body)
        }
        Ok(other) => {
            body.push_str(&format!(
                "<pre><code>{}</code></pre>",
                esc(&serde_json::to_string_pretty(&other).unwrap_or_default())
            ));
            ctx.page("Usage", "/ui/usage", &body)
        }
        Err(err) => ctx.failed("Usage", "/ui/usage", &err),
    }
}

/// `GET /ui/health`: liveness, readiness (database, trusted time), version.
pub fn health(ctx: &PageCtx<'_>) -> UiResponse {
    let app = ctx.calls.app();
    let database = app.store.ping();
    let clock = app.clock.ready();
    let good = |ok: bool, text: &str| {
        format!("<span class=\"{}\">{}</span>", if ok { "status-ok" } else { "status-bad" }, esc(text))
    };
    let body = html::facts(&[
        ("Live", good(true, "yes")),
        (
            "Ready",
            good(
                database.is_ok() && clock.is_ok(),
                if database.is_ok() && clock.is_ok() { "ready" } else { "not ready" },
            ),
        ),
        (
            "Database",
            match &database {
                Ok(()) => good(true, "reachable"),
                Err(err) => good(false, &err.to_string()),
            },
        ),
        (
            "Trusted time",
            match &clock {
                Ok(()) => good(true, "in bounds"),
                Err(reason) => good(false, reason),
            },
        ),
        ("Version", esc(env!("CARGO_PKG_VERSION"))),
        ("Runpack store", esc(app.runpacks.kind())),
    ]);
    ctx.page("Health", "/ui/health", &body)
}

/// `GET /ui/account`: who is signed in and what the session allows.
pub fn account(ctx: &PageCtx<'_>) -> UiResponse {
    let principal = ctx.calls.principal();
    let body = html::facts(&[
        ("Principal", format!("<code>{}</code>", esc(&principal.id))),
        ("Role", esc(principal.role.as_str())),
        ("Tenant", esc(&principal.tenant.map_or_else(|| "all (organisation-wide)".to_string(), |t| t.to_string()))),
        (
            "Namespaces",
            esc(&if principal.namespaces.is_empty() {
                "all".to_string()
            } else {
                format!("{:?}", principal.namespaces)
            }),
        ),
    ]);
    ctx.page("Account", "/ui/account", &body)
}
