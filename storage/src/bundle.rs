//! Signed runpack bundles (`.tar.zst`) and their hardened reader.
//!
//! A bundle holds `bundle.json` (a descriptor naming every file with its sha256 and size,
//! carrying the whole manifest and the run's tenant, namespace and ids, signed with
//! Ed25519 over its canonical JSON), the original `manifest.json` and the artifacts.
//! Verification needs nothing but the bundle and a public key.
//!
//! The reader checks while it streams: only regular files and directories, no links or
//! special files, no path escapes or duplicates, header sizes consistent, bounded entry
//! count, unpacked size and compression ratio; and it hands nothing back until the
//! signature, every file hash and the runpack's own integrity have been verified.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use dg_engine::runpack::{decision_log_errors, Prechecked, DECISION_LOG_PATH};

use dg_crypto::Sha256;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::runpack_store::validate_relative;
use crate::signing::{ActiveKey, PublicKeyRing, SigningError};

/// Format name written into every descriptor.
pub const BUNDLE_FORMAT: &str = "dg-runpack-bundle-v1";
/// Name of the signed descriptor member.
pub const DESCRIPTOR_NAME: &str = "bundle.json";

/// Reader limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Most tar entries.
    pub max_entries: usize,
    /// Most bytes unpacked in total.
    pub max_unpacked_bytes: u64,
    /// Largest single member.
    pub max_file_bytes: u64,
    /// Most unpacked bytes per compressed byte (zstd bomb guard).
    pub max_ratio: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_entries: 256,
            max_unpacked_bytes: 512 * 1024 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            max_ratio: 200,
        }
    }
}

/// One file named by the descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Relative path.
    pub path: String,
    /// sha256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The signed part of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleDescriptor {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// Tenant of the run.
    pub tenant_id: u64,
    /// Namespace of the run.
    pub namespace_id: u64,
    /// Run id.
    pub run_id: String,
    /// Scenario id.
    pub scenario_id: String,
    /// Name of the manifest member.
    pub manifest_name: String,
    /// The manifest (every field signed).
    pub manifest: Value,
    /// Every member but the descriptor: manifest and artifacts.
    pub files: Vec<BundleFile>,
}

/// Signature block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSignature {
    /// `ed25519`.
    pub algorithm: String,
    /// Signing key id.
    pub key_id: String,
    /// Signature over the canonical descriptor, hex.
    pub value: String,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDescriptor {
    /// The descriptor.
    pub descriptor: BundleDescriptor,
    /// Its signature.
    pub signature: BundleSignature,
}

