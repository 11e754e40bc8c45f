//! Client export roots (`[runpacks] client_export_roots`): the operator's opt-in under
//! which an absolute `output_dir` of `runpack_export` (and the same path as `runpack_verify`'s
//! `runpack_dir`) is honoured as the open-source server does, for a tool on the same host
//! that reads the files there. Each root is an existing directory named by its real path
//! (no link on the way to it); a path is accepted only lexically beneath a root, with every
//! segment checked (no `..`, no empty or reserved segments, no control characters), and is
//! written and read through the hardened runpack store opened at the root (no link followed
//! beneath it, size limits, staging + fsync + rename, files 0600 in 0700 directories). A
//! root may be limited to one tenant.

use std::path::{Path, PathBuf};

use dg_storage::runpack_store::{validate_relative, ResolveMode, RunpackLimits, RunpackStore, RunpackStoreError};
use serde::{Deserialize, Serialize};

/// One configured root: a path for every tenant, or a table limiting it to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportRootEntry {
    /// Any tenant may export beneath it.
    Shared(PathBuf),
    /// Only `tenant_id` may export beneath it.
    Tenant {
        /// The root directory.
        path: PathBuf,
        /// The one tenant it serves.
        tenant_id: u64,
    },
}

impl ExportRootEntry {
    /// The root directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Shared(path) | Self::Tenant { path, .. } => path,
        }
    }

    /// The tenant it is limited to.
    #[must_use]
    pub fn tenant(&self) -> Option<u64> {
        match self {
            Self::Shared(_) => None,
            Self::Tenant { tenant_id, .. } => Some(*tenant_id),
        }
    }
}

/// What is wrong with a configured root, if anything: it must be absolute, an existing
/// directory, and its own real path (no symbolic link on the way to it).
#[must_use]
pub fn problem(entry: &ExportRootEntry) -> Option<String> {
    let path = entry.path();
    if !path.is_absolute() {
        return Some(format!("{} is not an absolute path", path.display()));
    }
    match std::fs::canonicalize(path) {
        Err(err) => Some(format!("{}: {err}", path.display())),
        Ok(real) if real != path => Some(format!(
            "{} is reached through a symbolic link (its real path is {}); name the real path",
            path.display(),
            real.display()
        )),
        Ok(real) if !real.is_dir() => Some(format!("{} is not a directory", path.display())),
        Ok(_) => None,
    }
}

/// The configured roots, opened.
#[derive(Default)]
pub struct ExportRoots {
    roots: Vec<(ExportRootEntry, RunpackStore)>,
}

/// Where an absolute path lands: a root's store and the name beneath it.
pub struct Placement<'a> {
    /// The root's store.
    pub store: &'a RunpackStore,
    /// The path beneath the root.
    pub name: String,
}

/// Why an absolute path was refused.
#[derive(Debug)]
pub enum Refusal {
    /// No root is configured.
    NoRoots,
    /// Not beneath any root this tenant may use.
    Outside,
    /// A bad segment beneath the root.
    Invalid(RunpackStoreError),
}

impl ExportRoots {
    /// Opens every root.
    ///
    /// # Errors
    /// A message naming the root that cannot be used.
    pub fn open(entries: &[ExportRootEntry], limits: RunpackLimits) -> Result<Self, String> {
        let mut roots = Vec::new();
        for entry in entries {
            if let Some(problem) = problem(entry) {
                return Err(format!("runpacks.client_export_roots: {problem}"));
            }
            let store = RunpackStore::open(entry.path(), limits, ResolveMode::Auto)
                .map_err(|err| format!("runpacks.client_export_roots: {}: {err}", entry.path().display()))?;
            roots.push((entry.clone(), store));
        }
        Ok(Self { roots })
    }

    /// Whether any root is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Places the absolute `path` for `tenant`: beneath the first root (in configured
    /// order) that contains it lexically and that this tenant may use.
    ///
    /// # Errors
    /// [`Refusal`].
    pub fn place(&self, path: &str, tenant: u64) -> Result<Placement<'_>, Refusal> {
        if self.roots.is_empty() {
            return Err(Refusal::NoRoots);
        }
        for (entry, store) in &self.roots {
            if entry.tenant().is_some_and(|only| only != tenant) {
                continue;
            }
            let Some(root) = entry.path().to_str() else { continue };
            let Some(rest) = path.strip_prefix(root).and_then(|rest| rest.strip_prefix('/')) else { continue };
            let name = rest.trim_end_matches('/');
            validate_relative(name).map_err(Refusal::Invalid)?;
            return Ok(Placement { store, name: name.to_string() });
        }
        Err(Refusal::Outside)
    }

    /// The tenants a path may belong to, for a verify that names no tenant: the root's
    /// tenant for a tenant root, `None` for a shared one. `None` also when no root holds it.
    #[must_use]
    pub fn tenant_of(&self, path: &str) -> Option<Option<u64>> {
        self.roots.iter().find_map(|(entry, _)| {
            let root = entry.path().to_str()?;
            path.strip_prefix(root).and_then(|rest| rest.strip_prefix('/')).map(|_| entry.tenant())
        })
    }
}
