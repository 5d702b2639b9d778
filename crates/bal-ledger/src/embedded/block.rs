//! Blocks of the embedded chain in Ethereum's own encodings: a real header (RLP, hashed with
//! keccak256), EIP-2718 transactions and receipts, and the tries that commit to them. The state
//! root is left zero: computing it would mean a Merkle-Patricia trie over every anchored root at
//! every block, and nothing that checks a BAL proof reads it.

use super::store::{StoredBlock, StoredLog, StoredTransaction};
use alloy_consensus::proofs::{calculate_receipt_root, calculate_transaction_root};
use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH, Eip658Value, Header, Receipt, ReceiptEnvelope,
    TxEnvelope,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{Address, B256, Bytes, Log, U256};
use revm::context::BlockEnv;

use super::evm::BLOCK_GAS_LIMIT;

/// The chain's tip, as the next block builds on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub number: u64,
    pub hash: B256,
    pub timestamp: u64,
}

impl From<&StoredBlock> for Tip {
    fn from(b: &StoredBlock) -> Self {
        Self {
            number: b.number,
            hash: b.hash,
            timestamp: b.timestamp,
        }
    }
}

/// The execution environment of the block after `tip`, sealed at `now` (Unix seconds). Blocks
/// are sealed on demand, one per transaction, so several may share a second: timestamps never
/// go backwards but may repeat, as on anvil.
pub fn next_env(tip: Option<&Tip>, now: u64) -> BlockEnv {
    BlockEnv {
        number: U256::from(tip.map_or(0, |t| t.number + 1)),
        timestamp: U256::from(tip.map_or(now, |t| now.max(t.timestamp))),
        gas_limit: BLOCK_GAS_LIMIT,
        basefee: 0,
        ..BlockEnv::default()
    }
}

/// One included transaction and what it did.
pub struct Included {
    pub tx: TxEnvelope,
    pub sender: Address,
    pub success: bool,
    pub gas_used: u64,
    pub logs: Vec<Log>,
    pub created: Option<Address>,
}

/// Seals a block holding `included` on top of `tip`, as the SCD files it.
pub fn seal(
    tip: Option<&Tip>,
    env: &BlockEnv,
    included: &[Included],
) -> (StoredBlock, Vec<StoredTransaction>, Vec<StoredLog>) {
    let number: u64 = env.number.saturating_to();
    let timestamp: u64 = env.timestamp.saturating_to();
    let mut cumulative = 0;
    let mut receipts = Vec::with_capacity(included.len());
    for inc in included {
        cumulative += inc.gas_used;
        let receipt = Receipt {
            status: Eip658Value::Eip658(inc.success),
            cumulative_gas_used: cumulative,
            logs: inc.logs.clone(),
        }
        .with_bloom();
        receipts.push(match inc.tx {
            TxEnvelope::Legacy(_) => ReceiptEnvelope::Legacy(receipt),
            TxEnvelope::Eip2930(_) => ReceiptEnvelope::Eip2930(receipt),
            TxEnvelope::Eip4844(_) => ReceiptEnvelope::Eip4844(receipt),
            TxEnvelope::Eip7702(_) => ReceiptEnvelope::Eip7702(receipt),
            TxEnvelope::Eip1559(_) => ReceiptEnvelope::Eip1559(receipt),
        });
    }
    let txs: Vec<&TxEnvelope> = included.iter().map(|i| &i.tx).collect();
    let mut bloom = alloy_primitives::Bloom::default();
    for r in &receipts {
        bloom.accrue_bloom(r.logs_bloom());
    }
    let header = Header {
        parent_hash: tip.map_or(B256::ZERO, |t| t.hash),
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: env.beneficiary,
        state_root: B256::ZERO,
        transactions_root: calculate_transaction_root(&txs),
        receipts_root: calculate_receipt_root(&receipts),
        logs_bloom: bloom,
        difficulty: U256::ZERO,
        number,
        gas_limit: env.gas_limit,
        gas_used: cumulative,
        timestamp,
        extra_data: Bytes::from_static(b"bal embedded chain"),
        mix_hash: B256::ZERO,
        nonce: Default::default(),
        base_fee_per_gas: Some(env.basefee),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        ..Header::default()
    };
    let hash = header.hash_slow();
    let block = StoredBlock {
        number,
        hash,
        timestamp,
        header: alloy_rlp::encode(&header),
    };
    let mut stored = Vec::with_capacity(included.len());
    let mut logs = Vec::new();
    let mut log_index = 0u32;
    for (i, (inc, receipt)) in included.iter().zip(&receipts).enumerate() {
        let tx_hash = *inc.tx.tx_hash();
        stored.push(StoredTransaction {
            hash: tx_hash,
            block_number: number,
            tx_index: i as u32,
            sender: inc.sender,
            raw: inc.tx.encoded_2718(),
            receipt: receipt.encoded_2718(),
            gas_used: inc.gas_used,
            contract_address: inc.created,
        });
        for log in &inc.logs {
            logs.push(StoredLog {
                block_number: number,
                log_index,
                tx_index: i as u32,
                tx_hash,
                address: log.address,
                topics: log.topics().to_vec(),
                data: log.data.data.to_vec(),
            });
            log_index += 1;
        }
    }
    (block, stored, logs)
}
