//! OIDC sign-in: bearer JWTs issued by the site's identity provider, checked against its
//! published keys (`cache.rs`, `source.rs`, `keys.rs`) and mapped to a principal
//! (`claims.rs`). Configured by `[auth.oidc]` (`settings.rs`); off when absent.
//!
//! Every check runs before the token is trusted, in this order: size (refused before any
//! parsing), shape, header (`alg` on the allow-list, never `none` or HMAC; no critical
//! headers; `typ` JWT or `at+jwt`; an acceptable `kid`; `jku`/`x5u` ignored, never
//! fetched), key (by `kid`, of the type the algorithm needs), signature, then `iss`,
//! `aud`, `exp`, `nbf`, `iat` (not in the future, lifetime bounded), `sub`.

mod cache;
mod claims;
mod keys;
pub mod settings;
mod source;

pub use source::{discovery_document, provider_agent};

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dg_identity::Principal;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

pub use settings::{AuthSection, OidcSettings};

use cache::{KeyCache, Missing};
use keys::kid_acceptable;
use source::KeySource;

/// Longest bearer token looked at; a longer one is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused (a fixed set: these are `/metrics` label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too long, not three base64url parts, or a header that does not parse.
    Malformed,
    /// An algorithm outside the allow-list (`none` and HMAC always are).
    Algorithm,
    /// A critical header, an unexpected `typ`, or a missing or unacceptable `kid`.
    Header,
    /// No current key has the token's `kid`, or the key does not fit its algorithm.
    UnknownKey,
    /// The keys are past their maximum age and the provider does not answer.
    KeysExpired,
    /// The signature does not verify.
    Signature,
    /// `iss`, `aud`, `exp`, `nbf`, `iat`, lifetime or `sub` refused.
    Claims,
    /// Valid, but the claims map to no role (answered `403`).
    NoRole,
}

impl Refusal {
    /// All of them, in `/metrics` order.
    pub const ALL: [Refusal; 8] = [
        Self::Malformed,
        Self::Algorithm,
        Self::Header,
        Self::UnknownKey,
        Self::KeysExpired,
        Self::Signature,
        Self::Claims,
        Self::NoRole,
    ];

    /// The label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::Header => "header",
            Self::UnknownKey => "unknown_key",
            Self::KeysExpired => "keys_expired",
            Self::Signature => "signature",
            Self::Claims => "claims",
            Self::NoRole => "no_role",
        }
    }
}

/// A token whose signature and claims were checked.
#[derive(Debug)]
pub struct Verified {
    /// The subject id, `oidc:<iss>#<sub>`.
    pub subject: String,
    /// The principal its claims map to, or why they map to none.
    pub from_claims: Result<Principal, String>,
}

/// Checks bearer JWTs for one provider.
pub struct OidcVerifier {
    settings: OidcSettings,
    algorithms: Vec<Algorithm>,
    keys: KeyCache,
    accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl OidcVerifier {
    /// A verifier for the settings, with its keys fetched once (a provider that does not
    /// answer yet is logged, not fatal: tokens are refused until it does).
    ///
    /// # Errors
    /// The settings' CA bundle cannot be used.
    pub fn new(settings: &OidcSettings) -> Result<Self, String> {
        let source = KeySource::from_settings(settings)?;
        let min_interval = Duration::from_secs(settings.min_refresh_interval_s);
        let keys = if settings.jwks_file.is_some() {
            KeyCache::new(source, min_interval, None, min_interval)
        } else {
            KeyCache::new(
                source,
                Duration::from_secs(settings.refresh_interval_s),
                Some(Duration::from_secs(settings.max_key_age_s)),
                min_interval,
            )
        };
        keys.prime(Instant::now());
        let algorithms = settings.algorithms.iter().filter_map(|name| algorithm(name)).collect();
        Ok(Self {
            settings: settings.clone(),
            algorithms,
            keys,
            accepted: AtomicU64::new(0),
            refused: Default::default(),
        })
    }

    /// Whether a bearer token is one for this path (a JWS compact serialization) rather
    /// than an API key.
    #[must_use]
    pub fn looks_like_jwt(token: &str) -> bool {
        token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
    }

    /// Checks a token: its subject id and the principal its claims map to. The caller
    /// looks the subject up in the mapping table (which wins) and then calls
    /// [`Self::settle`].
    ///
    /// # Errors
    /// [`Refusal`], counted for `/metrics`.
    pub fn verify(&self, token: &str, now_s: u64, now: Instant) -> Result<Verified, Refusal> {
        let result = self.check(token, &self.settings.audiences, now_s, now).map(|(verified, _)| verified);
        if let Err(refusal) = &result {
            self.count(*refusal);
        }
        result
    }

    /// Checks an ID token from the authorization-code sign-in (the admin UI's): the same
    /// checks as [`Self::verify`], for the audience `client_id` instead of the API's
    /// audiences, and its `nonce` must be the one the sign-in sent.
    ///
    /// # Errors
    /// [`Refusal`], counted for `/metrics`.
    pub fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
        now_s: u64,
        now: Instant,
    ) -> Result<Verified, Refusal> {
        let result =
            self.check(token, &[client_id.to_string()], now_s, now).and_then(|(verified, claims)| {
                match claims.get("nonce").and_then(Value::as_str) {
                    Some(sent) if sent == nonce => Ok(verified),
                    _ => Err(Refusal::Claims),
                }
            });
        if let Err(refusal) = &result {
            self.count(*refusal);
        }
        result
    }

