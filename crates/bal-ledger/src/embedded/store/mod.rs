//! Where the embedded chain keeps its blocks, transactions with their receipts, logs and world
//! state, in their Ethereum encodings: tables in the SCD's database (so one backup and one
//! `bal db copy` carry everything) that this crate owns: created by its own migrations
//! (`migrations/`, recorded in `_bal_ledger_migrations`), read and written only here, on a pool
//! of its own ([`bal_scd::open_pool`]). One body of queries for both backends (`sql`, over
//! `bal_scd::dialect`).

mod sql;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;

use std::sync::Arc;

use bal_scd::dialect::{Dialect, QueryExt};
use bal_scd::{ConnectOptions, Pool, StoreResult};
use sqlx::migrate::Migrator;

/// A block: its number, hash, timestamp and RLP-encoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlock {
    pub number: u64,
    pub hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
    pub header: Vec<u8>,
}

/// A mined transaction with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransaction {
    pub hash: B256,
    pub block_number: u64,
    pub tx_index: u32,
    pub sender: Address,
    /// The signed transaction, EIP-2718 encoded.
    pub raw: Vec<u8>,
    /// The receipt, EIP-2718 encoded.
    pub receipt: Vec<u8>,
    pub gas_used: u64,
    pub contract_address: Option<Address>,
}

/// One event log, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    pub block_number: u64,
    /// Position within the block.
    pub log_index: u32,
    pub tx_index: u32,
    pub tx_hash: B256,
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Vec<u8>,
}

/// An account's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainAccount {
    pub address: Address,
    pub nonce: u64,
    pub balance: U256,
    pub code: Option<Vec<u8>>,
}

/// One storage slot's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageSlot {
    pub address: Address,
    pub slot: U256,
    pub value: U256,
}

/// A block with everything it changed, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewChainBlock {
    pub block: StoredBlock,
    pub transactions: Vec<StoredTransaction>,
    pub logs: Vec<StoredLog>,
    /// Accounts as they are after the block (a `None` code keeps the stored code).
    pub accounts: Vec<ChainAccount>,
    /// Slots as they are after the block; a zero value removes the slot.
    pub storage: Vec<StorageSlot>,
}

/// Everything needed to resume the chain.
#[derive(Debug, Clone, Default)]
pub struct ChainState {
    pub head: Option<StoredBlock>,
    pub accounts: Vec<ChainAccount>,
    pub storage: Vec<StorageSlot>,
}

/// `eth_getLogs` filters: a range of blocks, addresses (any of), and per topic position a set
/// of values (any of; `None` matches everything).
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub from_block: u64,
    pub to_block: u64,
    pub addresses: Vec<Address>,
    pub topics: [Option<Vec<B256>>; 4],
    /// At most this many logs are returned.
    pub limit: u32,
}

#[derive(Debug, Clone, Copy)]
pub enum BlockKey {
    Number(u64),
    Hash(B256),
}

/// The embedded chain's tables.
#[async_trait]
pub trait ChainStore: Send + Sync {
    async fn chain_state(&self) -> StoreResult<ChainState>;
    /// Appends a block. `Conflict` unless it follows the stored head.
    async fn chain_append(&self, block: &NewChainBlock) -> StoreResult<()>;
    async fn chain_block(&self, key: BlockKey) -> StoreResult<Option<StoredBlock>>;
    /// A block's transactions, in order.
    async fn chain_block_transactions(&self, number: u64) -> StoreResult<Vec<StoredTransaction>>;
    async fn chain_transaction(&self, hash: B256) -> StoreResult<Option<StoredTransaction>>;
    /// Matching logs in chain order.
    async fn chain_logs(&self, filter: &LogFilter) -> StoreResult<Vec<StoredLog>>;
}

pub type SharedChainStore = Arc<dyn ChainStore>;

/// The chain's tables, parents before children: what `bal db copy` carries for this crate.
pub const TABLES: [&str; 5] = [
    "chain_blocks",
    "chain_transactions",
    "chain_logs",
    "chain_accounts",
    "chain_storage",
];

/// This crate's migrations, recorded apart from the SCD's (`_bal_ledger_migrations`).
fn migrator(mut migrator: Migrator) -> Migrator {
    migrator.dangerous_set_table_name("_bal_ledger_migrations");
    migrator
}

/// Applies the migrations `pool`'s database lacks. They only ever add tables and columns, so
/// this runs whatever the SCD's `database.auto_migrate` says (the embedded chain is for a
/// laptop and a demo); a database that has them all is only read, so a server role that may
/// not create tables (`deploy/postgres/grants.sql`) opens it once `bal db migrate` has run.
async fn migrate<DB: Dialect>(pool: &sqlx::Pool<DB>, migrator: &Migrator) -> StoreResult<()>
where
    DB::Connection: sqlx::migrate::Migrate,
{
    let applied: Option<i64> =
        sqlx::query::<DB>("SELECT MAX(version) FROM _bal_ledger_migrations WHERE success")
            .optional(pool)
            .await
            .ok()
            .flatten()
            .and_then(|row| bal_scd::dialect::first::<DB, Option<i64>>(&row).ok())
            .flatten();
    let latest = migrator.iter().map(|m| m.version).max();
    if applied < latest {
        migrator.run(pool).await?;
    }
    Ok(())
}

/// The chain's tables in the database at `url` (the SCD's), created or brought up to date
/// first.
pub async fn connect(url: &str) -> StoreResult<SharedChainStore> {
    // Few connections: the chain writes one block at a time (PostgreSQL; SQLite's pool has its
    // own fixed size, see `bal_scd::open_pool`).
    let options = ConnectOptions {
        max_connections: 4,
        ..ConnectOptions::default()
    };
    Ok(match bal_scd::open_pool(url, &options).await? {
        Pool::Sqlite(pool) => {
            migrate(&pool, &migrator(sqlx::migrate!("./migrations/sqlite"))).await?;
            Arc::new(sql::SqlChainStore { pool })
        }
        Pool::Postgres(pool) => {
            migrate(&pool, &migrator(sqlx::migrate!("./migrations/postgres"))).await?;
            Arc::new(sql::SqlChainStore { pool })
        }
    })
}
