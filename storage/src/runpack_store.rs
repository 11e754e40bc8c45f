//! The hardened filesystem runpack store. Every path is resolved beneath the store root
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or, where openat2 is missing or
//! forbidden (old kernels, seccomp), component by component with `O_NOFOLLOW`. Path
//! segments are validated before use; symlinks, hard links, devices and FIFOs are refused;
//! per-file, per-runpack and per-tenant sizes are bounded; writes go to a staging
//! directory (files fsynced) that is renamed into place, then the directory is fsynced.
//! Runpacks are keyed `<tenant>/<namespace>/<name>`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use thiserror::Error;

use crate::store::Scope;

/// How paths are resolved beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveMode {
    /// openat2 when the kernel allows it, else the component walk.
    Auto,
    /// openat2 only (fails where it is unavailable).
    Openat2,
    /// Component-by-component `O_NOFOLLOW` opens.
    ComponentWalk,
}

/// Size and count limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunpackLimits {
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest runpack (all files).
    pub max_runpack_bytes: u64,
    /// Most files in one runpack.
    pub max_files: usize,
    /// Largest total per tenant.
    pub max_tenant_bytes: u64,
}

impl Default for RunpackLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 16 * 1024 * 1024,
            max_runpack_bytes: 256 * 1024 * 1024,
            max_files: 64,
            max_tenant_bytes: 16 * 1024 * 1024 * 1024,
        }
    }
}

/// Why a runpack store operation was refused or failed.
#[derive(Debug, Error)]
pub enum RunpackStoreError {
    /// A path segment is not acceptable.
    #[error("invalid runpack path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A symbolic link was met.
    #[error("runpack path {path:?} crosses a symbolic link")]
    Symlink {
        /// The path.
        path: String,
    },
    /// Something other than a regular file or directory was met.
    #[error("runpack entry {path:?} is a {kind}, only regular files and directories are allowed")]
    NotRegular {
        /// The path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A file with more than one link.
    #[error("runpack file {path:?} is hard-linked elsewhere")]
    HardLink {
        /// The path.
        path: String,
    },
    /// A limit was exceeded.
    #[error("{what} is {actual} bytes/entries, over the limit of {limit}")]
    TooLarge {
        /// What.
        what: String,
        /// Size.
        actual: u64,
        /// Limit.
        limit: u64,
    },
    /// No such runpack.
    #[error("runpack not found: {0}")]
    NotFound(String),
    /// The stored runpack failed its checks (signature, a hash, size or ratio limits).
    #[error("runpack integrity check failed: {0}")]
    Integrity(String),
    /// The signed bundle could not be built.
    #[error("cannot build the runpack bundle: {0}")]
    Bundle(String),
    /// The object store could not be reached or answered with a transient failure: a
    /// retry may succeed; nothing was stored.
    #[error("runpack store unavailable (retry later): {0}")]
    Unavailable(String),
    /// The object store refused the request (credentials, policy, configuration).
    #[error("runpack store refused the request: {0}")]
    Refused(String),
    /// System call failure.
    #[error("{operation} failed for {path:?}: {source}")]
    Io {
        /// What was done.
        operation: &'static str,
        /// Where.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(operation: &'static str, path: &'a str) -> impl FnOnce(Errno) -> RunpackStoreError + 'a {
    move |errno| match errno {
        Errno::LOOP | Errno::XDEV => RunpackStoreError::Symlink { path: path.to_string() },
        Errno::NOENT => RunpackStoreError::NotFound(path.to_string()),
        other => RunpackStoreError::Io { operation, path: path.to_string(), source: other.into() },
    }
}

/// Checks one path segment.
///
/// # Errors
/// [`RunpackStoreError::InvalidPath`].
pub fn validate_segment<'a>(segment: &'a str, whole: &str) -> Result<&'a str, RunpackStoreError> {
    let reason = if segment.is_empty() {
        Some("empty segment")
    } else if segment == "." || segment == ".." {
        Some("'.' and '..' are not allowed")
    } else if segment.len() > 255 {
        Some("segment longer than 255 bytes")
    } else if segment.contains('\0') {
        Some("NUL byte")
    } else if segment.contains('\\') {
        Some("backslash")
    } else if segment.chars().any(char::is_control) {
        Some("control character")
    } else if segment.chars().any(is_bidi_control) {
        Some("bidirectional text control (it makes a name display as another)")
    } else if is_write_leftover(segment) {
        Some("reserved name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RunpackStoreError::InvalidPath { path: whole.to_string(), reason }),
        None => Ok(segment),
    }
}

/// Whether a directory entry is the writer's own staging or replaced copy (a name no
/// runpack may take; left behind only by an interrupted write).
#[must_use]
pub fn is_write_leftover(name: &str) -> bool {
    name.starts_with(".staging-") || name.starts_with(".replaced-")
}

/// Unicode's bidirectional formatting characters (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Splits and checks a relative path.
///
/// # Errors
/// [`RunpackStoreError::InvalidPath`] for absolute paths or bad segments.
pub fn validate_relative(path: &str) -> Result<Vec<&str>, RunpackStoreError> {
    if path.starts_with('/') {
        return Err(RunpackStoreError::InvalidPath { path: path.to_string(), reason: "absolute path" });
    }
    if path.len() > 4096 {
        return Err(RunpackStoreError::InvalidPath { path: path.chars().take(64).collect(), reason: "path too long" });
    }
    path.split('/').map(|segment| validate_segment(segment, path)).collect()
}

/// The runpack store.
pub struct RunpackStore {
    root: PathBuf,
    root_fd: OwnedFd,
    limits: RunpackLimits,
    mode: ResolveMode,
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY).union(OFlags::CLOEXEC).union(OFlags::NOFOLLOW);

impl RunpackStore {
    /// Opens (creating) the store root.
    ///
    /// # Errors
    /// I/O errors, or a root that is a symlink.
    pub fn open(root: &Path, limits: RunpackLimits, mode: ResolveMode) -> Result<Self, RunpackStoreError> {
        let shown = root.display().to_string();
        if !root.exists() {
            std::fs::create_dir_all(root).map_err(|source| RunpackStoreError::Io {
                operation: "create store root",
                path: shown.clone(),
                source,
            })?;
        }
        let root_fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(io_err("open store root", &shown))?;
        let mode = match mode {
            ResolveMode::Auto if openat2_available(&root_fd) => ResolveMode::Openat2,
            ResolveMode::Auto => ResolveMode::ComponentWalk,
            explicit => explicit,
        };
        Ok(Self { root: root.to_path_buf(), root_fd, limits, mode })
    }

