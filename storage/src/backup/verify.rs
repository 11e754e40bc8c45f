//! Checking a backup with nothing but the backup and a public key ring, and unpacking a
//! checked one (restore uses the same pass, so nothing unverified is ever written).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use dg_crypto::Sha256;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{
    backup_dir, unreadable, write_error, BackupError, Index, BACKUP_FORMAT, INDEX_NAME, LEGACY_SECRETS_MEMBER,
    SECRETS_MEMBER,
};
use crate::runpack_store::validate_relative;
use crate::signing::{PublicKeyRing, SigningError};

/// What a verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Backup id.
    pub backup_id: String,
    /// Source instance.
    pub instance_id: String,
    /// Database schema version.
    pub schema_version: i64,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Signing key.
    pub key_id: String,
    /// Part files checked.
    pub parts: usize,
    /// Members checked.
    pub members: usize,
    /// Unpacked bytes checked.
    pub bytes: u64,
    /// `integrity_check` of the embedded database.
    pub database_integrity: String,
    /// Whether encrypted private keys are included (and were opened, when a passphrase was given).
    pub includes_secrets: bool,
    /// The backend the state came from: `sqlite` (the data directory's database) or
    /// `postgres` (a snapshot of the shared database).
    pub source_backend: String,
}

/// Verifies a backup (its directory or its `backup.json`).
///
/// # Errors
/// [`BackupError::Corrupt`], [`BackupError::WrongKey`], [`BackupError::Incomplete`],
/// [`BackupError::Unreadable`], or [`BackupError::Secrets`] for a wrong passphrase.
pub fn verify(path: &Path, ring: &PublicKeyRing, passphrase: Option<&str>) -> Result<BackupReport, BackupError> {
    check(path, ring, passphrase, None, &|_| {})
}

/// Reads and checks the signed index.
pub(crate) fn read_index(dir: &Path, ring: &PublicKeyRing) -> Result<Index, BackupError> {
    let path = dir.join(INDEX_NAME);
    let bytes = crate::fsutil::read_bounded(&path, 16 * 1024 * 1024, crate::fsutil::Links::Refuse)
        .map_err(|err| unreadable(&path, err))?;
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|err| unreadable(&path, format!("not a backup index: {err}")))?;
    if index.body.format != BACKUP_FORMAT {
        return Err(unreadable(&path, format!("unknown backup format {:?}", index.body.format)));
    }
    match ring.verify(&index.body.key_id, &index.body.message()?, &index.signature) {
        Ok(()) => Ok(index),
        Err(SigningError::UnknownKey(id)) => Err(BackupError::WrongKey(id)),
        Err(err) => Err(BackupError::Corrupt(format!("{INDEX_NAME}: signature does not verify ({err})"))),
    }
}

/// Reads the parts in order as one stream.
struct Parts {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<File>,
}

impl Read for Parts {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(file) = self.current.as_mut() {
                let n = file.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            match self.files.next() {
                Some(path) => self.current = Some(crate::fsutil::open_regular(&path, crate::fsutil::Links::Refuse)?),
                None => return Ok(0),
            }
        }
    }
}

fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = crate::fsutil::open_regular(path, crate::fsutil::Links::Refuse)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn check_database(path: &Path, expected_version: i64) -> Result<String, BackupError> {
    let corrupt = |err: rusqlite::Error| BackupError::Corrupt(format!("state.db: {err}"));
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(corrupt)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).map_err(corrupt)?;
    if check != "ok" {
        return Err(BackupError::Corrupt(format!("state.db: integrity_check: {check}")));
    }
    let version: i64 = conn.query_row("SELECT version FROM store_meta", [], |row| row.get(0)).map_err(corrupt)?;
    if version != expected_version {
        return Err(BackupError::Corrupt(format!("state.db: schema version {version}, index says {expected_version}")));
    }
    Ok(check)
}

/// Opens the sealed secrets and returns their files.
pub(crate) fn open_secrets(bytes: &[u8], passphrase: &str) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let secrets = |err: &dyn std::fmt::Display| BackupError::Secrets(err.to_string());
    let plain = if dg_crypto::is_sealed(bytes) {
        dg_crypto::open(passphrase.as_bytes(), bytes)
            .map_err(|err| BackupError::Secrets(format!("cannot open the sealed keys: {err}")))?
    } else {
        open_legacy_age(bytes, passphrase)?
    };
    let mut archive = tar::Archive::new(plain.as_slice());
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|err| secrets(&err))? {
        let mut entry = entry.map_err(|err| secrets(&err))?;
        let name = entry.path().map_err(|err| secrets(&err))?.to_string_lossy().to_string();
        validate_relative(&name).map_err(|err| secrets(&err))?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|err| secrets(&err))?;
        out.push((name, bytes));
    }
    Ok(out)
}

