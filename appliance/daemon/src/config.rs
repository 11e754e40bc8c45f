//! The appliance configuration (TOML). Unknown keys are errors; `config check` reports
//! every problem it can find, each with its key path, instead of stopping at the first.

pub use crate::providers_setup::ProviderEntry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dg_engine::evidence::TrustLane;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The embedded default configuration, used when no file is given.
pub const DEFAULT_CONFIG: &str = r#"# Decision Gate Appliance — embedded default configuration.
[server]
listen = "127.0.0.1:8443"
max_body_bytes = 1048576
max_inflight = 256
# Connections open at once; past it new ones are closed at accept.
max_connections = 1024
request_timeout_ms = 30000
header_read_timeout_ms = 5000
# Longest a client may take to send a request body once its headers are in (a stalled
# body holds an in-flight slot at most this long; the connection is then closed).
body_read_timeout_ms = 10000
# Threads for TLS and HTTP. A lone client's requests run on this thread; concurrent ones
# go to a blocking pool. One thread is fastest here: more only add cross-thread wake-ups
# (measured with the load bench).
io_threads = 1
# Threads that run requests (tools, storage) while other connections are active: at most
# this many requests execute at once, the rest wait their turn in arrival order. Each
# thread holds memory (its stack, allocator pages, a database reader), so this bounds the
# daemon's memory under load; requests of one group commit are bounded by it too.
work_threads = 8

[server.rate_limit]
requests_per_second = 500
burst = 1000

[server.tenant_rate_limit]
requests_per_second = 2000
burst = 4000

[audit]
checkpoint_every = 256
checkpoint_interval_ms = 10000

# Trusted time: /readyz answers degraded while the wall clock is behind the newest audit
# record by more than this (a clock stepped back; records keep their order regardless).
[time]
readiness_bound_s = 60

# Per-tenant quotas on the usage counters (absent = unlimited); a tenant's own quotas,
# set with `tenants create --quota`, take precedence.
[quotas]

[engine]
min_lane = "verified"

[validation]
strict = true
enable_lexicographic = false
enable_deep_equals = false

[evidence]
allow_raw_values = false

# The admin web UI at /ui/ (same listener and TLS as the API; sign-in with an API key).
[ui]
enabled = true
idle_timeout_s = 900
absolute_timeout_s = 28800
max_sessions = 256

[[providers]]
name = "time"
config = { allow_logical = true }
"#;

/// Top-level configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Network server.
    pub server: ServerConfig,
    /// TLS material; generated self-signed in the data directory when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Evaluation settings.
    #[serde(default)]
    pub engine: EngineSection,
    /// Strict comparator validation.
    #[serde(default)]
    pub validation: ValidationSection,
    /// Evidence disclosure.
    #[serde(default)]
    pub evidence: EvidenceSection,
    /// Configured built-in providers.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    /// Audit chain checkpoints.
    #[serde(default)]
    pub audit: AuditSection,
    /// Default per-tenant quotas: usage counter -> most allowed.
    #[serde(default)]
    pub quotas: std::collections::BTreeMap<String, u64>,
    /// Runpack export settings.
    #[serde(default)]
    pub runpacks: RunpacksSection,
    /// Sign-in beside API keys and client certificates (`[auth.oidc]`).
    #[serde(default)]
    pub auth: crate::oidc::AuthSection,
    /// Trusted time (`clock_watch.rs`).
    #[serde(default)]
    pub time: TimeSection,
    /// Plans and overage rules (`billing.rs`).
    #[serde(default)]
    pub billing: crate::billing::BillingSection,
    /// The admin web UI (`ui/`).
    #[serde(default)]
    pub ui: UiSection,
    /// Where the private signing keys are (`hsm/`).
    #[serde(default)]
    pub signing: crate::hsm::SigningSection,
    /// Where the state lives: SQLite in the data directory, or PostgreSQL (`storage_settings.rs`).
    #[serde(default)]
    pub storage: crate::storage_settings::StorageSection,
}