    /// The resolution mode in use.
    #[must_use]
    pub fn mode(&self) -> ResolveMode {
        self.mode
    }

    /// The store root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a directory beneath the root without following any link.
    fn open_dir(&self, segments: &[&str], whole: &str) -> Result<OwnedFd, RunpackStoreError> {
        if segments.is_empty() {
            return rustix::io::dup(&self.root_fd).map_err(io_err("dup", whole));
        }
        match self.mode {
            // RESOLVE_NO_SYMLINKS reports any link (final component included) as ELOOP;
            // O_NOFOLLOW is left out here so a final link is not mistaken for a file.
            ResolveMode::Openat2 | ResolveMode::Auto => rustix::fs::openat2(
                &self.root_fd,
                segments.join("/"),
                DIR_FLAGS.difference(OFlags::NOFOLLOW),
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(io_err("openat2", whole)),
            ResolveMode::ComponentWalk => {
                let mut current = rustix::io::dup(&self.root_fd).map_err(io_err("dup", whole))?;
                for segment in segments {
                    current = rustix::fs::openat(&current, *segment, DIR_FLAGS, Mode::empty()).map_err(|errno| {
                        if errno == Errno::NOTDIR {
                            // A symlink opened with O_NOFOLLOW|O_DIRECTORY reports ENOTDIR.
                            match rustix::fs::statat(&current, *segment, AtFlags::SYMLINK_NOFOLLOW) {
                                Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => {
                                    RunpackStoreError::Symlink { path: whole.to_string() }
                                }
                                _ => RunpackStoreError::NotRegular { path: whole.to_string(), kind: "non-directory" },
                            }
                        } else {
                            io_err("openat", whole)(errno)
                        }
                    })?;
                }
                Ok(current)
            }
        }
    }

    /// Opens a directory, creating missing components (0700) one at a time.
    fn create_dir(&self, segments: &[&str], whole: &str) -> Result<OwnedFd, RunpackStoreError> {
        let mut current = rustix::io::dup(&self.root_fd).map_err(io_err("dup", whole))?;
        for segment in segments {
            match rustix::fs::mkdirat(&current, *segment, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(errno) => return Err(io_err("mkdirat", whole)(errno)),
            }
            current =
                rustix::fs::openat(&current, *segment, DIR_FLAGS, Mode::empty()).map_err(|errno| match errno {
                    Errno::NOTDIR | Errno::LOOP => RunpackStoreError::Symlink { path: whole.to_string() },
                    other => io_err("openat", whole)(other),
                })?;
        }
        Ok(current)
    }

    fn scope_segments(scope: Scope) -> [String; 2] {
        [scope.tenant_id.to_string(), scope.namespace_id.to_string()]
    }

    /// Writes a runpack atomically as `<tenant>/<namespace>/<name>`; replaces an older one.
    ///
    /// # Errors
    /// Invalid paths, limits, links met, I/O errors. Nothing is left behind on failure.
    pub fn write(&self, scope: Scope, name: &str, files: &[(String, Vec<u8>)]) -> Result<PathBuf, RunpackStoreError> {
        let [tenant, namespace] = Self::scope_segments(scope);
        self.write_under(&[tenant.as_str(), namespace.as_str()], Some(&tenant), name, files)
    }

    /// Writes a runpack atomically as `<name>` directly beneath the root (a client export
    /// root: no tenant and namespace levels), with the same checks and limits as [`Self::write`].
    ///
    /// # Errors
    /// As [`Self::write`].
    pub fn write_loose(&self, name: &str, files: &[(String, Vec<u8>)]) -> Result<PathBuf, RunpackStoreError> {
        self.write_under(&[], None, name, files)
    }

    fn write_under(
        &self,
        prefix: &[&str],
        quota_tenant: Option<&str>,
        name: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<PathBuf, RunpackStoreError> {
        let name_segments = validate_relative(name)?;
        if files.len() > self.limits.max_files {
            return Err(RunpackStoreError::TooLarge {
                what: "runpack file count".into(),
                actual: files.len() as u64,
                limit: self.limits.max_files as u64,
            });
        }
        let mut total = 0u64;
        for (path, bytes) in files {
            validate_relative(path)?;
            let size = bytes.len() as u64;
            if size > self.limits.max_file_bytes {
                return Err(RunpackStoreError::TooLarge {
                    what: format!("file {path}"),
                    actual: size,
                    limit: self.limits.max_file_bytes,
                });
            }
            total += size;
        }
        if total > self.limits.max_runpack_bytes {
            return Err(RunpackStoreError::TooLarge {
                what: "runpack".into(),
                actual: total,
                limit: self.limits.max_runpack_bytes,
            });
        }
        if let Some(tenant) = quota_tenant {
            let used = self.tenant_bytes(tenant)?;
            if used + total > self.limits.max_tenant_bytes {
                return Err(RunpackStoreError::TooLarge {
                    what: format!("tenant {tenant} runpack storage"),
                    actual: used + total,
                    limit: self.limits.max_tenant_bytes,
                });
            }
        }
        let (parent_segments, leaf) = name_segments.split_at(name_segments.len() - 1);
        let mut dir_segments = prefix.to_vec();
        dir_segments.extend_from_slice(parent_segments);
        let parent = self.create_dir(&dir_segments, name)?;
        let leaf = leaf[0];
        let staging = format!(".staging-{:016x}", dg_crypto::random_u64());
        rustix::fs::mkdirat(&parent, staging.as_str(), Mode::from_raw_mode(0o700)).map_err(io_err("mkdirat", name))?;
        let result = self.fill_staging(&parent, &staging, files).and_then(|()| {
            let replaced = format!(".replaced-{:016x}", dg_crypto::random_u64());
            let had_old = match rustix::fs::renameat(&parent, leaf, &parent, replaced.as_str()) {
                Ok(()) => true,
                Err(Errno::NOENT) => false,
                Err(errno) => return Err(io_err("renameat", name)(errno)),
            };
            rustix::fs::renameat(&parent, staging.as_str(), &parent, leaf).map_err(io_err("renameat", name))?;
            rustix::fs::fsync(&parent).map_err(io_err("fsync directory", name))?;
            if had_old {
                self.remove_tree(&parent, &replaced);
            }
            Ok(())
        });
        if result.is_err() {
            self.remove_tree(&parent, &staging);
        }
        result?;
        let mut path = self.root.clone();
        for segment in prefix.iter().chain(&name_segments) {
            path.push(segment);
        }
        Ok(path)
    }

    fn fill_staging(
        &self,
        parent: &OwnedFd,
        staging: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), RunpackStoreError> {
        let staging_fd =
            rustix::fs::openat(parent, staging, DIR_FLAGS, Mode::empty()).map_err(io_err("openat", staging))?;
        for (path, bytes) in files {
            let segments = validate_relative(path)?;
            let (dirs, leaf) = segments.split_at(segments.len() - 1);
            let mut dir = rustix::io::dup(&staging_fd).map_err(io_err("dup", path))?;
            for segment in dirs {
                match rustix::fs::mkdirat(&dir, *segment, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(errno) => return Err(io_err("mkdirat", path)(errno)),
                }
                dir = rustix::fs::openat(&dir, *segment, DIR_FLAGS, Mode::empty()).map_err(io_err("openat", path))?;
            }
            let fd = rustix::fs::openat(
                &dir,
                leaf[0],
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(io_err("create file", path))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes).map_err(|source| RunpackStoreError::Io {
                operation: "write",
                path: path.clone(),
                source,
            })?;
            file.sync_all().map_err(|source| RunpackStoreError::Io {
                operation: "fsync",
                path: path.clone(),
                source,
            })?;
            rustix::fs::fsync(&dir).map_err(io_err("fsync directory", path))?;
        }
        Ok(())
    }

    fn remove_tree(&self, parent: &OwnedFd, name: &str) {
        // Best effort: names are ours (staging/replaced), resolved from the parent fd. What
        // was replaced may be a link or a file planted where the runpack goes: unlinked, never
        // followed.
        let dir = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(dir) => dir,
            Err(_) => {
                let _ = rustix::fs::unlinkat(parent, name, AtFlags::empty());
                return;
            }
        };
        if let Ok(entries) = list(&dir) {
            for (entry, kind) in entries {
                if kind == FileType::Directory {
                    self.remove_tree(&dir, &entry);
                } else {
                    let _ = rustix::fs::unlinkat(&dir, entry.as_str(), AtFlags::empty());
                }
            }
        }
        let _ = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
    }

    fn tenant_bytes(&self, tenant: &str) -> Result<u64, RunpackStoreError> {
        let dir = match self.open_dir(&[tenant], tenant) {
            Ok(dir) => dir,
            Err(RunpackStoreError::NotFound(_)) => return Ok(0),
            Err(err) => return Err(err),
        };
        let mut total = 0u64;
        sum_tree(&dir, &mut total, 0)?;
        Ok(total)
    }

    /// Reads every file of the runpack `<tenant>/<namespace>/<name>`, refusing links,
    /// special files and oversized content.
    ///
    /// # Errors
    /// Invalid path, refusals, limits, not found.
    pub fn read(&self, scope: Scope, name: &str) -> Result<BTreeMap<String, Vec<u8>>, RunpackStoreError> {
        let [tenant, namespace] = Self::scope_segments(scope);
        self.read_under(&[tenant.as_str(), namespace.as_str()], name)
    }

    /// Reads every file of the runpack `<name>` directly beneath the root (a client export
    /// root), with the same refusals and limits as [`Self::read`].
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_loose(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>, RunpackStoreError> {
        self.read_under(&[], name)
    }

    /// Whether the runpack `<tenant>/<namespace>/<name>` exists (a directory, reached
    /// without following any link).
    #[must_use]
    pub fn exists(&self, scope: Scope, name: &str) -> bool {
        let Ok(name_segments) = validate_relative(name) else { return false };
        let [tenant, namespace] = Self::scope_segments(scope);
        let mut segments = vec![tenant.as_str(), namespace.as_str()];
        segments.extend(name_segments);
        self.open_dir(&segments, name).is_ok()
    }

    fn read_under(&self, prefix: &[&str], name: &str) -> Result<BTreeMap<String, Vec<u8>>, RunpackStoreError> {
        let name_segments = validate_relative(name)?;
        let mut segments = prefix.to_vec();
        segments.extend(name_segments);
        let dir = self.open_dir(&segments, name)?;
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        self.read_tree(&dir, "", &mut files, &mut total, 0)?;
        Ok(files)
    }

    fn read_tree(
        &self,
        dir: &OwnedFd,
        prefix: &str,
        files: &mut BTreeMap<String, Vec<u8>>,
        total: &mut u64,
        depth: usize,
    ) -> Result<(), RunpackStoreError> {
        if depth > 4 {
            return Err(RunpackStoreError::InvalidPath { path: prefix.to_string(), reason: "nested too deeply" });
        }
        for (name, _) in list(dir).map_err(io_err("read directory", prefix))? {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            validate_segment(&name, &path)?;
            let stat =
                rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("stat", &path))?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    let sub = rustix::fs::openat(dir, name.as_str(), DIR_FLAGS, Mode::empty())
                        .map_err(io_err("openat", &path))?;
                    self.read_tree(&sub, &path, files, total, depth + 1)?;
                }
                FileType::RegularFile => {
                    if files.len() >= self.limits.max_files {
                        return Err(RunpackStoreError::TooLarge {
                            what: "runpack file count".into(),
                            actual: files.len() as u64 + 1,
                            limit: self.limits.max_files as u64,
                        });
                    }
                    let fd = rustix::fs::openat(
                        dir,
                        name.as_str(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(io_err("open file", &path))?;
                    let stat = rustix::fs::fstat(&fd).map_err(io_err("fstat", &path))?;
                    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                        return Err(RunpackStoreError::NotRegular { path, kind: "special file" });
                    }
                    if stat.st_nlink > 1 {
                        return Err(RunpackStoreError::HardLink { path });
                    }
                    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
                    if size > self.limits.max_file_bytes {
                        return Err(RunpackStoreError::TooLarge {
                            what: format!("file {path}"),
                            actual: size,
                            limit: self.limits.max_file_bytes,
                        });
                    }
                    *total += size;
                    if *total > self.limits.max_runpack_bytes {
                        return Err(RunpackStoreError::TooLarge {
                            what: "runpack".into(),
                            actual: *total,
                            limit: self.limits.max_runpack_bytes,
                        });
                    }
                    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                    std::fs::File::from(fd)
                        .take(self.limits.max_file_bytes + 1)
                        .read_to_end(&mut bytes)
                        .map_err(|source| RunpackStoreError::Io { operation: "read", path: path.clone(), source })?;
                    files.insert(path, bytes);
                }
                FileType::Symlink => return Err(RunpackStoreError::Symlink { path }),
                FileType::Fifo => return Err(RunpackStoreError::NotRegular { path, kind: "FIFO" }),
                FileType::CharacterDevice | FileType::BlockDevice => {
                    return Err(RunpackStoreError::NotRegular { path, kind: "device" })
                }
                _ => return Err(RunpackStoreError::NotRegular { path, kind: "special file" }),
            }
        }
        Ok(())
    }
}

/// Names and types of a directory's entries (without `.` and `..`).
fn list(dir: &OwnedFd) -> Result<Vec<(String, FileType)>, Errno> {
    let mut out = Vec::new();
    let mut reader = rustix::fs::Dir::read_from(dir.as_fd())?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        out.push((name, entry.file_type()));
    }
    Ok(out)
}

fn sum_tree(dir: &OwnedFd, total: &mut u64, depth: usize) -> Result<(), RunpackStoreError> {
    if depth > 8 {
        return Ok(());
    }
    for (name, _) in list(dir).map_err(io_err("read directory", "tenant"))? {
        let stat = rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("stat", &name))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let sub = rustix::fs::openat(dir, name.as_str(), DIR_FLAGS, Mode::empty())
                    .map_err(io_err("openat", &name))?;
                sum_tree(&sub, total, depth + 1)?;
            }
            FileType::RegularFile => *total += u64::try_from(stat.st_size).unwrap_or(0),
            _ => {}
        }
    }
    Ok(())
}

/// Whether openat2 works here (kernel >= 5.6 and not blocked by a seccomp filter).
fn openat2_available(root: &OwnedFd) -> bool {
    rustix::fs::openat2(root, ".", DIR_FLAGS, Mode::empty(), ResolveFlags::BENEATH).is_ok()
}