/// Secrets of a backup made before the crypto seam: age (scrypt, ChaCha20-Poly1305).
#[cfg(feature = "legacy-age")]
fn open_legacy_age(bytes: &[u8], passphrase: &str) -> Result<Vec<u8>, BackupError> {
    let secrets = |err: &dyn std::fmt::Display| BackupError::Secrets(err.to_string());
    let decryptor = age::Decryptor::new(bytes).map_err(|err| secrets(&err))?;
    let identity = age::scrypt::Identity::new(age::secrecy::SecretString::from(passphrase.to_string()));
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|err| BackupError::Secrets(format!("cannot open the encrypted keys (wrong passphrase?): {err}")))?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).map_err(|err| secrets(&err))?;
    Ok(plain)
}

/// The FIPS build has no approved equivalent of age's scrypt and ChaCha20-Poly1305.
#[cfg(not(feature = "legacy-age"))]
fn open_legacy_age(_bytes: &[u8], _passphrase: &str) -> Result<Vec<u8>, BackupError> {
    Err(BackupError::Secrets(
        "these secrets are sealed with age (scrypt, ChaCha20-Poly1305), which is not FIPS-approved: \
         restore this backup with the standard build, then take a new backup"
            .to_string(),
    ))
}

/// Writes a file with 0600 and fsyncs it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(write_error(parent))?;
    }
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(write_error(path))?;
    file.write_all(bytes).map_err(write_error(path))?;
    file.sync_all().map_err(write_error(path))
}

/// The one pass over a backup: index and signature, every part, every member in order
/// (optionally written under `extract_to`), the embedded database and the secrets.
/// `step` is told of progress (restore uses it for its crash-test pause points).
pub(crate) fn check(
    path: &Path,
    ring: &PublicKeyRing,
    passphrase: Option<&str>,
    extract_to: Option<&Path>,
    step: &dyn Fn(&str),
) -> Result<BackupReport, BackupError> {
    let dir = backup_dir(path);
    let index = read_index(&dir, ring)?;
    let body = &index.body;
    let mut part_paths = Vec::new();
    let mut missing = Vec::new();
    for part in &body.parts {
        let part_path = dir.join(&part.name);
        validate_relative(&part.name).map_err(|err| BackupError::Corrupt(err.to_string()))?;
        if !part_path.exists() {
            missing.push(part.name.clone());
            continue;
        }
        let (size, sha) = sha256_file(&part_path).map_err(|err| unreadable(&part_path, err))?;
        if size != part.size {
            return Err(BackupError::Corrupt(format!(
                "{}: {size} bytes, the index says {} (truncated or replaced)",
                part.name, part.size
            )));
        }
        if sha != part.sha256 {
            return Err(BackupError::Corrupt(format!(
                "{}: sha256 differs from the index (altered, reordered or from another backup)",
                part.name
            )));
        }
        part_paths.push(part_path);
    }
    if !missing.is_empty() {
        return Err(BackupError::Incomplete(format!("missing {}", missing.join(", "))));
    }
    step("parts-checked");

    let scratch = std::env::temp_dir().join(format!("dg-backup-check-{:016x}.db", dg_crypto::random_u64()));
    let result = check_members(&index, part_paths, passphrase, extract_to, &scratch, step);
    let _ = fs::remove_file(&scratch);
    let (bytes, integrity) = result?;
    Ok(BackupReport {
        backup_id: body.backup_id.clone(),
        instance_id: body.instance_id.clone(),
        schema_version: body.schema_version,
        created_at_ms: body.created_at_ms,
        key_id: body.key_id.clone(),
        parts: body.parts.len(),
        members: body.members.len(),
        bytes,
        database_integrity: integrity,
        includes_secrets: body.includes_secrets,
        source_backend: body.source_backend.clone().unwrap_or_else(|| "sqlite".into()),
    })
}

