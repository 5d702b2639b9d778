//! Writing a SQLite installation's tables for `bal db copy` (see `crate::copy`), in one
//! transaction.

use sqlx::{Postgres, QueryBuilder};

use super::PgStore;
use crate::copy::{Table, Value};
use crate::{StoreError, StoreResult};

/// Rows per INSERT: PostgreSQL takes at most 65 535 parameters per statement.
const MAX_PARAMS: usize = 60_000;

impl PgStore {
    pub(crate) async fn import(
        &self,
        tables: &[Table],
        master_key: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Err(StoreError::Config(
                "the target database already holds users: bal db copy only fills an empty one"
                    .into(),
            ));
        }
        // The copied measurements and audit entries all get this transaction's id, so their
        // certification order is id order, as it was on SQLite; batch spans are mapped onto it.
        let xid: i64 = sqlx::query_scalar("SELECT bal_xid()")
            .fetch_one(&mut *tx)
            .await?;
        for table in tables {
            let (columns, rows) = if table.name == "cert_batches" {
                batches_with_spans(table, xid)?
            } else {
                (table.columns.clone(), table.rows.clone())
            };
            if rows.is_empty() {
                continue;
            }
            let per_statement = (MAX_PARAMS / columns.len().max(1)).max(1);
            for chunk in rows.chunks(per_statement) {
                let mut sql = QueryBuilder::<Postgres>::new(format!(
                    "INSERT INTO {} ({}) ",
                    table.name,
                    columns.join(", ")
                ));
                sql.push_values(chunk, |mut b, row| {
                    for v in row {
                        match v {
                            Value::Null => b.push("NULL"),
                            Value::Int(i) => b.push_bind(*i),
                            Value::Text(t) => b.push_bind(t.clone()),
                            Value::Bytes(x) => b.push_bind(x.clone()),
                        };
                    }
                });
                sql.build().execute(&mut *tx).await?;
            }
        }
        for (table, column) in [("measurements", "id"), ("audit_log", "id")] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 GREATEST((SELECT MAX({column}) FROM {table}), 1))"
            )))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(fp) = master_key {
            sqlx::query("INSERT INTO bal_schema (key, value) VALUES ('master_key', $1)")
                .bind(fp)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// SQLite's batch rows with their id spans as PostgreSQL's `(xid, id)` spans.
fn batches_with_spans(table: &Table, xid: i64) -> StoreResult<(Vec<String>, Vec<Vec<Value>>)> {
    let spans = [
        ("measurements_after", "m_after"),
        ("measurements_upto", "m_upto"),
        ("audit_after", "a_after"),
        ("audit_upto", "a_upto"),
    ];
    let mut columns = Vec::new();
    for c in &table.columns {
        match spans.iter().find(|(from, _)| from == c) {
            Some((_, to)) => {
                columns.push(format!("{to}_xid"));
                columns.push(format!("{to}_id"));
            }
            None => columns.push(c.clone()),
        }
    }
    let mut rows = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let mut out = Vec::with_capacity(columns.len());
        for (c, v) in table.columns.iter().zip(row) {
            if spans.iter().any(|(from, _)| from == c) {
                let Value::Int(id) = v else {
                    return Err(crate::error::corrupt(format!("cert_batches.{c}")));
                };
                // The empty start of the first batch stays at the very beginning.
                out.push(Value::Int(if *id == 0 { 0 } else { xid }));
                out.push(Value::Int(*id));
            } else {
                out.push(v.clone());
            }
        }
        rows.push(out);
    }
    Ok((columns, rows))
}
