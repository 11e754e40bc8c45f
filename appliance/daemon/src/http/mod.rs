//! The HTTP service: routing, authentication, limits, correlation headers, SSE framing.

pub mod activity;
pub mod auth_failures;
pub mod limits;
pub mod server;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode, Version};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::http::activity::{RecentActivity, ACTIVE_WINDOW};
use crate::http::limits::{valid_correlation_id, RateLimiter};
use crate::metrics::Executor;
use crate::ops::auth::{authenticate, Principal};
use crate::rpc::{self, Dialect, Reply};
use crate::wire::{code, WireError};

/// Per-server state of the HTTP front end.
pub struct HttpFront {
    /// The application.
    pub app: Arc<App>,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    limiter: Arc<RateLimiter>,
    /// Whether every configured provider is machine-local, so a tool call's work is
    /// bounded by CPU and disk: a condition for running it on its connection's thread.
    providers_local: bool,
    activity: RecentActivity,
    auth_failures: Arc<auth_failures::AuthFailures>,
    /// The admin web UI (`None` when `[ui] enabled = false`).
    ui: Option<Arc<crate::ui::Ui>>,
    /// One permit per open connection (`server.max_connections`).
    connection_slots: Arc<Semaphore>,
    max_connections: usize,
    connections: AtomicU64,
    boot_id: u64,
    counter: AtomicU64,
}

type HttpResponse = Response<Full<Bytes>>;

/// One accepted connection, as its requests know it.
#[derive(Clone)]
pub struct Connection {
    /// Its id (from 1), for telling connections apart in `activity.rs`.
    pub id: u64,
    /// The peer's address (failed authentications are counted per source).
    pub peer: std::net::IpAddr,
}