/// `[time]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSection {
    /// `/readyz` answers degraded while the wall clock is behind the newest audit record
    /// by more than this many seconds.
    pub readiness_bound_s: u64,
}

impl Default for TimeSection {
    fn default() -> Self {
        Self { readiness_bound_s: 60 }
    }
}

/// `[runpacks]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunpacksSection {
    /// Where exported runpacks are kept: `fs` (the data directory, the default) or `s3`.
    #[serde(default)]
    pub backend: RunpackBackendKind,
    /// The bucket, with `backend = "s3"` (`s3/settings.rs`).
    #[serde(default)]
    pub s3: Option<crate::s3::settings::S3Settings>,
    /// Directories beneath which an absolute `output_dir` is honoured (`export_roots.rs`);
    /// empty (the default): runpacks stay in the appliance's own store.
    #[serde(default)]
    pub client_export_roots: Vec<crate::export_roots::ExportRootEntry>,
}

/// `[runpacks] backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunpackBackendKind {
    /// The hardened filesystem tree beneath the data directory.
    #[default]
    Fs,
    /// An S3-compatible bucket (`[runpacks.s3]`).
    S3,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSection {
    /// Entries between two signed checkpoints.
    pub checkpoint_every: u64,
    /// Longest time (ms) new entries wait for a signed checkpoint.
    pub checkpoint_interval_ms: u64,
    /// Streaming the chain to the site's syslog collector (`forward/`; off when absent).
    #[serde(default)]
    pub forward: Option<crate::forward::ForwardSettings>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { checkpoint_every: 256, checkpoint_interval_ms: 10_000, forward: None }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Serve plain HTTP (loopback only).
    #[serde(default)]
    pub plaintext_loopback: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most requests in flight at once.
    pub max_inflight: usize,
    /// Connections open at once (each costs a task, buffers and a descriptor).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest a tool call on the blocking pool may take before it is answered with an
    /// error (a lone client's request run on its connection's thread is answered when done).
    pub request_timeout_ms: u64,
    /// Longest a client may take to send its request headers (slowloris guard).
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send its request body (a stalled body's bound).
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Async threads for TLS and HTTP (the tools run on a separate blocking pool).
    #[serde(default = "default_io_threads")]
    pub io_threads: usize,
    /// Threads of the blocking pool that runs requests: at most this many execute at once.
    #[serde(default = "default_work_threads")]
    pub work_threads: usize,
    /// Retired (busy polling was removed): still accepted so a config from an earlier
    /// release loads, and ignored with a warning at start (`docs/tuning.md`).
    #[serde(default)]
    pub busy_poll_us: Option<u64>,
    /// Retired (the CPU wake-up latency hold was removed): accepted and ignored, as above.
    #[serde(default)]
    pub wake_latency_hold_ms: Option<u64>,
    /// Per-key token bucket.
    pub rate_limit: RateLimitConfig,
    /// Per-tenant token bucket (shared by all of a tenant's keys).
    #[serde(default = "default_tenant_rate")]
    pub tenant_rate_limit: RateLimitConfig,
}

impl ServerConfig {
    /// Settings of earlier releases that are accepted but no longer do anything (the
    /// daemon warns about each at start).
    #[must_use]
    pub fn retired_settings(&self) -> Vec<&'static str> {
        let mut retired = Vec::new();
        if self.busy_poll_us.is_some() {
            retired.push("server.busy_poll_us");
        }
        if self.wake_latency_hold_ms.is_some() {
            retired.push("server.wake_latency_hold_ms");
        }
        retired
    }
}

fn default_max_connections() -> usize {
    1024
}

fn default_body_read_timeout_ms() -> u64 {
    10_000
}

fn default_io_threads() -> usize {
    1
}

fn default_work_threads() -> usize {
    8
}

fn default_tenant_rate() -> RateLimitConfig {
    RateLimitConfig { requests_per_second: 2000, burst: 4000 }
}

