//! The rustls crypto provider every TLS configuration (server and client) is built on.

use std::sync::Arc;

/// A client configuration on [`provider`] trusting the public web PKI (Mozilla's roots as
/// shipped by `webpki-roots`): what ureq would build by default, but on this build's
/// provider, so no outbound connection falls back to another one.
///
/// # Errors
/// The provider supports none of the safe default protocol versions (never expected).
pub fn public_client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The provider: ring's default suites, or rustls' FIPS provider on AWS-LC (approved
/// suites and groups only: AES-GCM, ECDHE on P-256/P-384 and the post-quantum hybrid
/// with P-256 or X25519 only as its module allows).
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "fips")]
    {
        Arc::new(rustls::crypto::default_fips_provider())
    }
    #[cfg(all(feature = "standard", not(feature = "fips")))]
    {
        Arc::new(rustls::crypto::ring::default_provider())
    }
}