/// A bundle whose every check passed.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    /// The signed descriptor.
    pub signed: SignedDescriptor,
    /// Manifest bytes.
    pub manifest_bytes: Vec<u8>,
    /// Artifact files (manifest excluded).
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a bundle was refused.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The zstd or tar stream is damaged or truncated.
    #[error("bundle stream is corrupt or truncated: {0}")]
    Corrupt(String),
    /// Too many entries.
    #[error("bundle has more than {0} entries")]
    TooManyEntries(usize),
    /// Too large unpacked.
    #[error("bundle unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// Compression ratio above the limit.
    #[error("bundle compression ratio exceeds {0}:1 (decompression bomb)")]
    Ratio(u64),
    /// A link entry.
    #[error("bundle entry {0:?} is a link; links are not allowed")]
    Link(String),
    /// A special entry.
    #[error("bundle entry {path:?} is a {kind}; only files and directories are allowed")]
    Special {
        /// Path.
        path: String,
        /// Entry type.
        kind: String,
    },
    /// An unsafe path.
    #[error("bundle entry path {path:?} is not allowed: {reason}")]
    Path {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A path given twice.
    #[error("bundle entry {0:?} appears twice")]
    Duplicate(String),
    /// Header sizes disagree (PAX/GNU vs ustar).
    #[error("bundle entry {0:?} has inconsistent size headers")]
    SizeMismatch(String),
    /// No `bundle.json`.
    #[error("bundle has no {DESCRIPTOR_NAME}")]
    MissingDescriptor,
    /// The descriptor does not parse.
    #[error("bundle descriptor is invalid: {0}")]
    InvalidDescriptor(String),
    /// Signature problems.
    #[error(transparent)]
    Signature(#[from] SigningError),
    /// A file's content does not match the signed descriptor.
    #[error("bundle file {0:?} does not match the signed descriptor")]
    HashMismatch(String),
    /// A signed file is missing.
    #[error("bundle file {0:?} named by the descriptor is missing")]
    Missing(String),
    /// A file not named by the descriptor.
    #[error("bundle file {0:?} is not named by the signed descriptor")]
    Extra(String),
    /// The manifest member differs from the signed manifest.
    #[error("manifest does not match the signed descriptor: {0}")]
    ManifestMismatch(String),
    /// The runpack inside fails its own verification.
    #[error("runpack verification failed: {0}")]
    Runpack(String),
    /// Building a bundle failed.
    #[error("cannot build bundle: {0}")]
    Build(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn canonical(value: &impl Serialize) -> Result<Vec<u8>, BundleError> {
    dg_engine::canonical_json_bytes(value).map_err(|err| BundleError::Build(err.to_string()))
}

/// Builds a signed bundle from a runpack (manifest bytes + artifact files). Deterministic
/// for the same inputs and key: fixed member order, zero times and owners.
///
/// # Errors
/// [`BundleError::Build`].
pub fn build_bundle(
    manifest_name: &str,
    manifest_bytes: &[u8],
    files: &[(String, Vec<u8>)],
    key: &ActiveKey,
) -> Result<Vec<u8>, BundleError> {
    let manifest: Value =
        serde_json::from_slice(manifest_bytes).map_err(|err| BundleError::Build(format!("manifest: {err}")))?;
    let id = |field: &str| {
        manifest.get(field).and_then(Value::as_u64).ok_or_else(|| BundleError::Build(format!("manifest {field}")))
    };
    let text = |field: &str| {
        manifest
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| BundleError::Build(format!("manifest {field}")))
    };
    // Borrowed, not copied: the runpack can be large.
    let mut members: Vec<(&str, &[u8])> = vec![(manifest_name, manifest_bytes)];
    members.extend(files.iter().map(|(path, bytes)| (path.as_str(), bytes.as_slice())));
    members.sort_by(|a, b| a.0.cmp(b.0));
    let descriptor = BundleDescriptor {
        format: BUNDLE_FORMAT.to_string(),
        tenant_id: id("tenant_id")?,
        namespace_id: id("namespace_id")?,
        run_id: text("run_id")?,
        scenario_id: text("scenario_id")?,
        manifest_name: manifest_name.to_string(),
        manifest,
        files: members
            .iter()
            .map(|(path, bytes)| BundleFile {
                path: (*path).to_string(),
                sha256: sha256_hex(bytes),
                size: bytes.len() as u64,
            })
            .collect(),
    };
    let signature = BundleSignature {
        algorithm: "ed25519".into(),
        key_id: key.key_id.clone(),
        value: key.sign_hex(&canonical(&descriptor)?)?,
    };
    let signed = canonical(&SignedDescriptor { descriptor, signature })?;
    // The tar stream goes straight into the compressor: no second copy of the runpack.
    let encoder =
        zstd::stream::write::Encoder::new(Vec::new(), 3).map_err(|err| BundleError::Build(err.to_string()))?;
    let mut builder = tar::Builder::new(encoder);
    let mut append = |path: &str, bytes: &[u8]| -> Result<(), BundleError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes).map_err(|err| BundleError::Build(err.to_string()))
    };
    append(DESCRIPTOR_NAME, &signed)?;
    for (path, bytes) in &members {
        append(path, bytes)?;
    }
    let encoder = builder.into_inner().map_err(|err| BundleError::Build(err.to_string()))?;
    encoder.finish().map_err(|err| BundleError::Build(err.to_string()))
}

/// Counts compressed bytes consumed, for the ratio guard.
struct Counting<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Members and their sha256 digests (computed while copying, in the same pass).
/// Members as unpacked, shared so a checker thread can read one while unpacking goes on,
/// and every member's sha256.
type Unpacked = (BTreeMap<String, Arc<Vec<u8>>>, BTreeMap<String, String>);

/// Called with each regular member as soon as it is complete and hashed.
type MemberHook<'a> = &'a mut dyn FnMut(&str, &Arc<Vec<u8>>);

/// The members once every reader of them has finished (no copy then).
fn owned(members: BTreeMap<String, Arc<Vec<u8>>>) -> BTreeMap<String, Vec<u8>> {
    members
        .into_iter()
        .map(|(path, bytes)| (path, Arc::try_unwrap(bytes).unwrap_or_else(|shared| (*shared).clone())))
        .collect()
}

