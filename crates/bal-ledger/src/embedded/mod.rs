//! The embedded chain: an Ethereum chain inside the BAL for laptops, demos and single-node
//! deployments. revm runs the contract's real bytecode; every transaction is a real EIP-1559
//! transaction signed by the operator key, sealed at once in a block of its own (like anvil's
//! automine), and the block, its transaction, receipt, logs and the state it changed are filed
//! in the SCD in one database transaction before anyone is told about it. So hashes, receipts
//! and `anchoredAt` survive restarts, and [`rpc`] can serve them to standard Ethereum tools.
//!
//! Gas is free (base fee 0, gas price 0), as on most permissioned networks: the operator needs
//! no funds, and gas used is still measured and reported.

mod block;
mod evm;
pub mod rpc;
pub mod store;

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use bal_scd::CertificationStore;
use tokio::sync::Mutex;

pub use block::Tip;
use block::{Included, next_env, seal};
use evm::World;
use store::{BlockKey, LogFilter, NewChainBlock, SharedChainStore};

use crate::contract::{self, Anchored, anchorCall};
use crate::{Anchor, Ledger, LedgerError, LedgerResult};

/// The default chain id of the embedded chain: "BAL" in ASCII.
pub const DEFAULT_CHAIN_ID: u64 = 0x42_41_4c;

/// Gas limits of the operator's own transactions (gas is free; these only bound execution).
const DEPLOY_GAS: u64 = 3_000_000;
const ANCHOR_GAS: u64 = 200_000;

pub struct EmbeddedChain {
    /// Blocks, transactions, logs and state.
    blocks: SharedChainStore,
    signer: PrivateKeySigner,
    chain_id: u64,
    contract: Address,
    /// The world state and the tip. One writer at a time: a block is executed, filed and only
    /// then applied.
    inner: Mutex<Inner>,
    /// Held from signing to mining, so the operator's nonces are used in order.
    order: Mutex<()>,
}

struct Inner {
    world: World,
    tip: Option<Tip>,
}

/// A transaction as mined: its hash and block, and the outcome.
#[derive(Debug, Clone)]
pub struct Mined {
    pub tx_hash: B256,
    pub block_number: u64,
    pub block_time: u64,
    pub success: bool,
    pub gas_used: u64,
    pub output: Bytes,
    pub created: Option<Address>,
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl EmbeddedChain {
    /// Opens the chain kept in the database at `database_url` (the SCD's), or starts one
    /// (genesis, then the contract's deployment by the operator). The contract is remembered
    /// per chain id in `contracts`.
    pub async fn open(
        contracts: &dyn CertificationStore,
        database_url: &str,
        signer: PrivateKeySigner,
        chain_id: u64,
    ) -> anyhow::Result<Self> {
        let blocks = store::connect(database_url).await?;
        let state = blocks.chain_state().await?;
        let mut world = World::new(chain_id);
        world.restore(&state.accounts, &state.storage);
        let tip = state.head.as_ref().map(Tip::from);
        let mut chain = Self {
            blocks,
            signer,
            chain_id,
            contract: Address::ZERO,
            inner: Mutex::new(Inner { world, tip }),
            order: Mutex::new(()),
        };
        if tip.is_none() {
            chain.mine(None).await?;
        }
        chain.contract = match contracts.chain_contract(chain_id).await? {
            Some(address) => address,
            None => {
                let mined = chain
                    .send(
                        TxKind::Create,
                        contract::creation_bytecode().clone(),
                        DEPLOY_GAS,
                    )
                    .await?;
                let address = mined.created.filter(|_| mined.success).ok_or_else(|| {
                    anyhow::anyhow!("deploying the certification contract failed")
                })?;
                contracts.remember_chain_contract(chain_id, address).await?;
                tracing::info!(%address, block = mined.block_number, "certification contract deployed on the embedded chain");
                address
            }
        };
        if chain
            .inner
            .lock()
            .await
            .world
            .code(chain.contract)
            .is_empty()
        {
            anyhow::bail!(
                "the embedded chain has no contract at {}: its data in the database is incomplete",
                chain.contract
            );
        }
        Ok(chain)
    }

    /// Signs a transaction from the operator with its next nonce.
    async fn sign(&self, to: TxKind, input: Bytes, gas_limit: u64) -> LedgerResult<TxEnvelope> {
        let nonce = self.inner.lock().await.world.nonce(self.signer.address());
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: 0,
            max_priority_fee_per_gas: 0,
            to,
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        let signature = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| LedgerError::Config(format!("cannot sign: {e}")))?;
        Ok(TxEnvelope::Eip1559(tx.into_signed(signature)))
    }

    async fn send(&self, to: TxKind, input: Bytes, gas_limit: u64) -> LedgerResult<Mined> {
        // Signing and mining under one lock keeps nonces in order when anchors race.
        let _order = self.order.lock().await;
        let tx = self.sign(to, input, gas_limit).await?;
        self.submit(tx).await
    }

    /// Mines a block holding `tx` (any valid signed transaction, e.g. another account's in the
    /// tests), files it, and returns what it did.
    pub async fn submit(&self, tx: TxEnvelope) -> LedgerResult<Mined> {
        Ok(self
            .mine(Some(tx))
            .await?
            .expect("a block with a transaction"))
    }

