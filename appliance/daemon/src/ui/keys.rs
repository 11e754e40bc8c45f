//! API keys: the list (`key_list`), issue (the token shown once, on the answer to the
//! form and nowhere else), rotate with an overlap, revoke.

use dg_identity::{Operation, Role};
use serde_json::{json, Value};

use crate::ui::html::{self, esc, json_text as text};
use crate::ui::{PageCtx, UiResponse};

fn when(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_i64).map(html::time_ms).unwrap_or_default()
}

/// `GET /ui/keys`.
pub fn list(ctx: &PageCtx<'_>) -> UiResponse {
    let principal = ctx.calls.principal();
    let csrf = &ctx.session.csrf_token;
    let keys = match ctx.calls.admin(Operation::KeyList, json!({"tenant_id": principal.tenant})) {
        Ok(Value::Array(keys)) => keys,
        Ok(_) => Vec::new(),
        Err(err) => return ctx.failed("API keys", "/ui/keys", &err),
    };
    let mut body = String::new();
    if ctx.param("done") == Some("revoked") {
        body.push_str(&html::notice("Key revoked.", false));
    }
    let now = dg_storage::now_ms();
    let writes = ctx.calls.may(Operation::KeyRevoke);
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            let id = text(key, "key_id");
            let revoked = key.get("revoked_at_ms").and_then(Value::as_i64).is_some_and(|at| at <= now);
            let expired = key.get("expires_at_ms").and_then(Value::as_i64).is_some_and(|at| at <= now);
            let state = if revoked {
                "revoked"
            } else if expired {
                "expired"
            } else {
                "active"
            };
            let mut row = vec![
                format!("<code>{}</code>", esc(&id)),
                esc(&text(key, "label")),
                esc(&text(key, "role")),
                esc(&text(key, "tenant_id")),
                esc(&key.get("namespaces").map(Value::to_string).unwrap_or_default()),
                esc(&when(key, "created_at_ms")),
                esc(&when(key, "expires_at_ms")),
                esc(state),
            ];
            if writes {
                let mut controls = String::new();
                if state == "active" && id != principal.id {
                    let overlap = vec![
                        ("0".to_string(), "none".to_string()),
                        ("3600000".to_string(), "1 hour".to_string()),
                        ("86400000".to_string(), "1 day".to_string()),
                    ];
                    let fields = html::hidden("key_id", &id)
                        + &html::select(&format!("overlap_{id}"), "Old key works for", &overlap, "3600000");
                    controls.push_str(&html::post_form(
                        "/ui/keys/rotate",
                        csrf,
                        &fields,
                        &format!("Rotate {id}"),
                        "inline",
                    ));
                    controls.push_str(&html::post_form(
                        "/ui/keys/revoke",
                        csrf,
                        &html::hidden("key_id", &id),
                        &format!("Revoke {id}"),
                        "inline",
                    ));
                }
                row.push(controls);
            }
            row
        })
        .collect();
    let mut headers: Vec<String> =
        ["Key id", "Label", "Role", "Tenant", "Namespaces", "Created", "Expires", "State"].map(String::from).to_vec();
    if writes {
        headers.push("Actions".to_string());
    }
    body.push_str(&html::table("API keys", &headers, &rows));
    if ctx.calls.may(Operation::KeyIssue) {
        let mut roles = vec![
            ("service".to_string(), "service".to_string()),
            ("tenant_admin".to_string(), "tenant_admin".to_string()),
            ("auditor".to_string(), "auditor".to_string()),
        ];
        if principal.role == Role::OrgAdmin {
            roles.push(("org_admin".to_string(), "org_admin".to_string()));
        }
        let fields = html::select("role", "Role", &roles, "service")
            + &html::input(
                "tenant_id",
                "Tenant",
                &principal.tenant.map(|t| t.to_string()).unwrap_or_default(),
                "number",
                false,
            )
            + &html::input("namespaces", "Namespaces (comma-separated, empty: all)", "", "text", false)
            + &html::input("label", "Label", "", "text", false)
            + &html::input("expires_in_days", "Expires in days (empty: never)", "", "number", false);
        body.push_str("<h2>Issue a key</h2>");
        body.push_str(&html::post_form("/ui/keys/issue", csrf, &fields, "Issue key", "panel"));
    }
    ctx.page("API keys", "/ui/keys", &body)
}

fn token_page(ctx: &PageCtx<'_>, title: &str, answer: &Value) -> UiResponse {
    let token = answer.get("token").and_then(Value::as_str).unwrap_or("");
    let key_id = answer.pointer("/key/key_id").and_then(Value::as_str).unwrap_or("");
    let body = format!(
        "{}<p>Key <code>{}</code>. Its token is shown this once; the appliance keeps only its hash:</p>\
         <p class=\"secret\" id=\"new-token\">{}</p><p>{}</p>",
        html::notice("Key issued. Copy the token now.", false),
        esc(key_id),
        esc(token),
        html::link("/ui/keys", "Back to the keys"),
    );
    ctx.page(title, "/ui/keys", &body)
}

/// `POST /ui/keys/{issue|rotate|revoke}`.
pub fn action(ctx: &PageCtx<'_>, action: &str) -> UiResponse {
    match action {
        "issue" => {
            let namespaces: Result<Vec<u64>, _> = ctx
                .field("namespaces")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::parse::<u64>)
                .collect();
            let Ok(namespaces) = namespaces else {
                let err = crate::wire::WireError::invalid_params("namespaces: numbers separated by commas");
                return ctx.failed("Issue a key", "/ui/keys", &err);
            };
            let expires =
                ctx.field("expires_in_days").and_then(|d| d.parse::<u64>().ok()).map(|d| d.saturating_mul(86_400_000));
            let params = json!({
                "role": ctx.field("role").unwrap_or(""),
                "tenant_id": ctx.field("tenant_id").and_then(|t| t.parse::<u64>().ok()),
                "namespaces": namespaces,
                "label": ctx.field("label").unwrap_or(""),
                "expires_in_ms": expires,
            });
            match ctx.calls.admin(Operation::KeyIssue, params) {
                Ok(answer) => token_page(ctx, "Key issued", &answer),
                Err(err) => ctx.failed("Issue a key", "/ui/keys", &err),
            }
        }
        "rotate" => {
            let key_id = ctx.field("key_id").unwrap_or("");
            let overlap = ctx.field(&format!("overlap_{key_id}")).and_then(|o| o.parse::<u64>().ok()).unwrap_or(0);
            match ctx.calls.admin(Operation::KeyRotate, json!({"key_id": key_id, "overlap_ms": overlap})) {
                Ok(answer) => token_page(ctx, "Key rotated", &answer),
                Err(err) => ctx.failed("Rotate a key", "/ui/keys", &err),
            }
        }
        "revoke" => match ctx.calls.admin(Operation::KeyRevoke, json!({"key_id": ctx.field("key_id").unwrap_or("")})) {
            Ok(_) => UiResponse::redirect("/ui/keys?done=revoked"),
            Err(err) => ctx.failed("Revoke a key", "/ui/keys", &err),
        },
        _ => UiResponse::text(404, "no such action"),
    }
}
