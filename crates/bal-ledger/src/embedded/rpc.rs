//! The embedded chain's Ethereum JSON-RPC (served at `POST /rpc`): the read methods standard
//! tools need to find a transaction, its receipt and logs, and to call the contract — so a
//! proof can be checked against the embedded chain exactly as against any node. Nothing here
//! changes the chain: transactions are only ever sent by the BAL's own certifier.

use super::store::{BlockKey, LogFilter, StoredBlock, StoredLog, StoredTransaction};
use alloy_consensus::transaction::Recovered;
use alloy_consensus::{Header as ConsensusHeader, ReceiptEnvelope, Transaction as _, TxEnvelope};
use alloy_eips::BlockNumberOrTag;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, LogData, U64};
use alloy_rlp::Decodable;
use alloy_rpc_types_eth::{
    Block, BlockTransactions, Filter, FilterBlockOption, Header, Log, Transaction,
    TransactionReceipt,
};
use bal_rpc::{Body, Method, Request, RpcError, reply};
use serde_json::Value;

use super::EmbeddedChain;
use crate::LedgerError;

/// The most logs one `eth_getLogs` returns, as nodes cap it too.
pub const MAX_LOGS: u32 = 10_000;

/// The widest block range of an `eth_getLogs` that does not name a root (topic 1, which is
/// indexed): a scan of every block of a long-lived chain would keep the database busy.
pub const MAX_LOG_RANGE: u64 = 100_000;

fn internal(e: impl std::fmt::Display) -> RpcError {
    tracing::error!(error = %e, "embedded chain RPC failed");
    RpcError::new(-32603, "internal error")
}

type RpcResult = Result<Value, RpcError>;