    /// Seals a block with at most one transaction (blocks are sealed on demand) and files it;
    /// only once the SCD holds the block is its state applied in memory, so a failure leaves
    /// memory exactly as the SCD is.
    async fn mine(&self, tx: Option<TxEnvelope>) -> LedgerResult<Option<Mined>> {
        let mut inner = self.inner.lock().await;
        let env = next_env(inner.tip.as_ref(), now_secs());
        let executed = match tx {
            None => None,
            Some(tx) => {
                let sender = tx
                    .recover_signer()
                    .map_err(|e| LedgerError::Reverted(format!("invalid transaction: {e}")))?;
                let out = inner
                    .world
                    .execute(&env, &tx)
                    .map_err(|e| LedgerError::Reverted(format!("invalid transaction: {e}")))?;
                Some((tx, sender, out))
            }
        };
        let included: Vec<Included> = executed
            .iter()
            .map(|(tx, sender, out)| Included {
                tx: tx.clone(),
                sender: *sender,
                success: out.success,
                gas_used: out.gas_used,
                logs: out.logs.clone(),
                created: out.created,
            })
            .collect();
        let (block, transactions, logs) = seal(inner.tip.as_ref(), &env, &included);
        let (accounts, storage) = executed
            .as_ref()
            .map(|(_, _, out)| evm::changed_rows(&out.changes))
            .unwrap_or_default();
        self.blocks
            .chain_append(&NewChainBlock {
                block: block.clone(),
                transactions: transactions.clone(),
                logs,
                accounts,
                storage,
            })
            .await
            .map_err(unavailable)?;
        inner.tip = Some(Tip::from(&block));
        Ok(executed.map(|(_, _, out)| {
            let t = &transactions[0];
            let mined = Mined {
                tx_hash: t.hash,
                block_number: block.number,
                block_time: block.timestamp,
                success: out.success,
                gas_used: out.gas_used,
                output: out.output,
                created: out.created,
            };
            inner.world.commit(out.changes);
            mined
        }))
    }

    /// An `eth_call` against the latest state.
    pub async fn call(&self, from: Address, to: Address, data: Bytes) -> LedgerResult<Bytes> {
        let inner = self.inner.lock().await;
        let env = next_env(inner.tip.as_ref(), now_secs());
        let out = inner
            .world
            .call(&env, from, to, data)
            .map_err(LedgerError::Reverted)?;
        if out.success {
            Ok(out.output)
        } else {
            Err(LedgerError::Reverted(contract::revert_reason(&out.output)))
        }
    }

    /// The chain id (also [`Ledger::chain_id`]).
    pub fn chain_id_value(&self) -> u64 {
        self.chain_id
    }

    /// The blocks, transactions, logs and state, as filed.
    pub fn blocks(&self) -> &SharedChainStore {
        &self.blocks
    }

    /// The latest block's number.
    pub async fn tip(&self) -> Option<Tip> {
        self.inner.lock().await.tip
    }

    pub async fn code(&self, address: Address) -> Bytes {
        self.inner.lock().await.world.code(address)
    }

    pub async fn nonce(&self, address: Address) -> u64 {
        self.inner.lock().await.world.nonce(address)
    }

    pub async fn balance(&self, address: Address) -> U256 {
        self.inner.lock().await.world.balance(address)
    }
}

#[async_trait]
impl Ledger for EmbeddedChain {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn contract(&self) -> Address {
        self.contract
    }

    fn operator(&self) -> Address {
        self.signer.address()
    }

    fn describe(&self) -> String {
        "embedded".to_owned()
    }

    async fn anchor(&self, root: B256, leaf_count: u32, batch_id: B256) -> LedgerResult<Anchor> {
        let input = anchorCall {
            root,
            leafCount: leaf_count,
            batchId: batch_id,
        }
        .abi_encode();
        let mined = self
            .send(TxKind::Call(self.contract), input.into(), ANCHOR_GAS)
            .await?;
        if !mined.success {
            return Err(match contract::already_anchored(&mined.output) {
                Some(block) => LedgerError::AlreadyAnchored(block),
                None => LedgerError::Reverted(contract::revert_reason(&mined.output)),
            });
        }
        Ok(Anchor {
            tx_hash: mined.tx_hash,
            block_number: mined.block_number,
            block_time: mined.block_time,
            gas_used: mined.gas_used,
        })
    }

    async fn call_contract(&self, input: Bytes) -> LedgerResult<Bytes> {
        self.call(Address::ZERO, self.contract, input).await
    }

    async fn anchor_in_block(&self, root: B256, block: u64) -> LedgerResult<Option<Anchor>> {
        let logs = self
            .blocks
            .chain_logs(&LogFilter {
                from_block: block,
                to_block: block,
                addresses: vec![self.contract],
                topics: [
                    Some(vec![Anchored::SIGNATURE_HASH]),
                    Some(vec![root]),
                    None,
                    None,
                ],
                limit: 1,
            })
            .await
            .map_err(unavailable)?;
        let Some(log) = logs.first() else {
            return Ok(None);
        };
        let tx = self
            .blocks
            .chain_transaction(log.tx_hash)
            .await
            .map_err(unavailable)?;
        let header = self
            .blocks
            .chain_block(BlockKey::Number(block))
            .await
            .map_err(unavailable)?;
        match (tx, header) {
            (Some(tx), Some(header)) => Ok(Some(Anchor {
                tx_hash: tx.hash,
                block_number: block,
                block_time: header.timestamp,
                gas_used: tx.gas_used,
            })),
            _ => Ok(None),
        }
    }

    async fn head(&self) -> LedgerResult<u64> {
        Ok(self.inner.lock().await.tip.map_or(0, |t| t.number))
    }
}
