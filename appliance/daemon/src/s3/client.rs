//! The S3 client the runpack store uses: credentials from a 0600 file or the standard
//! environment variables, TLS with rustls on ring trusting the configured CA bundle, host
//! names resolved in Rust (never glibc's NSS in the static binary), and every operation
//! bounded in time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{timeout::TimeoutConfig, StalledStreamProtectionConfig};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

/// The S3 client's TLS provider: the same as the rest of the build (dg-crypto).
#[cfg(not(feature = "fips"))]
const S3_CRYPTO: CryptoMode = CryptoMode::Ring;
#[cfg(feature = "fips")]
const S3_CRYPTO: CryptoMode = CryptoMode::AwsLcFips;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine as _;
use md5::Digest as _;

use super::settings::S3Settings;
use super::S3Error;

/// Reads a secret file (`crate::secret_file`), as a configuration error.
fn read_secret(path: &Path, what: &str) -> Result<String, S3Error> {
    crate::secret_file::read_secret(path, what).map_err(S3Error::Config)
}

/// The access key pair: from `credentials_file` (`access_key_id = …`,
/// `secret_access_key = …`, optional `session_token = …`; `#` comments), else from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
///
/// # Errors
/// [`S3Error::Config`] naming what is missing or wrong.
pub fn credentials(settings: &S3Settings) -> Result<Credentials, S3Error> {
    let Some(path) = &settings.credentials_file else {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        return match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment")),
            _ => Err(S3Error::Config(
                "no S3 credentials: set [runpacks.s3] credentials_file (a 0600 file) or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the service's environment"
                    .into(),
            )),
        };
    };
    let text = read_secret(path, "credentials file")?;
    let (mut id, mut secret, mut token) = (None, None, None);
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            S3Error::Config(format!("credentials file {} line {}: expected key = value", path.display(), number + 1))
        };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let value = value.trim().trim_matches('"').to_string();
        match key.trim() {
            "access_key_id" => id = Some(value),
            "secret_access_key" => secret = Some(value),
            "session_token" => token = Some(value),
            other => {
                return Err(S3Error::Config(format!(
                "credentials file {} line {}: unknown key {other:?} (access_key_id, secret_access_key, session_token)",
                path.display(),
                number + 1
            )))
            }
        }
    }
    match (id.filter(|v| !v.is_empty()), secret.filter(|v| !v.is_empty())) {
        (Some(id), Some(secret)) => Ok(Credentials::new(id, secret, token, None, "credentials_file")),
        _ => Err(S3Error::Config(format!(
            "credentials file {} needs access_key_id and secret_access_key",
            path.display()
        ))),
    }
}

/// An SSE-C customer key: the key and its MD5, both base64, as the headers carry them.
#[derive(Clone)]
pub struct CustomerKey {
    /// The 256-bit key, base64.
    pub key: String,
    /// Its MD5, base64.
    pub md5: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

/// Reads the SSE-C key file (0600): 32 bytes in base64.
///
/// # Errors
/// [`S3Error::Config`].
pub fn customer_key(path: &Path) -> Result<CustomerKey, S3Error> {
    let text = read_secret(path, "SSE-C key file")?;
    let engine = base64::engine::general_purpose::STANDARD;
    let key =
        engine.decode(text.trim()).ok().filter(|key| key.len() == 32).ok_or_else(|| {
            S3Error::Config(format!("SSE-C key file {}: expected 32 bytes in base64", path.display()))
        })?;
    Ok(CustomerKey { key: engine.encode(&key), md5: engine.encode(md5::Md5::digest(&key)) })
}

/// Host names through the appliance's own resolver (hosts file, then resolv.conf's
/// servers), bounded by the connect timeout.
#[derive(Debug, Clone)]
struct Resolver(Arc<dg_providers::host_resolver::HostResolver>);

impl ResolveDns for Resolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        let resolver = self.0.clone();
        let name = name.to_string();
        DnsFuture::new(async move {
            let found = tokio::task::spawn_blocking(move || resolver.resolve(&format!("{name}:443")))
                .await
                .map_err(|err| ResolveDnsError::new(Box::new(err) as BoxError))?
                .map_err(|err| ResolveDnsError::new(Box::new(err) as BoxError))?;
            Ok(found.into_iter().map(|addr| addr.ip()).collect())
        })
    }
}

/// Drops the SSE-C key digest from responses before they are parsed: some S3-compatible
/// stores (SeaweedFS) send it in a form the SDK cannot parse, and the appliance never reads
/// it (the key it sent is the key it holds).
#[derive(Debug)]
struct DropCustomerKeyDigest;

impl Intercept for DropCustomerKeyDigest {
    fn name(&self) -> &'static str {
        "DropCustomerKeyDigest"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.response_mut().headers_mut().remove("x-amz-server-side-encryption-customer-key-MD5");
        Ok(())
    }
}

/// Builds the client.
///
/// # Errors
/// [`S3Error::Config`] for an unreadable CA bundle or credentials.
pub fn build(settings: &S3Settings) -> Result<aws_sdk_s3::Client, S3Error> {
    let credentials = credentials(settings)?;
    let mut trust = TrustStore::empty().with_native_roots(settings.ca_file.is_none());
    if let Some(ca) = &settings.ca_file {
        let pem = dg_storage::read_bounded(ca, 1024 * 1024, dg_storage::Links::Follow)
            .map_err(|err| S3Error::Config(format!("CA bundle {}: {err}", ca.display())))?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|err| S3Error::Config(format!("TLS to the object store: {err}")))?;
    let connect = Duration::from_secs(settings.connect_timeout_s);
    let resolver = dg_providers::host_resolver::HostResolver::from_system(connect)
        .map_err(|err| S3Error::Config(format!("name resolution: {err}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(S3_CRYPTO))
        .tls_context(tls_context)
        .build_with_resolver(Resolver(Arc::new(resolver)));
    let operation = Duration::from_secs(settings.timeout_s);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(connect)
        .read_timeout(operation)
        .operation_attempt_timeout(operation)
        .operation_timeout(operation)
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .endpoint_url(settings.endpoint.trim_end_matches('/'))
        .force_path_style(settings.path_style)
        .credentials_provider(credentials)
        .http_client(http)
        .timeout_config(timeouts)
        .stalled_stream_protection(StalledStreamProtectionConfig::enabled().grace_period(connect).build())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .interceptor(DropCustomerKeyDigest)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(config))
}
