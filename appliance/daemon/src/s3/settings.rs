//! `[runpacks.s3]`: the bucket runpacks are kept in when `[runpacks] backend = "s3"`, with
//! its credentials (a 0600 file or the standard environment variables, never inline), TLS
//! trust, encryption and Object Lock retention (with per-tenant overrides).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::keys;

/// `[runpacks.s3]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The store's URL, `https://host:port` (plain `http://` only on loopback).
    pub endpoint: String,
    /// Region name sent in signatures (S3-compatible stores accept any; default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// Key prefix before `<tenant>/<namespace>/<name>/` (validated like a path; may be empty).
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), what on-prem stores expect (default).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// A file (0600) with `access_key_id = …` and `secret_access_key = …` lines; absent:
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the environment.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// CA bundle (PEM) the store's certificate must chain to (air-gapped sites run their own
    /// CA); absent: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Bound on one whole store operation (an export's upload, a download), in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Bound on connecting to the store, in seconds.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Bundles larger than this go up in parts of this size (MiB, at least 5 as S3 requires).
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// Largest bundle read back (MiB): a larger object is refused before it is fetched.
    #[serde(default = "default_max_bundle_mib")]
    pub max_bundle_mib: u64,
    /// Server-side encryption of every object.
    #[serde(default)]
    pub encryption: Encryption,
    /// Refuse to store anything the store would keep in plaintext: an encryption mode must be
    /// set, or the bucket must have default encryption (checked at start).
    #[serde(default)]
    pub require_encryption: bool,
    /// WORM retention and legal hold on every upload (the bucket must have Object Lock).
    #[serde(default)]
    pub object_lock: Option<ObjectLock>,
    /// Per-tenant retention, overriding `object_lock` for that tenant (keys: tenant ids).
    #[serde(default)]
    pub tenant_object_lock: BTreeMap<String, ObjectLock>,
}

/// `[runpacks.s3.encryption]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// `none` (the bucket's default applies), `sse-s3` (AES256), `sse-kms` or `sse-c`.
    #[serde(default)]
    pub mode: EncryptionMode,
    /// With `sse-kms`: the key id passed to the store.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// With `sse-c`: a file (0600) holding the 256-bit customer key, base64.
    #[serde(default)]
    pub customer_key_file: Option<PathBuf>,
}

/// How objects are encrypted at rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncryptionMode {
    /// Whatever the bucket does by default.
    #[default]
    #[serde(rename = "none")]
    None,
    /// `x-amz-server-side-encryption: AES256`.
    #[serde(rename = "sse-s3")]
    SseS3,
    /// `aws:kms` with a key id.
    #[serde(rename = "sse-kms")]
    SseKms,
    /// A customer-provided key sent with every request.
    #[serde(rename = "sse-c")]
    SseC,
}

/// `[runpacks.s3.object_lock]`: retention and legal hold set on every upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// `governance` or `compliance` (with `retain_until` or `retention_days`).
    #[serde(default)]
    pub mode: Option<LockMode>,
    /// Retention end, RFC 3339 (`2033-01-01T00:00:00Z`).
    #[serde(default)]
    pub retain_until: Option<String>,
    /// Retention from the upload, in days (instead of `retain_until`).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Legal hold on every upload.
    #[serde(default)]
    pub legal_hold: bool,
}

/// Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Removable only with `s3:BypassGovernanceRetention`.
    Governance,
    /// Nobody, not even the account's root, removes it before the date.
    Compliance,
}