/// `[server.rate_limit]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimitConfig {
    /// Sustained rate per API key.
    pub requests_per_second: u32,
    /// Burst size.
    pub burst: u32,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// Client certificates (mTLS): off when absent.
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
}

/// `[tls.client_auth]`: client-certificate authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientAuthConfig {
    /// PEM bundle of the CAs that issue client certificates.
    pub ca_path: PathBuf,
    /// Refuse TLS connections without a valid client certificate.
    #[serde(default)]
    pub required: bool,
    /// Certificate subjects (common name) and the principal each maps to.
    #[serde(default)]
    pub principals: Vec<CertPrincipal>,
}

/// One `[[tls.client_auth.principals]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertPrincipal {
    /// The certificate subject's common name.
    pub common_name: String,
    /// Role name.
    pub role: dg_identity::Role,
    /// Tenant (absent = organisation-wide).
    pub tenant_id: Option<u64>,
    /// Namespaces (empty = all of the tenant's).
    #[serde(default)]
    pub namespaces: Vec<u64>,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSection {
    /// Minimum trust lane for evidence.
    pub min_lane: TrustLane,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self { min_lane: TrustLane::Verified }
    }
}

/// `[validation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationSection {
    /// Strict comparator validation at define time.
    pub strict: bool,
    /// Allow `lex_*` comparators.
    pub enable_lexicographic: bool,
    /// Allow `deep_*` comparators.
    pub enable_deep_equals: bool,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self { strict: true, enable_lexicographic: false, enable_deep_equals: false }
    }
}

/// `[evidence]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvidenceSection {
    /// Return raw evidence values from `evidence_query` and feedback.
    pub allow_raw_values: bool,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`server.listen`, `providers[1].config.root`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Problems found in it.
    #[error("invalid config{}:\n{}", .source_name, .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// ` <path>` or empty.
        source_name: String,
        /// Every problem.
        problems: Vec<ConfigProblem>,
    },
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem { path: path.into(), message: message.into() }
}

/// Parses and validates configuration text, collecting every problem.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem with its key path.
pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid { source_name: source_name.to_string(), problems };
    let mut problems = Vec::new();
    if text.len() > 1024 * 1024 {
        return Err(invalid(vec![problem("(file)", "config file is larger than 1 MiB")]));
    }
    let value: toml::Value = match toml::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            let span = err.span().map(|s| format!(" (byte {})", s.start)).unwrap_or_default();
            return Err(invalid(vec![problem("(syntax)", format!("{}{span}", err.message()))]));
        }
    };
    // Unknown keys anywhere: collected all at once.
    let mut unknown = Vec::new();
    let parsed: Result<Config, _> = serde_ignored::deserialize(value.clone(), |path| unknown.push(path.to_string()));
    for path in unknown {
        problems.push(problem(path, "unknown key"));
    }
    let config = match parsed {
        Ok(config) => Some(config),
        Err(_) => {
            problems.extend(type_problems(value));
            None
        }
    };
    if let Some(config) = &config {
        problems.extend(semantic_problems(config));
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(invalid(problems)),
    }
}

/// At most this many type and missing-key problems are listed in one pass.
const MAX_TYPE_PROBLEMS: usize = 64;

/// Every type and missing-key problem with its key path: each round names the first one
/// (a path-tracking deserializer), then takes the offending key out of the document and
/// tries again, so one wrong value does not hide the next. A missing key reported at a
/// table that lost one of its keys in an earlier round is a consequence, not a problem.
fn type_problems(mut value: toml::Value) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut taken_out: Vec<(String, String)> = Vec::new();
    for _ in 0..MAX_TYPE_PROBLEMS {
        let err = match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
            Ok(_) => break,
            Err(err) => err,
        };
        let segments: Vec<serde_path_to_error::Segment> = err.path().iter().cloned().collect();
        let path = err.path().to_string();
        let path = if path == "." { "(root)".to_string() } else { path };
        let message = err.inner().to_string();
        let consequence =
            taken_out.iter().any(|(table, key)| *table == path && message.contains(&format!("missing field `{key}`")));
        if !consequence {
            problems.push(problem(path.clone(), message));
        }
        match take_out(&mut value, &segments) {
            Some(key) => {
                let table = segments[..segments.len() - 1].iter().map(ToString::to_string).collect::<Vec<_>>();
                let table = if table.is_empty() { "(root)".to_string() } else { join_path(&table) };
                taken_out.push((table, key));
            }
            None => break,
        }
    }
    if problems.is_empty() {
        problems.push(problem("(root)", "config does not match its schema"));
    }
    problems
}

