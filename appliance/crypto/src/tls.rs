//! The rustls crypto provider every TLS configuration (server and client) is built on.

use std::sync::Arc;

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
