//! [`ChainStore`] on SQLite.

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use bal_scd::{StoreError, StoreResult};
use sqlx::SqlitePool;

use super::{
    BlockKey, ChainAccount, ChainState, ChainStore, LogFilter, NewChainBlock, StorageSlot,
    StoredBlock, StoredLog, StoredTransaction, append_conflict,
};

super::chain_rows!(SqliteRow, sqlx::Sqlite);

pub(super) struct SqliteChainStore {
    pub(super) pool: SqlitePool,
}

const TX_COLUMNS: &str =
    "hash, block_number, tx_index, sender, raw, receipt, gas_used, contract_address";

#[async_trait]
impl ChainStore for SqliteChainStore {
    async fn chain_state(&self) -> StoreResult<ChainState> {
        let head = sqlx::query(
            "SELECT number, hash, timestamp, header FROM chain_blocks ORDER BY number DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(block_from_row)
        .transpose()?;
        let accounts = sqlx::query("SELECT address, nonce, balance, code FROM chain_accounts")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let balance: Vec<u8> = get(row, "balance")?;
                Ok(ChainAccount {
                    address: col(row, "address")?,
                    nonce: num(row, "nonce")?,
                    balance: U256::try_from_be_slice(&balance)
                        .ok_or_else(|| StoreError::corrupt("balance"))?,
                    code: get(row, "code")?,
                })
            })
            .collect::<StoreResult<_>>()?;
        let storage = sqlx::query("SELECT address, slot, value FROM chain_storage")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let slot: B256 = col(row, "slot")?;
                let value: B256 = col(row, "value")?;
                Ok(StorageSlot {
                    address: col(row, "address")?,
                    slot: U256::from_be_bytes(slot.0),
                    value: U256::from_be_bytes(value.0),
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(ChainState {
            head,
            accounts,
            storage,
        })
    }

    async fn chain_append(&self, b: &NewChainBlock) -> StoreResult<()> {
        // IMMEDIATE: queue behind any other writer now, not at the first write.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head: (Option<i64>,) = sqlx::query_as("SELECT MAX(number) FROM chain_blocks")
            .fetch_one(&mut *tx)
            .await?;
        let expected = head.0.map_or(0, |n| n as u64 + 1);
        if b.block.number != expected {
            return Err(StoreError::Conflict(format!(
                "block {} does not follow the stored head (expected {expected})",
                b.block.number
            )));
        }
        sqlx::query(
            "INSERT INTO chain_blocks (number, hash, timestamp, header) VALUES (?, ?, ?, ?)",
        )
        .bind(b.block.number as i64)
        .bind(b.block.hash.as_slice())
        .bind(b.block.timestamp as i64)
        .bind(&b.block.header[..])
        .execute(&mut *tx)
        .await
        .map_err(|e| append_conflict(e, b.block.number))?;
        for t in &b.transactions {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO chain_transactions ({TX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(t.hash.as_slice())
            .bind(t.block_number as i64)
            .bind(i64::from(t.tx_index))
            .bind(t.sender.as_slice())
            .bind(&t.raw[..])
            .bind(&t.receipt[..])
            .bind(t.gas_used as i64)
            .bind(t.contract_address.as_ref().map(|a| a.to_vec()))
            .execute(&mut *tx)
            .await?;
        }
        for l in &b.logs {
            let topic = |i: usize| l.topics.get(i).map(|t| t.to_vec());
            sqlx::query(
                "INSERT INTO chain_logs (block_number, log_index, tx_index, tx_hash, address, \
                 topic0, topic1, topic2, topic3, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(l.block_number as i64)
            .bind(i64::from(l.log_index))
            .bind(i64::from(l.tx_index))
            .bind(l.tx_hash.as_slice())
            .bind(l.address.as_slice())
            .bind(topic(0))
            .bind(topic(1))
            .bind(topic(2))
            .bind(topic(3))
            .bind(&l.data[..])
            .execute(&mut *tx)
            .await?;
        }
        for a in &b.accounts {
            sqlx::query(
                "INSERT INTO chain_accounts (address, nonce, balance, code) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (address) DO UPDATE SET nonce = excluded.nonce, \
                 balance = excluded.balance, \
                 code = COALESCE(excluded.code, chain_accounts.code)",
            )
            .bind(a.address.as_slice())
            .bind(a.nonce as i64)
            .bind(word(&a.balance).to_vec())
            .bind(a.code.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        for s in &b.storage {
            if s.value.is_zero() {
                sqlx::query("DELETE FROM chain_storage WHERE address = ? AND slot = ?")
                    .bind(s.address.as_slice())
                    .bind(word(&s.slot).to_vec())
                    .execute(&mut *tx)
                    .await
            } else {
                sqlx::query(
                    "INSERT INTO chain_storage (address, slot, value) VALUES (?, ?, ?) \
                     ON CONFLICT (address, slot) DO UPDATE SET value = excluded.value",
                )
                .bind(s.address.as_slice())
                .bind(word(&s.slot).to_vec())
                .bind(word(&s.value).to_vec())
                .execute(&mut *tx)
                .await
            }?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn chain_block(&self, key: BlockKey) -> StoreResult<Option<StoredBlock>> {
        let q = match key {
            BlockKey::Number(n) => sqlx::query(
                "SELECT number, hash, timestamp, header FROM chain_blocks WHERE number = ?",
            )
            .bind(n as i64),
            BlockKey::Hash(h) => sqlx::query(
                "SELECT number, hash, timestamp, header FROM chain_blocks WHERE hash = ?",
            )
            .bind(h.to_vec()),
        };
        q.fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(block_from_row)
            .transpose()
    }

    async fn chain_block_transactions(&self, number: u64) -> StoreResult<Vec<StoredTransaction>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TX_COLUMNS} FROM chain_transactions WHERE block_number = ? ORDER BY tx_index"
        )))
        .bind(number as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(tx_from_row)
        .collect()
    }

    async fn chain_transaction(&self, hash: B256) -> StoreResult<Option<StoredTransaction>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TX_COLUMNS} FROM chain_transactions WHERE hash = ?"
        )))
        .bind(hash.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(tx_from_row)
        .transpose()
    }

