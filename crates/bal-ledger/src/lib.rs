//! Certification on an Ethereum chain: the `Certification` contract's artifact and bindings,
//! the [`Ledger`] trait with its two backends, and the batching [`Certifier`].
//!
//! - [`contract`]: the committed ABI and bytecode of `contracts/Certification.sol`.
//! - [`embedded`]: a chain inside the BAL — revm runs the real bytecode, blocks are mined one
//!   per transaction and filed in the SCD, and [`embedded::rpc`] answers Ethereum JSON-RPC.
//! - [`node`]: any Ethereum node over JSON-RPC (anvil, Besu, Geth...), through alloy.
//! - [`certifier`]: takes what is stored but not certified, one Merkle tree per batch, one
//!   anchor transaction per tree, and resumes pending batches after a crash or an outage.
//! - [`proofs`]: `bal-proof/1` bundles for certified items and their on-chain check.
//! - [`operator`]: the key that signs anchors.
#![forbid(unsafe_code)]

pub mod certifier;
pub mod contract;
pub mod embedded;
pub mod node;
pub mod operator;
pub mod proofs;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes};
use alloy_sol_types::SolCall;
use async_trait::async_trait;

/// Where a root was anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub tx_hash: B256,
    pub block_number: u64,
    /// The block's timestamp, Unix seconds.
    pub block_time: u64,
    pub gas_used: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The chain could not be reached or did not answer in time: try again later.
    #[error("chain unavailable: {0}")]
    Unavailable(String),
    /// The root is on chain already, since this block.
    #[error("root already anchored in block {0}")]
    AlreadyAnchored(u64),
    /// The contract refused the transaction (with its decoded reason).
    #[error("transaction reverted: {0}")]
    Reverted(String),
    /// The chain or the contract is not what the settings promise.
    #[error("{0}")]
    Config(String),
}

pub type LedgerResult<T> = Result<T, LedgerError>;

/// A chain holding the certification contract, as the certifier and the API use it.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    fn chain_id(&self) -> u64;
    /// The certification contract.
    fn contract(&self) -> Address;
    /// The account that signs anchors.
    fn operator(&self) -> Address;
    /// `embedded` or the node's URL (without credentials), for logs and health.
    fn describe(&self) -> String;
    /// Sends `anchor(root, leafCount, batchId)` in one transaction and waits for its receipt.
    async fn anchor(&self, root: B256, leaf_count: u32, batch_id: B256) -> LedgerResult<Anchor>;
    /// Calls the contract without a transaction (`eth_call`): ABI-encoded call in, return
    /// data out.
    async fn call_contract(&self, input: Bytes) -> LedgerResult<Bytes>;
    /// The `Anchored` event of `root` in `block`, with its transaction.
    async fn anchor_in_block(&self, root: B256, block: u64) -> LedgerResult<Option<Anchor>>;
    /// The latest block number.
    async fn head(&self) -> LedgerResult<u64>;

    /// The contract's `anchoredAt(root)`: the block number, 0 if never.
    async fn anchored_at(&self, root: B256) -> LedgerResult<u64> {
        view(self, contract::anchoredAtCall { root }).await
    }

    /// The contract's `verify(root, proof, leaf)`: anchored and the proof holds.
    async fn verify(&self, root: B256, proof: &[B256], leaf: B256) -> LedgerResult<bool> {
        let call = contract::verifyCall {
            root,
            proof: proof.to_vec(),
            leaf,
        };
        view(self, call).await
    }

    /// Where `root` was anchored, if it was: how a resumed batch recognises its own anchor.
    async fn find_anchor(&self, root: B256) -> LedgerResult<Option<Anchor>> {
        match self.anchored_at(root).await? {
            0 => Ok(None),
            block => match self.anchor_in_block(root, block).await? {
                Some(a) => Ok(Some(a)),
                None => Err(LedgerError::Unavailable(format!(
                    "root {root} is anchored in block {block} but its event was not found"
                ))),
            },
        }
    }
}

pub type SharedLedger = Arc<dyn Ledger>;

/// A view function of the contract, called on `ledger`.
async fn view<L: Ledger + ?Sized, C: SolCall>(ledger: &L, call: C) -> LedgerResult<C::Return> {
    let out = ledger.call_contract(call.abi_encode().into()).await?;
    C::abi_decode_returns(&out).map_err(|e| LedgerError::Unavailable(e.to_string()))
}

pub use certifier::{Certifier, CertifierConfig};
pub use embedded::EmbeddedChain;
pub use node::NodeChain;
