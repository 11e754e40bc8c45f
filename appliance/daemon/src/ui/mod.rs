//! The admin web UI at `/ui/`: server-rendered pages on the API's own TLS listener, every
//! asset embedded (one stylesheet, no script, no font, nothing from elsewhere). The UI is
//! a client of the request path (`client.rs`): each page's reads and actions are the
//! operations an API client would call, for the session's principal, so policy, quotas and
//! audit are the API's. What is its own: sessions (`session.rs`), sign-in and sign-out
//! (`sign_in.rs`, audited), CSRF and origin checks on every state-changing request, and
//! the security headers on every answer (`respond.rs`). Pages: `runs.rs` (runs, run detail,
//! export, bundle download), `registry.rs` (scenarios, schemas, tenants, namespaces),
//! `keys.rs`, `audit.rs`, `status.rs` (usage, health, account).

pub mod assets;
pub mod audit;
pub mod client;
pub mod html;
pub mod keys;
pub mod oidc;
pub mod registry;
pub mod respond;
pub mod runs;
pub mod session;
pub mod sign_in;
pub mod status;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::app::App;
use crate::ops::auth::Principal;
use crate::wire::code;
pub use respond::UiResponse;
use session::{Credential, Session, Sessions};

/// The session cookie's name: `__Host-` binds it to this origin, `Secure`, `Path=/`, no
/// `Domain`.
pub const COOKIE: &str = "__Host-dg_session";
/// The largest form body the UI reads.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

pub use crate::config::UiSection;

/// The UI's state in the HTTP front end.
pub struct Ui {
    sessions: Sessions,
    oidc: Option<oidc::OidcSignIn>,
    csp_reports: AtomicU64,
    /// The second (unix) of the last CSP report logged.
    csp_logged_s: AtomicU64,
    sign_ins_ok: AtomicU64,
    sign_ins_refused: AtomicU64,
    csrf_refused: AtomicU64,
}

/// One UI request as the front end hands it over (body already read, bounded).
pub struct UiRequest {
    /// `GET` or `POST` (others are refused).
    pub method: hyper::Method,
    /// The path, `/ui` or under `/ui/`.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The session cookie's value, if sent.
    pub session_id: Option<String>,
    /// The pending identity-provider sign-in's cookie, if sent.
    pub state_cookie: Option<String>,
    /// `Origin`, if sent.
    pub origin: Option<String>,
    /// `Sec-Fetch-Site`, if sent.
    pub fetch_site: Option<String>,
    /// `Host` (or the HTTP/2 authority).
    pub host: Option<String>,
    /// The form body of a POST.
    pub body: Vec<u8>,
    /// The peer's address.
    pub peer: IpAddr,
    /// The request id (audit, usage idempotency).
    pub request_id: String,
}

/// What a page gets: the request, the signed-in principal and its session, the calls.
pub struct PageCtx<'a> {
    /// The request.
    pub request: &'a UiRequest,
    /// Query parameters (first value of each).
    pub query: HashMap<String, String>,
    /// Form fields of a POST (first value of each).
    pub form: HashMap<String, String>,
    /// The session.
    pub session: &'a Session,
    /// Calls through the request path for the principal.
    pub calls: client::Calls<'a>,
}

impl PageCtx<'_> {
    /// The frame's view of who is signed in.
    #[must_use]
    pub fn viewer(&self) -> html::Viewer<'_> {
        html::Viewer {
            id: &self.calls.principal().id,
            role: self.calls.principal().role.as_str(),
            csrf: &self.session.csrf_token,
        }
    }

    /// A query parameter, trimmed, `None` when absent or empty.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A form field, trimmed, `None` when absent or empty.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A page of this UI with the frame.
    #[must_use]
    pub fn page(&self, title: &str, section: &str, body: &str) -> UiResponse {
        UiResponse::html(200, html::page(title, section, Some(&self.viewer()), body))
    }

    /// A page answering a failed operation with the status its error maps to.
    #[must_use]
    pub fn failed(&self, title: &str, section: &str, err: &crate::wire::WireError) -> UiResponse {
        let status = match err.code {
            code::UNAUTHORIZED => 403,
            code::NOT_FOUND => 404,
            code::INVALID_PARAMS | code::CONFLICT => 400,
            code::RATE_LIMITED => 429,
            _ => err.http_status().max(400),
        };
        let text = match err.code {
            code::UNAUTHORIZED => "Refused: your role or scope does not allow this.".to_string(),
            _ => format!("Failed: {} (code {})", err.message, err.code),
        };
        UiResponse::html(status, html::page(title, section, Some(&self.viewer()), &html::notice(&text, true)))
    }
}

