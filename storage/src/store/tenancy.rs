//! The authoritative registry of tenants and namespaces. A request may only reach a
//! tenant and namespace registered here and active; deletion is refused while either
//! still holds data.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::StoreError;
use crate::store::{exec, query_one, to_sql, Store};

/// Whether a tenant or namespace may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In use.
    Active,
    /// Kept, but every request to it is refused.
    Disabled,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        // Anything but "active" fails closed.
        if text == "active" {
            Self::Active
        } else {
            Self::Disabled
        }
    }
}

/// A registered tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Tenant id (>= 1).
    pub tenant_id: u64,
    /// Unique human name.
    pub name: String,
    /// Active or disabled.
    pub status: Status,
    /// Per-tenant quotas: usage counter name -> most allowed (absent = the configured default).
    pub quotas: BTreeMap<String, u64>,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
}

/// A registered namespace of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Tenant id.
    pub tenant_id: u64,
    /// Namespace id (>= 1).
    pub namespace_id: u64,
    /// Human name.
    pub name: String,
    /// Active or disabled.
    pub status: Status,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Store {
    /// Registers a tenant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id or name is taken; SQLite errors.
    pub fn create_tenant(&self, tenant_id: u64, name: &str, quotas: &BTreeMap<String, u64>) -> Result<(), StoreError> {
        if tenant_id == 0 || tenant_id > i64::MAX as u64 {
            return Err(StoreError::Conflict("tenant id must be between 1 and 2^63-1".into()));
        }
        let name = name.to_string();
        let quotas = serde_json::to_string(quotas).map_err(|err| StoreError::Canonical(err.to_string()))?;
        self.writer.submit(Box::new(move |conn| {
            let rows = exec(
                conn,
                "INSERT INTO tenants (tenant_id, name, status, quotas_json, created_at_ms) VALUES (?1, ?2, 'active', ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![to_sql(tenant_id), name, quotas, now_ms()],
            )
            .map_err(StoreError::sqlite("create tenant"))?;
            if rows == 0 {
                return Err(StoreError::Conflict(format!("tenant {tenant_id} or name {name:?} already exists")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// Every tenant, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant_id, name, status, quotas_json, created_at_ms FROM tenants ORDER BY tenant_id",
                )
                .map_err(StoreError::sqlite("list tenants"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })
                .map_err(StoreError::sqlite("list tenants"))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, status, quotas, created) = row.map_err(StoreError::sqlite("list tenants"))?;
                let quotas = serde_json::from_str(&quotas).map_err(|err| StoreError::Corrupt {
                    table: "tenants",
                    key: id.to_string(),
                    reason: err.to_string(),
                })?;
                out.push(TenantRecord {
                    tenant_id: from_sql(id),
                    name,
                    status: Status::parse(&status),
                    quotas,
                    created_at_ms: created,
                });
            }
            Ok(out)
        })
    }

    /// One tenant.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn get_tenant(&self, tenant_id: u64) -> Result<Option<TenantRecord>, StoreError> {
        Ok(self.list_tenants()?.into_iter().find(|t| t.tenant_id == tenant_id))
    }

    /// Enables or disables a tenant (its keys and data stay; every request is refused).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]-like conflict when it does not exist; SQLite errors.
    pub fn set_tenant_status(&self, tenant_id: u64, status: Status) -> Result<(), StoreError> {
        self.writer.submit(Box::new(move |conn| {
            let rows = exec(
                conn,
                "UPDATE tenants SET status = ?2 WHERE tenant_id = ?1",
                params![to_sql(tenant_id), status.as_str()],
            )
            .map_err(StoreError::sqlite("update tenant"))?;
            if rows == 0 {
                return Err(StoreError::Missing(format!("tenant {tenant_id}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// Deletes a tenant that holds no namespaces, runs, scenarios or schemas.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when it is not empty, [`StoreError::Missing`]; SQLite errors.
    pub fn delete_tenant(&self, tenant_id: u64) -> Result<(), StoreError> {
        self.writer.submit(Box::new(move |conn| {
            let id = to_sql(tenant_id);
            let held: i64 = query_one(
                conn,
                "SELECT (SELECT count(*) FROM namespaces WHERE tenant_id = ?1) + (SELECT count(*) FROM runs WHERE tenant_id = ?1)
                      + (SELECT count(*) FROM scenarios WHERE tenant_id = ?1) + (SELECT count(*) FROM data_shapes WHERE tenant_id = ?1)",
                [id],
                |row| row.get(0),
            )
            .map_err(StoreError::sqlite("count tenant data"))?;
            if held > 0 {
                return Err(StoreError::Conflict(format!("tenant {tenant_id} is not empty ({held} namespaces or objects)")));
            }
            let rows = exec(conn, "DELETE FROM tenants WHERE tenant_id = ?1", [id]).map_err(StoreError::sqlite("delete tenant"))?;
            if rows == 0 {
                return Err(StoreError::Missing(format!("tenant {tenant_id}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// Registers a namespace in an existing tenant.
    ///
    /// # Errors
    /// [`StoreError::Missing`] for an unknown tenant, [`StoreError::Conflict`] when taken.
    pub fn create_namespace(&self, tenant_id: u64, namespace_id: u64, name: &str) -> Result<(), StoreError> {
        if namespace_id == 0 || namespace_id > i64::MAX as u64 {
            return Err(StoreError::Conflict("namespace id must be between 1 and 2^63-1".into()));
        }
        let name = name.to_string();
        self.writer.submit(Box::new(move |conn| {
            let tenant: Option<i64> = query_one(conn, "SELECT tenant_id FROM tenants WHERE tenant_id = ?1", [to_sql(tenant_id)], |row| row.get(0))
                .optional()
                .map_err(StoreError::sqlite("find tenant"))?;
            if tenant.is_none() {
                return Err(StoreError::Missing(format!("tenant {tenant_id}")));
            }
            let rows = exec(
                conn,
                "INSERT INTO namespaces (tenant_id, namespace_id, name, status, created_at_ms) VALUES (?1, ?2, ?3, 'active', ?4)
                 ON CONFLICT DO NOTHING",
                params![to_sql(tenant_id), to_sql(namespace_id), name, now_ms()],
            )
            .map_err(StoreError::sqlite("create namespace"))?;
            if rows == 0 {
                return Err(StoreError::Conflict(format!("namespace {tenant_id}/{namespace_id} already exists")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// A tenant's namespaces.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_namespaces(&self, tenant_id: u64) -> Result<Vec<NamespaceRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT namespace_id, name, status, created_at_ms FROM namespaces WHERE tenant_id = ?1 ORDER BY namespace_id",
                )
                .map_err(StoreError::sqlite("list namespaces"))?;
            let rows = stmt
                .query_map([to_sql(tenant_id)], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?))
                })
                .map_err(StoreError::sqlite("list namespaces"))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, status, created) = row.map_err(StoreError::sqlite("list namespaces"))?;
                out.push(NamespaceRecord { tenant_id, namespace_id: from_sql(id), name, status: Status::parse(&status), created_at_ms: created });
            }
            Ok(out)
        })
    }

    /// Enables or disables a namespace.
    ///
    /// # Errors
    /// [`StoreError::Missing`]; SQLite errors.
    pub fn set_namespace_status(&self, tenant_id: u64, namespace_id: u64, status: Status) -> Result<(), StoreError> {
        self.writer.submit(Box::new(move |conn| {
            let rows = exec(
                conn,
                "UPDATE namespaces SET status = ?3 WHERE tenant_id = ?1 AND namespace_id = ?2",
                params![to_sql(tenant_id), to_sql(namespace_id), status.as_str()],
            )
            .map_err(StoreError::sqlite("update namespace"))?;
            if rows == 0 {
                return Err(StoreError::Missing(format!("namespace {tenant_id}/{namespace_id}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// Deletes a namespace that holds no runs, scenarios or schemas.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when not empty, [`StoreError::Missing`]; SQLite errors.
    pub fn delete_namespace(&self, tenant_id: u64, namespace_id: u64) -> Result<(), StoreError> {
        self.writer.submit(Box::new(move |conn| {
            let (t, n) = (to_sql(tenant_id), to_sql(namespace_id));
            let held: i64 = query_one(
                conn,
                "SELECT (SELECT count(*) FROM runs WHERE tenant_id = ?1 AND namespace_id = ?2)
                      + (SELECT count(*) FROM scenarios WHERE tenant_id = ?1 AND namespace_id = ?2)
                      + (SELECT count(*) FROM data_shapes WHERE tenant_id = ?1 AND namespace_id = ?2)",
                [t, n],
                |row| row.get(0),
            )
            .map_err(StoreError::sqlite("count namespace data"))?;
            if held > 0 {
                return Err(StoreError::Conflict(format!(
                    "namespace {tenant_id}/{namespace_id} is not empty ({held} objects)"
                )));
            }
            let rows = exec(conn, "DELETE FROM namespaces WHERE tenant_id = ?1 AND namespace_id = ?2", [t, n])
                .map_err(StoreError::sqlite("delete namespace"))?;
            if rows == 0 {
                return Err(StoreError::Missing(format!("namespace {tenant_id}/{namespace_id}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// The tenant's quota overrides when the tenant (and namespace, when given) is
    /// registered and active; `None` otherwise. The registry half of every
    /// authorization decision.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn active_tenant_quotas(
        &self,
        tenant_id: u64,
        namespace_id: Option<u64>,
    ) -> Result<Option<BTreeMap<String, u64>>, StoreError> {
        if let Some(answer) = self.registry.tenancy(tenant_id, namespace_id) {
            return Ok(answer);
        }
        let answer = self.read(|conn| {
            let tenant: Option<(String, String)> = query_one(
                conn,
                "SELECT status, quotas_json FROM tenants WHERE tenant_id = ?1",
                [to_sql(tenant_id)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("check tenant"))?;
            let Some((status, quotas)) = tenant else { return Ok(None) };
            if status != "active" {
                return Ok(None);
            }
            if let Some(namespace_id) = namespace_id {
                let ns: Option<String> = query_one(
                    conn,
                    "SELECT status FROM namespaces WHERE tenant_id = ?1 AND namespace_id = ?2",
                    [to_sql(tenant_id), to_sql(namespace_id)],
                    |row| row.get(0),
                )
                .optional()
                .map_err(StoreError::sqlite("check namespace"))?;
                if ns.as_deref() != Some("active") {
                    return Ok(None);
                }
            }
            let quotas = serde_json::from_str(&quotas).map_err(|err| StoreError::Corrupt {
                table: "tenants",
                key: tenant_id.to_string(),
                reason: err.to_string(),
            })?;
            Ok(Some(quotas))
        })?;
        self.registry.keep_tenancy(tenant_id, namespace_id, &answer);
        Ok(answer)
    }
}