/// Answers a JSON-RPC request body (one call or a batch). `None` when there is nothing to
/// send back (only notifications). The body is parsed and checked by `bal-rpc`; this part
/// only asks the chain.
pub async fn handle(chain: &EmbeddedChain, body: &[u8]) -> Option<Value> {
    match bal_rpc::parse(body) {
        Body::Refused(e) => Some(reply(Value::Null, Err(e))),
        Body::One(request) => answer(chain, request).await,
        Body::Batch(requests) => {
            let mut out = Vec::with_capacity(requests.len());
            for request in requests {
                out.extend(answer(chain, request).await);
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

async fn answer(chain: &EmbeddedChain, request: Request) -> Option<Value> {
    let result = match request.method {
        Ok(method) => dispatch(chain, method).await,
        Err(e) => Err(e),
    };
    // A call without an id is a notification: no answer.
    request.id.map(|id| reply(id, result))
}

fn to_json(v: impl serde::Serialize) -> RpcResult {
    serde_json::to_value(v).map_err(internal)
}

async fn tip(chain: &EmbeddedChain) -> u64 {
    chain.tip().await.map_or(0, |t| t.number)
}

/// A block tag or number as a number; `pending` is the tip too (blocks are sealed at once).
async fn block_number(chain: &EmbeddedChain, tag: BlockNumberOrTag) -> u64 {
    match tag {
        BlockNumberOrTag::Number(n) => n,
        BlockNumberOrTag::Earliest => 0,
        _ => tip(chain).await,
    }
}

/// State is kept for the latest block only.
async fn latest_only(
    chain: &EmbeddedChain,
    block: Option<BlockNumberOrTag>,
) -> Result<(), RpcError> {
    let Some(tag) = block else {
        return Ok(());
    };
    if block_number(chain, tag).await == tip(chain).await {
        Ok(())
    } else {
        Err(RpcError::new(
            -32000,
            "the embedded chain keeps the state of the latest block only",
        ))
    }
}

async fn dispatch(chain: &EmbeddedChain, method: Method) -> RpcResult {
    let blocks = chain.blocks();
    match method {
        Method::ClientVersion => to_json(concat!("bal/", env!("CARGO_PKG_VERSION"), "/embedded")),
        Method::NetVersion => to_json(chain.chain_id_value().to_string()),
        Method::NetListening => to_json(true),
        Method::ChainId => to_json(U64::from(chain.chain_id_value())),
        Method::Syncing | Method::Mining => to_json(false),
        Method::GasPrice | Method::MaxPriorityFeePerGas => to_json(U64::ZERO),
        Method::Accounts => to_json(Vec::<Address>::new()),
        Method::BlockNumber => to_json(U64::from(tip(chain).await)),
        Method::BlockByNumber { block, full } => {
            let n = block_number(chain, block).await;
            let b = blocks
                .chain_block(BlockKey::Number(n))
                .await
                .map_err(internal)?;
            block_json(chain, b, full).await
        }
        Method::BlockByHash { hash, full } => {
            let b = blocks
                .chain_block(BlockKey::Hash(hash))
                .await
                .map_err(internal)?;
            block_json(chain, b, full).await
        }
        Method::TransactionByHash(hash) => {
            match blocks.chain_transaction(hash).await.map_err(internal)? {
                None => Ok(Value::Null),
                Some(t) => {
                    let block = stored_block(chain, t.block_number).await?;
                    to_json(transaction(&t, &block)?)
                }
            }
        }
        Method::TransactionReceipt(hash) => {
            match blocks.chain_transaction(hash).await.map_err(internal)? {
                None => Ok(Value::Null),
                Some(t) => {
                    let block = stored_block(chain, t.block_number).await?;
                    to_json(receipt(&t, &block)?)
                }
            }
        }
        Method::Logs(filter) => get_logs(chain, &filter).await,
        Method::Call(call) => {
            latest_only(chain, call.block).await?;
            match chain.call(call.from, call.to, call.input).await {
                Ok(out) => to_json(out),
                Err(LedgerError::Reverted(reason)) => {
                    Err(RpcError::new(3, format!("execution reverted: {reason}")))
                }
                Err(e) => Err(internal(e)),
            }
        }
        Method::Code(at) => {
            latest_only(chain, at.block).await?;
            to_json(chain.code(at.address).await)
        }
        Method::TransactionCount(at) => {
            latest_only(chain, at.block).await?;
            to_json(U64::from(chain.nonce(at.address).await))
        }
        Method::Balance(at) => {
            latest_only(chain, at.block).await?;
            to_json(chain.balance(at.address).await)
        }
    }
}

async fn stored_block(chain: &EmbeddedChain, n: u64) -> Result<StoredBlock, RpcError> {
    chain
        .blocks()
        .chain_block(BlockKey::Number(n))
        .await
        .map_err(internal)?
        .ok_or_else(|| internal(format!("block {n} is missing")))
}

fn header(b: &StoredBlock) -> Result<Header, RpcError> {
    let inner = ConsensusHeader::decode(&mut b.header.as_slice()).map_err(internal)?;
    Ok(Header {
        hash: b.hash,
        inner,
        total_difficulty: Some(Default::default()),
        size: Some(alloy_primitives::U256::from(b.header.len())),
    })
}

fn transaction(t: &StoredTransaction, b: &StoredBlock) -> Result<Transaction, RpcError> {
    let env = TxEnvelope::decode_2718(&mut t.raw.as_slice()).map_err(internal)?;
    Ok(Transaction {
        inner: Recovered::new_unchecked(env, t.sender),
        block_hash: Some(b.hash),
        block_number: Some(b.number),
        transaction_index: Some(u64::from(t.tx_index)),
        effective_gas_price: Some(0),
        block_timestamp: Some(b.timestamp),
    })
}

fn receipt(t: &StoredTransaction, b: &StoredBlock) -> Result<TransactionReceipt, RpcError> {
    let env = TxEnvelope::decode_2718(&mut t.raw.as_slice()).map_err(internal)?;
    let inner = ReceiptEnvelope::decode_2718(&mut t.receipt.as_slice()).map_err(internal)?;
    // Log indexes count within the block: those of earlier transactions come first. With one
    // transaction per block they start at 0.
    let mut index = 0u64;
    let inner = inner.map_logs(|l| {
        let log = Log {
            inner: l,
            block_hash: Some(b.hash),
            block_number: Some(b.number),
            block_timestamp: Some(b.timestamp),
            transaction_hash: Some(t.hash),
            transaction_index: Some(u64::from(t.tx_index)),
            log_index: Some(index),
            removed: false,
        };
        index += 1;
        log
    });
    Ok(TransactionReceipt {
        inner,
        transaction_hash: t.hash,
        transaction_index: Some(u64::from(t.tx_index)),
        block_hash: Some(b.hash),
        block_number: Some(b.number),
        gas_used: t.gas_used,
        effective_gas_price: 0,
        blob_gas_used: None,
        blob_gas_price: None,
        from: t.sender,
        to: env.to(),
        contract_address: t.contract_address,
    })
}

async fn block_json(chain: &EmbeddedChain, b: Option<StoredBlock>, full: bool) -> RpcResult {
    let Some(b) = b else {
        return Ok(Value::Null);
    };
    let txs = chain
        .blocks()
        .chain_block_transactions(b.number)
        .await
        .map_err(internal)?;
    let transactions = if full {
        BlockTransactions::Full(
            txs.iter()
                .map(|t| transaction(t, &b))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        BlockTransactions::Hashes(txs.iter().map(|t| t.hash).collect())
    };
    to_json(Block {
        header: header(&b)?,
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Default::default()),
    })
}

async fn get_logs(chain: &EmbeddedChain, f: &Filter) -> RpcResult {
    let tip = tip(chain).await;
    let (from, to) = match f.block_option {
        FilterBlockOption::AtBlockHash(h) => {
            let b = chain
                .blocks()
                .chain_block(BlockKey::Hash(h))
                .await
                .map_err(internal)?
                .ok_or_else(|| RpcError::new(-32000, "unknown block"))?;
            (b.number, b.number)
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => (
            match from_block {
                Some(t) => block_number(chain, t).await,
                None => tip,
            },
            match to_block {
                Some(t) => block_number(chain, t).await,
                None => tip,
            },
        ),
    };
    if from > to {
        return Err(RpcError::params("fromBlock is after toBlock"));
    }
    let mut topics: [Option<Vec<B256>>; 4] = Default::default();
    for (i, t) in f.topics.iter().enumerate() {
        if !t.is_empty() {
            topics[i] = Some(t.iter().copied().collect());
        }
    }
    let to = to.min(tip);
    if topics[1].is_none() && to.saturating_sub(from) >= MAX_LOG_RANGE {
        return Err(RpcError::new(
            -32005,
            format!(
                "block range wider than {MAX_LOG_RANGE}: narrow it, or filter by root (topic 1)"
            ),
        ));
    }
    let logs = chain
        .blocks()
        .chain_logs(&LogFilter {
            from_block: from,
            to_block: to,
            addresses: f.address.iter().copied().collect(),
            topics,
            limit: MAX_LOGS + 1,
        })
        .await
        .map_err(internal)?;
    if logs.len() > MAX_LOGS as usize {
        return Err(RpcError::new(
            -32005,
            format!("query returns more than {MAX_LOGS} results: narrow the block range"),
        ));
    }
    let mut out = Vec::with_capacity(logs.len());
    let mut blocks: Vec<StoredBlock> = Vec::new();
    for l in logs {
        if blocks.last().is_none_or(|b| b.number != l.block_number) {
            blocks.push(stored_block(chain, l.block_number).await?);
        }
        out.push(rpc_log(&l, blocks.last().expect("just pushed")));
    }
    to_json(out)
}

fn rpc_log(l: &StoredLog, b: &StoredBlock) -> Log {
    Log {
        inner: alloy_primitives::Log {
            address: l.address,
            data: LogData::new_unchecked(l.topics.clone(), l.data.clone().into()),
        },
        block_hash: Some(b.hash),
        block_number: Some(b.number),
        block_timestamp: Some(b.timestamp),
        transaction_hash: Some(l.tx_hash),
        transaction_index: Some(u64::from(l.tx_index)),
        log_index: Some(u64::from(l.log_index)),
        removed: false,
    }
}
