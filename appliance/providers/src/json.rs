//! `json` provider: reads a JSON (or YAML) file below a configured root and selects a
//! value with JSONPath. Paths are resolved and checked to stay beneath the root; every
//! failure is an evidence result with an error code, never a value from elsewhere.
//! The checked path is then opened from a handle on the root, one component at a time
//! with `O_NOFOLLOW`: a directory or file swapped for a symbolic link after the check
//! fails the open instead of being followed out of the root.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use dg_engine::evidence::{
    EvidenceAnchor, EvidenceContext, EvidenceProviderError, EvidenceQuery, EvidenceRef, EvidenceResult, EvidenceValue,
    ProviderCallError, TrustLane,
};
use rustix::fs::{Mode, OFlags};
use serde::Deserialize;
use serde_json::{json, Value};
use serde_json_path::JsonPath;

use crate::registry::ProviderConfigError;

/// Directories on the way to a file: never a link.
const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY).union(OFlags::CLOEXEC).union(OFlags::NOFOLLOW);
/// The file itself: never a link, and a FIFO does not block the open.
const FILE_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::CLOEXEC).union(OFlags::NOFOLLOW).union(OFlags::NONBLOCK);

/// `[providers.config]` of the json provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonProviderConfig {
    /// Directory all files are read from.
    pub root: PathBuf,
    /// Stable name of the root, recorded in anchors (`^[a-z0-9][a-z0-9_-]{0,63}$`).
    pub root_id: String,
    /// Largest file read.
    pub max_bytes: usize,
    /// Whether `.yaml`/`.yml` files are parsed.
    pub allow_yaml: bool,
}

/// The json provider.
#[derive(Debug, Clone)]
pub struct JsonProvider {
    config: JsonProviderConfig,
    /// The root directory, opened once: every file is opened beneath this handle.
    root_dir: Arc<OwnedFd>,
}

fn error(code: &str, message: &str, details: Option<Value>) -> EvidenceProviderError {
    EvidenceProviderError { code: code.to_string(), message: message.to_string(), details }
}

fn error_result(
    err: EvidenceProviderError,
    evidence_ref: Option<EvidenceRef>,
    anchor: Option<EvidenceAnchor>,
) -> EvidenceResult {
    let mut result = EvidenceResult::empty(TrustLane::Verified);
    result.error = Some(err);
    result.evidence_ref = evidence_ref;
    result.evidence_anchor = anchor;
    result
}

