//! The runpack store seam: where exported runpacks are kept. Two implementations: the
//! hardened filesystem tree ([`RunpackStore`], loose files beneath the data directory) and,
//! in the daemon, an S3-compatible object store that keeps each runpack as one signed
//! bundle. Every caller (export, verify, download) goes through this trait, so a runpack
//! reads back the same from either.

use std::collections::BTreeMap;

use crate::bundle::{build_bundle, BundleError};
use crate::runpack_store::{RunpackStore, RunpackStoreError};
use crate::signing::KeyStore;
use crate::store::Scope;

/// Where a stored runpack went, for the export's answer and its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRunpack {
    /// What the audit entry of the export records about the stored object (bucket, key,
    /// version id, retention); empty for the filesystem store.
    pub detail: String,
}

/// A runpack store.
pub trait RunpackBackend: Send + Sync {
    /// `fs` or `s3`, for logs and `/metrics`.
    fn kind(&self) -> &'static str;

    /// Stores the runpack `<tenant>/<namespace>/<name>` (its manifest is one of `files`,
    /// named `manifest_name`). Nothing half-written is ever visible; storing the same
    /// runpack again is idempotent.
    ///
    /// # Errors
    /// Invalid names, limits, the store's refusals; [`RunpackStoreError::Unavailable`]
    /// when a retry may succeed.
    fn put(
        &self,
        scope: Scope,
        name: &str,
        manifest_name: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<StoredRunpack, RunpackStoreError>;

    /// Every file of a stored runpack (manifest included), checked before it is returned.
    ///
    /// # Errors
    /// Not found, refusals, limits, [`RunpackStoreError::Integrity`].
    fn get(&self, scope: Scope, name: &str) -> Result<BTreeMap<String, Vec<u8>>, RunpackStoreError>;

    /// Whether the runpack exists.
    ///
    /// # Errors
    /// The store could not be asked.
    fn contains(&self, scope: Scope, name: &str) -> Result<bool, RunpackStoreError>;

    /// The signed bundle of a stored runpack whose manifest is `manifest.json`, for
    /// download, and the run id its manifest names: checked before it is handed out.
    ///
    /// # Errors
    /// As [`Self::get`]; signing failures.
    fn bundle(&self, scope: Scope, name: &str, keys: &KeyStore) -> Result<(Vec<u8>, String), RunpackStoreError>;
}

/// A bundle problem as a store error.
impl From<BundleError> for RunpackStoreError {
    fn from(err: BundleError) -> Self {
        match err {
            BundleError::Build(reason) => RunpackStoreError::Bundle(reason),
            other => RunpackStoreError::Integrity(other.to_string()),
        }
    }
}

impl RunpackBackend for RunpackStore {
    fn kind(&self) -> &'static str {
        "fs"
    }

    fn put(
        &self,
        scope: Scope,
        name: &str,
        _manifest_name: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<StoredRunpack, RunpackStoreError> {
        self.write(scope, name, files)?;
        Ok(StoredRunpack { detail: String::new() })
    }

    fn get(&self, scope: Scope, name: &str) -> Result<BTreeMap<String, Vec<u8>>, RunpackStoreError> {
        self.read(scope, name)
    }

    fn contains(&self, scope: Scope, name: &str) -> Result<bool, RunpackStoreError> {
        Ok(self.exists(scope, name))
    }

    fn bundle(&self, scope: Scope, name: &str, keys: &KeyStore) -> Result<(Vec<u8>, String), RunpackStoreError> {
        let mut files = self.read(scope, name)?;
        let manifest = files.remove(MANIFEST).ok_or_else(|| RunpackStoreError::Bundle(format!("no {MANIFEST}")))?;
        let key = keys.active().map_err(|err| RunpackStoreError::Bundle(err.to_string()))?;
        let files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        let bytes = build_bundle(MANIFEST, &manifest, &files, &key)?;
        #[derive(serde::Deserialize)]
        struct Named {
            run_id: String,
        }
        let run_id = serde_json::from_slice::<Named>(&manifest).map(|named| named.run_id).unwrap_or_default();
        Ok((bytes, run_id))
    }
}

/// The manifest name a downloadable runpack has.
pub const MANIFEST: &str = "manifest.json";
