//! Execution: revm over an in-memory copy of the world state, which the SCD holds durably.
//! Nothing here commits on its own: [`World::execute`] returns the changes, and the chain
//! applies them only after the block that carries them is filed in the SCD.

use super::store::{ChainAccount, StorageSlot};
use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_primitives::{Address, Bytes, Log, TxKind, U256, keccak256};
use revm::bytecode::Bytecode;
use revm::context::result::{ExecutionResult, Output};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::state::{AccountInfo, EvmState};
use revm::{Context, DatabaseCommit, ExecuteEvm, MainBuilder, MainContext};

/// The hard fork the embedded chain follows.
pub const SPEC: SpecId = SpecId::PRAGUE;

/// Gas limit of each block.
pub const BLOCK_GAS_LIMIT: u64 = 30_000_000;

/// Gas limit of an `eth_call`: far above what `verify` of the deepest proof needs (about
/// 60 000), far below what would let an anonymous `/rpc` caller keep a core busy.
pub const CALL_GAS_LIMIT: u64 = 2_000_000;

/// What a transaction did.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub gas_used: u64,
    pub logs: Vec<Log>,
    /// Return data, or revert data.
    pub output: Bytes,
    pub created: Option<Address>,
    /// The state after the transaction, for the accounts it touched.
    pub changes: EvmState,
}

/// The world state.
pub struct World {
    db: CacheDB<EmptyDB>,
    chain_id: u64,
}

impl World {
    pub fn new(chain_id: u64) -> Self {
        Self {
            db: CacheDB::new(EmptyDB::default()),
            chain_id,
        }
    }

    /// Loads the state the SCD kept.
    pub fn restore(&mut self, accounts: &[ChainAccount], storage: &[StorageSlot]) {
        for a in accounts {
            let code = a.code.clone().map(|c| Bytecode::new_raw(c.into()));
            let code_hash = code.as_ref().map_or(revm::primitives::KECCAK_EMPTY, |c| {
                keccak256(c.original_byte_slice())
            });
            let mut info = AccountInfo::default()
                .with_balance(a.balance)
                .with_nonce(a.nonce);
            if let Some(code) = code {
                info = info.with_code_and_hash(code, code_hash);
            }
            self.db.insert_account_info(a.address, info);
        }
        for s in storage {
            self.db
                .insert_account_storage(s.address, s.slot, s.value)
                .expect("an in-memory database cannot fail");
        }
    }

    fn cfg(&self, for_call: bool) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(SPEC);
        cfg.chain_id = self.chain_id;
        // A read-only call may come from anyone, with any nonce.
        cfg.disable_nonce_check = for_call;
        cfg
    }

    /// Runs a signed transaction in `block`, without committing it. `Err` when the transaction
    /// is invalid (wrong chain, nonce or signature): it cannot be included at all.
    pub fn execute(&mut self, block: &BlockEnv, tx: &TxEnvelope) -> Result<Outcome, String> {
        let caller = tx
            .recover_signer()
            .map_err(|e| format!("bad signature: {e}"))?;
        let env = TxEnv {
            tx_type: tx.tx_type() as u8,
            caller,
            gas_limit: tx.gas_limit(),
            gas_price: tx.max_fee_per_gas(),
            gas_priority_fee: tx.max_priority_fee_per_gas(),
            kind: tx.kind(),
            value: tx.value(),
            data: tx.input().clone(),
            nonce: tx.nonce(),
            chain_id: tx.chain_id(),
            access_list: tx.access_list().cloned().unwrap_or_default(),
            ..TxEnv::default()
        };
        let cfg = self.cfg(false);
        run(&mut self.db, cfg, block, env)
    }

    /// An `eth_call`: runs `data` against `to` on a scratch layer over the state, thrown away
    /// after, so that calls neither change the state nor grow its cache.
    pub fn call(
        &self,
        block: &BlockEnv,
        from: Address,
        to: Address,
        data: Bytes,
    ) -> Result<Outcome, String> {
        let env = TxEnv {
            caller: from,
            gas_limit: CALL_GAS_LIMIT,
            gas_price: 0,
            kind: TxKind::Call(to),
            data,
            chain_id: Some(self.chain_id),
            ..TxEnv::default()
        };
        run(CacheDB::new(&self.db), self.cfg(true), block, env)
    }

    /// Applies the changes of an executed transaction.
    pub fn commit(&mut self, changes: EvmState) {
        self.db.commit(changes);
    }

    /// An account's code (the cache files code by its hash, not in the account).
    pub fn code(&self, address: Address) -> Bytes {
        self.db
            .cache
            .accounts
            .get(&address)
            .and_then(|a| self.db.cache.contracts.get(&a.info.code_hash))
            .map(|c| c.original_bytes())
            .unwrap_or_default()
    }

    pub fn nonce(&self, address: Address) -> u64 {
        self.db
            .cache
            .accounts
            .get(&address)
            .map_or(0, |a| a.info.nonce)
    }

    pub fn balance(&self, address: Address) -> U256 {
        self.db
            .cache
            .accounts
            .get(&address)
            .map_or(U256::ZERO, |a| a.info.balance)
    }
}

/// The rows the SCD keeps for the accounts and slots `changes` touched.
pub fn changed_rows(changes: &EvmState) -> (Vec<ChainAccount>, Vec<StorageSlot>) {
    let mut accounts = Vec::new();
    let mut storage = Vec::new();
    for (address, account) in changes {
        if !account.is_touched() {
            continue;
        }
        accounts.push(ChainAccount {
            address: *address,
            nonce: account.info.nonce,
            balance: account.info.balance,
            code: account
                .info
                .code
                .as_ref()
                .map(|c| c.original_bytes().to_vec())
                .filter(|c| !c.is_empty()),
        });
        for (slot, value) in account.changed_storage_slots() {
            storage.push(StorageSlot {
                address: *address,
                slot: *slot,
                value: value.present_value,
            });
        }
    }
    (accounts, storage)
}

/// Runs one transaction on `db` without committing it.
fn run<DB: revm::Database>(
    db: DB,
    cfg: CfgEnv,
    block: &BlockEnv,
    env: TxEnv,
) -> Result<Outcome, String>
where
    DB::Error: std::fmt::Display,
{
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(cfg)
        .with_block(block.clone())
        .build_mainnet();
    let done = evm.transact(env).map_err(|e| e.to_string())?;
    let gas_used = done.result.tx_gas_used();
    let (success, logs, output, created) = match done.result {
        ExecutionResult::Success { logs, output, .. } => match output {
            Output::Call(b) => (true, logs, b, None),
            Output::Create(b, a) => (true, logs, b, a),
        },
        ExecutionResult::Revert { output, .. } => (false, Vec::new(), output, None),
        ExecutionResult::Halt { reason, .. } => (
            false,
            Vec::new(),
            Bytes::from(format!("{reason:?}").into_bytes()),
            None,
        ),
    };
    Ok(Outcome {
        success,
        gas_used,
        logs,
        output,
        created,
        changes: done.state,
    })
}
