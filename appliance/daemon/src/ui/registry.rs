//! Scenarios and schemas (read-only: the canonical spec with its hash) and the tenant and
//! namespace registry (create, suspend and resume, delete when empty).

use std::fmt::Write as _;

use dg_identity::{Operation, Role};
use serde_json::{json, Value};

use crate::ui::html::{self, esc, json_text as text, url_part};
use crate::ui::{scope_of as scope, PageCtx, UiResponse};

/// `GET /ui/scenarios?tenant=&namespace=`: the namespace's scenarios and schemas.
pub fn scenarios(ctx: &PageCtx<'_>) -> UiResponse {
    let tenant = ctx.param("tenant").and_then(|t| t.parse::<u64>().ok()).or(ctx.calls.principal().tenant).unwrap_or(1);
    let namespace = ctx
        .param("namespace")
        .and_then(|n| n.parse::<u64>().ok())
        .or_else(|| ctx.calls.principal().namespaces.first().copied())
        .unwrap_or(1);
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/scenarios\" class=\"filters\" aria-label=\"Choose a namespace\">{}{}<button type=\"submit\">Show</button></form>",
        html::input("tenant", "Tenant", &tenant.to_string(), "number", true),
        html::input("namespace", "Namespace", &namespace.to_string(), "number", true),
    );
    let args = json!({"tenant_id": tenant, "namespace_id": namespace, "limit": 200});
    match ctx.calls.tool(Operation::ScenariosList, args.clone()) {
        Ok(found) => {
            let rows = html::rows_of(&found, "items", |item| {
                let id = text(item, "scenario_id");
                vec![
                    html::link(&format!("/ui/scenarios/{tenant}/{namespace}/{}", url_part(&id)), &id),
                    format!(
                        "<code>{}</code>",
                        esc(item.pointer("/spec_hash/value").and_then(Value::as_str).unwrap_or(""))
                    ),
                ]
            });
            let headers = ["Scenario", "Spec sha256"].map(String::from);
            body.push_str(&html::table(
                &format!("Scenarios of tenant {tenant}, namespace {namespace}"),
                &headers,
                &rows,
            ));
        }
        Err(err) => body.push_str(&html::notice(&format!("Scenarios could not be listed: {}", err.message), true)),
    }
    match ctx.calls.tool(Operation::SchemasList, args) {
        Ok(found) => {
            let rows = html::rows_of(&found, "items", |item| {
                let id = text(item, "schema_id");
                let version = text(item, "version");
                vec![
                    html::link(
                        &format!("/ui/schemas/{tenant}/{namespace}/{}/{}", url_part(&id), url_part(&version)),
                        &id,
                    ),
                    esc(&version),
                    esc(&text(item, "description")),
                ]
            });
            let headers = ["Schema", "Version", "Description"].map(String::from);
            body.push_str(&html::table("Data shapes (schemas)", &headers, &rows));
        }
        Err(err) => body.push_str(&html::notice(&format!("Schemas could not be listed: {}", err.message), true)),
    }
    ctx.page("Scenarios and schemas", "/ui/scenarios", &body)
}

/// `GET /ui/scenarios/{tenant}/{namespace}/{id}`: the canonical spec and its hash.
pub fn scenario(ctx: &PageCtx<'_>, t: &str, ns: &str, id: &str) -> UiResponse {
    let title = format!("Scenario {id}");
    let Some((tenant, namespace)) = scope(t, ns) else {
        return UiResponse::text(404, "no such scenario");
    };
    match ctx
        .calls
        .admin(Operation::ScenarioGet, json!({"tenant_id": tenant, "namespace_id": namespace, "scenario_id": id}))
    {
        Ok(found) => {
            let canonical = found.get("canonical_json").and_then(Value::as_str).unwrap_or("");
            let pretty = serde_json::from_str::<Value>(canonical)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_default();
            let mut body = html::facts(&[
                ("Tenant / namespace", format!("{} / {namespace}", esc(&text(&found, "tenant_id")))),
                (
                    "Spec sha256 (canonical JSON, RFC 8785)",
                    format!(
                        "<code>{}</code>",
                        esc(found.pointer("/spec_hash/value").and_then(Value::as_str).unwrap_or(""))
                    ),
                ),
            ]);
            let _ = write!(
                body,
                "<h2>Canonical spec</h2><pre><code>{}</code></pre><h2>Readable</h2><pre><code>{}</code></pre>",
                esc(canonical),
                esc(&pretty)
            );
            ctx.page(&title, "/ui/scenarios", &body)
        }
        Err(err) => ctx.failed(&title, "/ui/scenarios", &err),
    }
}

