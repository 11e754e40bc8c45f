//! `[audit.forward]`: where the audit chain is streamed (a syslog collector, RFC 5424 over
//! TCP with octet-counting framing, TLS by default).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[audit.forward]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardSettings {
    /// The collector, `IP:port` (a name would need the resolver a static binary lacks).
    pub address: SocketAddr,
    /// TLS to the collector (default); `false` sends plain TCP and is refused unless the
    /// collector is on loopback.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// CA bundle (PEM) the collector's certificate must chain to (required with TLS).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the collector's certificate must carry (default: the address's IP).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate (PEM) for collectors that require one, with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// HOSTNAME field of each message (default: this machine's name).
    #[serde(default)]
    pub hostname: Option<String>,
}

fn default_true() -> bool {
    true
}

impl ForwardSettings {
    /// Every problem with its key (relative to `audit.forward`).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.tls && self.ca_file.is_none() {
            problems
                .push(("ca_file".into(), "TLS to the collector needs the CA bundle its certificate chains to".into()));
        }
        if !self.tls && !self.address.ip().is_loopback() {
            problems.push(("tls".into(), "audit entries leave the machine only over TLS".into()));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            problems.push(("client_cert".into(), "give client_cert and client_key together".into()));
        }
        if let Some(host) = &self.hostname {
            if host.is_empty() || host.len() > 255 || !host.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(("hostname".into(), "1 to 255 printable characters, no spaces".into()));
            }
        }
        problems
    }
}
