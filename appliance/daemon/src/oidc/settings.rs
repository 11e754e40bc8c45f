//! `[auth.oidc]`: which identity provider's tokens are accepted and how their claims map
//! to a principal. Checked by `config check` ([`OidcSettings::problems`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Algorithms accepted when the configuration names none.
pub const DEFAULT_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];
/// Algorithms that may be allowed: asymmetric only (`none` and every HMAC algorithm are
/// refused whatever the configuration says: a provider's public key must never serve as
/// a shared secret).
pub const ASYMMETRIC_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
/// Longest clock leeway an operator may set.
pub const MAX_LEEWAY_S: u64 = 300;

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthSection {
    /// OIDC / JWT sign-in (off when absent).
    #[serde(default)]
    pub oidc: Option<OidcSettings>,
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OidcSettings {
    /// The provider's issuer (`iss`), e.g. `https://idp.example/realms/dg`; also the base of
    /// discovery when neither `jwks_file` nor `jwks_url` is given.
    pub issuer: String,
    /// Accepted audiences (`aud` must contain one of them).
    pub audiences: Vec<String>,
    /// Accepted signature algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds (at most [`MAX_LEEWAY_S`]).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Longest accepted token lifetime (`exp - iat`), in seconds.
    #[serde(default = "default_max_token_lifetime_s")]
    pub max_token_lifetime_s: u64,
    /// Air-gapped key source: a JWKS file, reloaded when it changes.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The provider's JWKS URL (https); discovered from the issuer when absent.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA bundle (PEM) that the provider's TLS certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Keys older than this are fetched again on their next use, in seconds.
    #[serde(default = "default_refresh_interval_s")]
    pub refresh_interval_s: u64,
    /// Keys not refreshed for this long are no longer used (requests fail closed), in seconds.
    #[serde(default = "default_max_key_age_s")]
    pub max_key_age_s: u64,
    /// At most one fetch per this many seconds, whatever tokens arrive (an unknown `kid`
    /// asks for one; a flood of random `kid`s gets no more).
    #[serde(default = "default_min_refresh_interval_s")]
    pub min_refresh_interval_s: u64,
    /// Claim holding the role (a string or an array; dotted for nested claims, e.g.
    /// `realm_access.roles`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Prefix a role value carries in the provider (e.g. `dg-` for `dg-auditor`).
    #[serde(default)]
    pub role_prefix: String,
    /// Claim holding the tenant id.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim holding the namespace ids (array).
    #[serde(default = "default_namespaces_claim")]
    pub namespaces_claim: String,
}

fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(ToString::to_string).collect()
}
fn default_leeway_s() -> u64 {
    30
}
fn default_max_token_lifetime_s() -> u64 {
    3600
}
fn default_refresh_interval_s() -> u64 {
    300
}
fn default_max_key_age_s() -> u64 {
    3600
}
fn default_min_refresh_interval_s() -> u64 {
    10
}
fn default_role_claim() -> String {
    "dg_role".into()
}
fn default_tenant_claim() -> String {
    "dg_tenant".into()
}
fn default_namespaces_claim() -> String {
    "dg_namespaces".into()
}

impl OidcSettings {
    /// Every problem with its key (relative to `auth.oidc`).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut add = |key: &str, message: String| problems.push((key.to_string(), message));
        if !self.issuer.starts_with("https://") {
            add("issuer", "must be an https:// URL".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            add("audiences", "name at least one audience, none empty".into());
        }
        if self.algorithms.is_empty() {
            add("algorithms", "name at least one algorithm".into());
        }
        for alg in &self.algorithms {
            if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                add(
                    "algorithms",
                    format!(
                        "{alg:?} is not accepted ('none' and HMAC algorithms never are); choose from {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if self.leeway_s > MAX_LEEWAY_S {
            add("leeway_s", format!("must be at most {MAX_LEEWAY_S}"));
        }
        if self.max_token_lifetime_s == 0 || self.max_token_lifetime_s > 86_400 {
            add("max_token_lifetime_s", "must be between 1 and 86400 (a day)".into());
        }
        if self.jwks_file.is_some() && self.jwks_url.is_some() {
            add("jwks_file", "give jwks_file (air-gapped) or jwks_url, not both".into());
        }
        if let Some(url) = &self.jwks_url {
            if !url.starts_with("https://") {
                add("jwks_url", "must be an https:// URL".into());
            }
        }
        if self.min_refresh_interval_s == 0 {
            add("min_refresh_interval_s", "must be at least 1".into());
        }
        if self.refresh_interval_s < self.min_refresh_interval_s {
            add("refresh_interval_s", "must be at least min_refresh_interval_s".into());
        }
        if self.max_key_age_s < self.refresh_interval_s {
            add("max_key_age_s", "must be at least refresh_interval_s".into());
        }
        for (key, value) in [
            ("role_claim", &self.role_claim),
            ("tenant_claim", &self.tenant_claim),
            ("namespaces_claim", &self.namespaces_claim),
        ] {
            if value.is_empty() || value.split('.').any(str::is_empty) {
                add(key, "must name a claim (dotted for nested claims)".into());
            }
        }
        problems
    }
}

/// Where the provider sends the browser back after a UI sign-in: `[ui.oidc] redirect_uri`
/// must end with it.
pub const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// `[ui.oidc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiOidcSettings {
    /// The UI's client id at the provider (the ID token's audience).
    pub client_id: String,
    /// This UI's callback as the browser reaches it, e.g.
    /// `https://dg.example/ui/oidc/callback` (registered at the provider).
    pub redirect_uri: String,
    /// A confidential client's secret (a 0600 file); absent for a public client (PKCE
    /// alone).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for (must include `openid`; add the one that releases the role claims).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The provider's authorization endpoint; discovered from the issuer when absent.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// The provider's token endpoint; discovered from the issuer when absent.
    #[serde(default)]
    pub token_endpoint: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".to_string()]
}

fn loopback_http(url: &str) -> bool {
    ["http://127.0.0.1:", "http://[::1]:", "http://localhost:"].iter().any(|p| url.starts_with(p))
}

impl UiOidcSettings {
    /// Problems, as (key relative to `ui.oidc`, message).
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            out.push(("client_id", "1 to 256 characters".to_string()));
        }
        let path_ok = self.redirect_uri.split('?').next().is_some_and(|u| u.ends_with(CALLBACK_PATH));
        if !(self.redirect_uri.starts_with("https://") || loopback_http(&self.redirect_uri)) || !path_ok {
            out.push(("redirect_uri", format!("an https:// URL of this UI ending with {CALLBACK_PATH}")));
        }
        if !self.scopes.iter().any(|s| s == "openid")
            || self.scopes.iter().any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        {
            out.push(("scopes", "must include \"openid\"; scopes are printable words".to_string()));
        }
        for (key, value) in
            [("authorization_endpoint", &self.authorization_endpoint), ("token_endpoint", &self.token_endpoint)]
        {
            if value.as_ref().is_some_and(|url| !url.starts_with("https://")) {
                out.push((key, "must be an https:// URL".to_string()));
            }
        }
        out
    }
}
