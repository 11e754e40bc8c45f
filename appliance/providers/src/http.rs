//! `http` provider: GET a URL and report its status or the sha256 of its body. Off unless
//! configured; https only unless `allow_http`; host allowlist; no redirects; bounded
//! time and body size. Without an allowlist, only public addresses are reached
//! (`address_policy`). Every failure is a provider error (Unknown), never a value.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use dg_engine::evidence::{
    EvidenceAnchor, EvidenceContext, EvidenceQuery, EvidenceRef, EvidenceResult, EvidenceValue, ProviderCallError,
    TrustLane,
};
use dg_engine::hashing::{hash_bytes, HashAlgorithm};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::address_policy::only_public;
use crate::host_resolver::HostResolver;

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
    /// Only these hosts, when set. A listed host may resolve to any address: listing it is
    /// the operator's decision to let scenarios reach it.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Appliance extension: without `allowed_hosts`, also reach loopback, private,
    /// link-local and reserved addresses. Off by default, because any tenant's scenario
    /// chooses the URLs.
    #[serde(default)]
    pub allow_private_networks: bool,
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
            allow_private_networks: false,
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
    /// Shared with the agent's resolver hook; kept here for its configuration problem.
    resolver: Arc<HostResolver>,
}

fn provider_error(message: &str) -> ProviderCallError {
    ProviderCallError(message.to_string())
}

fn normalize_host(host: &str) -> String {
    let trimmed = host.trim_end_matches('.');
    trimmed.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(trimmed).to_ascii_lowercase()
}

impl HttpProvider {
    /// Builds the provider, resolving names through the machine's hosts file and
    /// `/etc/resolv.conf` (see `host_resolver`).
    ///
    /// # Errors
    /// The resolver's runtime could not be built (no file descriptors or threads left).
    pub fn new(config: HttpProviderConfig) -> std::io::Result<Self> {
        let resolver = HostResolver::from_system(Duration::from_millis(config.timeout_ms))?;
        Ok(Self::with_resolver(config, resolver))
    }

    /// Builds the provider on a given resolver (tests point one at a loopback DNS server).
    #[must_use]
    pub fn with_resolver(config: HttpProviderConfig, resolver: HostResolver) -> Self {
        let mut builder = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirects(0)
            .user_agent(&config.user_agent);
        // TLS on the build's provider (dg-crypto), never ureq's own default. (It fails only
        // for a provider without TLS 1.2 and 1.3, which neither build has.)
        if let Ok(tls) = dg_crypto::tls_public_client_config() {
            builder = builder.tls_config(Arc::new(tls));
        }
        // With an allowlist every host that reaches the resolver was listed by the operator.
        let reach_any_address = config.allow_private_networks || config.allowed_hosts.is_some();
        let resolver = Arc::new(resolver);
        let hook = Arc::clone(&resolver);
        let builder = if reach_any_address {
            builder.resolver(move |netloc: &str| hook.resolve(netloc))
        } else {
            builder.resolver(move |netloc: &str| hook.resolve(netloc).and_then(only_public))
        };
        Self { config, agent: builder.build(), resolver }
    }

    /// Why host names outside the hosts file cannot resolve (an unusable `/etc/resolv.conf`),
    /// for the daemon to log at startup.
    #[must_use]
    pub fn name_resolution_problem(&self) -> Option<&str> {
        self.resolver.configuration_problem()
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
            Err(ureq::Error::Transport(transport)) => Err(provider_error(
                &resolution_failure(&transport).unwrap_or_else(|| "http request failed".to_string()),
            )),
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

/// What went wrong resolving the URL's host, in the resolver's own words (the address policy's
/// refusal, a lookup timeout, no address): these name no server and no resolved address.
fn resolution_failure(transport: &ureq::Transport) -> Option<String> {
    if transport.kind() != ureq::ErrorKind::Dns {
        return None;
    }
    std::error::Error::source(transport)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .map(std::string::ToString::to_string)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address_policy::NON_PUBLIC_ADDRESS;
    use crate::host_resolver::{LOOKUP_TIMED_OUT, NOT_RESOLVED};
    use crate::test_support::{context, LoopbackDns};
    use serde_json::json;
    use std::io::Write;
    use std::net::Ipv4Addr;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A loopback HTTP server answering `200 ok` to every connection for a few seconds, and
    /// counting the connections it saw: a refused URL must not even connect.
    struct LoopbackServer {
        port: u16,
        connections: Arc<AtomicUsize>,
    }

    impl LoopbackServer {
        fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&connections);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            seen.fetch_add(1, Ordering::SeqCst);
                            stream.set_nonblocking(false).unwrap();
                            std::thread::sleep(Duration::from_millis(20));
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Self { port, connections }
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    fn status_of(provider: &HttpProvider, url: &str) -> Result<EvidenceResult, ProviderCallError> {
        let query =
            EvidenceQuery { provider_id: "http".into(), check_id: "status".into(), params: Some(json!({"url": url})) };
        provider.query(&query, &context())
    }

    fn plain_http(config: HttpProviderConfig) -> HttpProvider {
        HttpProvider::new(HttpProviderConfig { allow_http: true, timeout_ms: 2000, ..config }).unwrap()
    }

    #[test]
    fn without_an_allowlist_internal_addresses_are_refused_before_connecting() {
        let server = LoopbackServer::start();
        let provider = plain_http(HttpProviderConfig::default());
        for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1"] {
            let url = format!("http://{host}:{}/", server.port);
            let error = status_of(&provider, &url).unwrap_err();
            assert_eq!(error.0, NON_PUBLIC_ADDRESS, "{url}");
        }
        // Literal private and metadata addresses are refused without any network traffic.
        for url in ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[fd00::1]/"] {
            assert_eq!(status_of(&provider, url).unwrap_err().0, NON_PUBLIC_ADDRESS, "{url}");
        }
        assert_eq!(server.connections(), 0, "a refused URL must not reach the server");
    }

