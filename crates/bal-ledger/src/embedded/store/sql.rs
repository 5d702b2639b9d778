//! [`ChainStore`] on either backend (see `bal_scd::dialect`).

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use bal_scd::dialect::{BuilderExt, Dialect, QueryExt, get};
use bal_scd::{StoreError, StoreResult};
use sqlx::{Pool, QueryBuilder};

use super::{
    BlockKey, ChainAccount, ChainState, ChainStore, LogFilter, NewChainBlock, StorageSlot,
    StoredBlock, StoredLog, StoredTransaction,
};

pub(super) struct SqlChainStore<DB: Dialect> {
    pub(super) pool: Pool<DB>,
}

fn bytes_to<T: for<'a> TryFrom<&'a [u8]>>(raw: &[u8], what: &str) -> StoreResult<T> {
    T::try_from(raw).map_err(|_| StoreError::corrupt(what))
}

fn col<DB: Dialect, T: for<'a> TryFrom<&'a [u8]>>(row: &DB::Row, column: &str) -> StoreResult<T> {
    let raw: Vec<u8> = get::<DB, _>(row, column)?;
    bytes_to(&raw, column)
}

fn num<DB: Dialect>(row: &DB::Row, column: &str) -> StoreResult<u64> {
    let v: i64 = get::<DB, _>(row, column)?;
    u64::try_from(v).map_err(|_| StoreError::corrupt(column))
}

fn word(v: &U256) -> [u8; 32] {
    v.to_be_bytes::<32>()
}

fn block_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<StoredBlock> {
    Ok(StoredBlock {
        number: num::<DB>(row, "number")?,
        hash: col::<DB, _>(row, "hash")?,
        timestamp: num::<DB>(row, "timestamp")?,
        header: get::<DB, _>(row, "header")?,
    })
}

fn tx_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<StoredTransaction> {
    let contract: Option<Vec<u8>> = get::<DB, _>(row, "contract_address")?;
    Ok(StoredTransaction {
        hash: col::<DB, _>(row, "hash")?,
        block_number: num::<DB>(row, "block_number")?,
        tx_index: num::<DB>(row, "tx_index")? as u32,
        sender: col::<DB, _>(row, "sender")?,
        raw: get::<DB, _>(row, "raw")?,
        receipt: get::<DB, _>(row, "receipt")?,
        gas_used: num::<DB>(row, "gas_used")?,
        contract_address: contract
            .map(|c| bytes_to::<Address>(&c, "contract_address"))
            .transpose()?,
    })
}

/// A unique key taken by a concurrent append is the same conflict as a stale head.
fn append_conflict(e: StoreError, number: u64) -> StoreError {
    if e.is_unique_violation() {
        StoreError::Conflict(format!("block {number} was appended concurrently"))
    } else {
        e
    }
}

const TX_COLUMNS: &str =
    "hash, block_number, tx_index, sender, raw, receipt, gas_used, contract_address";