/// Unpacks every member into memory with the structural checks (no trust yet), hashing
/// each as it is copied.
fn unpack(input: impl Read, limits: BundleLimits, on_member: MemberHook<'_>) -> Result<Unpacked, BundleError> {
    let compressed = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counting = Counting { inner: input, count: compressed.clone() };
    let decoder = zstd::stream::read::Decoder::new(counting).map_err(|err| BundleError::Corrupt(err.to_string()))?;
    let mut archive = tar::Archive::new(decoder);
    let mut members = BTreeMap::new();
    let mut digests = BTreeMap::new();
    let mut total = 0u64;
    let entries = archive.entries().map_err(|err| BundleError::Corrupt(err.to_string()))?;
    for (index, entry) in entries.enumerate() {
        if index >= limits.max_entries {
            return Err(BundleError::TooManyEntries(limits.max_entries));
        }
        let mut entry = entry.map_err(|err| BundleError::Corrupt(err.to_string()))?;
        let raw_path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| BundleError::Path { path: "<non-utf8>".into(), reason: "not UTF-8".into() })?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => return Err(BundleError::Link(raw_path)),
            other => return Err(BundleError::Special { path: raw_path, kind: format!("{other:?}") }),
        }
        let path = raw_path.trim_end_matches('/').to_string();
        validate_relative(&path)
            .map_err(|err| BundleError::Path { path: raw_path.clone(), reason: err.to_string() })?;
        if kind == tar::EntryType::Directory {
            continue;
        }
        let header_size = entry.header().size().map_err(|_| BundleError::SizeMismatch(path.clone()))?;
        let size = entry.size();
        if header_size != size && entry.header().as_ustar().is_some() {
            return Err(BundleError::SizeMismatch(path));
        }
        if size > limits.max_file_bytes || total + size > limits.max_unpacked_bytes {
            return Err(BundleError::TooLarge(limits.max_unpacked_bytes.min(limits.max_file_bytes.max(size))));
        }
        if members.contains_key(&path) {
            return Err(BundleError::Duplicate(path));
        }
        // `size` is already checked against the per-file and total limits.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut hasher = Sha256::new();
        let mut limited = (&mut entry).take(size + 1);
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = limited.read(&mut chunk).map_err(|err| BundleError::Corrupt(err.to_string()))?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
            hasher.update(&chunk[..n]);
            let unpacked = total + bytes.len() as u64;
            if unpacked > 1024 * 1024 && unpacked > compressed.get().saturating_mul(limits.max_ratio) {
                return Err(BundleError::Ratio(limits.max_ratio));
            }
        }
        if bytes.len() as u64 != size {
            return Err(BundleError::Corrupt(format!("entry {path} is truncated")));
        }
        total += size;
        digests.insert(path.clone(), hex::encode(hasher.finalize()));
        let bytes = Arc::new(bytes);
        on_member(&path, &bytes);
        members.insert(path, bytes);
    }
    // Reaching the end of the tar stream is not enough: the zstd frame must be complete.
    let mut rest = Vec::new();
    archive.into_inner().read_to_end(&mut rest).map_err(|err| BundleError::Corrupt(err.to_string()))?;
    Ok((members, digests))
}