/// A tenant and namespace from two path segments.
#[must_use]
pub fn scope_of(t: &str, ns: &str) -> Option<(u64, u64)> {
    Some((t.parse().ok()?, ns.parse().ok()?))
}

/// Parses `a=b&c=d` (first value of each name kept; at most 64 names).
#[must_use]
pub fn parse_pairs(text: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (name, value) in form_urlencoded::parse(text).take(64) {
        out.entry(name.into_owned()).or_insert_with(|| value.into_owned());
    }
    out
}

impl Ui {
    /// The UI's state for the configuration's `[ui]` (and `[auth.oidc]`, for sign-in with
    /// the identity provider).
    ///
    /// # Errors
    /// `[ui.oidc]` without `[auth.oidc]`; its client secret or CA bundle cannot be used.
    pub fn new(config: &crate::config::Config) -> Result<Self, String> {
        let settings = &config.ui;
        let oidc = match (&settings.oidc, &config.auth.oidc) {
            (Some(ui), Some(provider)) => Some(oidc::OidcSignIn::new(ui, provider)?),
            (Some(_), None) => return Err("[ui.oidc] needs [auth.oidc] (the provider and its keys)".to_string()),
            (None, _) => None,
        };
        Ok(Self {
            oidc,
            sessions: Sessions::new(
                Duration::from_secs(settings.idle_timeout_s),
                Duration::from_secs(settings.absolute_timeout_s),
                settings.max_sessions,
            ),
            csp_reports: AtomicU64::new(0),
            csp_logged_s: AtomicU64::new(0),
            sign_ins_ok: AtomicU64::new(0),
            sign_ins_refused: AtomicU64::new(0),
            csrf_refused: AtomicU64::new(0),
        })
    }

    /// The UI's series for `/metrics`.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP dg_ui_sessions Admin UI sessions open.\n# TYPE dg_ui_sessions gauge\ndg_ui_sessions {}\n\
             # HELP dg_ui_sign_ins_total Admin UI sign-ins by outcome.\n# TYPE dg_ui_sign_ins_total counter\n\
             dg_ui_sign_ins_total{{outcome=\"ok\"}} {}\ndg_ui_sign_ins_total{{outcome=\"refused\"}} {}\n\
             # HELP dg_ui_csrf_refused_total Admin UI state-changing requests refused by the CSRF or origin check.\n\
             # TYPE dg_ui_csrf_refused_total counter\ndg_ui_csrf_refused_total {}\n\
             # HELP dg_ui_csp_reports_total Content-Security-Policy violation reports browsers sent.\n\
             # TYPE dg_ui_csp_reports_total counter\ndg_ui_csp_reports_total {}\n",
            self.sessions.open_count(Instant::now()),
            self.sign_ins_ok.load(Ordering::Relaxed),
            self.sign_ins_refused.load(Ordering::Relaxed),
            self.csrf_refused.load(Ordering::Relaxed),
            self.csp_reports.load(Ordering::Relaxed),
        )
    }

