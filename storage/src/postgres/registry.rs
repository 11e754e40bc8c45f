//! The registry on PostgreSQL: tenants and namespaces, API keys (only their secrets' hashes)
//! and the OIDC subject mapping. Changes bump `dg_meta.registry_generation` by trigger in
//! their own transaction, on whichever node makes them; every request reads the generation
//! once (`registry_snapshot`) and serves key and tenancy lookups from this node's memory only
//! when they were read at that generation. So a key revoked or a tenant disabled through any
//! node is refused by every request that starts on any node after the change committed.

use std::collections::BTreeMap;

use deadpool_postgres::Object;
use tokio_postgres::Row;

use crate::document::{decode, encode};
use crate::error::StoreError;
use crate::postgres::connection::{cached, pg};
use crate::postgres::PgStore;
use crate::store::registry_cache::RegistrySnapshot;
use crate::store::subjects::{OidcSubjectRecord, MAX_SUBJECT_ID_BYTES};
use crate::store::tenancy::{NamespaceRecord, Status, TenantRecord};
use crate::store::to_sql;
use crate::store::ApiKeyRecord;

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn tenant_from(row: &Row) -> Result<TenantRecord, StoreError> {
    let id: i64 = row.get(0);
    let quotas: String = row.get(3);
    Ok(TenantRecord {
        tenant_id: from_sql(id),
        name: row.get(1),
        status: Status::parse(row.get::<_, &str>(2)),
        quotas: serde_json::from_str(&quotas).map_err(|err| StoreError::Corrupt {
            table: "tenants",
            key: id.to_string(),
            reason: err.to_string(),
        })?,
        created_at_ms: row.get(4),
    })
}

impl PgStore {
    /// Runs one statement and returns the rows it changed.
    async fn change(
        client: &Object,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        client.execute(sql, params).await.map_err(pg(operation))
    }

    /// Registers a tenant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id or name is taken; the database's errors.
    pub fn create_tenant(&self, tenant_id: u64, name: &str, quotas: &BTreeMap<String, u64>) -> Result<(), StoreError> {
        if tenant_id == 0 || i64::try_from(tenant_id).is_err() {
            return Err(StoreError::Conflict("tenant id must be between 1 and 2^63-1".into()));
        }
        let quotas = serde_json::to_string(quotas).map_err(|err| StoreError::Canonical(err.to_string()))?;
        let rows = self.conn.block_on(async {
            let client = self.conn.client("create tenant").await?;
            Self::change(
                &client,
                "create tenant",
                "INSERT INTO tenants (tenant_id, name, status, quotas_json, created_at_ms) VALUES ($1, $2, 'active', $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&to_sql(tenant_id), &name, &quotas, &crate::clock::now_ms()],
            )
            .await
        })?;
        if rows == 0 {
            return Err(StoreError::Conflict(format!("tenant {tenant_id} or name {name:?} already exists")));
        }
        Ok(())
    }

    /// Every tenant, by id.
    ///
    /// # Errors
    /// The database's errors.
    pub fn list_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("list tenants").await?;

