//! Secrets kept in files the operator provides (S3 credentials, an SSE-C key, an OIDC
//! client secret): read only from a regular file (no link, FIFO or device) that only its
//! owner may read, and never more than [`MAX_SECRET_BYTES`].

use std::path::Path;

/// The largest secret file read.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Reads a secret file; the error names `what` and the path, and says how to fix the mode.
///
/// # Errors
/// Missing, not a regular file, readable by group or others, too large.
pub fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let problem = |detail: String| format!("{what} {}: {detail}", path.display());
    let file = dg_storage::open_regular(path, dg_storage::Links::Refuse).map_err(|err| problem(err.to_string()))?;
    let mode = file.metadata().map_err(|err| problem(err.to_string()))?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(problem(format!(
            "is readable or writable by group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display()
        )));
    }
    drop(file);
    dg_storage::read_text_bounded(path, MAX_SECRET_BYTES, dg_storage::Links::Refuse)
        .map_err(|err| problem(err.to_string()))
}