fn valid_root_id(root_id: &str) -> bool {
    let mut chars = root_id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && root_id.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl JsonProvider {
    /// Builds the provider; the root must exist and be a directory.
    ///
    /// # Errors
    /// [`ProviderConfigError`] naming the bad field.
    pub fn new(mut config: JsonProviderConfig) -> Result<Self, ProviderConfigError> {
        if !valid_root_id(&config.root_id) {
            return Err(ProviderConfigError::new("json", "root_id", "must match ^[a-z0-9][a-z0-9_-]{0,63}$"));
        }
        let root = config
            .root
            .canonicalize()
            .map_err(|err| ProviderConfigError::new("json", "root", &format!("{}: {err}", config.root.display())))?;
        if !root.is_dir() {
            return Err(ProviderConfigError::new("json", "root", "is not a directory"));
        }
        let root_dir = rustix::fs::open(&root, DIR_FLAGS, Mode::empty())
            .map_err(|err| ProviderConfigError::new("json", "root", &format!("{}: {err}", root.display())))?;
        config.root = root;
        Ok(Self { config, root_dir: Arc::new(root_dir) })
    }

    /// Opens `relative` (components joined by `/`, already checked to stay beneath the
    /// root) from the root handle without following any link, and only if it is a regular
    /// file (`O_NONBLOCK` so a FIFO cannot stall the open; a directory is `EISDIR`).
    fn open_beneath(&self, relative: &str) -> Result<File, rustix::io::Errno> {
        let mut parts = relative.split('/').peekable();
        let mut dir: Option<OwnedFd> = None;
        while let Some(part) = parts.next() {
            let at = dir.as_ref().unwrap_or(&self.root_dir);
            if parts.peek().is_some() {
                dir = Some(rustix::fs::openat(at, part, DIR_FLAGS, Mode::empty())?);
            } else {
                let file = rustix::fs::openat(at, part, FILE_FLAGS, Mode::empty())?;
                return match rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&file)?.st_mode) {
                    rustix::fs::FileType::RegularFile => Ok(File::from(file)),
                    rustix::fs::FileType::Directory => Err(rustix::io::Errno::ISDIR),
                    _ => Err(rustix::io::Errno::INVAL),
                };
            }
        }
        Err(rustix::io::Errno::NOENT)
    }

    /// Answers `path`.
    ///
    /// # Errors
    /// An unsupported check id; everything else is an error result.
    pub fn query(
        &self,
        query: &EvidenceQuery,
        _context: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderCallError> {
        if query.check_id != "path" {
            return Err(ProviderCallError("unsupported json check".to_string()));
        }
        let (file, jsonpath) = match extract_params(query.params.as_ref()) {
            Ok(params) => params,
            Err(err) => return Ok(error_result(err, None, None)),
        };
        let (absolute, relative) = match self.resolve(file) {
            Ok(resolved) => resolved,
            Err(err) => return Ok(error_result(err, None, None)),
        };
        let evidence_ref = EvidenceRef { uri: format!("dg+file://{}/{relative}", self.config.root_id) };
        let anchor_value =
            match dg_engine::canonical_json_bytes(&json!({"root_id": self.config.root_id, "path": relative}))
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
            {
                Some(value) => value,
                None => {
                    let err = error("anchor_invalid", "anchor value serialization failed", None);
                    return Ok(error_result(err, Some(evidence_ref), None));
                }
            };
        let anchor = EvidenceAnchor { anchor_type: "file_path_rooted".to_string(), anchor_value };
        let document = self.read_limited(&relative).and_then(|content| self.parse(&absolute, &relative, &content));
        let (document, content_type) = match document {
            Ok(parsed) => parsed,
            Err(err) => return Ok(error_result(err, Some(evidence_ref), Some(anchor))),
        };
        let value = match jsonpath {
            None => document,
            Some(path) => match select(&document, &path) {
                Ok(Some(value)) => value,
                Ok(None) => {
                    let err = error(
                        "jsonpath_not_found",
                        &format!("jsonpath not found: {path}"),
                        Some(json!({"jsonpath": path})),
                    );
                    return Ok(error_result(err, Some(evidence_ref), Some(anchor)));
                }
                Err(err) => return Ok(error_result(err, Some(evidence_ref), Some(anchor))),
            },
        };
        let mut result = EvidenceResult::empty(TrustLane::Verified);
        result.value = Some(EvidenceValue::Json(value));
        result.evidence_ref = Some(evidence_ref);
        result.evidence_anchor = Some(anchor);
        result.content_type = Some(content_type.to_string());
        Ok(result)
    }

    /// Resolves `file` beneath the root: relative only, canonicalised, prefix-checked.
    fn resolve(&self, file: &str) -> Result<(PathBuf, String), EvidenceProviderError> {
        if file.is_empty() {
            return Err(error("path_missing", "json file path is empty", None));
        }
        let candidate = Path::new(file);
        if candidate.is_absolute() {
            return Err(error(
                "absolute_path_forbidden",
                "json file path must be relative to the configured root",
                Some(json!({"file": file})),
            ));
        }
        let resolved = self
            .config
            .root
            .join(candidate)
            .canonicalize()
            .map_err(|_| error("file_not_found", "unable to resolve json file", Some(json!({"file": file}))))?;
        let relative = resolved
            .strip_prefix(&self.config.root)
            .map_err(|_| error("path_outside_root", "json file path escapes root", Some(json!({"file": file}))))?;
        let mut parts = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return Err(error("path_invalid", "json file path contains invalid components", None)),
            }
        }
        if parts.is_empty() {
            return Err(error("path_invalid", "json file path resolves to empty path", None));
        }
        Ok((resolved, parts.join("/")))
    }

    fn read_limited(&self, relative: &str) -> Result<Vec<u8>, EvidenceProviderError> {
        let file = self.open_beneath(relative).map_err(|err| {
            // A directory opens but cannot be read, as with the open-source provider.
            match err {
                rustix::io::Errno::NOENT => {
                    error("file_not_found", "unable to open json file", Some(json!({"file": relative})))
                }
                rustix::io::Errno::ISDIR => {
                    error("file_read_failed", "unable to read json file", Some(json!({"file": relative})))
                }
                _ => error("file_open_failed", "unable to open json file", Some(json!({"file": relative}))),
            }
        })?;
        let max = self.config.max_bytes;
        let mut buf = Vec::new();
        file.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|_| error("file_read_failed", "unable to read json file", Some(json!({"file": relative}))))?;
        if buf.len() > max {
            return Err(error(
                "size_limit_exceeded",
                "json file exceeds size limit",
                Some(json!({"file": relative, "max_bytes": max, "actual_bytes": buf.len()})),
            ));
        }
        Ok(buf)
    }

    fn parse(
        &self,
        path: &Path,
        relative: &str,
        content: &[u8],
    ) -> Result<(Value, &'static str), EvidenceProviderError> {
        let ext = path.extension().and_then(|ext| ext.to_str()).unwrap_or_default().to_ascii_lowercase();
        if ext == "yaml" || ext == "yml" {
            if !self.config.allow_yaml {
                return Err(error("yaml_disabled", "yaml parsing is disabled", Some(json!({"file": relative}))));
            }
            let value: Value = serde_yaml::from_slice(content)
                .map_err(|_| error("invalid_yaml", "invalid yaml", Some(json!({"file": relative}))))?;
            return Ok((value, "application/yaml"));
        }
        let value: Value = serde_json::from_slice(content)
            .map_err(|_| error("invalid_json", "invalid json", Some(json!({"file": relative}))))?;
        Ok((value, "application/json"))
    }
}

