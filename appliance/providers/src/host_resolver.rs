//! How the http provider turns a URL's host into addresses: in Rust, not through the C
//! library, and within the provider's time limit.
//!
//! The release binary links glibc statically. Its `getaddrinfo` still loads NSS modules from
//! the machine it runs on, and a module built for another glibc version can fail or crash the
//! daemon; and the HTTP client cannot bound a `getaddrinfo` call, so a slow DNS server held a
//! request past `timeout_ms`. Here a name is looked up in the hosts file first, then at the name
//! servers of `/etc/resolv.conf`, both read when the provider is built (a change to either takes
//! a restart), and every lookup is cut off at the provider's time limit. NSS sources beyond
//! those two (LDAP, mDNS, `nss-myhostname`) are not consulted: operators list such hosts in
//! `/etc/hosts` or in DNS.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// What a scenario author sees when a lookup ran out of time. No server address in it.
pub const LOOKUP_TIMED_OUT: &str = "url host lookup timed out";
/// What a scenario author sees when a name has no address (or the lookup failed).
pub const NOT_RESOLVED: &str = "url host did not resolve to any address";

/// A runtime that may be dropped anywhere. The daemon's last reference to its providers can go
/// inside one of its own async tasks (graceful shutdown), where dropping a runtime the usual
/// way, which waits for its blocking threads, panics; this one is shut down in the background.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A resolver with its own small runtime, so the blocking http provider can use it from any
/// thread (the daemon calls providers on its blocking pool).
pub struct HostResolver {
    runtime: OwnRuntime,
    resolver: TokioResolver,
    limit: Duration,
    /// Why no name server is configured, when `/etc/resolv.conf` could not be read: names
    /// outside the hosts file then fail with this reason (an operator's problem to fix).
    unconfigured: Option<String>,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostResolver").field("limit", &self.limit).field("unconfigured", &self.unconfigured).finish()
    }
}

impl HostResolver {
    /// The machine's hosts file and `/etc/resolv.conf`. An unreadable `resolv.conf` is not an
    /// error here (the hosts file and address literals still work); a lookup that needs DNS
    /// then says so, and so does [`Self::configuration_problem`].
    ///
    /// # Errors
    /// The runtime could not be built (no threads or file descriptors left).
    pub fn from_system(limit: Duration) -> io::Result<Self> {
        Self::from_resolv_conf(Path::new("/etc/resolv.conf"), limit)
    }

    /// The hosts file and the name servers of the `resolv.conf` at `path`.
    ///
    /// # Errors
    /// The runtime could not be built.
    pub fn from_resolv_conf(path: &Path, limit: Duration) -> io::Result<Self> {
        let parsed = std::fs::read(path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| hickory_resolver::system_conf::parse_resolv_conf(bytes).map_err(|err| err.to_string()));
        match parsed {
            Ok((config, options)) => Self::build(config, options, limit, None),
            Err(err) => Self::build(
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
                limit,
                Some(format!("no DNS server configured ({}: {err})", path.display())),
            ),
        }
    }

    /// Why names outside the hosts file cannot resolve, if the name server configuration
    /// was unusable: the daemon logs it at startup.
    #[must_use]
    pub fn configuration_problem(&self) -> Option<&str> {
        self.unconfigured.as_deref()
    }

    /// One name server at `server` (UDP, then TCP for truncated answers), and the hosts file.
    /// Tests point this at a loopback DNS server; the daemon uses [`Self::from_system`].
    ///
    /// # Errors
    /// The runtime could not be built.
    pub fn with_name_server(server: SocketAddr, limit: Duration) -> io::Result<Self> {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
        Self::build(
            ResolverConfig::from_parts(None, Vec::new(), vec![name_server]),
            ResolverOpts::default(),
            limit,
            None,
        )
    }

