//! Signing in to and out of the UI. Sign-in takes an API key, or an ID token from the
//! site's identity provider (`oidc.rs`); API-key sign-in takes the key in a form (never kept: the
//! session holds only its hash), refuses service keys (the UI is for people), counts a
//! failure against the source address like a failed API authentication (throttled past
//! the same limit), and audits every attempt (`ui_sign_in`, ok or deny) and every
//! sign-out (`ui_sign_out`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dg_identity::{keys, Role};
use dg_storage::audit::AuditEvent;

use crate::app::App;
use crate::ui::oidc::{OidcSignIn, PENDING_TTL, STATE_COOKIE};
use crate::ui::session::{Credential, Sessions};
use crate::ui::{html, parse_pairs, UiRequest, UiResponse, COOKIE};

/// The sign-in page, with an optional message (and the identity provider's button when
/// `[ui.oidc]` is configured).
#[must_use]
pub fn form(message: Option<&str>, status: u16, oidc: bool) -> UiResponse {
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
    if oidc {
        body.push_str(
            "<h2>Or</h2><p><a class=\"button\" href=\"/ui/sign-in/oidc\">Sign in with the identity provider</a></p>",
        );
    }
    UiResponse::html(status, html::page("Sign in", "", None, &body))
}

/// What a throttled source is told.
fn throttled_text(wait: Duration) -> String {
    format!("Too many failed sign-ins from this address; try again in {} s.", wait.as_secs().max(1))
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
    oidc: bool,
) -> UiResponse {
    let fields = parse_pairs(&request.body);
    let token = fields.get("api_key").map(|t| t.trim().to_string()).unwrap_or_default();
    let header = format!("Bearer {token}");
    let refuse = |principal: &str, role: Option<&str>, reason: &str, shown: &str, status: u16| {
        audit(app, principal, role, "ui_sign_in", "deny", reason, &request.request_id);
        form(Some(shown), status, oidc)
    };
    // API keys only: bearer JWTs are for programs (people sign in with the identity
    // provider through `oidc_callback`).
    let principal = if keys::parse(&token).is_ok() {
        crate::ops::auth::authenticate(app.store.as_ref(), None, Some(&header), dg_storage::now_ms()).ok()
    } else {
        None
    };
    let Some(principal) = principal else {
        if let Some(wait) = failed(request.peer) {
            return refuse("unauthenticated", None, "sign-in throttled", &throttled_text(wait), 429);
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
            let reason = full.reason();
            refuse(&principal.id, Some(principal.role.as_str()), reason, &format!("Sign-in refused: {reason}."), 503)
        }
    }
}

/// `GET /ui/sign-in/oidc`: off to the identity provider, with the sign-in's `state` bound
/// to this browser by a short-lived cookie.
#[must_use]
pub fn oidc_begin(flow: &OidcSignIn, source: IpAddr) -> UiResponse {
    match flow.begin(source, Instant::now()) {
        Ok((url, state)) => UiResponse::redirect(&url).with_cookie(format!(
            "{STATE_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            PENDING_TTL.as_secs()
        )),
        Err(err) => form(Some(&format!("Sign-in with the identity provider is unavailable: {}", err.0)), 503, true),
    }
}

fn state_cookie_clear() -> String {
    format!("{STATE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// `GET /ui/oidc/callback?code=…&state=…`: the provider sent the browser back. The state
/// must be one this daemon began, for this browser; the code is exchanged for an ID
/// token, which is checked and mapped to a principal like a bearer token.
pub fn oidc_callback(
    app: &App,
    sessions: &Sessions,
    flow: &OidcSignIn,
    request: &UiRequest,
    failed: &dyn Fn(IpAddr) -> Option<Duration>,
) -> UiResponse {
    let query = parse_pairs(request.query.as_bytes());
    let refuse = |principal: &str, role: Option<&str>, reason: &str, status: u16| {
        audit(app, principal, role, "ui_sign_in", "deny", &format!("oidc: {reason}"), &request.request_id);
        let throttled = failed(request.peer);
        let shown = match throttled {
            Some(wait) => throttled_text(wait),
            None => format!("Sign-in with the identity provider failed: {reason}."),
        };
        form(Some(&shown), if throttled.is_some() { 429 } else { status }, true).with_cookie(state_cookie_clear())
    };
    if let Some(error) = query.get("error") {
        let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        return refuse("unauthenticated", None, &format!("the provider answered {error}"), 401);
    }
    let (Some(state), Some(code)) = (query.get("state"), query.get("code")) else {
        return refuse("unauthenticated", None, "the provider's answer has no code or state", 400);
    };
    if request.state_cookie.as_deref().is_none_or(|cookie| !crate::ui::session::same_token(cookie, state)) {
        return refuse("unauthenticated", None, "the sign-in was not begun in this browser", 403);
    }
    let (id_token, nonce) = match flow.finish(state, code, Instant::now()) {
        Ok(found) => found,
        Err(err) => return refuse("unauthenticated", None, &err.0, 401),
    };
    let Some(verifier) = app.oidc.as_deref() else {
        return refuse("unauthenticated", None, "[auth.oidc] is not configured", 503);
    };
    let now_s = u64::try_from(dg_storage::now_ms() / 1000).unwrap_or(0);
    let verified = match verifier.verify_id_token(&id_token, flow.client_id(), &nonce, now_s, Instant::now()) {
        Ok(verified) => verified,
        Err(refusal) => {
            return refuse("unauthenticated", None, &format!("the ID token was refused ({})", refusal.label()), 401)
        }
    };
    let from_claims = match app.store.find_oidc_subject(&verified.subject) {
        Ok(Some(mapped)) => crate::ops::auth::mapped_principal(&mapped),
        Ok(None) => verified.from_claims,
        Err(err) => {
            return refuse(&verified.subject, None, &format!("the subject mapping could not be read: {err}"), 503)
        }
    };
    let principal = match verifier.settle(&verified.subject, from_claims) {
        Ok(principal) => principal,
        Err(_) => return refuse(&verified.subject, None, "the subject maps to no role", 403),
    };
    if principal.role == Role::Service {
        return refuse(
            &principal.id,
            Some(principal.role.as_str()),
            "service principals may not sign in to the admin UI",
            403,
        );
    }
    let credential = Credential::Oidc { subject: verified.subject.clone(), from_claims: principal.clone() };
    match sessions.open(&principal.id, credential, Instant::now()) {
        Ok((id, _)) => {
            audit(app, &principal.id, Some(principal.role.as_str()), "ui_sign_in", "ok", "oidc", &request.request_id);
            // A page of this site, not a redirect: the browser arrived here from the
            // provider's site, and a `SameSite=Strict` cookie is not sent on a redirect that
            // chain began; the page's own navigation to the runs is same-site.
            let page = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                        <meta http-equiv=\"refresh\" content=\"0; url=/ui/runs\">\
                        <title>Signed in — Decision Gate Appliance</title>\
                        <link rel=\"stylesheet\" href=\"/ui/assets/ui.css\"></head><body><main id=\"main\">\
                        <h1>Signed in</h1><p><a href=\"/ui/runs\">Continue to the runs</a></p></main></body></html>";
            UiResponse::html(200, page.to_string()).with_cookie(cookie(&id)).with_cookie(state_cookie_clear())
        }
        Err(full) => refuse(&principal.id, Some(principal.role.as_str()), full.reason(), 503),
    }
}