    /// The principal a verified subject ends with (from the mapping table or its claims),
    /// counted; a subject with none is refused with [`Refusal::NoRole`] and logged.
    ///
    /// # Errors
    /// [`Refusal::NoRole`].
    pub fn settle(&self, subject: &str, principal: Result<Principal, String>) -> Result<Principal, Refusal> {
        match principal {
            Ok(principal) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(principal)
            }
            Err(reason) => {
                tracing::warn!(%subject, %reason, "a valid OIDC token maps to no role; refused");
                self.count(Refusal::NoRole);
                Err(Refusal::NoRole)
            }
        }
    }

    fn count(&self, refusal: Refusal) {
        if let Some(index) = Refusal::ALL.iter().position(|r| *r == refusal) {
            self.refused[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check(&self, token: &str, audiences: &[String], now_s: u64, now: Instant) -> Result<(Verified, Value), Refusal> {
        if token.len() > MAX_TOKEN_BYTES
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Refusal::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Refusal::Algorithm);
        }
        if header.crit.is_some() {
            return Err(Refusal::Header);
        }
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt" | "application/jwt") {
                return Err(Refusal::Header);
            }
        }
        let kid = header.kid.as_deref().filter(|kid| kid_acceptable(kid)).ok_or(Refusal::Header)?;
        let key = self.keys.key(kid, now).map_err(|missing| match missing {
            Missing::UnknownKid => Refusal::UnknownKey,
            Missing::KeysExpired => Refusal::KeysExpired,
        })?;
        if !key.verifies(header.alg) {
            return Err(Refusal::UnknownKey);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);
        validation.leeway = self.settings.leeway_s;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                    Refusal::Signature
                }
                ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                    Refusal::Malformed
                }
                _ => Refusal::Claims,
            }
        })?;
        let claims = data.claims;
        let iat = claims.get("iat").and_then(Value::as_u64).ok_or(Refusal::Claims)?;
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or(Refusal::Claims)?;
        if iat > now_s + self.settings.leeway_s || exp.saturating_sub(iat) > self.settings.max_token_lifetime_s {
            return Err(Refusal::Claims);
        }
        let subject = claims.get("sub").and_then(Value::as_str).filter(|s| claims::subject_acceptable(s));
        let subject = subject.ok_or(Refusal::Claims)?;
        let id = claims::subject_id(&self.settings.issuer, subject);
        let from_claims = claims::principal(&self.settings, &claims, id.clone());
        Ok((Verified { subject: id, from_claims }, claims))
    }

    /// The `/metrics` lines of the OIDC path (fixed label sets).
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP dg_oidc_tokens_total Bearer JWTs checked, by answer.");
        let _ = writeln!(out, "# TYPE dg_oidc_tokens_total counter");
        let _ = writeln!(out, "dg_oidc_tokens_total{{answer=\"accepted\"}} {}", self.accepted.load(Ordering::Relaxed));
        for (index, refusal) in Refusal::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "dg_oidc_tokens_total{{answer=\"{}\"}} {}",
                refusal.label(),
                self.refused[index].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP dg_oidc_jwks_fetches_total Fetches of the provider's signing keys, by result.");
        let _ = writeln!(out, "# TYPE dg_oidc_jwks_fetches_total counter");
        let _ = writeln!(
            out,
            "dg_oidc_jwks_fetches_total{{result=\"ok\"}} {}",
            self.keys.counters.ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "dg_oidc_jwks_fetches_total{{result=\"failed\"}} {}",
            self.keys.counters.failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP dg_oidc_jwks_keys Signing keys held.");
        let _ = writeln!(out, "# TYPE dg_oidc_jwks_keys gauge");
        let _ = writeln!(out, "dg_oidc_jwks_keys {}", self.keys.key_count());
        out
    }
}

/// The algorithm an allow-list name stands for (asymmetric ones only).
fn algorithm(name: &str) -> Option<Algorithm> {
    settings::ASYMMETRIC_ALGORITHMS.contains(&name).then(|| name.parse().ok()).flatten()
}
