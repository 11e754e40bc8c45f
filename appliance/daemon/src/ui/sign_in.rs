//! Signing in to and out of the UI. Sign-in takes an API key in a form (never kept: the
//! session holds only its hash), refuses service keys (the UI is for people), counts a
//! failure against the source address like a failed API authentication (throttled past
//! the same limit), and audits every attempt (`ui_sign_in`, ok or deny) and every
//! sign-out (`ui_sign_out`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dg_identity::{keys, Role};
use dg_storage::audit::AuditEvent;

use crate::app::App;
use crate::ui::session::{Credential, Full, Sessions};
use crate::ui::{html, parse_pairs, UiRequest, UiResponse, COOKIE};

/// The sign-in page, with an optional message.
#[must_use]
pub fn form(message: Option<&str>, status: u16) -> UiResponse {
    let mut body = String::new();
    if let Some(message) = message {
        body.push_str(&html::notice(message, status >= 400));
    }
    body.push_str(
        "<form method=\"post\" action=\"/ui/sign-in\" class=\"panel\">\
         <div class=\"field\"><label for=\"f-api_key\">API key</label>\
         <input id=\"f-api_key\" name=\"api_key\" type=\"password\" autocomplete=\"off\" required></div>\
         <button type=\"submit\">Sign in</button></form>\
         <p>Organisation and tenant administrators and auditors sign in with their API key. \
         The key is checked and forgotten: the browser keeps only a session cookie.</p>",
    );
    UiResponse::html(status, html::page("Sign in", "", None, &body))
}

/// The session cookie.
#[must_use]
pub fn cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// A cookie that removes the session cookie.
#[must_use]
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Appends one UI audit entry (`action` is `ui_sign_in`, `ui_sign_out` or `ui_csrf`).
pub fn audit(
    app: &App,
    principal: &str,
    role: Option<&str>,
    action: &str,
    outcome: &str,
    reason: &str,
    request_id: &str,
) {
    let event = AuditEvent {
        principal: principal.to_string(),
        role: role.map(str::to_string),
        tenant_id: None,
        namespace_id: None,
        action: action.to_string(),
        target: "admin_ui".to_string(),
        outcome: outcome.to_string(),
        reason: reason.to_string(),
        request_id: request_id.to_string(),
        request_sha256: None,
        response_sha256: None,
    };
    if let Err(err) = app.store.append_audit(vec![event], Vec::new()) {
        app.metrics.audit_failure();
        tracing::error!(error = %err, action, "audit of an admin UI event failed");
    }
}

/// Handles the sign-in form: a session and a redirect to the runs page, or the form
/// again with why not.
pub fn sign_in(
    app: &App,
    sessions: &Sessions,
    request: &UiRequest,
    failed: &dyn Fn(IpAddr) -> Option<Duration>,
) -> UiResponse {
    let fields = parse_pairs(&request.body);
    let token = fields.get("api_key").map(|t| t.trim().to_string()).unwrap_or_default();
    let header = format!("Bearer {token}");
    let refuse = |principal: &str, role: Option<&str>, reason: &str, shown: &str, status: u16| {
        audit(app, principal, role, "ui_sign_in", "deny", reason, &request.request_id);
        form(Some(shown), status)
    };
    // API keys only: bearer JWTs are for programs (OIDC sign-in in the browser is not
    // offered yet).
    let principal = if keys::parse(&token).is_ok() {
        crate::ops::auth::authenticate(&app.store, None, Some(&header), dg_storage::now_ms()).ok()
    } else {
        None
    };
    let Some(principal) = principal else {
        if let Some(wait) = failed(request.peer) {
            let shown =
                format!("Too many failed sign-ins from this address; try again in {} s.", wait.as_secs().max(1));
            return refuse("unauthenticated", None, "sign-in throttled", &shown, 429);
        }
        return refuse(
            "unauthenticated",
            None,
            "unknown, revoked or expired API key",
            "Sign-in failed: the key is not valid.",
            401,
        );
    };
    if principal.role == Role::Service {
        return refuse(
            &principal.id,
            Some(principal.role.as_str()),
            "service keys may not sign in to the admin UI",
            "Service keys are for programs and cannot sign in to the admin UI.",
            403,
        );
    }
    let credential = Credential::ApiKey { token_sha256: keys::token_hash(&token) };
    match sessions.open(&principal.id, credential, Instant::now()) {
        Ok((id, _)) => {
            audit(
                app,
                &principal.id,
                Some(principal.role.as_str()),
                "ui_sign_in",
                "ok",
                "api key",
                &request.request_id,
            );
            UiResponse::redirect("/ui/runs").with_cookie(cookie(&id))
        }
        Err(full) => {
            let reason = match full {
                Full::Table => "the session table is full",
                Full::Principal => "this key holds the most sessions allowed",
            };
            refuse(&principal.id, Some(principal.role.as_str()), reason, &format!("Sign-in refused: {reason}."), 503)
        }
    }
}
