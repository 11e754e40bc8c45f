//! Object keys: `<prefix>/<tenant>/<namespace>/<name>/runpack.tar.zst`, every segment of
//! the prefix and the name checked exactly as the filesystem store checks a path (no `..`,
//! no empty segments, no control or bidirectional characters, 255 bytes per segment), and
//! the whole key within S3's 1,024 bytes. A refused name never reaches the store.

use dg_storage::runpack_store::{validate_relative, RunpackStoreError};
use dg_storage::Scope;

/// The object holding a runpack's signed bundle, beneath its name.
pub const BUNDLE_OBJECT: &str = "runpack.tar.zst";

/// S3's longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Checks the configured prefix (empty is allowed).
///
/// # Errors
/// [`RunpackStoreError::InvalidPath`].
pub fn validate_prefix(prefix: &str) -> Result<(), RunpackStoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_relative(prefix).map(|_| ())
}

/// The key of the bundle of runpack `name` in `scope`.
///
/// # Errors
/// [`RunpackStoreError::InvalidPath`] for a name the filesystem store would refuse, or a
/// key longer than S3 allows.
pub fn bundle_key(prefix: &str, scope: Scope, name: &str) -> Result<String, RunpackStoreError> {
    let segments = validate_relative(name)?;
    let mut key = String::with_capacity(prefix.len() + name.len() + 48);
    if !prefix.is_empty() {
        key.push_str(prefix.trim_end_matches('/'));
        key.push('/');
    }
    key.push_str(&format!("{}/{}/", scope.tenant_id, scope.namespace_id));
    for segment in segments {
        key.push_str(segment);
        key.push('/');
    }
    key.push_str(BUNDLE_OBJECT);
    if key.len() > MAX_KEY_BYTES {
        return Err(RunpackStoreError::InvalidPath { path: name.to_string(), reason: "object key over 1024 bytes" });
    }
    Ok(key)
}

/// Whether `bucket` is a valid S3 bucket name (3-63 lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit).
#[must_use]
pub fn valid_bucket(bucket: &str) -> bool {
    let bytes = bucket.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !bucket.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_and_named() {
        let scope = Scope::new(7, 3);
        assert_eq!(bundle_key("", scope, "run-1").unwrap(), "7/3/run-1/runpack.tar.zst");
        assert_eq!(bundle_key("dg/prod/", scope, "a/b").unwrap(), "dg/prod/7/3/a/b/runpack.tar.zst");
    }

    #[test]
    fn hostile_names_are_refused() {
        let scope = Scope::new(1, 1);
        for name in ["../x", "a/../b", "/etc/passwd", "a//b", "", "a\u{0}b", "a\nb", "a\\b", "\u{202E}exe", ".."] {
            assert!(bundle_key("", scope, name).is_err(), "{name:?} was accepted");
        }
        assert!(bundle_key("", scope, &"a/".repeat(600)).is_err(), "over-long keys are refused");
        assert!(validate_prefix("ok/prefix").is_ok());
        assert!(validate_prefix("../up").is_err());
    }

    #[test]
    fn bucket_names() {
        assert!(valid_bucket("runpacks"));
        assert!(valid_bucket("dg.runpacks-1"));
        for bad in ["ab", "UP", "-a-", "a..b", "a_b", &"a".repeat(64)] {
            assert!(!valid_bucket(bad), "{bad}");
        }
    }
}