            cached::query(
                &client,
                "SELECT tenant_id, name, status, quotas_json, created_at_ms FROM tenants ORDER BY tenant_id",
                &[],
            )
            .await
            .map_err(pg("list tenants"))
        })?;
        rows.iter().map(tenant_from).collect()
    }

    /// One tenant.
    ///
    /// # Errors
    /// The database's errors.
    pub fn get_tenant(&self, tenant_id: u64) -> Result<Option<TenantRecord>, StoreError> {
        let row = self.conn.block_on(async {
            let client = self.conn.client("get tenant").await?;

            cached::query_opt(
                &client,
                "SELECT tenant_id, name, status, quotas_json, created_at_ms FROM tenants WHERE tenant_id = $1",
                &[&to_sql(tenant_id)],
            )
            .await
            .map_err(pg("get tenant"))
        })?;
        row.as_ref().map(tenant_from).transpose()
    }

    /// Enables or disables a tenant.
    ///
    /// # Errors
    /// [`StoreError::Missing`]; the database's errors.
    pub fn set_tenant_status(&self, tenant_id: u64, status: Status) -> Result<(), StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("update tenant").await?;
            Self::change(
                &client,
                "update tenant",
                "UPDATE tenants SET status = $2 WHERE tenant_id = $1",
                &[&to_sql(tenant_id), &status.as_str()],
            )
            .await
        })?;
        if rows == 0 {
            return Err(StoreError::Missing(format!("tenant {tenant_id}")));
        }
        Ok(())
    }

    /// Deletes a tenant that holds no namespaces, runs, scenarios or schemas (the tenant's row
    /// is locked while counting, so a namespace cannot be added meanwhile).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when not empty, [`StoreError::Missing`]; the database's errors.
    pub fn delete_tenant(&self, tenant_id: u64) -> Result<(), StoreError> {
        let id = to_sql(tenant_id);
        self.conn.block_on(async {
            let mut client = self.conn.client("delete tenant").await?;
            let tx = client.transaction().await.map_err(pg("begin tenant delete"))?;
            let found =
                cached::query_opt(&tx, "SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(pg("lock tenant"))?;
            if found.is_none() {
                return Err(StoreError::Missing(format!("tenant {tenant_id}")));
            }
            let held: i64 =
                cached::query_one(&tx, "SELECT (SELECT count(*) FROM namespaces WHERE tenant_id = $1) + (SELECT count(*) FROM runs WHERE tenant_id = $1)
                          + (SELECT count(*) FROM scenarios WHERE tenant_id = $1) + (SELECT count(*) FROM data_shapes WHERE tenant_id = $1)",
                    &[&id],
                )
                .await
                .map_err(pg("count tenant data"))?
                .get(0);
            if held > 0 {
                return Err(StoreError::Conflict(format!("tenant {tenant_id} is not empty ({held} namespaces or objects)")));
            }
            cached::execute(&tx, "DELETE FROM tenants WHERE tenant_id = $1", &[&id]).await.map_err(pg("delete tenant"))?;
            tx.commit().await.map_err(pg("commit tenant delete"))
        })
    }

    /// Registers a namespace in an existing tenant.
    ///
    /// # Errors
    /// [`StoreError::Missing`] for an unknown tenant, [`StoreError::Conflict`] when taken.
    pub fn create_namespace(&self, tenant_id: u64, namespace_id: u64, name: &str) -> Result<(), StoreError> {
        if namespace_id == 0 || i64::try_from(namespace_id).is_err() {
            return Err(StoreError::Conflict("namespace id must be between 1 and 2^63-1".into()));
        }
        self.conn.block_on(async {
            let mut client = self.conn.client("create namespace").await?;
            let tx = client.transaction().await.map_err(pg("begin namespace create"))?;
            // The tenant's row is locked (shared) so it cannot be deleted meanwhile.
            let found =
                cached::query_opt(&tx, "SELECT 1 FROM tenants WHERE tenant_id = $1 FOR SHARE", &[&to_sql(tenant_id)])
                .await
                .map_err(pg("find tenant"))?;
            if found.is_none() {
                return Err(StoreError::Missing(format!("tenant {tenant_id}")));
            }
            let rows =
                cached::execute(&tx, "INSERT INTO namespaces (tenant_id, namespace_id, name, status, created_at_ms) VALUES ($1, $2, $3, 'active', $4)
                     ON CONFLICT DO NOTHING",
                    &[&to_sql(tenant_id), &to_sql(namespace_id), &name, &crate::clock::now_ms()],
                )
                .await
                .map_err(pg("create namespace"))?;
            if rows == 0 {
                return Err(StoreError::Conflict(format!("namespace {tenant_id}/{namespace_id} already exists")));
            }
            tx.commit().await.map_err(pg("commit namespace create"))
        })
    }

    /// A tenant's namespaces.
    ///
    /// # Errors
    /// The database's errors.
    pub fn list_namespaces(&self, tenant_id: u64) -> Result<Vec<NamespaceRecord>, StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("list namespaces").await?;

                cached::query(&client, "SELECT namespace_id, name, status, created_at_ms FROM namespaces WHERE tenant_id = $1 ORDER BY namespace_id",
                    &[&to_sql(tenant_id)],
                )
                .await
                .map_err(pg("list namespaces"))
        })?;
        Ok(rows
            .iter()
            .map(|row| NamespaceRecord {
                tenant_id,
                namespace_id: from_sql(row.get(0)),
                name: row.get(1),
                status: Status::parse(row.get::<_, &str>(2)),
                created_at_ms: row.get(3),
            })
            .collect())
    }

    /// Enables or disables a namespace.
    ///
    /// # Errors
    /// [`StoreError::Missing`]; the database's errors.
    pub fn set_namespace_status(&self, tenant_id: u64, namespace_id: u64, status: Status) -> Result<(), StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("update namespace").await?;
            Self::change(
                &client,
                "update namespace",
                "UPDATE namespaces SET status = $3 WHERE tenant_id = $1 AND namespace_id = $2",
                &[&to_sql(tenant_id), &to_sql(namespace_id), &status.as_str()],
            )
            .await
        })?;
        if rows == 0 {
            return Err(StoreError::Missing(format!("namespace {tenant_id}/{namespace_id}")));
        }
        Ok(())
    }

    /// Deletes a namespace that holds no runs, scenarios or schemas.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when not empty, [`StoreError::Missing`]; the database's errors.
    pub fn delete_namespace(&self, tenant_id: u64, namespace_id: u64) -> Result<(), StoreError> {
        let (t, n) = (to_sql(tenant_id), to_sql(namespace_id));
        self.conn.block_on(async {
            let mut client = self.conn.client("delete namespace").await?;
            let tx = client.transaction().await.map_err(pg("begin namespace delete"))?;
            let found = cached::query_opt(
                &tx,
                "SELECT 1 FROM namespaces WHERE tenant_id = $1 AND namespace_id = $2 FOR UPDATE",
                &[&t, &n],
            )
            .await
            .map_err(pg("lock namespace"))?;
            if found.is_none() {
                return Err(StoreError::Missing(format!("namespace {tenant_id}/{namespace_id}")));
            }
            let held: i64 = cached::query_one(
                &tx,
                "SELECT (SELECT count(*) FROM runs WHERE tenant_id = $1 AND namespace_id = $2)
                          + (SELECT count(*) FROM scenarios WHERE tenant_id = $1 AND namespace_id = $2)
                          + (SELECT count(*) FROM data_shapes WHERE tenant_id = $1 AND namespace_id = $2)",
                &[&t, &n],
            )
            .await
            .map_err(pg("count namespace data"))?
            .get(0);
            if held > 0 {
                return Err(StoreError::Conflict(format!(
                    "namespace {tenant_id}/{namespace_id} is not empty ({held} objects)"
                )));
            }
            cached::execute(&tx, "DELETE FROM namespaces WHERE tenant_id = $1 AND namespace_id = $2", &[&t, &n])
                .await
                .map_err(pg("delete namespace"))?;
            tx.commit().await.map_err(pg("commit namespace delete"))
        })
    }

    /// The tenant's quota overrides when it (and the namespace, when given) is registered and
    /// active; `None` otherwise.
    ///
    /// # Errors
    /// The database's errors.
    pub fn active_tenant_quotas(
        &self,
        tenant_id: u64,
        namespace_id: Option<u64>,
    ) -> Result<Option<BTreeMap<String, u64>>, StoreError> {
        if let Some(answer) = self.registry.tenancy(tenant_id, namespace_id) {
            return Ok(answer);
        }
        let row = self.conn.block_on(async {
            let client = self.conn.client("check tenant").await?;

            cached::query_opt(
                &client,
                "SELECT t.status, t.quotas_json, n.status FROM tenants t
                     LEFT JOIN namespaces n ON n.tenant_id = t.tenant_id AND n.namespace_id = $2
                     WHERE t.tenant_id = $1",
                &[&to_sql(tenant_id), &namespace_id.map(to_sql)],
            )
            .await
            .map_err(pg("check tenant"))
        })?;
        let answer = match row {
            None => None,
            Some(row) => {
                let (status, quotas, namespace): (String, String, Option<String>) =
                    (row.get(0), row.get(1), row.get(2));
                let namespace_ok = namespace_id.is_none() || namespace.as_deref() == Some("active");
                if status == "active" && namespace_ok {
                    Some(serde_json::from_str(&quotas).map_err(|err| StoreError::Corrupt {
                        table: "tenants",
                        key: tenant_id.to_string(),
                        reason: err.to_string(),
                    })?)
                } else {
                    None
                }
            }
        };
        self.registry.keep_tenancy(tenant_id, namespace_id, &answer);
        Ok(answer)
    }

    /// Stores a new API key record with the sha256 of its secret.
    ///
    /// # Errors
    /// Conflict on a duplicate id or secret; the database's errors.
    pub fn put_api_key(&self, record: &ApiKeyRecord, secret_sha256: &str) -> Result<(), StoreError> {
        let doc = encode(record, "api key", 64 * 1024)?;
        let rows = self.conn.block_on(async {
            let client = self.conn.client("insert api key").await?;
            Self::change(
                &client,
                "insert api key",
                "INSERT INTO api_keys (key_id, record_json, record_sha256, secret_sha256) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&record.key_id, &doc.bytes, &doc.sha256, &secret_sha256],
            )
            .await
        })?;
        if rows == 0 {
            return Err(StoreError::Conflict(format!("api key already exists: {}", record.key_id)));
        }
        Ok(())
    }

    /// Replaces a key's record (revocation, expiry); the secret hash is unchanged.
    ///
    /// # Errors
    /// [`StoreError::Missing`]; the database's errors.
    pub fn update_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let doc = encode(record, "api key", 64 * 1024)?;
        let rows = self.conn.block_on(async {
            let client = self.conn.client("update api key").await?;
            Self::change(
                &client,
                "update api key",
                "UPDATE api_keys SET record_json = $2, record_sha256 = $3 WHERE key_id = $1",
                &[&record.key_id, &doc.bytes, &doc.sha256],
            )
            .await
        })?;
        if rows == 0 {
            return Err(StoreError::Missing(format!("api key {}", record.key_id)));
        }
        Ok(())
    }

    /// Finds the key whose secret hashes to `secret_sha256` (checked against its hash).
    ///
    /// # Errors
    /// Integrity (counted) or the database's errors.
    pub fn find_api_key(&self, secret_sha256: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        if let Some(record) = self.registry.key(secret_sha256) {
            return Ok(Some(record));
        }
        let row = self.conn.block_on(async {
            let client = self.conn.client("find api key").await?;

            cached::query_opt(
                &client,
                "SELECT key_id, record_json, record_sha256 FROM api_keys WHERE secret_sha256 = $1",
                &[&secret_sha256],
            )
            .await
            .map_err(pg("find api key"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let (key_id, bytes, sha): (String, Vec<u8>, String) = (row.get(0), row.get(1), row.get(2));
        let record: ApiKeyRecord = decode(&bytes, &sha, "api_keys", || key_id.clone())
            .and_then(|record: ApiKeyRecord| {
                if record.key_id == key_id {
                    Ok(record)
                } else {
                    Err(StoreError::Integrity { table: "api_keys", key: key_id.clone() })
                }
            })
            .map_err(|err| self.integrity_failed(err))?;
        self.registry.keep_key(secret_sha256, &record);
        Ok(Some(record))
    }

    /// Every key record, by id.
    ///
    /// # Errors
    /// Integrity or the database's errors.
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("list api keys").await?;

            cached::query(&client, "SELECT key_id, record_json, record_sha256 FROM api_keys ORDER BY key_id", &[])
                .await
                .map_err(pg("list api keys"))
        })?;
        rows.iter()
            .map(|row| {
                let key_id: String = row.get(0);
                decode(&row.get::<_, Vec<u8>>(1), row.get::<_, &str>(2), "api_keys", || key_id.clone())
                    .map_err(|err| self.integrity_failed(err))
            })
            .collect()
    }

    /// Opens this thread's registry snapshot for one request: one read of the deployment's
    /// registry generation.
    ///
    /// # Errors
    /// The database's errors.
    pub fn registry_snapshot(&self) -> Result<RegistrySnapshot, StoreError> {
        let generation: i64 = self.conn.block_on(async {
            let client = self.conn.client("read registry generation").await?;
            let row = cached::query_one(&client, "SELECT registry_generation FROM dg_meta", &[])
                .await
                .map_err(pg("read registry generation"))?;
            Ok::<i64, StoreError>(row.get(0))
        })?;
        Ok(self.registry.open(generation))
    }

    /// Reopens a request's snapshot on this thread at the generation it already read (see
    /// [`RegistrySnapshot::generation`]): no round trip.
    pub fn registry_snapshot_at(&self, generation: i64) -> RegistrySnapshot {
        self.registry.open(generation)
    }

    /// Sets (creates or replaces) a subject's mapping.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; the database's errors.
    pub fn put_oidc_subject(&self, record: &OidcSubjectRecord) -> Result<(), StoreError> {
        if record.subject.len() > MAX_SUBJECT_ID_BYTES {
            return Err(StoreError::TooLarge {
                what: "oidc subject",
                actual: record.subject.len(),
                limit: MAX_SUBJECT_ID_BYTES,
            });
        }
        let doc = encode(record, "oidc subject", 64 * 1024)?;
        self.conn.block_on(async {
            let client = self.conn.client("set oidc subject").await?;
            Self::change(
                &client,
                "set oidc subject",
                "INSERT INTO oidc_subjects (subject, tenant_id, record_json, record_sha256) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject) DO UPDATE SET tenant_id = $2, record_json = $3, record_sha256 = $4",
                &[&record.subject, &record.tenant_id.map(to_sql), &doc.bytes, &doc.sha256],
            )
            .await
        })?;
        Ok(())
    }

    /// Removes a subject's mapping.
    ///
    /// # Errors
    /// [`StoreError::Missing`]; the database's errors.
    pub fn delete_oidc_subject(&self, subject: &str) -> Result<(), StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("delete oidc subject").await?;
            Self::change(&client, "delete oidc subject", "DELETE FROM oidc_subjects WHERE subject = $1", &[&subject])
                .await
        })?;
        if rows == 0 {
            return Err(StoreError::Missing(format!("oidc subject {subject}")));
        }
        Ok(())
    }

    /// A subject's mapping, if it has one (hash-checked).
    ///
    /// # Errors
    /// Integrity (counted) or the database's errors.
    pub fn find_oidc_subject(&self, subject: &str) -> Result<Option<OidcSubjectRecord>, StoreError> {
        let row = self.conn.block_on(async {
            let client = self.conn.client("find oidc subject").await?;

            cached::query_opt(
                &client,
                "SELECT record_json, record_sha256 FROM oidc_subjects WHERE subject = $1",
                &[&subject],
            )
            .await
            .map_err(pg("find oidc subject"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let record = decode(&row.get::<_, Vec<u8>>(0), row.get::<_, &str>(1), "oidc_subjects", || subject.to_string())
            .and_then(|record: OidcSubjectRecord| {
                if record.subject == subject {
                    Ok(record)
                } else {
                    Err(StoreError::Integrity { table: "oidc_subjects", key: subject.to_string() })
                }
            })
            .map_err(|err| self.integrity_failed(err))?;
        Ok(Some(record))
    }

    /// Mapped subjects, of one tenant or all.
    ///
    /// # Errors
    /// Integrity or the database's errors.
    pub fn list_oidc_subjects(&self, tenant_id: Option<u64>) -> Result<Vec<OidcSubjectRecord>, StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("list oidc subjects").await?;

            cached::query(
                &client,
                "SELECT subject, record_json, record_sha256 FROM oidc_subjects
                     WHERE $1::bigint IS NULL OR tenant_id = $1 ORDER BY subject",
                &[&tenant_id.map(to_sql)],
            )
            .await
            .map_err(pg("list oidc subjects"))
        })?;
        rows.iter()
            .map(|row| {
                let subject: String = row.get(0);
                decode(&row.get::<_, Vec<u8>>(1), row.get::<_, &str>(2), "oidc_subjects", || subject.clone())
                    .map_err(|err| self.integrity_failed(err))
            })
            .collect()
    }
}