/// `GET /ui/schemas/{tenant}/{namespace}/{id}/{version}`.
pub fn schema(ctx: &PageCtx<'_>, t: &str, ns: &str, id: &str, version: &str) -> UiResponse {
    let title = format!("Schema {id} {version}");
    let Some((tenant, namespace)) = scope(t, ns) else {
        return UiResponse::text(404, "no such schema");
    };
    let args = json!({"tenant_id": tenant, "namespace_id": namespace, "schema_id": id, "version": version});
    match ctx.calls.tool(Operation::SchemasGet, args) {
        Ok(found) => {
            let record = found.get("record").unwrap_or(&Value::Null);
            let hash = dg_engine::hashing::hash_canonical_json(record).map(|h| h.value).unwrap_or_default();
            let pretty = serde_json::to_string_pretty(record).unwrap_or_default();
            let facts =
                html::facts(&[("Record sha256 (canonical JSON, RFC 8785)", format!("<code>{}</code>", esc(&hash)))]);
            ctx.page(&title, "/ui/scenarios", &format!("{facts}<pre><code>{}</code></pre>", esc(&pretty)))
        }
        Err(err) => ctx.failed(&title, "/ui/scenarios", &err),
    }
}

/// `GET /ui/tenants`: tenants (organisation admins) and each one's namespaces, with the
/// controls the principal's role allows.
pub fn tenants(ctx: &PageCtx<'_>) -> UiResponse {
    let principal = ctx.calls.principal();
    let csrf = &ctx.session.csrf_token;
    let mut body = String::new();
    if let Some(done) = ctx.param("done") {
        body.push_str(&html::notice(
            match done {
                "tenant_create" => "Tenant created.",
                "tenant_status" => "Tenant status changed.",
                "tenant_delete" => "Tenant deleted.",
                "namespace_create" => "Namespace created.",
                "namespace_status" => "Namespace status changed.",
                "namespace_delete" => "Namespace deleted.",
                _ => "Done.",
            },
            false,
        ));
    }
    let tenants: Vec<Value> = if ctx.calls.may(Operation::TenantList) && principal.tenant.is_none() {
        match ctx.calls.admin(Operation::TenantList, json!({})) {
            Ok(Value::Array(items)) => items,
            Ok(_) => Vec::new(),
            Err(err) => return ctx.failed("Tenants and namespaces", "/ui/tenants", &err),
        }
    } else {
        let own = principal.tenant.or_else(|| ctx.param("tenant").and_then(|t| t.parse().ok())).unwrap_or(1);
        vec![json!({"tenant_id": own, "name": "", "status": "", "quotas": {}})]
    };
    if ctx.calls.may(Operation::TenantCreate) {
        body.push_str("<h2>New tenant</h2>");
        let fields =
            html::input("tenant_id", "Tenant id", "", "number", true) + &html::input("name", "Name", "", "text", true);
        body.push_str(&html::post_form("/ui/tenants/tenant_create", csrf, &fields, "Create tenant", "panel"));
    }
    for tenant in &tenants {
        let id = tenant.get("tenant_id").and_then(Value::as_u64).unwrap_or(0);
        let status = text(tenant, "status");
        let _ = write!(body, "<h2>Tenant {id} {}</h2>", esc(&text(tenant, "name")));
        if !status.is_empty() {
            body.push_str(&html::facts(&[
                ("Status", esc(&status)),
                ("Quotas", esc(&tenant.get("quotas").map(Value::to_string).unwrap_or_default())),
            ]));
        }
        if ctx.calls.may(Operation::TenantDisable) && !status.is_empty() {
            let enable = status != "active";
            let fields = html::hidden("tenant_id", &id.to_string())
                + &html::hidden("enable", if enable { "true" } else { "false" });
            body.push_str(&html::post_form(
                "/ui/tenants/tenant_status",
                csrf,
                &fields,
                if enable { "Resume tenant" } else { "Suspend tenant" },
                "inline",
            ));
        }
        if ctx.calls.may(Operation::TenantDelete) && !status.is_empty() {
            let fields = html::hidden("tenant_id", &id.to_string());
            body.push_str(&html::post_form(
                "/ui/tenants/tenant_delete",
                csrf,
                &fields,
                "Delete tenant (when empty)",
                "inline danger",
            ));
        }
        let namespaces = match ctx.calls.admin(Operation::NamespaceList, json!({"tenant_id": id})) {
            Ok(Value::Array(items)) => items,
            Ok(_) => Vec::new(),
            Err(err) => {
                body.push_str(&html::notice(&format!("Namespaces could not be listed: {}", err.message), true));
                continue;
            }
        };
        let writes = ctx.calls.may(Operation::NamespaceDisable);
        let rows: Vec<Vec<String>> = namespaces
            .iter()
            .map(|ns| {
                let ns_id = ns.get("namespace_id").and_then(Value::as_u64).unwrap_or(0);
                let ns_status = text(ns, "status");
                let mut row = vec![esc(&ns_id.to_string()), esc(&text(ns, "name")), esc(&ns_status)];
                if writes {
                    let enable = ns_status != "active";
                    let fields = html::hidden("tenant_id", &id.to_string())
                        + &html::hidden("namespace_id", &ns_id.to_string())
                        + &html::hidden("enable", if enable { "true" } else { "false" });
                    let label =
                        if enable { format!("Resume namespace {ns_id}") } else { format!("Suspend namespace {ns_id}") };
                    let mut controls = html::post_form("/ui/tenants/namespace_status", csrf, &fields, &label, "inline");
                    let fields =
                        html::hidden("tenant_id", &id.to_string()) + &html::hidden("namespace_id", &ns_id.to_string());
                    controls.push_str(&html::post_form(
                        "/ui/tenants/namespace_delete",
                        csrf,
                        &fields,
                        &format!("Delete namespace {ns_id}"),
                        "inline",
                    ));
                    row.push(controls);
                }
                row
            })
            .collect();
        let mut headers = vec!["Namespace".to_string(), "Name".to_string(), "Status".to_string()];
        if writes {
            headers.push("Actions".to_string());
        }
        body.push_str(&html::table(&format!("Namespaces of tenant {id}"), &headers, &rows));
        if ctx.calls.may(Operation::NamespaceCreate) {
            let fields = html::hidden("tenant_id", &id.to_string())
                + &html::input(&format!("namespace_id_{id}"), "New namespace id", "", "number", true)
                + &html::input(&format!("name_{id}"), "Name", "", "text", true);
            body.push_str(&html::post_form("/ui/tenants/namespace_create", csrf, &fields, "Create namespace", "panel"));
        }
    }
    if principal.role == Role::Auditor {
        body.push_str("<p>Auditors see the registry read-only.</p>");
    }
    ctx.page("Tenants and namespaces", "/ui/tenants", &body)
}