/// The path as `serde_path_to_error` prints it (`a.b[0].c`).
fn join_path(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        if !segment.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

/// Removes the value at `segments` from the document; returns the removed key's name, or
/// `None` when there is nothing left to remove (the root, or a path not in the document).
fn take_out(value: &mut toml::Value, segments: &[serde_path_to_error::Segment]) -> Option<String> {
    use serde_path_to_error::Segment;
    let (last, parents) = segments.split_last()?;
    let mut node = value;
    for segment in parents {
        node = match segment {
            Segment::Map { key } => node.as_table_mut()?.get_mut(key)?,
            Segment::Seq { index } => node.as_array_mut()?.get_mut(*index)?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    match last {
        Segment::Map { key } => node.as_table_mut()?.remove(key).map(|_| key.clone()),
        Segment::Seq { index } => {
            let items = node.as_array_mut()?;
            (*index < items.len()).then(|| items.remove(*index)).map(|_| format!("[{index}]"))
        }
        Segment::Enum { .. } | Segment::Unknown => None,
    }
}

/// Cross-field rules.
fn semantic_problems(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for (key, message) in config.signing.problems() {
        problems.push(problem(format!("signing.{key}"), message));
    }
    for (key, message) in config.storage.problems() {
        problems.push(problem(format!("storage.{key}"), message));
    }
    if config.time.readiness_bound_s == 0 || config.time.readiness_bound_s > 86_400 {
        problems.push(problem("time.readiness_bound_s", "must be between 1 and 86400 (a day)"));
    }
    if let Some(forward) = &config.audit.forward {
        for (key, message) in forward.problems() {
            problems.push(problem(format!("audit.forward.{key}"), message));
        }
    }
    for (key, message) in config.billing.problems() {
        problems.push(problem(format!("billing.{key}"), message));
    }
    for (key, message) in config.ui.problems() {
        problems.push(problem(format!("ui.{key}"), message));
    }
    if config.ui.oidc.is_some() && config.auth.oidc.is_none() {
        problems.push(problem("ui.oidc", "sign-in with the identity provider needs [auth.oidc] (its issuer and keys)"));
    }
    if let Some(oidc) = &config.auth.oidc {
        for (key, message) in oidc.problems() {
            problems.push(problem(format!("auth.oidc.{key}"), message));
        }
    }
    match (config.runpacks.backend, &config.runpacks.s3) {
        (RunpackBackendKind::S3, None) => {
            problems.push(problem("runpacks.s3", "backend = \"s3\" needs a [runpacks.s3] section"));
        }
        (RunpackBackendKind::Fs, Some(_)) => {
            problems.push(problem(
                "runpacks.backend",
                "[runpacks.s3] is set but backend is \"fs\": say backend = \"s3\" or remove the section",
            ));
        }
        (_, Some(s3)) => {
            for (key, message) in s3.problems() {
                problems.push(problem(format!("runpacks.s3.{key}"), message));
            }
        }
        (RunpackBackendKind::Fs, None) => {}
    }
    for (i, root) in config.runpacks.client_export_roots.iter().enumerate() {
        if let Some(message) = crate::export_roots::problem(root) {
            problems.push(problem(format!("runpacks.client_export_roots[{i}]"), &message));
        }
    }
    let server = &config.server;
    if server.plaintext_loopback && !server.listen.ip().is_loopback() {
        problems.push(problem("server.plaintext_loopback", "plain HTTP is only allowed on a loopback listen address"));
    }
    if !(1024..=64 * 1024 * 1024).contains(&server.max_body_bytes) {
        problems.push(problem("server.max_body_bytes", "must be between 1024 and 67108864"));
    }
    if !(1..=65_536).contains(&server.max_connections) {
        problems.push(problem("server.max_connections", "must be between 1 and 65536"));
    }
    if server.max_inflight == 0 {
        problems.push(problem("server.max_inflight", "must be at least 1"));
    }
    if server.request_timeout_ms == 0 {
        problems.push(problem("server.request_timeout_ms", "must be at least 1"));
    }
    if !(1..=64).contains(&server.io_threads) {
        problems.push(problem("server.io_threads", "must be between 1 and 64"));
    }
    if !(1..=512).contains(&server.work_threads) {
        problems.push(problem("server.work_threads", "must be between 1 and 512"));
    }
    if !(1..=300_000).contains(&server.body_read_timeout_ms) {
        problems.push(problem("server.body_read_timeout_ms", "must be between 1 and 300000 (5 minutes)"));
    }
    if server.header_read_timeout_ms == 0 {
        problems.push(problem("server.header_read_timeout_ms", "must be at least 1"));
    }
    if server.rate_limit.requests_per_second == 0 || server.rate_limit.burst == 0 {
        problems.push(problem("server.rate_limit", "requests_per_second and burst must be at least 1"));
    }
    if server.tenant_rate_limit.requests_per_second == 0 || server.tenant_rate_limit.burst == 0 {
        problems.push(problem("server.tenant_rate_limit", "requests_per_second and burst must be at least 1"));
    }
    if config.audit.checkpoint_every == 0 || config.audit.checkpoint_interval_ms == 0 {
        problems.push(problem("audit", "checkpoint_every and checkpoint_interval_ms must be at least 1"));
    }
    for counter in config.quotas.keys() {
        if !dg_storage::usage::COUNTERS.contains(&counter.as_str()) {
            problems.push(problem(format!("quotas.{counter}"), "unknown usage counter"));
        }
    }
    if let Some(client) = config.tls.as_ref().and_then(|tls| tls.client_auth.as_ref()) {
        for (index, entry) in client.principals.iter().enumerate() {
            let needs_tenant = matches!(entry.role, dg_identity::Role::TenantAdmin | dg_identity::Role::Service);
            if needs_tenant && entry.tenant_id.is_none() {
                problems.push(problem(
                    format!("tls.client_auth.principals[{index}].tenant_id"),
                    "this role needs a tenant",
                ));
            }
            // The same rule as `keys issue`: org_admin is organisation-wide.
            if entry.role == dg_identity::Role::OrgAdmin && entry.tenant_id.is_some() {
                problems.push(problem(
                    format!("tls.client_auth.principals[{index}].tenant_id"),
                    "org_admin is organisation-wide and takes no tenant (as `keys issue` refuses too)",
                ));
            }
        }
    }
    let mut seen = Vec::new();
    for (index, entry) in config.providers.iter().enumerate() {
        let path = format!("providers[{index}]");
        if seen.contains(&entry.name) {
            problems.push(problem(format!("{path}.name"), format!("provider {} configured twice", entry.name)));
        }
        seen.push(entry.name.clone());
        if let Err(err) = crate::providers_setup::check_entry(entry) {
            problems.push(problem(format!("{path}.{}", err.0), err.1));
        }
    }
    problems
}

/// The largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Loads the config file, or the embedded default when `path` is `None`.
///
/// # Errors
/// Read or validation errors.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        None => parse(DEFAULT_CONFIG, " (embedded default)"),
        Some(path) => {
            // A regular file of at most 1 MiB (a FIFO, a device or a huge file is refused
            // before anything is read into memory).
            let text = dg_storage::read_text_bounded(path, MAX_CONFIG_BYTES, dg_storage::Links::Follow)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            parse(&text, &format!(" {}", path.display()))
        }
    }
}

/// `[ui]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// Serve the UI at `/ui/` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A session unused this long ends (seconds, default 900).
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// A session ends this long after sign-in, used or not (seconds, default 8 hours).
    #[serde(default = "default_absolute")]
    pub absolute_timeout_s: u64,
    /// Sessions open at once (default 256); past it a sign-in is refused.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Sign-in with the site's identity provider (authorization code + PKCE; needs
    /// `[auth.oidc]`).
    #[serde(default)]
    pub oidc: Option<crate::oidc::settings::UiOidcSettings>,
}