fn check_members(
    index: &Index,
    part_paths: Vec<PathBuf>,
    passphrase: Option<&str>,
    extract_to: Option<&Path>,
    scratch: &Path,
    step: &dyn Fn(&str),
) -> Result<(u64, String), BackupError> {
    let body = &index.body;
    let corrupt = |what: String| BackupError::Corrupt(what);
    let stream = Parts { files: part_paths.into_iter(), current: None };
    let decoder = zstd::Decoder::new(stream).map_err(|err| corrupt(format!("archive: {err}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen = BTreeSet::new();
    let mut position = 0usize;
    let mut bytes = 0u64;
    let mut integrity = None;
    let mut secrets = None;
    for entry in archive.entries().map_err(|err| corrupt(format!("archive: {err}")))? {
        let mut entry = entry.map_err(|err| corrupt(format!("archive: {err}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt("archive holds something other than a regular file".into()));
        }
        let name = entry.path().map_err(|err| corrupt(format!("archive: {err}")))?.to_string_lossy().to_string();
        let Some(member) = body.members.get(position) else {
            return Err(corrupt(format!("member {name} is not in the index")));
        };
        if member.path != name || !seen.insert(name.clone()) {
            return Err(corrupt(format!("member {name} is out of order, duplicated or not in the index")));
        }
        position += 1;
        validate_relative(&name).map_err(|err| corrupt(err.to_string()))?;
        if entry.size() != member.size {
            return Err(corrupt(format!("member {name}: {} bytes, the index says {}", entry.size(), member.size)));
        }
        let keep_in_memory = name == SECRETS_MEMBER || name == LEGACY_SECRETS_MEMBER;
        let target = if name == "state.db" && extract_to.is_none() {
            Some(scratch.to_path_buf())
        } else if keep_in_memory {
            None
        } else {
            extract_to.map(|root| root.join(&name))
        };
        let mut file = match &target {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(write_error(parent))?;
                }
                Some(
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)
                        .map_err(write_error(path))?,
                )
            }
            None => None,
        };
        let mut memory = Vec::new();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut count = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|err| corrupt(format!("member {name}: {err}")))?;
            if n == 0 {
                break;
            }
            count += n as u64;
            hasher.update(&buf[..n]);
            if let (Some(file), Some(path)) = (file.as_mut(), target.as_ref()) {
                file.write_all(&buf[..n]).map_err(write_error(path))?;
            }
            if keep_in_memory {
                memory.extend_from_slice(&buf[..n]);
            }
        }
        if count != member.size || hex::encode(hasher.finalize()) != member.sha256 {
            return Err(corrupt(format!("member {name}: content differs from its sha256 in the index")));
        }
        if let (Some(file), Some(path)) = (file.take(), target.as_ref()) {
            file.sync_all().map_err(write_error(path))?;
            if name == "state.db" {
                integrity = Some(check_database(path, body.schema_version)?);
            }
        }
        if keep_in_memory {
            secrets = Some(memory);
        }
        bytes += count;
        if position == 1 {
            step("extracting");
        }
    }
    if let Some(member) = body.members.get(position) {
        return Err(corrupt(format!("member {} is missing from the archive", member.path)));
    }
    let integrity = integrity.ok_or_else(|| corrupt("the backup holds no state.db".into()))?;
    match (body.includes_secrets, passphrase, secrets) {
        (true, Some(passphrase), Some(encrypted)) => {
            let files = open_secrets(&encrypted, passphrase)?;
            if let Some(root) = extract_to {
                for (name, bytes) in files {
                    write_private(&root.join(name), &bytes)?;
                }
            }
        }
        (true, _, None) => return Err(corrupt("the index lists secrets but the archive has none".into())),
        _ => {}
    }
    Ok((bytes, integrity))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::open_secrets;

    fn secrets_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o600);
        header.set_cksum();
        builder.append_data(&mut header, "keys/active.key", &b"00ff\n"[..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn sealed_secrets_open_with_the_passphrase_only() {
        let sealed = dg_crypto::seal(b"pass", &secrets_tar(), 100_000).unwrap();
        let files = open_secrets(&sealed, "pass").unwrap();
        assert_eq!(files, vec![("keys/active.key".to_string(), b"00ff\n".to_vec())]);
        let err = open_secrets(&sealed, "wrong").unwrap_err().to_string();
        assert!(err.contains("passphrase is wrong"), "{err}");
    }

    /// Backups made before the crypto seam sealed their secrets with age: the standard
    /// build still opens them.
    #[cfg(feature = "legacy-age")]
    #[test]
    fn age_sealed_secrets_of_older_backups_still_open() {
        use std::io::Write as _;
        let encryptor = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from("pass".to_string()));
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
        writer.write_all(&secrets_tar()).unwrap();
        writer.finish().unwrap();
        let files = open_secrets(&sealed, "pass").unwrap();
        assert_eq!(files, vec![("keys/active.key".to_string(), b"00ff\n".to_vec())]);
        assert!(open_secrets(&sealed, "wrong").is_err());
    }
}
