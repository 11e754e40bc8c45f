//! Runpacks on S3-compatible object storage (`[runpacks] backend = "s3"`): `settings.rs` the
//! `[runpacks.s3]` section, `keys.rs` object keys checked like filesystem paths, `client.rs`
//! the SDK client (credentials, TLS trust, resolver, timeouts), `store.rs` the
//! [`dg_storage::runpack_backend::RunpackBackend`] that keeps signed bundles under
//! encryption and Object Lock.

pub mod client;
pub mod keys;
pub mod settings;
mod store;

pub use store::S3RunpackStore;

/// Why the S3 runpack store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A setting, a credentials or key file, or the CA bundle.
    #[error("[runpacks.s3]: {0}")]
    Config(String),
    /// The bucket is unreachable or not configured as the settings require.
    #[error("[runpacks.s3]: {0}")]
    Bucket(String),
}
