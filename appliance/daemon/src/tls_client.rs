//! TLS as a client (to an identity provider, a syslog collector, the daemon's own
//! `/metrics`): a rustls configuration trusting only a given CA bundle, optionally with a
//! client certificate. One place, so every outbound connection checks certificates alike.

use std::path::Path;

use rustls::pki_types::CertificateDer;

/// Largest PEM file read (CA bundle, certificate chain, key).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The certificates of a PEM file (at least one).
///
/// # Errors
/// Unreadable file, bad PEM, or no certificate in it.
pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = dg_storage::read_bounded(path, MAX_PEM_BYTES, dg_storage::Links::Follow)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// A client configuration trusting the certificates of `ca` only, presenting
/// `client` (certificate chain, private key) when given.
///
/// # Errors
/// Unreadable or invalid CA bundle or client material.
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(ca)? {
        roots.add(cert).map_err(|err| format!("{}: {err}", ca.display()))?;
    }
    let provider = dg_crypto::tls_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = pem_certs(cert)?;
            let pem = dg_storage::read_bounded(key, MAX_PEM_BYTES, dg_storage::Links::Follow)
                .map_err(|err| format!("{}: {err}", key.display()))?;
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|err| err.to_string())?
                .ok_or_else(|| format!("{} holds no private key", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|err| err.to_string())
        }
    }
}