    async fn chain_logs(&self, f: &LogFilter) -> StoreResult<Vec<StoredLog>> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT block_number, log_index, tx_index, tx_hash, address, topic0, topic1, topic2, \
             topic3, data FROM chain_logs WHERE block_number >= ",
        );
        sql.push_bind(f.from_block.min(i64::MAX as u64) as i64)
            .push(" AND block_number <= ")
            .push_bind(f.to_block.min(i64::MAX as u64) as i64);
        if !f.addresses.is_empty() {
            sql.push(" AND address IN (");
            let mut list = sql.separated(", ");
            for a in &f.addresses {
                list.push_bind(a.to_vec());
            }
            sql.push(")");
        }
        for (i, wanted) in f.topics.iter().enumerate() {
            if let Some(values) = wanted {
                if values.is_empty() {
                    continue;
                }
                sql.push(match i {
                    0 => " AND topic0 IN (",
                    1 => " AND topic1 IN (",
                    2 => " AND topic2 IN (",
                    _ => " AND topic3 IN (",
                });
                let mut list = sql.separated(", ");
                for v in values {
                    list.push_bind(v.to_vec());
                }
                sql.push(")");
            }
        }
        sql.push(" ORDER BY block_number, log_index LIMIT ")
            .push_bind(i64::from(f.limit));
        sql.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let mut topics = Vec::new();
                for c in ["topic0", "topic1", "topic2", "topic3"] {
                    let t: Option<Vec<u8>> = get(row, c)?;
                    match t {
                        Some(t) => topics.push(bytes_to::<B256>(&t, c)?),
                        None => break,
                    }
                }
                Ok(StoredLog {
                    block_number: num(row, "block_number")?,
                    log_index: num(row, "log_index")? as u32,
                    tx_index: num(row, "tx_index")? as u32,
                    tx_hash: col(row, "tx_hash")?,
                    address: col(row, "address")?,
                    topics,
                    data: get(row, "data")?,
                })
            })
            .collect()
    }
}
