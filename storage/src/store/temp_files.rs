//! Where SQLite writes its temporary files: statement journals of statements that change
//! many pages inside a transaction (sealing audit segments), sorts that outgrow memory (a
//! run list sorted by an unindexed column, far down its pages), migrations' copies. They
//! hold page images of the database (audit entries, run rows), so they belong with the data:
//! on the volume, and under the encryption and retention, the operator chose for the data
//! directory, not in the system's `/var/tmp` (or the service's private copy of it, which
//! still lies on the root filesystem). A full `/var/tmp` no longer fails a seal or a sort
//! either.
//!
//! SQLite keeps one temporary directory per process, so the first store opened sets it: the
//! daemon opens one. The directory is `tmp/` beside the database, made owner-only; when it
//! cannot be made (a read-only data directory, `tmp` a link or a file), SQLite keeps its
//! default and nothing else changes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::Connection;

/// The directory in force, once set (`None`: SQLite's default).
static DIRECTORY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Sets `tmp/` beside `database` as SQLite's temporary directory for this process, unless
/// an earlier store set one ([`directory`] tells which is in force).
pub(crate) fn keep_beside(database: &Path) {
    DIRECTORY.get_or_init(|| database.parent().and_then(|parent| use_directory(&parent.join("tmp"))));
}

/// Where SQLite's temporary files go in this process (`None`: SQLite's default, the
/// system's temporary directory).
#[must_use]
pub fn directory() -> Option<&'static Path> {
    DIRECTORY.get().and_then(Option::as_deref)
}

fn use_directory(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if !meta.file_type().is_dir() => return None,
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ok()?;
        }
        Ok(_) => {}
        Err(_) => std::fs::DirBuilder::new().mode(0o700).create(dir).ok()?,
    }
    // Absolute: SQLite resolves the directory whenever it makes a file, whatever the
    // working directory is by then (the default data directory is `./dg-data`).
    let dir = std::fs::canonicalize(dir).ok()?;
    let text = dir.to_str()?;
    // The setting is process-wide and SQLite reads it without a lock: it is set once, by
    // the first store opened (before its connections run), from a connection of its own.
    let conn = Connection::open_in_memory().ok()?;
    conn.execute_batch(&format!("PRAGMA temp_store_directory = '{}'", text.replace('\'', "''"))).ok()?;
    Some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_or_a_link_named_tmp_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tmp"), b"").unwrap();
        assert_eq!(use_directory(&dir.path().join("tmp")), None);
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), dir.path().join("link")).unwrap();
        assert_eq!(use_directory(&dir.path().join("link")), None);
    }
}