    fn build(
        config: ResolverConfig,
        mut options: ResolverOpts,
        limit: Duration,
        unconfigured: Option<String>,
    ) -> io::Result<Self> {
        // Every address of a name, as getaddrinfo gives them, so the address policy sees all.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Always;
        options.timeout = options.timeout.min(limit);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let resolver = {
            let _entered = runtime.enter();
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|err| io::Error::other(format!("resolver setup: {err}")))?
        };
        Ok(Self { runtime: OwnRuntime(Some(runtime)), resolver, limit, unconfigured })
    }

    /// The addresses of `netloc` (`host:port`, as the HTTP client passes it; an IPv6 literal
    /// may be bracketed). An address literal is returned as it is, without any lookup.
    ///
    /// # Errors
    /// `InvalidInput` for a malformed `netloc`, `TimedOut` past the limit, `NotFound` when the
    /// name has no address or no server could answer.
    pub fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let (host, port) = split_netloc(netloc)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let Some(runtime) = &self.runtime.0 else {
            return Err(io::Error::other("resolver runtime is shut down"));
        };
        let lookup = runtime.block_on(async { tokio::time::timeout(self.limit, self.resolver.lookup_ip(host)).await });
        let found = match lookup {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, LOOKUP_TIMED_OUT)),
            Ok(Err(err)) => {
                let reason = match &self.unconfigured {
                    Some(reason) => format!("{NOT_RESOLVED}: {reason}"),
                    None if is_timeout(&err) => return Err(io::Error::new(io::ErrorKind::TimedOut, LOOKUP_TIMED_OUT)),
                    None => NOT_RESOLVED.to_string(),
                };
                return Err(io::Error::new(io::ErrorKind::NotFound, reason));
            }
            Ok(Ok(found)) => found,
        };
        let addresses: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addresses.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, NOT_RESOLVED));
        }
        Ok(addresses)
    }
}

fn is_timeout(err: &hickory_resolver::net::NetError) -> bool {
    matches!(err, hickory_resolver::net::NetError::Timeout)
}

/// `host:port` into its parts; the host loses IPv6 brackets.
fn split_netloc(netloc: &str) -> io::Result<(&str, u16)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("not a host:port: {netloc:?}"));
    let (host, port) = netloc.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host = host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlocs_split_into_host_and_port() {
        assert_eq!(split_netloc("example.com:443").unwrap(), ("example.com", 443));
        assert_eq!(split_netloc("[::1]:80").unwrap(), ("::1", 80));
        assert_eq!(split_netloc("::1:80").unwrap(), ("::1", 80));
        for bad in ["example.com", ":443", "example.com:", "example.com:99999", "[]:1"] {
            assert_eq!(split_netloc(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    fn without_name_servers(unconfigured: Option<&str>) -> HostResolver {
        let config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        let limit = Duration::from_millis(500);
        HostResolver::build(config, ResolverOpts::default(), limit, unconfigured.map(str::to_string)).unwrap()
    }

    #[test]
    fn address_literals_need_no_lookup() {
        // No name server at all: a literal must still resolve, with no DNS traffic.
        let resolver = without_name_servers(None);
        assert_eq!(resolver.resolve("192.0.2.7:8080").unwrap(), vec!["192.0.2.7:8080".parse().unwrap()]);
        assert_eq!(resolver.resolve("[2001:db8::1]:443").unwrap(), vec!["[2001:db8::1]:443".parse().unwrap()]);
    }

    #[test]
    fn a_resolv_conf_is_read_and_a_missing_one_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        std::fs::write(&conf, "nameserver 192.0.2.53\noptions timeout:1 attempts:1\n").unwrap();
        let configured = HostResolver::from_resolv_conf(&conf, Duration::from_millis(500)).unwrap();
        assert_eq!(configured.configuration_problem(), None);
        std::fs::write(&conf, "search example.com\n").unwrap();
        let no_servers = HostResolver::from_resolv_conf(&conf, Duration::from_millis(500)).unwrap();
        let problem = no_servers.configuration_problem().unwrap();
        assert!(problem.contains("resolv.conf") && problem.contains("no nameservers"), "{problem}");
        let missing = HostResolver::from_resolv_conf(&dir.path().join("absent"), Duration::from_millis(500)).unwrap();
        let problem = missing.configuration_problem().unwrap();
        assert!(problem.starts_with("no DNS server configured (") && problem.contains("absent"), "{problem}");
        let error = missing.resolve("nothing-here.invalid:443").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains(problem), "{error}");
    }

    #[test]
    fn an_unreadable_resolv_conf_is_named_when_a_lookup_needs_dns() {
        let resolver = without_name_servers(Some("no DNS server configured (/etc/resolv.conf: missing)"));
        let error = resolver.resolve("nothing-here.invalid:443").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("/etc/resolv.conf: missing"), "{error}");
    }
}