    /// Answers one UI request. Blocking (pages read the store through the request path).
    /// `failed_sign_in` counts a failed sign-in against the source and says how long it is
    /// throttled (the API's failed-authentication limit).
    pub fn handle(
        &self,
        app: &App,
        request: &UiRequest,
        failed_sign_in: &dyn Fn(IpAddr) -> Option<Duration>,
    ) -> UiResponse {
        use hyper::Method;
        let path = request.path.as_str();
        match (&request.method, path) {
            (&Method::GET, "/ui" | "/ui/") => return UiResponse::redirect("/ui/runs"),
            (&Method::GET, p) if p.starts_with("/ui/assets/") => return assets::serve(p),
            (&Method::POST, "/ui/csp-report") => {
                // Counted always; logged at most once a second (anyone may post here).
                let count = self.csp_reports.fetch_add(1, Ordering::Relaxed) + 1;
                let now_s = u64::try_from(dg_storage::now_ms() / 1000).unwrap_or(0);
                if self.csp_logged_s.swap(now_s, Ordering::Relaxed) != now_s {
                    let report = String::from_utf8_lossy(&request.body[..request.body.len().min(2048)]).into_owned();
                    tracing::warn!(report = %report, total = count, peer = %request.peer,
                        "the admin UI's Content-Security-Policy was violated in a browser");
                }
                return UiResponse::empty(204);
            }
            (&Method::GET, "/ui/sign-in") => return sign_in::form(None, 200, self.oidc.is_some()),
            (&Method::GET, "/ui/sign-in/oidc") => {
                return match &self.oidc {
                    Some(flow) => sign_in::oidc_begin(flow, request.peer),
                    None => UiResponse::text(404, "sign-in with an identity provider is not configured"),
                };
            }
            (&Method::GET, oidc::CALLBACK_PATH) => {
                let Some(flow) = &self.oidc else {
                    return UiResponse::text(404, "sign-in with an identity provider is not configured");
                };
                let outcome = sign_in::oidc_callback(app, &self.sessions, flow, request, failed_sign_in);
                let counter = if outcome.status == 200 { &self.sign_ins_ok } else { &self.sign_ins_refused };
                counter.fetch_add(1, Ordering::Relaxed);
                return outcome;
            }
            (&Method::POST, "/ui/sign-in") => {
                if !same_origin(request) {
                    self.csrf_refused.fetch_add(1, Ordering::Relaxed);
                    return sign_in::form(
                        Some("Refused: the sign-in did not come from this site."),
                        403,
                        self.oidc.is_some(),
                    );
                }
                let outcome = sign_in::sign_in(app, &self.sessions, request, failed_sign_in, self.oidc.is_some());
                let counter = if outcome.status == 303 { &self.sign_ins_ok } else { &self.sign_ins_refused };
                counter.fetch_add(1, Ordering::Relaxed);
                return outcome;
            }
            (&Method::GET | &Method::POST, _) => {}
            _ => return UiResponse::text(405, "method not allowed"),
        }
        // Everything else needs a live session whose key still works.
        let now = Instant::now();
        let session_id = request.session_id.as_deref().unwrap_or("");
        let Some(session) = self.sessions.touch(session_id, now) else {
            return signed_out(request);
        };
        let Some(principal) = principal_of(app, &session) else {
            self.sessions.end(session_id);
            return signed_out(request);
        };
        let form = if request.method == Method::POST { parse_pairs(&request.body) } else { HashMap::new() };
        if request.method == Method::POST {
            let token_ok = form.get("csrf").is_some_and(|t| session::same_token(t, &session.csrf_token));
            if !token_ok || !same_origin(request) {
                self.csrf_refused.fetch_add(1, Ordering::Relaxed);
                sign_in::audit(
                    app,
                    &principal.id,
                    Some(principal.role.as_str()),
                    "ui_csrf",
                    "deny",
                    &format!("{} {path}: missing or wrong CSRF token or cross-site origin", request.method),
                    &request.request_id,
                );
                return UiResponse::text(403, "refused: missing or wrong CSRF token, or a cross-site request");
            }
            if path == "/ui/sign-out" {
                self.sessions.end(session_id);
                sign_in::audit(
                    app,
                    &principal.id,
                    Some(principal.role.as_str()),
                    "ui_sign_out",
                    "ok",
                    "signed out",
                    &request.request_id,
                );
                return UiResponse::redirect("/ui/sign-in?signed_out=1").with_cookie(sign_in::clear_cookie());
            }
        }
        let ctx = PageCtx {
            request,
            query: parse_pairs(request.query.as_bytes()),
            form,
            session: &session,
            calls: client::Calls::new(app, &principal, &request.request_id),
        };
        route(&ctx, path)
    }
}