#[async_trait]
impl<DB: Dialect> ChainStore for SqlChainStore<DB> {
    async fn chain_state(&self) -> StoreResult<ChainState> {
        let head = sqlx::query::<DB>(
            "SELECT number, hash, timestamp, header FROM chain_blocks ORDER BY number DESC LIMIT 1",
        )
        .optional(&self.pool)
        .await?
        .as_ref()
        .map(block_from_row::<DB>)
        .transpose()?;
        let accounts =
            sqlx::query::<DB>("SELECT address, nonce, balance, code FROM chain_accounts")
                .all(&self.pool)
                .await?
                .iter()
                .map(|row| {
                    let balance: Vec<u8> = get::<DB, _>(row, "balance")?;
                    Ok(ChainAccount {
                        address: col::<DB, _>(row, "address")?,
                        nonce: num::<DB>(row, "nonce")?,
                        balance: U256::try_from_be_slice(&balance)
                            .ok_or_else(|| StoreError::corrupt("balance"))?,
                        code: get::<DB, _>(row, "code")?,
                    })
                })
                .collect::<StoreResult<_>>()?;
        let storage = sqlx::query::<DB>("SELECT address, slot, value FROM chain_storage")
            .all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let slot: B256 = col::<DB, _>(row, "slot")?;
                let value: B256 = col::<DB, _>(row, "value")?;
                Ok(StorageSlot {
                    address: col::<DB, _>(row, "address")?,
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
        // On SQLite, queue behind any other writer now, not at the first write.
        let mut tx = DB::begin_write(&self.pool).await?;
        let head: Option<i64> =
            match sqlx::query::<DB>("SELECT MAX(number) AS head FROM chain_blocks")
                .optional(&mut tx)
                .await?
            {
                Some(row) => get::<DB, _>(&row, "head")?,
                None => None,
            };
        let expected = head.map_or(0, |n| n as u64 + 1);
        if b.block.number != expected {
            return Err(StoreError::Conflict(format!(
                "block {} does not follow the stored head (expected {expected})",
                b.block.number
            )));
        }
        sqlx::query::<DB>(
            "INSERT INTO chain_blocks (number, hash, timestamp, header) VALUES ($1, $2, $3, $4)",
        )
        .arg(b.block.number as i64)
        .arg(b.block.hash.as_slice())
        .arg(b.block.timestamp as i64)
        .arg(&b.block.header[..])
        .run(&mut tx)
        .await
        .map_err(|e| append_conflict(e, b.block.number))?;
        for t in &b.transactions {
            sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO chain_transactions ({TX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            )))
            .arg(t.hash.as_slice())
            .arg(t.block_number as i64)
            .arg(i64::from(t.tx_index))
            .arg(t.sender.as_slice())
            .arg(&t.raw[..])
            .arg(&t.receipt[..])
            .arg(t.gas_used as i64)
            .arg(t.contract_address.as_ref().map(|a| a.to_vec()))
            .run(&mut tx)
            .await?;
        }
        for l in &b.logs {
            let topic = |i: usize| l.topics.get(i).map(|t| t.to_vec());
            sqlx::query::<DB>(
                "INSERT INTO chain_logs (block_number, log_index, tx_index, tx_hash, address, \
                 topic0, topic1, topic2, topic3, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .arg(l.block_number as i64)
            .arg(i64::from(l.log_index))
            .arg(i64::from(l.tx_index))
            .arg(l.tx_hash.as_slice())
            .arg(l.address.as_slice())
            .arg(topic(0))
            .arg(topic(1))
            .arg(topic(2))
            .arg(topic(3))
            .arg(&l.data[..])
            .run(&mut tx)
            .await?;
        }
        for a in &b.accounts {
            sqlx::query::<DB>(
                "INSERT INTO chain_accounts (address, nonce, balance, code) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (address) DO UPDATE SET nonce = excluded.nonce, \
                 balance = excluded.balance, \
                 code = COALESCE(excluded.code, chain_accounts.code)",
            )
            .arg(a.address.as_slice())
            .arg(a.nonce as i64)
            .arg(word(&a.balance).to_vec())
            .arg(a.code.as_deref())
            .run(&mut tx)
            .await?;
        }
        for s in &b.storage {
            if s.value.is_zero() {
                sqlx::query::<DB>("DELETE FROM chain_storage WHERE address = $1 AND slot = $2")
                    .arg(s.address.as_slice())
                    .arg(word(&s.slot).to_vec())
                    .run(&mut tx)
                    .await
            } else {
                sqlx::query::<DB>(
                    "INSERT INTO chain_storage (address, slot, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (address, slot) DO UPDATE SET value = excluded.value",
                )
                .arg(s.address.as_slice())
                .arg(word(&s.slot).to_vec())
                .arg(word(&s.value).to_vec())
                .run(&mut tx)
                .await
            }?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn chain_block(&self, key: BlockKey) -> StoreResult<Option<StoredBlock>> {
        let q = match key {
            BlockKey::Number(n) => sqlx::query::<DB>(
                "SELECT number, hash, timestamp, header FROM chain_blocks WHERE number = $1",
            )
            .arg(n as i64),
            BlockKey::Hash(h) => sqlx::query::<DB>(
                "SELECT number, hash, timestamp, header FROM chain_blocks WHERE hash = $1",
            )
            .arg(h.to_vec()),
        };
        q.optional(&self.pool)
            .await?
            .as_ref()
            .map(block_from_row::<DB>)
            .transpose()
    }

    async fn chain_block_transactions(&self, number: u64) -> StoreResult<Vec<StoredTransaction>> {
        sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
            "SELECT {TX_COLUMNS} FROM chain_transactions WHERE block_number = $1 ORDER BY tx_index"
        )))
        .arg(number as i64)
        .all(&self.pool)
        .await?
        .iter()
        .map(tx_from_row::<DB>)
        .collect()
    }

    async fn chain_transaction(&self, hash: B256) -> StoreResult<Option<StoredTransaction>> {
        sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
            "SELECT {TX_COLUMNS} FROM chain_transactions WHERE hash = $1"
        )))
        .arg(hash.to_vec())
        .optional(&self.pool)
        .await?
        .as_ref()
        .map(tx_from_row::<DB>)
        .transpose()
    }

    async fn chain_logs(&self, f: &LogFilter) -> StoreResult<Vec<StoredLog>> {
        let mut sql = QueryBuilder::<DB>::new(
            "SELECT block_number, log_index, tx_index, tx_hash, address, topic0, topic1, topic2, \
             topic3, data FROM chain_logs WHERE block_number >= ",
        );
        sql.push_arg(f.from_block.min(i64::MAX as u64) as i64)
            .push(" AND block_number <= ")
            .push_arg(f.to_block.min(i64::MAX as u64) as i64);
        if !f.addresses.is_empty() {
            sql.push(" AND address IN ");
            sql.push_list(f.addresses.iter().map(|a| a.to_vec()));
        }
        for (i, wanted) in f.topics.iter().enumerate() {
            if let Some(values) = wanted {
                if values.is_empty() {
                    continue;
                }
                sql.push(match i {
                    0 => " AND topic0 IN ",
                    1 => " AND topic1 IN ",
                    2 => " AND topic2 IN ",
                    _ => " AND topic3 IN ",
                });
                sql.push_list(values.iter().map(|v| v.to_vec()));
            }
        }
        sql.push(" ORDER BY block_number, log_index LIMIT ")
            .push_arg(i64::from(f.limit));
        sql.build()
            .all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let mut topics = Vec::new();
                for c in ["topic0", "topic1", "topic2", "topic3"] {
                    let t: Option<Vec<u8>> = get::<DB, _>(row, c)?;
                    match t {
                        Some(t) => topics.push(bytes_to::<B256>(&t, c)?),
                        None => break,
                    }
                }
                Ok(StoredLog {
                    block_number: num::<DB>(row, "block_number")?,
                    log_index: num::<DB>(row, "log_index")? as u32,
                    tx_index: num::<DB>(row, "tx_index")? as u32,
                    tx_hash: col::<DB, _>(row, "tx_hash")?,
                    address: col::<DB, _>(row, "address")?,
                    topics,
                    data: get::<DB, _>(row, "data")?,
                })
            })
            .collect()
    }
}