fn field_u64(ctx: &PageCtx<'_>, name: &str) -> Option<u64> {
    ctx.field(name).and_then(|v| v.parse().ok())
}

/// `POST /ui/tenants/{action}`.
pub fn tenant_action(ctx: &PageCtx<'_>, action: &str) -> UiResponse {
    let tenant = field_u64(ctx, "tenant_id");
    let namespace = field_u64(ctx, "namespace_id");
    let enable = ctx.field("enable") == Some("true");
    let (operation, params) = match action {
        "tenant_create" => {
            (Operation::TenantCreate, json!({"tenant_id": tenant, "name": ctx.field("name").unwrap_or("")}))
        }
        "tenant_status" => (Operation::TenantDisable, json!({"tenant_id": tenant, "enable": enable})),
        "tenant_delete" => (Operation::TenantDelete, json!({"tenant_id": tenant})),
        "namespace_create" => {
            let t = tenant.unwrap_or(0);
            let ns = field_u64(ctx, &format!("namespace_id_{t}"));
            let name = ctx.field(&format!("name_{t}")).unwrap_or("");
            (Operation::NamespaceCreate, json!({"tenant_id": tenant, "namespace_id": ns, "name": name}))
        }
        "namespace_status" => {
            (Operation::NamespaceDisable, json!({"tenant_id": tenant, "namespace_id": namespace, "enable": enable}))
        }
        "namespace_delete" => (Operation::NamespaceDelete, json!({"tenant_id": tenant, "namespace_id": namespace})),
        _ => return UiResponse::text(404, "no such action"),
    };
    match ctx.calls.admin(operation, params) {
        Ok(_) => UiResponse::redirect(&format!("/ui/tenants?done={action}")),
        Err(err) => ctx.failed("Tenants and namespaces", "/ui/tenants", &err),
    }
}