fn route(ctx: &PageCtx<'_>, path: &str) -> UiResponse {
    // Segments are split before they are decoded, so an id holding `/` stays one segment.
    let decoded: Vec<String> = path
        .trim_start_matches("/ui/")
        .split('/')
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let post = ctx.request.method == hyper::Method::POST;
    match (post, segments.as_slice()) {
        (false, ["runs"]) => runs::list(ctx),
        (false, ["runs", t, ns, run]) => runs::detail(ctx, t, ns, run),
        (true, ["runs", t, ns, run, "export"]) => runs::export(ctx, t, ns, run),
        (false, ["runs", t, ns, run, "bundle"]) => runs::bundle(ctx, t, ns, run),
        (false, ["scenarios"]) => registry::scenarios(ctx),
        (false, ["scenarios", t, ns, id]) => registry::scenario(ctx, t, ns, id),
        (false, ["schemas", t, ns, id, version]) => registry::schema(ctx, t, ns, id, version),
        (false, ["tenants"]) => registry::tenants(ctx),
        (true, ["tenants", action]) => registry::tenant_action(ctx, action),
        (false, ["keys"]) => keys::list(ctx),
        (true, ["keys", action]) => keys::action(ctx, action),
        (false, ["audit"]) => audit::list(ctx),
        (false, ["audit", "verify"]) => audit::verify(ctx),
        (false, ["audit", "export"]) => audit::export(ctx),
        (false, ["usage"]) => status::usage(ctx),
        (false, ["health"]) => status::health(ctx),
        (false, ["account"]) => status::account(ctx),
        _ => UiResponse::html(
            404,
            html::page("Not found", "", Some(&ctx.viewer()), &html::notice("No such page.", true)),
        ),
    }
}

/// The principal behind a session, read again from the key table: `None` once the key is
/// revoked, expired or gone.
fn principal_of(app: &App, session: &Session) -> Option<Principal> {
    let principal = match &session.credential {
        Credential::ApiKey { token_sha256 } => {
            let record = app.store.find_api_key(token_sha256).ok()??;
            if !crate::ops::auth::key_usable(&record, dg_storage::now_ms()) {
                return None;
            }
            let role = dg_identity::Role::parse(&record.role)?;
            Principal { id: record.key_id, role, tenant: record.tenant_id, namespaces: record.namespaces }
        }
        Credential::Oidc { subject, from_claims } => match app.store.find_oidc_subject(subject).ok()? {
            Some(mapped) => crate::ops::auth::mapped_principal(&mapped).ok()?,
            None => from_claims.clone(),
        },
    };
    (principal.role != dg_identity::Role::Service).then_some(principal)
}

/// The answer without a live session: a page load goes to the sign-in page, an action is
/// refused.
fn signed_out(request: &UiRequest) -> UiResponse {
    if request.method == hyper::Method::GET {
        UiResponse::redirect("/ui/sign-in").with_cookie(sign_in::clear_cookie())
    } else {
        UiResponse::text(401, "not signed in (the session ended or was never opened)")
            .with_cookie(sign_in::clear_cookie())
    }
}

/// Whether a state-changing request comes from this site. `Sec-Fetch-Site`, when the
/// browser sends it, must be `same-origin`. `Origin`, when sent, must be this server's own
/// `https://host`; browsers send `Origin: null` for a same-origin form under
/// `Referrer-Policy: no-referrer`, which is accepted only beside `Sec-Fetch-Site:
/// same-origin`. A request with neither header is not from a current browser (the CSRF
/// token still guards every session's writes).
fn same_origin(request: &UiRequest) -> bool {
    let fetch_site = request.fetch_site.as_deref();
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    match (request.origin.as_deref(), request.host.as_deref()) {
        (None, _) => true,
        (Some("null"), _) => fetch_site == Some("same-origin"),
        (Some(origin), Some(host)) => origin == format!("https://{host}") || origin == format!("http://{host}"),
        (Some(_), None) => false,
    }
}
