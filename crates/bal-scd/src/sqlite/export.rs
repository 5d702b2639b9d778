//! Reading whole tables for `bal db copy` (see `crate::copy`).

use sqlx::{Column, Row, TypeInfo, ValueRef};

use super::SqliteStore;
use crate::StoreResult;
use crate::copy::{Table, Value};
use crate::error::corrupt;

impl SqliteStore {
    /// Every row of `table`, in rowid order; none when there is no such table.
    pub(crate) async fn export(&self, table: &'static str) -> StoreResult<Table> {
        if !crate::store::table_exists(&self.pool, table).await? {
            return Ok(Table {
                name: table,
                columns: Vec::new(),
                rows: Vec::new(),
            });
        }
        // `table` is one of `copy::TABLES` or a tenant's, never input.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM {table} ORDER BY rowid"
        )))
        .fetch_all(&self.pool)
        .await?;
        let columns: Vec<String> = match rows.first() {
            Some(r) => r.columns().iter().map(|c| c.name().to_owned()).collect(),
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let raw = row.try_get_raw(i)?;
                let value = if raw.is_null() {
                    Value::Null
                } else {
                    match raw.type_info().name() {
                        "INTEGER" => Value::Int(row.try_get(i)?),
                        "TEXT" => Value::Text(row.try_get(i)?),
                        "BLOB" => Value::Bytes(row.try_get(i)?),
                        other => return Err(corrupt(format!("{table}: a {other} value"))),
                    }
                };
                values.push(value);
            }
            out.push(values);
        }
        Ok(Table {
            name: table,
            columns,
            rows: out,
        })
    }

    /// The master key fingerprint recorded, if any.
    pub(crate) async fn stored_master_key(&self) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM bal_schema WHERE key = 'master_key'")
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
