//! Where a provider's keys come from: a JWKS file (air-gapped; read when it changed) or
//! the provider over TLS (its `jwks_url`, or the `jwks_uri` of its discovery document).
//! Every read is bounded in size and time; `jku`/`x5u` headers of tokens are never
//! followed: keys come only from here.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::keys::MAX_JWKS_BYTES;
use super::settings::OidcSettings;

/// Longest a fetch from the provider may take (connect, send and read).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key source.
pub enum KeySource {
    /// A JWKS file and the identity of the version last read.
    File { path: PathBuf, stamp: Mutex<Option<FileStamp>> },
    /// The provider over TLS.
    Provider { agent: ureq::Agent, issuer: String, jwks_url: Mutex<Option<String>> },
}

/// What tells one version of a file from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

/// What a fetch found.
pub enum Fetched {
    /// A new document.
    Document(Vec<u8>),
    /// The file has not changed since it was last read.
    Unchanged,
}

impl KeySource {
    /// The source the settings name.
    ///
    /// # Errors
    /// The CA bundle cannot be read or holds no certificate.
    pub fn from_settings(settings: &OidcSettings) -> Result<Self, String> {
        if let Some(path) = &settings.jwks_file {
            return Ok(Self::File { path: path.clone(), stamp: Mutex::new(None) });
        }
        Ok(Self::Provider {
            agent: provider_agent(settings, FETCH_TIMEOUT)?,
            issuer: settings.issuer.trim_end_matches('/').to_string(),
            jwks_url: Mutex::new(settings.jwks_url.clone()),
        })
    }

    /// Reads the key document.
    ///
    /// # Errors
    /// A message for the log: what could not be read, and why.
    pub fn fetch(&self) -> Result<Fetched, String> {
        match self {
            Self::File { path, stamp } => {
                let (bytes, now) = read_file(path)?;
                let mut last = stamp.lock().map_err(|_| "key source lock poisoned".to_string())?;
                if *last == Some(now) {
                    return Ok(Fetched::Unchanged);
                }
                *last = Some(now);
                Ok(Fetched::Document(bytes))
            }
            Self::Provider { agent, issuer, jwks_url } => {
                let known = jwks_url.lock().map_err(|_| "key source lock poisoned".to_string())?.clone();
                let url = match known {
                    Some(url) => url,
                    None => {
                        let url = discover(agent, issuer)?;
                        if let Ok(mut slot) = jwks_url.lock() {
                            *slot = Some(url.clone());
                        }
                        url
                    }
                };
                get(agent, &url).map(Fetched::Document)
            }
        }
    }

    /// For the log: where keys come from.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::File { path, .. } => format!("file {}", path.display()),
            Self::Provider { issuer, .. } => format!("provider {issuer}"),
        }
    }
}

fn read_file(path: &Path) -> Result<(Vec<u8>, FileStamp), String> {
    use std::os::unix::fs::MetadataExt;
    let file = dg_storage::open_regular(path, dg_storage::Links::Follow)
        .map_err(|err| format!("JWKS file {}: {err}", path.display()))?;
    let meta = file.metadata().map_err(|err| format!("JWKS file {}: {err}", path.display()))?;
    if meta.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS file {} is larger than {MAX_JWKS_BYTES} bytes", path.display()));
    }
    let stamp = FileStamp {
        device: meta.dev(),
        inode: meta.ino(),
        size: meta.len(),
        modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("JWKS file {}: {err}", path.display()))?;
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("JWKS file {} is larger than {MAX_JWKS_BYTES} bytes", path.display()));
    }
    Ok((bytes, stamp))
}

/// An HTTPS client for the settings' provider: its CA bundle (else the system roots), no
/// redirects, `timeout` per request. The key fetches and the UI's sign-in use it alike.
///
/// # Errors
/// The CA bundle cannot be read or holds no certificate.
pub fn provider_agent(settings: &OidcSettings, timeout: Duration) -> Result<ureq::Agent, String> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("dg-appliance/", env!("CARGO_PKG_VERSION")));
    let tls = match &settings.ca_file {
        Some(ca) => crate::tls_client::client_config(ca, None).map_err(|err| format!("CA bundle: {err}"))?,
        None => dg_crypto::tls_public_client_config().map_err(|err| format!("TLS: {err}"))?,
    };
    builder = builder.tls_config(Arc::new(tls));
    Ok(builder.build())
}

/// The issuer's discovery document (read bounded), which must name the same issuer.
///
/// # Errors
/// Unreachable, too large, not JSON, or naming another issuer.
pub fn discovery_document(agent: &ureq::Agent, issuer: &str) -> Result<serde_json::Value, String> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let bytes = get(agent, &url)?;
    let document: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|err| format!("discovery document {url}: {err}"))?;
    let named = document.get("issuer").and_then(serde_json::Value::as_str).unwrap_or_default();
    if named.trim_end_matches('/') != issuer {
        return Err(format!("discovery document {url} names issuer {named:?}, not {issuer:?}"));
    }
    Ok(document)
}

/// The `jwks_uri` of the issuer's discovery document.
fn discover(agent: &ureq::Agent, issuer: &str) -> Result<String, String> {
    let document = discovery_document(agent, issuer)?;
    let url = format!("{issuer}/.well-known/openid-configuration");
    let jwks = document
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("discovery document {url} has no jwks_uri"))?;
    if !jwks.starts_with("https://") {
        return Err(format!("discovery document {url} names a jwks_uri that is not https: {jwks}"));
    }
    Ok(jwks.to_string())
}

fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, String> {
    let response = agent.get(url).call().map_err(|err| format!("GET {url}: {err}"))?;
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("GET {url}: {err}"))?;
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("GET {url}: larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}
