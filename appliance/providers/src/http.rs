//! `http` provider: GET a URL and report its status or the sha256 of its body. Off unless
//! configured; https only unless `allow_http`; host allowlist; no redirects; bounded
//! time and body size. Every failure is a provider error (Unknown), never a value.

use std::io::Read;
use std::time::Duration;

use dg_engine::evidence::{
    EvidenceAnchor, EvidenceContext, EvidenceQuery, EvidenceRef, EvidenceResult, EvidenceValue, ProviderCallError,
    TrustLane,
};
use dg_engine::hashing::{hash_bytes, HashAlgorithm};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// `[providers.config]` of the http provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// Allow plain `http://` URLs.
    pub allow_http: bool,
    /// Whole-request time limit.
    pub timeout_ms: u64,
    /// Largest body read.
    pub max_response_bytes: usize,
    /// Only these hosts, when set.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// User-Agent header.
    pub user_agent: String,
    /// Digest of `body_hash`.
    pub hash_algorithm: HashAlgorithm,
}

impl Default for HttpProviderConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            timeout_ms: 5000,
            max_response_bytes: 1024 * 1024,
            allowed_hosts: None,
            user_agent: "decision-gate/0.1".to_string(),
            hash_algorithm: HashAlgorithm::Sha256,
        }
    }
}

/// The http provider.
#[derive(Debug)]
pub struct HttpProvider {
    config: HttpProviderConfig,
    agent: ureq::Agent,
}

fn provider_error(message: &str) -> ProviderCallError {
    ProviderCallError(message.to_string())
}

fn normalize_host(host: &str) -> String {
    let trimmed = host.trim_end_matches('.');
    trimmed.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(trimmed).to_ascii_lowercase()
}

impl HttpProvider {
    /// Builds the provider.
    #[must_use]
    pub fn new(config: HttpProviderConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirects(0)
            .user_agent(&config.user_agent)
            .build();
        Self { config, agent }
    }

    fn validate(&self, params: Option<&Value>) -> Result<Url, ProviderCallError> {
        let params = params.ok_or_else(|| provider_error("http check requires params"))?;
        let Value::Object(map) = params else {
            return Err(provider_error("http params must be an object"));
        };
        let Value::String(raw) = map.get("url").ok_or_else(|| provider_error("missing url param"))? else {
            return Err(provider_error("url param must be a string"));
        };
        let url = Url::parse(raw).map_err(|_| provider_error("invalid url"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_http => {}
            _ => return Err(provider_error("unsupported url scheme")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(provider_error("url credentials are not allowed"));
        }
        let host = normalize_host(url.host_str().ok_or_else(|| provider_error("url host required"))?);
        if let Some(allowed) = &self.config.allowed_hosts {
            if !allowed.iter().any(|entry| normalize_host(entry) == host) {
                return Err(provider_error("url host not allowed"));
            }
        }
        Ok(url)
    }

    fn get(&self, url: &Url) -> Result<ureq::Response, ProviderCallError> {
        match self.agent.get(url.as_str()).call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => {
                if (300..400).contains(&response.status()) {
                    return Err(provider_error("http redirect not allowed"));
                }
                Ok(response)
            }
            Err(ureq::Error::Transport(_)) => Err(provider_error("http request failed")),
        }
    }

    /// Answers `status` and `body_hash`.
    ///
    /// # Errors
    /// Any policy, transport or size failure.
    pub fn query(
        &self,
        query: &EvidenceQuery,
        _context: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderCallError> {
        if query.check_id != "status" && query.check_id != "body_hash" {
            return Err(provider_error("unsupported http check"));
        }
        let url = self.validate(query.params.as_ref())?;
        let response = self.get(&url)?;
        let value = if query.check_id == "status" {
            Value::from(response.status())
        } else {
            let body = read_limited(response, self.config.max_response_bytes)?;
            serde_json::to_value(hash_bytes(&body)).map_err(|_| provider_error("hash serialization failed"))?
        };
        let mut result = EvidenceResult::empty(TrustLane::Verified);
        result.value = Some(EvidenceValue::Json(value));
        result.evidence_ref = Some(EvidenceRef { uri: url.to_string() });
        result.evidence_anchor = Some(EvidenceAnchor { anchor_type: "url".to_string(), anchor_value: url.to_string() });
        result.content_type = Some("application/json".to_string());
        Ok(result)
    }
}

fn read_limited(response: ureq::Response, max: usize) -> Result<Vec<u8>, ProviderCallError> {
    let declared: Option<usize> = response.header("content-length").and_then(|v| v.trim().parse().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(provider_error("http response exceeds size limit"));
    }
    let mut body = Vec::new();
    response
        .into_reader()
        .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|_| provider_error("failed to read response"))?;
    if body.len() > max {
        return Err(provider_error("http response exceeds size limit"));
    }
    if declared.is_some_and(|len| body.len() < len) {
        return Err(provider_error("http response truncated"));
    }
    Ok(body)
}