fn json_response(status: u16, body: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl HttpFront {
    /// Builds the front end.
    ///
    /// # Errors
    /// The admin UI's configuration cannot be used (`ui::Ui::new`).
    pub fn new(app: Arc<App>) -> Result<Self, String> {
        let max_inflight = app.config.server.max_inflight;
        let max_connections = app.config.server.max_connections;
        let limiter = Arc::new(RateLimiter::new(app.config.server.rate_limit, app.config.server.tenant_rate_limit));
        // Work runs on the connection's own thread only when nothing it touches leaves the
        // machine: local providers, and the SQLite store (a database over the network waits).
        let providers_local =
            crate::providers_setup::all_local(&app.config.providers) && app.store.as_sqlite().is_some();
        let ui = match app.config.ui.enabled {
            true => Some(Arc::new(crate::ui::Ui::new(&app.config)?)),
            false => None,
        };
        Ok(Self {
            app,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            limiter,
            providers_local,
            activity: RecentActivity::new(ACTIVE_WINDOW),
            auth_failures: Arc::new(auth_failures::AuthFailures::default()),
            ui,
            connection_slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            connections: AtomicU64::new(0),
            boot_id: dg_crypto::random_u64(),
            counter: AtomicU64::new(0),
        })
    }

    /// A new connection's identity (ids from 1), which its requests carry to
    /// [`Self::serve`].
    #[must_use]
    pub fn connection(&self, peer: std::net::IpAddr) -> Connection {
        Connection { id: self.connections.fetch_add(1, Ordering::Relaxed) + 1, peer }
    }

    /// The permits of open connections (the accept loop takes one per connection).
    #[must_use]
    pub fn connection_slots(&self) -> Arc<Semaphore> {
        self.connection_slots.clone()
    }

    /// Counts a failed authentication from the caller's address; a source past the limit
    /// gets `429` instead of the `401` it earned (`auth_failures.rs`).
    fn failed_authentication(&self, peer: std::net::IpAddr, err: WireError) -> WireError {
        match self.auth_failures.record(peer, Instant::now()) {
            None => err,
            Some(wait) => {
                let mut throttled =
                    WireError::new(code::RATE_LIMITED, "too many failed authentications from this address");
                throttled.retry_after_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                throttled
            }
        }
    }

    /// Audits the failed authentications since the last summary, if any (one entry; the
    /// serve loop calls this every `auth_failures::SUMMARY_EVERY`).
    pub fn audit_auth_failures(&self) {
        let Some(summary) = self.auth_failures.take_summary() else { return };
        let top: Vec<String> = summary.top.iter().map(|(ip, n)| format!("{ip}={n}")).collect();
        let event = dg_storage::audit::AuditEvent {
            principal: "unauthenticated".to_string(),
            role: None,
            tenant_id: None,
            namespace_id: None,
            action: "auth_failures".to_string(),
            target: "authentication".to_string(),
            outcome: "deny".to_string(),
            reason: format!(
                "{} failed authentications ({} throttled) from {} sources; most: {}",
                summary.failures,
                summary.throttled,
                summary.sources,
                top.join(", ")
            ),
            request_id: format!("auth-failures-{:016x}", dg_crypto::random_u64()),
            request_sha256: None,
            response_sha256: None,
        };
        if let Err(err) = self.app.store.append_audit(vec![event], Vec::new()) {
            self.app.metrics.audit_failure();
            tracing::error!(error = %err, "audit of failed authentications failed");
        }
    }

    /// Whether a request may run on its connection's thread: every provider is local,
    /// it is an HTTP/1 request (one at a time on its connection), no other connection
    /// began a request lately and no other request is in flight. Otherwise another
    /// client's request could wait behind it on this thread, so it uses the pool.
    fn runs_inline(&self, version: Version, others_active: bool) -> bool {
        self.providers_local
            && version < Version::HTTP_2
            && !others_active
            && self.inflight.available_permits() + 1 == self.max_inflight
    }

    /// Answers one HTTP request. Never fails: every problem becomes a response.
    pub async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        certificate: Option<Arc<Principal>>,
        connection: Connection,
    ) -> Result<HttpResponse, Infallible> {
        let started = Instant::now();
        let others_active = self.activity.begin(connection.id, started);
        let server_correlation =
            format!("dg-{:016x}-{:016x}", self.boot_id, self.counter.fetch_add(1, Ordering::Relaxed));
        let client_correlation = request.headers().get("x-correlation-id").map(|v| v.to_str().map(str::to_string));
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let request_id = match &client_correlation {
            Some(Ok(value)) if valid_correlation_id(value) => value.trim().to_string(),
            _ => server_correlation.clone(),
        };
        let caller = Caller { certificate, request_id, others_active, peer: connection.peer };
        let (mut response, label, error_code) = match client_correlation {
            Some(Ok(ref value)) if valid_correlation_id(value) => self.route(request, &method, &path, caller).await,
            Some(_) => {
                let err = WireError::new(code::INVALID_CORRELATION_ID, "invalid x-correlation-id header");
                (json_response(400, &err.response(None)), "invalid".to_string(), Some(err.code))
            }
            None => self.route(request, &method, &path, caller).await,
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&server_correlation) {
            headers.insert("x-server-correlation-id", value);
        }
        if let Some(Ok(value)) = client_correlation.as_ref().map(|r| r.as_ref().map(|s| s.trim())) {
            if valid_correlation_id(value) {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert("x-correlation-id", value);
                }
            }
        }
        self.app.metrics.record_request(&path_label(&path), &label, error_code, started.elapsed());
        Ok(response)
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        method: &Method,
        path: &str,
        caller: Caller,
    ) -> (HttpResponse, String, Option<i64>) {
        match (method, path) {
            (&Method::GET, "/healthz") => (json_response(200, &json!({"status": "ok"})), "GET".into(), None),
            (&Method::GET, "/readyz") => {
                let store = self.app.store.clone();
                let ready = tokio::task::spawn_blocking(move || store.ping()).await.map(|r| r.is_ok()).unwrap_or(false);
                let clock = self.app.clock.ready();
                if let (true, Err(reason)) = (ready, &clock) {
                    (json_response(503, &json!({"status": "degraded", "reason": reason})), "GET".into(), None)
                } else if ready {
                    (json_response(200, &json!({"status": "ready"})), "GET".into(), None)
                } else {
                    (json_response(503, &json!({"status": "not_ready"})), "GET".into(), None)
                }
            }
            (&Method::GET, "/metrics") => self.metrics(&request, &caller).await,
            (&Method::GET, p) if p.starts_with("/runpacks/") => self.download(&request, p, caller).await,
            (&Method::POST, "/rpc") => self.json_rpc(request, Dialect::DecisionGate, caller).await,
            (&Method::POST, "/mcp") => self.json_rpc(request, Dialect::Mcp, caller).await,
            (_, p) if (p == "/ui" || p.starts_with("/ui/")) && self.ui.is_some() => self.ui(request, caller).await,
            (_, "/rpc" | "/mcp" | "/healthz" | "/readyz" | "/metrics") => {
                let mut response = json_response(405, &json!({"error": "method not allowed"}));
                response.headers_mut().insert(
                    "allow",
                    HeaderValue::from_static(if path.ends_with("z") || path == "/metrics" { "GET" } else { "POST" }),
                );
                (response, "other".into(), None)
            }
            _ => (json_response(404, &json!({"error": "not found"})), "other".into(), None),
        }
    }

    async fn authenticate(&self, request: &Request<Incoming>, caller: &Caller) -> Result<Principal, WireError> {
        let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let app = self.app.clone();
        let certificate = caller.certificate.clone();
        tokio::task::spawn_blocking(move || identify(&app, header.as_deref(), certificate.as_deref()))
            .await
            .unwrap_or_else(|_| Err(WireError::new(code::INTERNAL, "authentication task failed")))
    }

    /// `GET /runpacks/{tenant}/{namespace}/{name}.tar.zst`: the signed bundle of the runpack
    /// exported under `name` (the run id, or the `output_dir` given to `runpack_export`).
    async fn download(
        &self,
        request: &Request<Incoming>,
        path: &str,
        caller: Caller,
    ) -> (HttpResponse, String, Option<i64>) {
        let parsed = path.strip_prefix("/runpacks/").and_then(|rest| rest.strip_suffix(".tar.zst")).and_then(|rest| {
            let mut parts = rest.splitn(3, '/');
            let tenant = parts.next()?.parse::<u64>().ok()?;
            let namespace = parts.next()?.parse::<u64>().ok()?;
            // The runpack's name as `runpack_export` was given it (a run id, or a relative
            // `output_dir`, which may have several segments; the store checks each).
            let run_id = parts.next()?.to_string();
            (!run_id.is_empty()).then_some((tenant, namespace, run_id))
        });
        let Some((tenant, namespace, run_id)) = parsed else {
            return (
                json_response(404, &json!({"error": "expected /runpacks/{tenant}/{namespace}/{run_id}.tar.zst"})),
                "download".into(),
                None,
            );
        };
        let authorization = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let app = self.app.clone();
        let peer = caller.peer;
        let result = tokio::task::spawn_blocking(move || {
            let principal = identify(&app, authorization.as_deref(), caller.certificate.as_deref())?;
            crate::ops::tools::runpack::download(&app, &principal, caller.request_id, tenant, namespace, &run_id)
        })
        .await
        .unwrap_or_else(|_| Err(WireError::new(code::INTERNAL, "internal error")));
        match result {
            Ok((bytes, bundle_run)) => {
                let mut response = Response::new(Full::new(Bytes::from(bytes)));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/zstd"));
                // The URL names the runpack as it was exported (its run id, or the
                // client's output_dir); the file is named after the run the bundle holds.
                let filename =
                    format!("attachment; filename=\"{}\"", crate::ops::tools::runpack::download_file_name(&bundle_run));
                if let Ok(value) = HeaderValue::from_str(&filename) {
                    headers.insert(hyper::header::CONTENT_DISPOSITION, value);
                }
                if let Ok(value) = HeaderValue::from_str(&bundle_run) {
                    headers.insert("x-dg-run-id", value);
                }
                (response, "download".into(), None)
            }
            Err(err) => {
                let status = match err.code {
                    code::NOT_FOUND => 404,
                    code::INVALID_PARAMS => 400,
                    code::UNAUTHENTICATED | code::UNAUTHORIZED => err.http_status(),
                    _ => 500,
                };
                let err = if err.code == code::UNAUTHENTICATED { self.failed_authentication(peer, err) } else { err };
                let status = if err.code == code::RATE_LIMITED { 429 } else { status };
                let response = if err.code == code::UNAUTHENTICATED {
                    unauthenticated(&err, None)
                } else {
                    json_response(status, &err.response(None))
                };
                (response, "download".into(), Some(err.code))
            }
        }
    }

    /// `/ui/...`: the admin web UI. A form body is read bounded (`ui::MAX_FORM_BYTES`,
    /// `body_read_timeout_ms`); the page runs on the blocking pool under
    /// `request_timeout_ms` (pages read the store through the request path).
    async fn ui(&self, request: Request<Incoming>, caller: Caller) -> (HttpResponse, String, Option<i64>) {
        let Some(ui) = self.ui.clone() else {
            return (json_response(404, &json!({"error": "not found"})), "other".into(), None);
        };
        let version = request.version();
        let header = |name: hyper::header::HeaderName| {
            request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let cookie = |name: &str| {
            request
                .headers()
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
                .map(str::to_string)
                .next()
        };
        let session_id = cookie(crate::ui::COOKIE);
        let state_cookie = cookie(crate::ui::oidc::STATE_COOKIE);
        let host = header(hyper::header::HOST).or_else(|| request.uri().authority().map(ToString::to_string));
        let origin = header(hyper::header::ORIGIN);
        let fetch_site = request.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()).map(str::to_string);
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let body_timeout = Duration::from_millis(self.app.config.server.body_read_timeout_ms);
        let declared =
            request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        let body = if method == Method::POST {
            if declared.is_some_and(|len| len > crate::ui::MAX_FORM_BYTES) {
                let mut response = json_response(413, &json!({"error": "form too large"}));
                response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                return (response, "rejected".into(), Some(code::REQUEST_TOO_LARGE));
            }
            let mut incoming = request.into_body();
            match tokio::time::timeout(body_timeout, collect_limited(&mut incoming, crate::ui::MAX_FORM_BYTES)).await {
                Ok(Ok(bytes)) => bytes.to_vec(),
                Ok(Err(_)) | Err(_) => {
                    return closing(
                        (json_response(400, &json!({"error": "form body not read"})), "rejected".into(), None),
                        version,
                    );
                }
            }
        } else {
            Vec::new()
        };
        let Ok(_permit) = self.inflight.clone().try_acquire_owned() else {
            let err = WireError::new(code::INFLIGHT_LIMIT, "server overloaded");
            return (json_response(503, &err.response(None)), "rejected".into(), Some(err.code));
        };
        let ui_request = crate::ui::UiRequest {
            method,
            path,
            query,
            session_id,
            state_cookie,
            origin,
            fetch_site,
            host,
            body,
            peer: caller.peer,
            request_id: caller.request_id,
        };
        let app = self.app.clone();
        let failures = self.auth_failures.clone();
        let timeout = Duration::from_millis(app.config.server.request_timeout_ms);
        let work = tokio::task::spawn_blocking(move || {
            let _registry = app.store.registry_snapshot().ok();
            let failed = |peer: std::net::IpAddr| failures.record(peer, Instant::now());
            ui.handle(&app, &ui_request, &failed)
        });
        let answer = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => crate::ui::UiResponse::text(500, "internal error"),
            Err(_) => crate::ui::UiResponse::text(503, "the page took too long; its action may still complete"),
        };
        let mut response = Response::new(Full::new(Bytes::from(answer.body.clone())));
        *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in answer.all_headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        (response, "ui".into(), None)
    }

    async fn metrics(&self, request: &Request<Incoming>, caller: &Caller) -> (HttpResponse, String, Option<i64>) {
        if let Err(err) = self.authenticate(request, caller).await {
            let err = self.failed_authentication(caller.peer, err);
            return (unauthenticated(&err, None), "metrics".into(), Some(err.code));
        }
        // What is read from the database and the filesystem is read off the connection's thread.
        let app = self.app.clone();
        let (runs, slo) = tokio::task::spawn_blocking(move || {
            (app.store.count_runs_by_status().unwrap_or_default(), app.slo.render(app.store.as_ref()))
        })
        .await
        .unwrap_or_default();
        let inflight = self.max_inflight.saturating_sub(self.inflight.available_permits());
        let text = self.app.metrics.render(
            &runs,
            self.app.store.integrity_failures(),
            &self.app.store.as_sqlite().map(dg_storage::Store::checkpoint_counts).unwrap_or_default(),
            inflight,
            self.auth_failures.totals(),
            self.max_connections.saturating_sub(self.connection_slots.available_permits()),
        );
        let text = text + &slo + &self.app.clock.render();
        let text = match &self.app.oidc {
            Some(oidc) => text + &oidc.render_metrics(),
            None => text,
        };
        let text = match &self.app.forwarding {
            Some(forwarding) => text + &forwarding.render(),
            None => text,
        };
        let text = match &self.ui {
            Some(ui) => text + &ui.render_metrics(),
            None => text,
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        (response, "metrics".into(), None)
    }

    async fn json_rpc(
        &self,
        request: Request<Incoming>,
        dialect: Dialect,
        caller: Caller,
    ) -> (HttpResponse, String, Option<i64>) {
        // MCP clients treat non-2xx statuses as transport failures: JSON-RPC level errors
        // (unknown method, bad params) travel with 200 there; the Decision Gate dialect
        // keeps its contract's statuses.
        let status_for = move |status: u16, error_code: Option<i64>| -> u16 {
            match (dialect, error_code) {
                (Dialect::Mcp, Some(code::METHOD_NOT_FOUND | code::INVALID_PARAMS)) => 200,
                _ => status,
            }
        };
        let wants_sse = dialect == Dialect::DecisionGate
            && request
                .headers()
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/event-stream"));
        let finish = |reply: Reply, label: String| -> (HttpResponse, String, Option<i64>) {
            match reply {
                Reply::Accepted => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::ACCEPTED;
                    (response, label, None)
                }
                Reply::Response { status, body, error_code } => {
                    let status = status_for(status, error_code);
                    let mut response = if wants_sse {
                        let mut r = Response::new(Full::new(Bytes::from(format!("data: {body}\n\n"))));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                        r
                    } else {
                        json_response(status, &body)
                    };
                    if error_code == Some(code::UNAUTHENTICATED) {
                        response
                            .headers_mut()
                            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"decision-gate\""));
                    }
                    if let Some(ms) = body.pointer("/error/data/retry_after_ms").and_then(Value::as_u64) {
                        if let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                            response.headers_mut().insert(RETRY_AFTER, value);
                        }
                    }
                    (response, label, error_code)
                }
            }
        };
        // The order bounds what an unauthenticated or stalling client can hold: the declared
        // size and the caller's credentials (headers only) are checked before any in-flight
        // slot is taken or any body byte read; a refused request's body is never read (its
        // connection closes), so no `100 Continue` is sent for it. Then one slot, then the
        // body under `server.body_read_timeout_ms`.
        let version = request.version();
        let max_body = self.app.config.server.max_body_bytes;
        let body_timeout = Duration::from_millis(self.app.config.server.body_read_timeout_ms);
        let declared =
            request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        // A client that asked `Expect: 100-continue` has not sent its body: a refusal is
        // answered at once, without `100 Continue`. Any other refused body is read and
        // dropped first (at most `body_read_timeout_ms` and 16 MiB), so a client that writes
        // its whole body before reading gets the answer instead of a reset connection.
        let expects_continue = request
            .headers()
            .get(hyper::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let refuse = |request: Request<Incoming>, err: WireError, label: &'static str| async move {
            if !expects_continue {
                drain(request.into_body(), body_timeout).await;
            }
            closing(finish(Reply::error(&err, None), label.into()), version)
        };
        if declared.is_some_and(|len| len > max_body) {
            let err = WireError::new(code::REQUEST_TOO_LARGE, format!("request body exceeds {max_body} bytes"));
            return refuse(request, err, "rejected").await;
        }
        let authorization = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bearer_jwt = self.app.oidc.is_some() && authorization.as_deref().is_some_and(|h| h.contains('.'));
        let principal = if bearer_jwt || self.app.store.as_sqlite().is_none() {
            // A bearer JWT may need the provider's keys fetched (bounded, but seconds), and a
            // key lookup in PostgreSQL is a round trip: off the connection's thread.
            let app = self.app.clone();
            let certificate = caller.certificate.clone();
            tokio::task::spawn_blocking(move || {
                let registry = app.store.registry_snapshot().ok();
                let principal = identify(&app, authorization.as_deref(), certificate.as_deref());
                (principal, registry.map(|snapshot| snapshot.generation()))
            })
            .await
            .unwrap_or_else(|_| (Err(WireError::new(code::INTERNAL, "authentication task failed")), None))
        } else {
            // Key lookups come from memory unless the registry changed; the snapshot ends
            // here, before any await, so no other task on this thread runs under it.
            let registry = self.app.store.registry_snapshot().ok();
            let principal = identify(&self.app, authorization.as_deref(), caller.certificate.as_deref());
            (principal, registry.map(|snapshot| snapshot.generation()))
        };
        // The request's registry generation, read once: the operation reopens its snapshot
        // at it (on PostgreSQL a read is a round trip).
        let (principal, generation) = principal;
        let principal = match principal {
            Ok(principal) => principal,
            Err(err) => {
                self.app.metrics.refused_before_body();
                let err = self.failed_authentication(caller.peer, err);
                return refuse(request, err, "unauthenticated").await;
            }
        };
        if let Err(wait_ms) = self.limiter.check(&principal.id, principal.tenant) {
            let mut err = WireError::new(code::RATE_LIMITED, "rate limit exceeded");
            err.retry_after_ms = Some(wait_ms);
            self.app.metrics.refused_before_body();
            return refuse(request, err, "rejected").await;
        }
        let Ok(_permit) = self.inflight.clone().try_acquire_owned() else {
            let err = WireError::new(code::INFLIGHT_LIMIT, "server overloaded");
            self.app.metrics.refused_before_body();
            return refuse(request, err, "rejected").await;
        };
        let mut incoming = request.into_body();
        let body = match tokio::time::timeout(body_timeout, collect_limited(&mut incoming, max_body)).await {
            Ok(Ok(collected)) => collected,
            Ok(Err(too_large)) => {
                let err = if too_large {
                    WireError::new(code::REQUEST_TOO_LARGE, format!("request body exceeds {max_body} bytes"))
                } else {
                    WireError::new(code::INVALID_REQUEST, "invalid json-rpc request: body could not be read")
                };
                return closing(finish(Reply::error(&err, None), "rejected".into()), version);
            }
            Err(_) => {
                self.app.metrics.body_read_timeout();
                let err = WireError::new(
                    code::INVALID_REQUEST,
                    format!("request body not received within {} ms", body_timeout.as_millis()),
                );
                return closing(finish(Reply::error(&err, None), "body_timeout".into()), version);
            }
        };
        // Rate limiting, parsing and the operation itself are one synchronous piece of
        // work (storage is synchronous).
        let app = self.app.clone();
        let timeout = Duration::from_millis(app.config.server.request_timeout_ms);
        let work = move || -> (Reply, String) {
            // Registry lookups of this request come from memory unless the registry
            // changed since they were read (without a snapshot they read the database).
            let _registry = match generation {
                Some(generation) => Some(app.store.registry_snapshot_at(generation)),
                None => app.store.registry_snapshot().ok(),
            };
            match rpc::parse(&body, dialect) {
                Ok(parsed) => {
                    let label = rpc::method_label(&parsed.method);
                    (rpc::handle(&app, &principal, &caller.request_id, parsed, dialect), label.to_string())
                }
                Err(err) => (Reply::error(&err, None), "invalid".into()),
            }
        };
        // A lone client's request runs right here: handing it to the blocking pool and
        // back costs two thread wake-ups, a large share of a one-client request. While
        // other connections are active, requests go to the pool, so concurrent ones share
        // group commits and none waits behind another on this thread. Work that may wait
        // on the network (an http provider) always goes to the pool, where the request
        // timeout can answer for it.
        if self.runs_inline(version, caller.others_active) {
            self.app.metrics.request_executed(Executor::ConnectionThread);
            // A panic is answered as on the pool (an internal error), not by dropping the
            // connection.
            let (reply, label) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| work_failed());
            return finish(reply, label);
        }
        self.app.metrics.request_executed(Executor::BlockingPool);
        let task = tokio::task::spawn_blocking(work);
        let (reply, label) = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => work_failed(),
            // The work goes on to its end on the pool (a blocking task cannot be cancelled), so
            // the caller must not assume it had no effect.
            Err(_) => {
                let message = format!(
                    "request timed out after {} ms; its work may still complete, so read the state before retrying",
                    timeout.as_millis()
                );
                (Reply::error(&WireError::new(code::INTERNAL, message), None), "timeout".into())
            }
        };
        finish(reply, label)
    }
}

