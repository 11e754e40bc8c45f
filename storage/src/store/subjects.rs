//! The OIDC subject mapping: an identity provider's subject (`oidc:<iss>#<sub>`) → role,
//! tenant and namespaces, managed by administrators. When a subject has a row here it wins
//! over the token's own claims.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::document::{decode, encode};
use crate::error::StoreError;
use crate::store::{exec, query_one, to_sql, Store};

/// Longest subject id stored (`oidc:` + an issuer URL + `#` + a 255-byte `sub`).
pub const MAX_SUBJECT_ID_BYTES: usize = 1024;

/// One mapped subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcSubjectRecord {
    /// `oidc:<iss>#<sub>`.
    pub subject: String,
    /// Role name.
    pub role: String,
    /// Tenant (none for `org_admin`).
    pub tenant_id: Option<u64>,
    /// Namespaces within the tenant (empty = all of its namespaces, as for keys).
    pub namespaces: Vec<u64>,
    /// Human label.
    pub label: String,
    /// When it was set (unix ms).
    pub updated_at_ms: i64,
}

impl Store {
    /// Sets (creates or replaces) a subject's mapping.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] for an oversized subject; SQLite errors.
    pub fn put_oidc_subject(&self, record: &OidcSubjectRecord) -> Result<(), StoreError> {
        if record.subject.len() > MAX_SUBJECT_ID_BYTES {
            return Err(StoreError::TooLarge {
                what: "oidc subject",
                actual: record.subject.len(),
                limit: MAX_SUBJECT_ID_BYTES,
            });
        }
        let doc = encode(record, "oidc subject", 64 * 1024)?;
        let subject = record.subject.clone();
        let tenant = record.tenant_id.map(to_sql);
        self.writer.submit(Box::new(move |conn| {
            exec(
                conn,
                "INSERT INTO oidc_subjects (subject, tenant_id, record_json, record_sha256) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (subject) DO UPDATE SET tenant_id = ?2, record_json = ?3, record_sha256 = ?4",
                params![subject, tenant, doc.bytes, doc.sha256],
            )
            .map_err(StoreError::sqlite("set oidc subject"))?;
            Ok(1)
        }))?;
        Ok(())
    }

    /// Removes a subject's mapping; its tokens fall back to their claims.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when it has none; SQLite errors.
    pub fn delete_oidc_subject(&self, subject: &str) -> Result<(), StoreError> {
        let subject = subject.to_string();
        self.writer.submit(Box::new(move |conn| {
            let rows = exec(conn, "DELETE FROM oidc_subjects WHERE subject = ?1", [subject.as_str()])
                .map_err(StoreError::sqlite("delete oidc subject"))?;
            if rows == 0 {
                return Err(StoreError::Missing(format!("oidc subject {subject}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// A subject's mapping, if it has one (hash-checked).
    ///
    /// # Errors
    /// [`StoreError::Integrity`] for a record that does not match its hash; SQLite errors.
    pub fn find_oidc_subject(&self, subject: &str) -> Result<Option<OidcSubjectRecord>, StoreError> {
        self.read(|conn| {
            let row: Option<(Vec<u8>, String)> = query_one(
                conn,
                "SELECT record_json, record_sha256 FROM oidc_subjects WHERE subject = ?1",
                [subject],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("find oidc subject"))?;
            let Some((bytes, sha)) = row else { return Ok(None) };
            let record: OidcSubjectRecord = decode(&bytes, &sha, "oidc_subjects", || subject.to_string())?;
            if record.subject != subject {
                return Err(StoreError::Integrity { table: "oidc_subjects", key: subject.to_string() });
            }
            Ok(Some(record))
        })
    }

    /// Mapped subjects, of one tenant or (with `None`) all of them.
    ///
    /// # Errors
    /// SQLite and integrity errors.
    pub fn list_oidc_subjects(&self, tenant_id: Option<u64>) -> Result<Vec<OidcSubjectRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT subject, record_json, record_sha256 FROM oidc_subjects
                     WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY subject",
                )
                .map_err(StoreError::sqlite("list oidc subjects"))?;
            let rows = stmt
                .query_map([tenant_id.map(to_sql)], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, String>(2)?))
                })
                .map_err(StoreError::sqlite("list oidc subjects"))?;
            let mut out = Vec::new();
            for row in rows {
                let (subject, bytes, sha) = row.map_err(StoreError::sqlite("list oidc subjects"))?;
                out.push(decode(&bytes, &sha, "oidc_subjects", || subject.clone())?);
            }
            Ok(out)
        })
    }
}
