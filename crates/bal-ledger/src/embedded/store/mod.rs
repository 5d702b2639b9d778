//! Where the embedded chain keeps its blocks, transactions with their receipts, logs and world
//! state, in their Ethereum encodings: tables in the SCD's database (so one backup and one
//! `bal db copy` carry everything), created by the SCD's migrations, read and written only
//! here. One body of queries for both backends (`sql`, over `bal_scd::dialect`), on the pool
//! the SCD opened ([`bal_scd::Pool`]).

mod sql;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;

use bal_scd::StoreResult;

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

pub type SharedChainStore = std::sync::Arc<dyn ChainStore>;

/// The chain's tables in the database `pool` belongs to.
pub fn open(pool: bal_scd::Pool) -> SharedChainStore {
    match pool {
        bal_scd::Pool::Sqlite(pool) => std::sync::Arc::new(sql::SqlChainStore { pool }),
        bal_scd::Pool::Postgres(pool) => std::sync::Arc::new(sql::SqlChainStore { pool }),
    }
}