/// Marks an HTTP/1 answer as the connection's last: its request body was not read, so
/// the connection cannot carry another request.
fn closing(
    (mut response, label, code): (HttpResponse, String, Option<i64>),
    version: Version,
) -> (HttpResponse, String, Option<i64>) {
    if version < Version::HTTP_2 {
        response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    (response, label, code)
}

/// The answer for request work that panicked, wherever it ran.
fn work_failed() -> (Reply, String) {
    (Reply::error(&WireError::new(code::INTERNAL, "internal error"), None), "failed".into())
}

/// Per-request identity inputs: the connection's mapped client certificate and the
/// request id used for audit and usage idempotency.
struct Caller {
    certificate: Option<Arc<Principal>>,
    request_id: String,
    /// Whether another connection began a request lately (see `activity.rs`).
    others_active: bool,
    /// The connection's peer address.
    peer: std::net::IpAddr,
}

/// The principal of a request: its bearer key when it sends one, else its mapped client
/// certificate. A wrong key is refused even when a certificate is present.
fn identify(app: &App, header: Option<&str>, certificate: Option<&Principal>) -> Result<Principal, WireError> {
    match (header, certificate) {
        (None, Some(principal)) => Ok(principal.clone()),
        _ => authenticate(app.store.as_ref(), app.oidc.as_deref(), header, dg_storage::now_ms()),
    }
}

/// Reads a body of at most `max` bytes; `Err(true)` when it is larger, `Err(false)` when
/// it could not be read.
async fn collect_limited(body: &mut Incoming, max: usize) -> Result<Bytes, bool> {
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| false)?;
        if let Some(data) = frame.data_ref() {
            if buffer.len() + data.len() > max {
                return Err(true);
            }
            buffer.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(buffer))
}

/// Reads and drops what is left of a refused body: at most 16 MiB, for at most `limit`.
async fn drain(mut body: Incoming, limit: Duration) {
    let mut seen = 0usize;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > 16 * 1024 * 1024 {
                        return;
                    }
                }
                _ => return,
            },
            () = &mut deadline => return,
        }
    }
}

fn unauthenticated(err: &WireError, id: Option<&Value>) -> HttpResponse {
    let mut response = json_response(err.http_status(), &err.response(id));
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"decision-gate\""));
    response
}

fn path_label(path: &str) -> String {
    match path {
        "/rpc" | "/mcp" | "/healthz" | "/readyz" | "/metrics" => path.to_string(),
        p if p.starts_with("/runpacks/") => "/runpacks".to_string(),
        p if p == "/ui" || p.starts_with("/ui/") => "/ui".to_string(),
        _ => "other".to_string(),
    }
}
