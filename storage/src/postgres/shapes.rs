//! The data-shape (schema) registry on PostgreSQL: immutable records, written with their
//! audit batch in one transaction, checked against their sha256 and scope on every read.

use dg_engine::data_shape::DataShapeRecord;

use crate::document::{decode_shape, encode};
use crate::error::StoreError;
use crate::postgres::connection::{cached, pg};
use crate::postgres::{audit, PgStore};
use crate::store::audit::AuditBatch;
use crate::store::to_sql;
use crate::store::Scope;

impl PgStore {
    /// Registers a data shape; a reused (schema id, version) is a [`StoreError::Conflict`].
    ///
    /// # Errors
    /// Conflict, size limit, the database's errors.
    pub fn put_shape(&self, record: &DataShapeRecord, batch: AuditBatch) -> Result<(), StoreError> {
        let doc = encode(record, "data shape", self.limits.max_shape_bytes)?;
        let signer = self.signer();
        self.conn.block_on(async {
            let mut client = self.conn.client("put data shape").await?;
            let tx = client.transaction().await.map_err(pg("begin data shape write"))?;
            let rows = cached::execute(
                &tx,
                "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, record_sha256)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &to_sql(record.tenant_id.get()),
                    &to_sql(record.namespace_id.get()),
                    &record.schema_id,
                    &record.version,
                    &doc.bytes,
                    &doc.sha256,
                ],
            )
            .await
            .map_err(pg("insert data shape"))?;
            if rows == 0 {
                return Err(StoreError::Conflict("schema already registered".to_string()));
            }
            if !batch.is_empty() {
                audit::append_in(&tx, batch.events, &batch.usage, signer.as_ref()).await?;
            }
            tx.commit().await.map_err(pg("commit data shape write"))
        })
    }

    /// Loads a data shape.
    ///
    /// # Errors
    /// Integrity (counted) or the database's errors.
    pub fn get_shape(
        &self,
        scope: Scope,
        schema_id: &str,
        version: &str,
    ) -> Result<Option<DataShapeRecord>, StoreError> {
        let row = self.conn.block_on(async {
            let client = self.conn.client("load data shape").await?;

            cached::query_opt(
                &client,
                "SELECT record_json, record_sha256 FROM data_shapes
                     WHERE tenant_id = $1 AND namespace_id = $2 AND schema_id = $3 AND version = $4",
                &[&to_sql(scope.tenant_id), &to_sql(scope.namespace_id), &schema_id, &version],
            )
            .await
            .map_err(pg("load data shape"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let record = decode_shape(
            &row.get::<_, Vec<u8>>(0),
            row.get::<_, &str>(1),
            (scope.tenant_id, scope.namespace_id),
            schema_id,
            version,
        )
        .map_err(|err| self.integrity_failed(err))?;
        Ok(Some(record))
    }

    /// Data shapes of a scope sorted by (schema_id, version), after the cursor.
    ///
    /// # Errors
    /// Integrity or the database's errors.
    pub fn list_shapes(
        &self,
        scope: Scope,
        cursor: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<DataShapeRecord>, StoreError> {
        let (cursor_id, cursor_version) = cursor.unwrap_or(("", ""));
        let rows = self.conn.block_on(async {
            let client = self.conn.client("list data shapes").await?;

                cached::query(&client, "SELECT schema_id, version, record_json, record_sha256 FROM data_shapes
                     WHERE tenant_id = $1 AND namespace_id = $2 AND (schema_id > $3 OR (schema_id = $3 AND version > $4))
                     ORDER BY schema_id, version LIMIT $5",
                    &[
                        &to_sql(scope.tenant_id),
                        &to_sql(scope.namespace_id),
                        &cursor_id,
                        &cursor_version,
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(pg("list data shapes"))
        })?;
        rows.iter()
            .map(|row| {
                let (id, version): (String, String) = (row.get(0), row.get(1));
                let ids = (scope.tenant_id, scope.namespace_id);
                decode_shape(&row.get::<_, Vec<u8>>(2), row.get::<_, &str>(3), ids, &id, &version)
                    .map_err(|err| self.integrity_failed(err))
            })
            .collect()
    }
}