fn yes() -> bool {
    true
}
fn default_idle() -> u64 {
    900
}
fn default_absolute() -> u64 {
    8 * 3600
}
fn default_max_sessions() -> usize {
    256
}

impl Default for UiSection {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_s: default_idle(),
            absolute_timeout_s: default_absolute(),
            max_sessions: default_max_sessions(),
            oidc: None,
        }
    }
}

impl UiSection {
    /// Problems with the values, as (key, message).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        if !(60..=86_400).contains(&self.idle_timeout_s) {
            out.push(("idle_timeout_s".into(), "must be between 60 and 86400".to_string()));
        }
        if !(300..=7 * 86_400).contains(&self.absolute_timeout_s) || self.absolute_timeout_s < self.idle_timeout_s {
            out.push((
                "absolute_timeout_s".into(),
                "must be between 300 and 604800 and at least idle_timeout_s".into(),
            ));
        }
        if !(1..=65_536).contains(&self.max_sessions) {
            out.push(("max_sessions".into(), "must be between 1 and 65536".to_string()));
        }
        if let Some(oidc) = &self.oidc {
            for (key, message) in oidc.problems() {
                out.push((format!("oidc.{key}"), message));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = parse(DEFAULT_CONFIG, "").unwrap();
        assert!(config.server.listen.ip().is_loopback());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = DEFAULT_CONFIG
            .replace("max_inflight = 256", "max_inflight = 256\nbogus = 1")
            .replace("[validation]", "[validation]\nalso_bogus = true")
            + "\n[[providers]]\nname = \"warp\"\n";
        let err = parse(&text, "").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("server.bogus: unknown key"), "{message}");
        assert!(message.contains("validation.also_bogus: unknown key"), "{message}");
        assert!(message.contains("providers[1].name"), "{message}");
    }

    #[test]
    fn the_runpack_backend_and_its_bucket_are_checked_together() {
        let message = parse(&format!("{DEFAULT_CONFIG}\n[runpacks]\nbackend = \"s3\"\n"), "").unwrap_err().to_string();
        assert!(message.contains("runpacks.s3: backend = \"s3\" needs a [runpacks.s3] section"), "{message}");
        let text = format!(
            "{DEFAULT_CONFIG}\n[runpacks]\nbackend = \"s3\"\n[runpacks.s3]\nendpoint = \"http://10.1.1.1:9000\"\n\
             bucket = \"Bad_Bucket\"\n[runpacks.s3.object_lock]\nmode = \"compliance\"\n"
        );
        let message = parse(&text, "").unwrap_err().to_string();
        assert!(message.contains("runpacks.s3.endpoint"), "{message}");
        assert!(message.contains("runpacks.s3.bucket"), "{message}");
        assert!(message.contains("runpacks.s3.object_lock.mode"), "{message}");
        let fine = format!(
            "{DEFAULT_CONFIG}\n[runpacks]\nbackend = \"s3\"\n[runpacks.s3]\nendpoint = \"https://10.1.1.1:9000\"\n\
             bucket = \"runpacks\"\n"
        );
        assert_eq!(parse(&fine, "").unwrap().runpacks.backend, RunpackBackendKind::S3);
        assert_eq!(parse(DEFAULT_CONFIG, "").unwrap().runpacks.backend, RunpackBackendKind::Fs, "fs is the default");
    }

    #[test]
    fn every_type_error_is_reported_not_just_the_first() {
        let text = DEFAULT_CONFIG
            .replace("max_inflight = 256", "max_inflight = \"many\"")
            .replace("strict = true", "strict = 7");
        let text = format!("{text}\n[[providers]]\nname = 5\n");
        let message = parse(&text, "").unwrap_err().to_string();
        assert!(message.contains("server.max_inflight: invalid type"), "{message}");
        assert!(message.contains("validation.strict: invalid type"), "{message}");
        assert!(message.contains("providers[1].name: invalid type"), "{message}");
        // A key taken out after its type error does not come back as a missing key.
        assert!(!message.contains("missing field `name`"), "{message}");
        assert!(message.lines().count() >= 3, "{message}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let text = DEFAULT_CONFIG.replace("max_inflight = 256", "max_inflight = \"many\"");
        let message = parse(&text, "").unwrap_err().to_string();
        assert!(message.contains("server.max_inflight"), "{message}");
    }

    #[test]
    fn io_threads_are_bounded_and_default_to_one() {
        let without = DEFAULT_CONFIG.replace("io_threads = 1\n", "");
        assert_eq!(parse(&without, "").unwrap().server.io_threads, 1);
        let message = parse(&DEFAULT_CONFIG.replace("io_threads = 1", "io_threads = 0"), "").unwrap_err().to_string();
        assert!(message.contains("server.io_threads"), "{message}");
    }

    #[test]
    fn work_threads_are_bounded_and_default_to_eight() {
        let without = DEFAULT_CONFIG.replace("work_threads = 8\n", "");
        assert_eq!(parse(&without, "").unwrap().server.work_threads, 8);
        for bad in ["0", "513"] {
            let message = parse(&DEFAULT_CONFIG.replace("work_threads = 8", &format!("work_threads = {bad}")), "")
                .unwrap_err()
                .to_string();
            assert!(message.contains("server.work_threads"), "{message}");
        }
    }

    #[test]
    fn machine_wide_tuning_is_off_by_default_and_its_old_settings_still_load() {
        assert!(!DEFAULT_CONFIG.contains("busy_poll_us") && !DEFAULT_CONFIG.contains("wake_latency_hold_ms"));
        let config = parse(DEFAULT_CONFIG, "").unwrap();
        assert!(config.server.retired_settings().is_empty());
        // A config written for an earlier release loads; the settings are only reported.
        let old = DEFAULT_CONFIG.replace("[server]\n", "[server]\nbusy_poll_us = 250\nwake_latency_hold_ms = 1000\n");
        let config = parse(&old, "").unwrap();
        assert_eq!(config.server.retired_settings(), ["server.busy_poll_us", "server.wake_latency_hold_ms"]);
    }

    #[test]
    fn plaintext_needs_loopback() {
        let text = DEFAULT_CONFIG
            .replace("127.0.0.1:8443", "0.0.0.0:8443")
            .replace("[server]\n", "[server]\nplaintext_loopback = true\n");
        let message = parse(&text, "").unwrap_err().to_string();
        assert!(message.contains("server.plaintext_loopback"), "{message}");
    }

    #[test]
    fn ui_settings_are_checked() {
        let text = DEFAULT_CONFIG.replace("idle_timeout_s = 900", "idle_timeout_s = 5")
            + "\n[ui.oidc]\nclient_id = \"\"\nredirect_uri = \"http://dg.example/callback\"\n";
        let message = parse(&text, "").unwrap_err().to_string();
        for key in ["ui.idle_timeout_s", "ui.oidc.client_id", "ui.oidc.redirect_uri", "ui.oidc:"] {
            assert!(message.contains(key), "{key} in {message}");
        }
        let config = parse(DEFAULT_CONFIG, "").unwrap();
        assert!(config.ui.enabled && config.ui.oidc.is_none(), "the UI is on by default, API-key sign-in only");
    }
}