/// Reads and fully verifies a bundle against trusted public keys.
///
/// # Errors
/// The first problem found, as a specific [`BundleError`].
pub fn read_bundle(
    input: impl Read,
    trusted: &PublicKeyRing,
    limits: BundleLimits,
) -> Result<VerifiedBundle, BundleError> {
    // The decision log is the largest structure to check, and it is the first artifact in
    // a bundle: a second core checks it while the rest is still being unpacked. Its
    // verdict is only used below, after the signature and every hash have passed.
    let (unpacked, decision_log) = std::thread::scope(|scope| {
        let mut checker = None;
        let unpacked = unpack(input, limits, &mut |path, bytes| {
            if path == DECISION_LOG_PATH {
                let bytes = Arc::clone(bytes);
                checker = Some(scope.spawn(move || decision_log_errors(&bytes)));
            }
        });
        // A panic in the checker is reported, never taken for a pass.
        let verdict =
            checker.map(|handle| handle.join().unwrap_or_else(|_| vec!["decision log check failed".to_string()]));
        (unpacked, verdict)
    });
    let (members, digests) = unpacked?;
    let (signed, mut members) = split_descriptor(owned(members))?;
    trusted.verify(&signed.signature.key_id, &canonical(&signed.descriptor)?, &signed.signature.value)?;
    let descriptor = &signed.descriptor;
    if descriptor.format != BUNDLE_FORMAT {
        return Err(BundleError::InvalidDescriptor(format!("unknown format {}", descriptor.format)));
    }
    let named: BTreeSet<&str> = descriptor.files.iter().map(|f| f.path.as_str()).collect();
    if named.len() != descriptor.files.len() {
        return Err(BundleError::InvalidDescriptor("a file is named twice".into()));
    }
    for path in members.keys() {
        if !named.contains(path.as_str()) {
            return Err(BundleError::Extra(path.clone()));
        }
    }
    let manifest_bytes = members
        .remove(&descriptor.manifest_name)
        .ok_or_else(|| BundleError::Missing(descriptor.manifest_name.clone()))?;
    // Every member was hashed once while it was unpacked; those digests serve both the
    // descriptor check here and the runpack verification below.
    for file in &descriptor.files {
        let bytes = if file.path == descriptor.manifest_name {
            &manifest_bytes
        } else {
            members.get(&file.path).ok_or_else(|| BundleError::Missing(file.path.clone()))?
        };
        if bytes.len() as u64 != file.size || digests.get(&file.path) != Some(&file.sha256) {
            return Err(BundleError::HashMismatch(file.path.clone()));
        }
    }
    let manifest: Value =
        serde_json::from_slice(&manifest_bytes).map_err(|err| BundleError::ManifestMismatch(err.to_string()))?;
    if manifest != descriptor.manifest {
        return Err(BundleError::ManifestMismatch("manifest member differs from the signed manifest".into()));
    }
    let ids_match = manifest.get("tenant_id").and_then(Value::as_u64) == Some(descriptor.tenant_id)
        && manifest.get("namespace_id").and_then(Value::as_u64) == Some(descriptor.namespace_id)
        && manifest.get("run_id").and_then(Value::as_str) == Some(descriptor.run_id.as_str())
        && manifest.get("scenario_id").and_then(Value::as_str) == Some(descriptor.scenario_id.as_str());
    if !ids_match {
        return Err(BundleError::ManifestMismatch(
            "tenant, namespace, run or scenario differ from the descriptor".into(),
        ));
    }
    let engine_digests: BTreeMap<String, dg_engine::HashDigest> = digests
        .iter()
        .map(|(path, value)| {
            let digest =
                dg_engine::HashDigest { algorithm: dg_engine::hashing::HashAlgorithm::Sha256, value: value.clone() };
            (path.clone(), digest)
        })
        .collect();
    let prechecked = Prechecked { digests: engine_digests, decision_log_errors: decision_log };
    let report = dg_engine::runpack::verify_runpack_prechecked(&manifest_bytes, &members, &prechecked)
        .map_err(|err| BundleError::Runpack(err.to_string()))?;
    if let Some(path) = report.errors.iter().find_map(|e| e.strip_prefix("hash mismatch for ")) {
        return Err(BundleError::HashMismatch(path.to_string()));
    }
    if !report.errors.is_empty() {
        return Err(BundleError::Runpack(report.errors.join("; ")));
    }
    Ok(VerifiedBundle { signed, manifest_bytes, files: members })
}

/// Takes the descriptor out of the members and parses it (not trusted yet).
fn split_descriptor(
    mut members: BTreeMap<String, Vec<u8>>,
) -> Result<(SignedDescriptor, BTreeMap<String, Vec<u8>>), BundleError> {
    let descriptor_bytes = members.remove(DESCRIPTOR_NAME).ok_or(BundleError::MissingDescriptor)?;
    let signed: SignedDescriptor =
        serde_json::from_slice(&descriptor_bytes).map_err(|err| BundleError::InvalidDescriptor(err.to_string()))?;
    if signed.signature.algorithm != "ed25519" {
        return Err(BundleError::InvalidDescriptor(format!(
            "unsupported signature algorithm {}",
            signed.signature.algorithm
        )));
    }
    Ok((signed, members))
}

/// Unpacks with every structural check and parses the descriptor, without trusting the
/// signature (for `runpack inspect`).
///
/// # Errors
/// Structural problems or a missing/invalid descriptor.
pub fn inspect_unverified(
    input: impl Read,
    limits: BundleLimits,
) -> Result<(SignedDescriptor, BTreeMap<String, Vec<u8>>), BundleError> {
    let (members, _) = unpack(input, limits, &mut |_, _| {})?;
    split_descriptor(owned(members))
}

/// Places a verified bundle's runpack into the store (atomically, beneath
/// `<tenant>/<namespace>/<run_id>`). Only verified bundles can be imported.
///
/// # Errors
/// Store refusals and I/O errors.
pub fn import_verified(
    store: &crate::runpack_store::RunpackStore,
    bundle: &VerifiedBundle,
) -> Result<std::path::PathBuf, crate::runpack_store::RunpackStoreError> {
    let descriptor = &bundle.signed.descriptor;
    let mut files: Vec<(String, Vec<u8>)> = bundle.files.iter().map(|(p, b)| (p.clone(), b.clone())).collect();
    files.push((descriptor.manifest_name.clone(), bundle.manifest_bytes.clone()));
    store.write(crate::store::Scope::new(descriptor.tenant_id, descriptor.namespace_id), &descriptor.run_id, &files)
}