fn extract_params(params: Option<&Value>) -> Result<(&str, Option<String>), EvidenceProviderError> {
    let params = params.ok_or_else(|| error("params_missing", "json check requires params", None))?;
    let Value::Object(map) = params else {
        return Err(error("params_invalid", "json params must be an object", None));
    };
    let Value::String(file) = map.get("file").ok_or_else(|| error("params_missing", "missing file param", None))?
    else {
        return Err(error("params_invalid", "file param must be a string", None));
    };
    let jsonpath = match map.get("jsonpath") {
        Some(Value::String(path)) => Some(path.clone()),
        Some(_) => return Err(error("params_invalid", "jsonpath param must be a string", None)),
        None => None,
    };
    Ok((file, jsonpath))
}

/// One match gives that value, several an array of them, none `None`.
fn select(document: &Value, path: &str) -> Result<Option<Value>, EvidenceProviderError> {
    let parsed = JsonPath::parse(path)
        .map_err(|_| error("invalid_jsonpath", "invalid jsonpath", Some(json!({"jsonpath": path}))))?;
    let matches: Vec<&Value> = parsed.query(document).all();
    Ok(match matches.as_slice() {
        [] => None,
        [single] => Some((*single).clone()),
        many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::context;

    fn provider(root: &Path) -> JsonProvider {
        JsonProvider::new(JsonProviderConfig {
            root: root.to_path_buf(),
            root_id: "test-root".into(),
            max_bytes: 64,
            allow_yaml: true,
        })
        .unwrap()
    }

    fn query(file: &str, jsonpath: Option<&str>) -> EvidenceQuery {
        let mut params = json!({"file": file});
        if let Some(path) = jsonpath {
            params["jsonpath"] = json!(path);
        }
        EvidenceQuery { provider_id: "json".into(), check_id: "path".into(), params: Some(params) }
    }

    fn code(result: &EvidenceResult) -> Option<&str> {
        result.error.as_ref().map(|e| e.code.as_str())
    }

    #[test]
    fn selects_values_and_anchors_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), r#"{"x":{"y":[1,2]}}"#).unwrap();
        let result = provider(dir.path()).query(&query("a.json", Some("$.x.y[*]")), &context()).unwrap();
        assert_eq!(result.value, Some(EvidenceValue::Json(json!([1, 2]))));
        assert_eq!(result.evidence_ref.unwrap().uri, "dg+file://test-root/a.json");
        assert_eq!(result.evidence_anchor.unwrap().anchor_value, r#"{"path":"a.json","root_id":"test-root"}"#);
    }

    #[test]
    fn escapes_and_absolute_paths_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(outer.path().join("secret.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret.json"), root.join("link.json")).unwrap();
        let p = provider(&root);
        assert_eq!(code(&p.query(&query("../secret.json", None), &context()).unwrap()), Some("path_outside_root"));
        assert_eq!(code(&p.query(&query("link.json", None), &context()).unwrap()), Some("path_outside_root"));
        assert_eq!(code(&p.query(&query("/etc/passwd", None), &context()).unwrap()), Some("absolute_path_forbidden"));
        assert_eq!(code(&p.query(&query("missing.json", None), &context()).unwrap()), Some("file_not_found"));
    }

    #[test]
    fn a_directory_swapped_for_a_link_after_the_check_is_not_followed() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f.json"), r#"{"who":"inside"}"#).unwrap();
        std::fs::create_dir(outer.path().join("elsewhere")).unwrap();
        std::fs::write(outer.path().join("elsewhere/f.json"), r#"{"who":"outside"}"#).unwrap();
        let p = provider(&root);
        let (_, relative) = p.resolve("d/f.json").unwrap();
        assert_eq!(p.read_limited(&relative).unwrap(), br#"{"who":"inside"}"#);
        // Between the check and the open, `d` becomes a link out of the root.
        std::fs::rename(root.join("d"), outer.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outer.path().join("elsewhere"), root.join("d")).unwrap();
        let err = p.read_limited(&relative).unwrap_err();
        assert_eq!(err.code, "file_open_failed", "{err:?}");
        // So does the file itself.
        std::fs::remove_file(root.join("d")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink(outer.path().join("elsewhere/f.json"), root.join("d/f.json")).unwrap();
        assert_eq!(p.read_limited(&relative).unwrap_err().code, "file_open_failed");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.json");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        std::fs::create_dir(dir.path().join("sub.json")).unwrap();
        let p = provider(dir.path());
        assert_eq!(code(&p.query(&query("pipe.json", None), &context()).unwrap()), Some("file_open_failed"));
        assert_eq!(code(&p.query(&query("sub.json", None), &context()).unwrap()), Some("file_read_failed"));
    }

    #[test]
    fn limits_and_parse_errors_are_error_results() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.json"), format!("\"{}\"", "x".repeat(100))).unwrap();
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        std::fs::write(dir.path().join("ok.yaml"), "a: 1\n").unwrap();
        let p = provider(dir.path());
        assert_eq!(code(&p.query(&query("big.json", None), &context()).unwrap()), Some("size_limit_exceeded"));
        assert_eq!(code(&p.query(&query("bad.json", None), &context()).unwrap()), Some("invalid_json"));
        assert_eq!(code(&p.query(&query("ok.yaml", Some("$.b")), &context()).unwrap()), Some("jsonpath_not_found"));
        assert_eq!(code(&p.query(&query("ok.yaml", Some("$[")), &context()).unwrap()), Some("invalid_jsonpath"));
        let yaml = p.query(&query("ok.yaml", Some("$.a")), &context()).unwrap();
        assert_eq!(yaml.content_type.as_deref(), Some("application/yaml"));
    }
}