impl LockMode {
    /// The S3 spelling.
    #[must_use]
    pub fn as_s3(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout_s() -> u64 {
    60
}
fn default_connect_timeout_s() -> u64 {
    5
}
fn default_part_size_mib() -> u64 {
    8
}
fn default_max_bundle_mib() -> u64 {
    512
}

impl ObjectLock {
    /// Problems with this retention (relative keys).
    fn problems(&self, at: &str, problems: &mut Vec<(String, String)>) {
        let period = match (&self.retain_until, self.retention_days) {
            (Some(_), Some(_)) => {
                problems.push((format!("{at}retain_until"), "give retain_until or retention_days, not both".into()));
                true
            }
            (Some(until), None) => {
                if parse_rfc3339(until).is_none() {
                    problems.push((
                        format!("{at}retain_until"),
                        "an RFC 3339 date and time, for example 2033-01-01T00:00:00Z".into(),
                    ));
                }
                true
            }
            (None, Some(0)) => {
                problems.push((format!("{at}retention_days"), "at least 1".into()));
                true
            }
            (None, Some(days)) if days > 36_500 => {
                problems.push((format!("{at}retention_days"), "at most 36500 (100 years)".into()));
                true
            }
            (None, Some(_)) => true,
            (None, None) => false,
        };
        if self.mode.is_some() != period {
            problems.push((
                format!("{at}mode"),
                "a retention mode (governance or compliance) goes together with retain_until or retention_days".into(),
            ));
        }
        if self.mode.is_none() && !self.legal_hold && !period {
            problems.push((format!("{at}mode"), "set a retention mode, a legal hold, or both".into()));
        }
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SSZ`).
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(text, &format).ok().map(time::OffsetDateTime::unix_timestamp)
}

impl S3Settings {
    /// Every problem with its key (relative to `runpacks.s3`).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match url_host(&self.endpoint) {
            None => problems.push(("endpoint".into(), "an http:// or https:// URL with a host".into())),
            Some((false, host)) if !is_loopback(host) => problems.push((
                "endpoint".into(),
                "runpacks leave the machine only over TLS: use https:// (plain http:// only on loopback)".into(),
            )),
            Some(_) => {}
        }
        if !keys::valid_bucket(&self.bucket) {
            problems.push(("bucket".into(), "3 to 63 lowercase letters, digits, dots and hyphens".into()));
        }
        if let Err(err) = keys::validate_prefix(&self.prefix) {
            problems.push(("prefix".into(), err.to_string()));
        }
        if self.region.is_empty() || self.region.len() > 64 || !self.region.bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(("region".into(), "1 to 64 printable characters".into()));
        }
        if !(1..=3600).contains(&self.timeout_s) {
            problems.push(("timeout_s".into(), "1 to 3600 seconds".into()));
        }
        if !(1..=60).contains(&self.connect_timeout_s) {
            problems.push(("connect_timeout_s".into(), "1 to 60 seconds".into()));
        }
        if !(5..=1024).contains(&self.part_size_mib) {
            problems.push(("part_size_mib".into(), "5 to 1024 MiB (S3 parts are at least 5 MiB)".into()));
        }
        if !(1..=4096).contains(&self.max_bundle_mib) {
            problems.push(("max_bundle_mib".into(), "1 to 4096 MiB".into()));
        }
        let encryption = &self.encryption;
        match encryption.mode {
            EncryptionMode::SseKms if encryption.kms_key_id.as_deref().is_none_or(str::is_empty) => {
                problems.push(("encryption.kms_key_id".into(), "sse-kms needs the key id".into()));
            }
            EncryptionMode::SseC if encryption.customer_key_file.is_none() => {
                problems.push(("encryption.customer_key_file".into(), "sse-c needs the customer key's file".into()));
            }
            _ => {}
        }
        if encryption.mode != EncryptionMode::SseKms && encryption.kms_key_id.is_some() {
            problems.push(("encryption.kms_key_id".into(), "only with mode = \"sse-kms\"".into()));
        }
        if encryption.mode != EncryptionMode::SseC && encryption.customer_key_file.is_some() {
            problems.push(("encryption.customer_key_file".into(), "only with mode = \"sse-c\"".into()));
        }
        if encryption.mode == EncryptionMode::SseC && url_host(&self.endpoint).is_some_and(|(tls, _)| !tls) {
            // The key travels in every request's headers.
            problems.push(("encryption.mode".into(), "sse-c sends the key with every request: use https://".into()));
        }
        if let Some(lock) = &self.object_lock {
            lock.problems("object_lock.", &mut problems);
        }
        for (tenant, lock) in &self.tenant_object_lock {
            if tenant.parse::<u64>().map_or(true, |id| id == 0) {
                problems.push((format!("tenant_object_lock.{tenant}"), "keys are tenant ids (1 or more)".into()));
            }
            lock.problems(&format!("tenant_object_lock.{tenant}."), &mut problems);
        }
        problems
    }

    /// The retention for an upload of `tenant`'s runpack.
    #[must_use]
    pub fn object_lock_for(&self, tenant: u64) -> Option<&ObjectLock> {
        self.tenant_object_lock.get(&tenant.to_string()).or(self.object_lock.as_ref())
    }

    /// Whether any upload may carry Object Lock settings.
    #[must_use]
    pub fn uses_object_lock(&self) -> bool {
        self.object_lock.is_some() || !self.tenant_object_lock.is_empty()
    }
}

/// `(is https, host)` of an `http(s)://host[:port][/]` URL.
fn url_host(url: &str) -> Option<(bool, &str)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let authority = rest.split('/').next()?;
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(host, _)| host)
    };
    (!host.is_empty()).then_some((tls, host))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> S3Settings {
        toml::from_str(&format!("endpoint = \"https://10.0.0.5:9000\"\nbucket = \"runpacks\"\n{extra}")).unwrap()
    }

    fn keys_of(settings: &S3Settings) -> Vec<String> {
        settings.problems().into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn a_plain_bucket_over_tls_is_fine() {
        assert!(settings("").problems().is_empty());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let mut plain = settings("");
        plain.endpoint = "http://10.0.0.5:9000".into();
        assert_eq!(keys_of(&plain), ["endpoint"]);
        plain.endpoint = "http://127.0.0.1:9000".into();
        assert!(plain.problems().is_empty());
    }

    #[test]
    fn retention_needs_mode_and_period_together() {
        assert_eq!(keys_of(&settings("[object_lock]\nmode = \"compliance\"")), ["object_lock.mode"]);
        assert_eq!(keys_of(&settings("[object_lock]\nretention_days = 3")), ["object_lock.mode"]);
        assert!(settings("[object_lock]\nmode = \"compliance\"\nretention_days = 3").problems().is_empty());
        assert!(settings("[object_lock]\nlegal_hold = true").problems().is_empty());
        assert_eq!(
            keys_of(&settings("[object_lock]\nmode = \"governance\"\nretain_until = \"next year\"")),
            ["object_lock.retain_until"]
        );
        assert_eq!(
            keys_of(&settings("[tenant_object_lock.x]\nlegal_hold = true")),
            ["tenant_object_lock.x"],
            "tenant overrides are keyed by tenant id"
        );
    }

    #[test]
    fn encryption_modes_need_their_keys() {
        assert_eq!(keys_of(&settings("[encryption]\nmode = \"sse-kms\"")), ["encryption.kms_key_id"]);
        assert_eq!(keys_of(&settings("[encryption]\nmode = \"sse-c\"")), ["encryption.customer_key_file"]);
        let mut ssec = settings("[encryption]\nmode = \"sse-c\"\ncustomer_key_file = \"/k\"");
        assert!(ssec.problems().is_empty());
        ssec.endpoint = "http://127.0.0.1:9000".into();
        assert_eq!(keys_of(&ssec), ["encryption.mode"], "an SSE-C key never travels in plaintext");
    }

    #[test]
    fn bucket_and_prefix_are_checked() {
        let mut bad = settings("prefix = \"a/../b\"");
        bad.bucket = "UP".into();
        assert_eq!(keys_of(&bad), ["bucket", "prefix"]);
    }

    #[test]
    fn tenant_override_wins() {
        let s = settings(
            "[object_lock]\nlegal_hold = true\n[tenant_object_lock.7]\nmode = \"compliance\"\nretention_days = 1",
        );
        assert_eq!(s.object_lock_for(7).and_then(|l| l.mode), Some(LockMode::Compliance));
        assert_eq!(s.object_lock_for(8).and_then(|l| l.mode), None);
    }
}