    #[test]
    fn a_listed_host_or_allow_private_networks_reaches_the_loopback_server() {
        let server = LoopbackServer::start();
        let url = format!("http://127.0.0.1:{}/", server.port);
        let listed =
            plain_http(HttpProviderConfig { allowed_hosts: Some(vec!["127.0.0.1".into()]), ..Default::default() });
        let result = status_of(&listed, &url).unwrap();
        assert_eq!(result.value, Some(EvidenceValue::Json(json!(200))));
        let private = plain_http(HttpProviderConfig { allow_private_networks: true, ..Default::default() });
        let result = status_of(&private, &url).unwrap();
        assert_eq!(result.value, Some(EvidenceValue::Json(json!(200))));
        assert_eq!(server.connections(), 2);
        // A host outside the allowlist is still refused by the allowlist itself.
        let other = format!("http://localhost:{}/", server.port);
        assert_eq!(status_of(&listed, &other).unwrap_err().0, "url host not allowed");
    }

    /// Plain http with its resolver pointed at `dns` instead of the machine's configuration.
    fn resolving_through(dns: &LoopbackDns, config: HttpProviderConfig) -> HttpProvider {
        let config = HttpProviderConfig { allow_http: true, ..config };
        let resolver = HostResolver::with_name_server(dns.address, Duration::from_millis(config.timeout_ms)).unwrap();
        HttpProvider::with_resolver(config, resolver)
    }

    #[test]
    fn a_dns_answer_with_an_internal_address_is_refused_before_connecting() {
        let server = LoopbackServer::start();
        let dns = LoopbackDns::answering(&[("svc.internal.test", Ipv4Addr::LOCALHOST)]);
        let provider = resolving_through(&dns, HttpProviderConfig { timeout_ms: 2000, ..Default::default() });
        let url = format!("http://svc.internal.test:{}/", server.port);
        assert_eq!(status_of(&provider, &url).unwrap_err().0, NON_PUBLIC_ADDRESS);
        assert!(dns.queries() >= 1, "the name must have been looked up at the configured server");
        assert_eq!(server.connections(), 0, "a refused answer must not be connected to");
    }

    #[test]
    fn a_listed_name_resolves_through_the_configured_name_server() {
        // The C library's resolver knows nothing of this name: reaching the server shows the
        // provider's own resolver asked the configured DNS server.
        let server = LoopbackServer::start();
        let dns = LoopbackDns::answering(&[("svc.internal.test", Ipv4Addr::LOCALHOST)]);
        let listed = HttpProviderConfig {
            timeout_ms: 2000,
            allowed_hosts: Some(vec!["svc.internal.test".into()]),
            ..Default::default()
        };
        let provider = resolving_through(&dns, listed);
        let result = status_of(&provider, &format!("http://svc.internal.test:{}/", server.port)).unwrap();
        assert_eq!(result.value, Some(EvidenceValue::Json(json!(200))));
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn a_name_without_an_address_is_reported_as_such() {
        let dns = LoopbackDns::answering(&[("svc.internal.test", Ipv4Addr::LOCALHOST)]);
        let provider = resolving_through(&dns, HttpProviderConfig { timeout_ms: 2000, ..Default::default() });
        assert_eq!(status_of(&provider, "http://missing.internal.test/").unwrap_err().0, NOT_RESOLVED);
    }

    #[test]
    fn a_silent_name_server_is_cut_off_at_the_time_limit() {
        let dns = LoopbackDns::silent();
        let provider = resolving_through(&dns, HttpProviderConfig { timeout_ms: 300, ..Default::default() });
        let started = Instant::now();
        assert_eq!(status_of(&provider, "http://slow.internal.test/").unwrap_err().0, LOOKUP_TIMED_OUT);
        let waited = started.elapsed();
        assert!(dns.queries_within(Duration::from_secs(2)) >= 1, "the lookup asked the configured server");
        // The bound is the provider's limit; well under the resolver's own 5 s x 2 attempts.
        assert!(waited < Duration::from_secs(3), "lookup took {waited:?}");
    }

    #[test]
    fn the_extension_key_is_accepted_in_config_and_unknown_keys_are_not() {
        let config: HttpProviderConfig = serde_json::from_value(json!({
            "allow_http": false, "timeout_ms": 100, "max_response_bytes": 10, "user_agent": "x",
            "hash_algorithm": "sha256", "allow_private_networks": true
        }))
        .unwrap();
        assert!(config.allow_private_networks);
        let unknown = serde_json::from_value::<HttpProviderConfig>(json!({
            "allow_http": false, "timeout_ms": 100, "max_response_bytes": 10, "user_agent": "x",
            "hash_algorithm": "sha256", "allow_private": true
        }));
        assert!(unknown.is_err());
    }
}
