//! Signing in to the UI with the site's identity provider (`[ui.oidc]`, beside
//! `[auth.oidc]`): the OpenID Connect authorization-code flow with PKCE (S256). The
//! browser is sent to the provider with a fresh `state`, `nonce` and code challenge; the
//! provider sends it back to `redirect_uri` with a code, which the daemon exchanges (over
//! TLS to the provider, with the code verifier) for an ID token. The ID token is checked
//! like a bearer JWT (signature by the provider's keys, issuer, expiry, lifetime) for the
//! audience `client_id` and the `nonce` sent; its subject maps to a principal as a bearer
//! token's does (the mapping table first, else the claims). The pending sign-ins are
//! bounded ([`MAX_PENDING`], each valid for [`PENDING_TTL`] and used once), and a
//! short-lived cookie binds each to the browser that began it.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dg_crypto::Sha256;
use serde_json::Value;

use crate::oidc::OidcSettings;

/// How long a sign-in may take at the provider.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// Sign-ins begun and not finished, at most.
pub const MAX_PENDING: usize = 1024;
/// Of those, from one source address (so one client cannot take every slot).
pub const MAX_PENDING_PER_SOURCE: usize = 16;
/// The largest answer read from the provider (discovery, token).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// How long one request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The cookie binding a pending sign-in to its browser (`SameSite=Lax`: the provider's
/// redirect back is a cross-site top-level navigation).
pub const STATE_COOKIE: &str = "__Host-dg_oidc_state";
pub use crate::oidc::settings::{UiOidcSettings, CALLBACK_PATH};

/// Why a sign-in with the provider failed (shown on the sign-in page and audited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInError(pub String);

struct Pending {
    verifier: String,
    nonce: String,
    started: Instant,
    source: std::net::IpAddr,
}

#[derive(Clone)]
struct Endpoints {
    authorization: String,
    token: String,
}

/// The flow's state: settings, the provider connection, sign-ins in progress.
pub struct OidcSignIn {
    settings: UiOidcSettings,
    issuer: String,
    agent: ureq::Agent,
    client_secret: Option<String>,
    endpoints: Mutex<Option<Endpoints>>,
    pending: Mutex<HashMap<String, Pending>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    dg_crypto::fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn read_answer(response: ureq::Response, what: &str) -> Result<Value, SignInError> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| SignInError(format!("{what}: {err}")))?;
    if bytes.len() as u64 > MAX_ANSWER_BYTES {
        return Err(SignInError(format!("{what}: larger than {MAX_ANSWER_BYTES} bytes")));
    }
    serde_json::from_slice(&bytes).map_err(|err| SignInError(format!("{what}: not JSON: {err}")))
}

impl OidcSignIn {
    /// The flow for `settings` against `[auth.oidc]`'s provider; reads the client secret.
    ///
    /// # Errors
    /// The secret file or the CA bundle cannot be used.
    pub fn new(settings: &UiOidcSettings, provider: &OidcSettings) -> Result<Self, String> {
        let client_secret = match &settings.client_secret_file {
            Some(path) => {
                Some(crate::secret_file::read_secret(path, "[ui.oidc] client_secret_file")?.trim().to_string())
            }
            None => None,
        };
        let agent = crate::oidc::provider_agent(provider, PROVIDER_TIMEOUT)
            .map_err(|err| format!("[auth.oidc] ca_file: {err}"))?;
        let endpoints = match (&settings.authorization_endpoint, &settings.token_endpoint) {
            (Some(authorization), Some(token)) => {
                Some(Endpoints { authorization: authorization.clone(), token: token.clone() })
            }
            _ => None,
        };
        Ok(Self {
            settings: settings.clone(),
            issuer: provider.issuer.trim_end_matches('/').to_string(),
            agent,
            client_secret,
            endpoints: Mutex::new(endpoints),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The client id (the ID token's audience).
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// The provider's endpoints: configured, else from its discovery document (read once).
    fn endpoints(&self) -> Result<Endpoints, SignInError> {
        if let Some(known) = self.endpoints.lock().ok().and_then(|e| e.clone()) {
            return Ok(known);
        }
        let document = crate::oidc::discovery_document(&self.agent, &self.issuer).map_err(SignInError)?;
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let endpoint = |configured: &Option<String>, key: &str| -> Result<String, SignInError> {
            let value = configured
                .clone()
                .or_else(|| document.get(key).and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| SignInError(format!("{url} has no {key}")))?;
            if value.starts_with("https://") {
                Ok(value)
            } else {
                Err(SignInError(format!("{key} {value} is not https")))
            }
        };
        let found = Endpoints {
            authorization: endpoint(&self.settings.authorization_endpoint, "authorization_endpoint")?,
            token: endpoint(&self.settings.token_endpoint, "token_endpoint")?,
        };
        if let Ok(mut slot) = self.endpoints.lock() {
            *slot = Some(found.clone());
        }
        Ok(found)
    }

    /// Begins a sign-in for a browser at `source`: the URL to send it to and the `state` to
    /// bind to it.
    ///
    /// # Errors
    /// Too many sign-ins in progress (in all, or from `source`); the provider's discovery
    /// document is unusable.
    pub fn begin(&self, source: std::net::IpAddr, now: Instant) -> Result<(String, String), SignInError> {
        let endpoints = self.endpoints()?;
        let (state, verifier, nonce) = (random_token(), random_token(), random_token());
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        {
            let mut pending = self.pending.lock().map_err(|_| SignInError("sign-in table poisoned".into()))?;
            pending.retain(|_, p| now.duration_since(p.started) < PENDING_TTL);
            if pending.len() >= MAX_PENDING
                || pending.values().filter(|p| p.source == source).count() >= MAX_PENDING_PER_SOURCE
            {
                return Err(SignInError("too many sign-ins in progress; try again in a few minutes".into()));
            }
            pending.insert(state.clone(), Pending { verifier, nonce: nonce.clone(), started: now, source });
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_uri)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if endpoints.authorization.contains('?') { '&' } else { '?' };
        Ok((format!("{}{separator}{query}", endpoints.authorization), state))
    }

    /// Finishes a sign-in: the pending one `state` names (used once) exchanges `code` for
    /// an ID token. Returns the ID token and the nonce it must carry.
    ///
    /// # Errors
    /// Unknown or expired state; the provider refused the code or answered nonsense.
    pub fn finish(&self, state: &str, code: &str, now: Instant) -> Result<(String, String), SignInError> {
        let pending = self
            .pending
            .lock()
            .map_err(|_| SignInError("sign-in table poisoned".into()))?
            .remove(state)
            .filter(|p| now.duration_since(p.started) < PENDING_TTL)
            .ok_or_else(|| SignInError("unknown or expired sign-in (state); start again".into()))?;
        let endpoints = self.endpoints()?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.settings.redirect_uri.as_str()),
            ("client_id", self.settings.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.as_str()));
        }
        let answer = match self.agent.post(&endpoints.token).send_form(&form) {
            Ok(response) => read_answer(response, "token endpoint")?,
            Err(ureq::Error::Status(status, response)) => {
                let body = read_answer(response, "token endpoint").unwrap_or(Value::Null);
                let error = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
                return Err(SignInError(format!("the provider refused the code ({status} {error})")));
            }
            Err(err) => return Err(SignInError(format!("token endpoint: {err}"))),
        };
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| SignInError("the provider's answer holds no id_token".into()))?;
        Ok((id_token.to_string(), pending.nonce))
    }

    /// Sign-ins begun and not finished (expired ones included until the next begin).
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> UiOidcSettings {
        UiOidcSettings {
            client_id: "dg-ui".into(),
            redirect_uri: "https://dg.example/ui/oidc/callback".into(),
            client_secret_file: None,
            scopes: vec!["openid".to_string()],
            authorization_endpoint: Some("https://idp.example/auth".into()),
            token_endpoint: Some("https://idp.example/token".into()),
        }
    }

    fn provider() -> OidcSettings {
        toml::from_str("issuer = \"https://idp.example\"\naudiences = [\"a\"]").unwrap()
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings().problems().is_empty());
        let mut bad = settings();
        bad.redirect_uri = "http://dg.example/ui/oidc/callback".into();
        bad.scopes = vec!["profile".into()];
        bad.token_endpoint = Some("http://idp.example/token".into());
        let keys: Vec<&str> = bad.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["redirect_uri", "scopes", "token_endpoint"]);
        let mut local = settings();
        local.redirect_uri = "http://127.0.0.1:8443/ui/oidc/callback".into();
        assert!(local.problems().is_empty());
    }

    #[test]
    fn a_sign_in_sends_pkce_and_its_state_is_used_once_and_expires() {
        let flow = OidcSignIn::new(&settings(), &provider()).unwrap();
        let t0 = Instant::now();
        let here = std::net::IpAddr::from([127, 0, 0, 1]);
        let (url, state) = flow.begin(here, t0).unwrap();
        let query: HashMap<String, String> =
            form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        assert!(url.starts_with("https://idp.example/auth?"));
        assert_eq!(query["state"], state);
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"].len(), 43);
        assert_eq!(query["redirect_uri"], "https://dg.example/ui/oidc/callback");
        assert_eq!(query["scope"], "openid");
        assert_ne!(query["nonce"], state);
        // The challenge is the verifier's S256, and the verifier never leaves the daemon.
        let verifier = flow.pending.lock().unwrap()[&state].verifier.clone();
        assert!(!url.contains(&verifier));
        assert_eq!(
            query["code_challenge"],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
        );
        // An unknown state, an expired one: refused before the provider is asked.
        assert!(flow.finish("forged", "code", t0).unwrap_err().0.contains("unknown or expired"));
        assert!(flow.finish(&state, "code", t0 + PENDING_TTL).unwrap_err().0.contains("unknown or expired"));
        assert_eq!(flow.pending_count(), 0, "a state is removed when it is used");
        // Bounded per source and in all.
        for _ in 0..MAX_PENDING_PER_SOURCE {
            flow.begin(here, t0).unwrap();
        }
        assert!(flow.begin(here, t0).unwrap_err().0.contains("too many"), "one source cannot take every slot");
        for i in 0..(MAX_PENDING - MAX_PENDING_PER_SOURCE) {
            let source = std::net::IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            flow.begin(source, t0).unwrap();
        }
        assert!(flow.begin(std::net::IpAddr::from([10, 9, 9, 9]), t0).unwrap_err().0.contains("too many"));
        assert!(flow.begin(here, t0 + PENDING_TTL).is_ok(), "expired ones make room");
    }
}
