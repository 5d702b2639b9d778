//! The embedded chain's Ethereum JSON-RPC (served at `POST /rpc`): the read methods standard
//! tools need to find a transaction, its receipt and logs, and to call the contract — so a
//! proof can be checked against the embedded chain exactly as against any node. Nothing here
//! changes the chain: transactions are only ever sent by the BAL's own certifier.

use super::store::{BlockKey, LogFilter, StoredBlock, StoredLog, StoredTransaction};
use alloy_consensus::transaction::Recovered;
use alloy_consensus::{Header as ConsensusHeader, ReceiptEnvelope, Transaction as _, TxEnvelope};
use alloy_eips::BlockNumberOrTag;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, Bytes, LogData, U64};
use alloy_rlp::Decodable;
use alloy_rpc_types_eth::{
    Block, BlockTransactions, Filter, FilterBlockOption, Header, Log, Transaction,
    TransactionReceipt,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::EmbeddedChain;
use crate::LedgerError;

/// The most logs one `eth_getLogs` returns, as nodes cap it too.
pub const MAX_LOGS: u32 = 10_000;

/// The widest block range of an `eth_getLogs` that does not name a root (topic 1, which is
/// indexed): a scan of every block of a long-lived chain would keep the database busy.
pub const MAX_LOG_RANGE: u64 = 100_000;

/// The most requests in one batch: with `MAX_LOGS` per call, this bounds what one HTTP request
/// can make the server hold.
const MAX_BATCH: usize = 20;

/// A JSON-RPC error object.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    fn params(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "embedded chain RPC failed");
        Self::new(-32603, "internal error")
    }
}

type RpcResult = Result<Value, RpcError>;

/// Answers a JSON-RPC request body (one call or a batch). `None` when there is nothing to
/// send back (only notifications).
pub async fn handle(chain: &EmbeddedChain, body: &[u8]) -> Option<Value> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Some(reply(
                Value::Null,
                Err(RpcError::new(-32700, "parse error")),
            ));
        }
    };
    match request {
        Value::Array(calls) if calls.is_empty() => Some(reply(
            Value::Null,
            Err(RpcError::new(-32600, "empty batch")),
        )),
        Value::Array(calls) if calls.len() > MAX_BATCH => Some(reply(
            Value::Null,
            Err(RpcError::new(
                -32600,
                format!("at most {MAX_BATCH} calls per batch"),
            )),
        )),
        Value::Array(calls) => {
            let mut out = Vec::with_capacity(calls.len());
            for call in calls {
                out.extend(one(chain, call).await);
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        call => one(chain, call).await,
    }
}

fn reply(id: Value, result: RpcResult) -> Value {
    match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => {
            let mut error = json!({"code": e.code, "message": e.message});
            if let Some(d) = e.data {
                error["data"] = d;
            }
            json!({"jsonrpc": "2.0", "id": id, "error": error})
        }
    }
}

async fn one(chain: &EmbeddedChain, call: Value) -> Option<Value> {
    let Value::Object(mut call) = call else {
        return Some(reply(
            Value::Null,
            Err(RpcError::new(-32600, "invalid request")),
        ));
    };
    let id = call.remove("id");
    let method = call.remove("method");
    let params = match call.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(p)) => p,
        Some(_) => {
            return Some(reply(
                id.unwrap_or(Value::Null),
                Err(RpcError::params("params must be an array")),
            ));
        }
    };
    let result = match method.as_ref().and_then(Value::as_str) {
        Some(m) => dispatch(chain, m, params).await,
        None => Err(RpcError::new(-32600, "invalid request: no method")),
    };
    // A call without an id is a notification: no answer.
    id.map(|id| reply(id, result))
}

fn param<T: DeserializeOwned>(params: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let v = params
        .get(i)
        .ok_or_else(|| RpcError::params(format!("missing parameter {i}: {what}")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| RpcError::params(format!("parameter {i} ({what}): {e}")))
}

fn to_json(v: impl serde::Serialize) -> RpcResult {
    serde_json::to_value(v).map_err(RpcError::internal)
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
async fn latest_only(chain: &EmbeddedChain, params: &[Value], i: usize) -> Result<(), RpcError> {
    let Some(tag) = params.get(i).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let tag: BlockNumberOrTag = serde_json::from_value(tag.clone())
        .map_err(|e| RpcError::params(format!("parameter {i} (block): {e}")))?;
    let n = block_number(chain, tag).await;
    if n == tip(chain).await {
        Ok(())
    } else {
        Err(RpcError::new(
            -32000,
            "the embedded chain keeps the state of the latest block only",
        ))
    }
}

async fn dispatch(chain: &EmbeddedChain, method: &str, params: Vec<Value>) -> RpcResult {
    let blocks = chain.blocks();
    match method {
        "web3_clientVersion" => to_json(concat!("bal/", env!("CARGO_PKG_VERSION"), "/embedded")),
        "net_version" => to_json(chain.chain_id_value().to_string()),
        "net_listening" => to_json(true),
        "eth_chainId" => to_json(U64::from(chain.chain_id_value())),
        "eth_syncing" | "eth_mining" => to_json(false),
        "eth_gasPrice" | "eth_maxPriorityFeePerGas" => to_json(U64::ZERO),
        "eth_accounts" => to_json(Vec::<Address>::new()),
        "eth_blockNumber" => to_json(U64::from(tip(chain).await)),
        "eth_getBlockByNumber" => {
            let tag: BlockNumberOrTag = param(&params, 0, "block")?;
            let full: bool = param(&params, 1, "full transactions").unwrap_or(false);
            let n = block_number(chain, tag).await;
            let b = blocks
                .chain_block(BlockKey::Number(n))
                .await
                .map_err(RpcError::internal)?;
            block_json(chain, b, full).await
        }
        "eth_getBlockByHash" => {
            let hash: B256 = param(&params, 0, "block hash")?;
            let full: bool = param(&params, 1, "full transactions").unwrap_or(false);
            let b = blocks
                .chain_block(BlockKey::Hash(hash))
                .await
                .map_err(RpcError::internal)?;
            block_json(chain, b, full).await
        }
        "eth_getTransactionByHash" => {
            let hash: B256 = param(&params, 0, "transaction hash")?;
            match blocks
                .chain_transaction(hash)
                .await
                .map_err(RpcError::internal)?
            {
                None => Ok(Value::Null),
                Some(t) => {
                    let block = stored_block(chain, t.block_number).await?;
                    to_json(transaction(&t, &block)?)
                }
            }
        }
        "eth_getTransactionReceipt" => {
            let hash: B256 = param(&params, 0, "transaction hash")?;
            match blocks
                .chain_transaction(hash)
                .await
                .map_err(RpcError::internal)?
            {
                None => Ok(Value::Null),
                Some(t) => {
                    let block = stored_block(chain, t.block_number).await?;
                    to_json(receipt(&t, &block)?)
                }
            }
        }
        "eth_getLogs" => {
            let filter: Filter = param(&params, 0, "filter")?;
            get_logs(chain, &filter).await
        }
        "eth_call" => {
            #[derive(serde::Deserialize)]
            struct Call {
                #[serde(default)]
                from: Option<Address>,
                to: Option<Address>,
                // Clients send the call data as `input`, `data`, or both (Foundry, viem):
                // both are accepted when they are equal.
                #[serde(default)]
                input: Option<Bytes>,
                #[serde(default)]
                data: Option<Bytes>,
            }
            let call: Call = param(&params, 0, "call")?;
            let input = match (call.input, call.data) {
                (Some(input), Some(data)) if input != data => {
                    return Err(RpcError::params(
                        "eth_call: `input` and `data` differ; send one, or both equal",
                    ));
                }
                (input, data) => input.or(data),
            };
            latest_only(chain, &params, 1).await?;
            let to = call
                .to
                .ok_or_else(|| RpcError::params("eth_call needs a `to` address"))?;
            match chain
                .call(call.from.unwrap_or_default(), to, input.unwrap_or_default())
                .await
            {
                Ok(out) => to_json(out),
                Err(LedgerError::Reverted(reason)) => Err(RpcError {
                    code: 3,
                    message: format!("execution reverted: {reason}"),
                    data: None,
                }),
                Err(e) => Err(RpcError::internal(e)),
            }
        }
        "eth_getCode" => {
            let address: Address = param(&params, 0, "address")?;
            latest_only(chain, &params, 1).await?;
            to_json(chain.code(address).await)
        }
        "eth_getTransactionCount" => {
            let address: Address = param(&params, 0, "address")?;
            latest_only(chain, &params, 1).await?;
            to_json(U64::from(chain.nonce(address).await))
        }
        "eth_getBalance" => {
            let address: Address = param(&params, 0, "address")?;
            latest_only(chain, &params, 1).await?;
            to_json(chain.balance(address).await)
        }
        "eth_sendRawTransaction" | "eth_sendTransaction" => Err(RpcError::new(
            -32601,
            "the embedded chain accepts transactions from the BAL's certifier only",
        )),
        other => Err(RpcError::new(
            -32601,
            format!("the method {other} does not exist/is not available"),
        )),
    }
}

async fn stored_block(chain: &EmbeddedChain, n: u64) -> Result<StoredBlock, RpcError> {
    chain
        .blocks()
        .chain_block(BlockKey::Number(n))
        .await
        .map_err(RpcError::internal)?
        .ok_or_else(|| RpcError::internal(format!("block {n} is missing")))
}

fn header(b: &StoredBlock) -> Result<Header, RpcError> {
    let inner = ConsensusHeader::decode(&mut b.header.as_slice()).map_err(RpcError::internal)?;
    Ok(Header {
        hash: b.hash,
        inner,
        total_difficulty: Some(Default::default()),
        size: Some(alloy_primitives::U256::from(b.header.len())),
    })
}

fn transaction(t: &StoredTransaction, b: &StoredBlock) -> Result<Transaction, RpcError> {
    let env = TxEnvelope::decode_2718(&mut t.raw.as_slice()).map_err(RpcError::internal)?;
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
    let env = TxEnvelope::decode_2718(&mut t.raw.as_slice()).map_err(RpcError::internal)?;
    let inner =
        ReceiptEnvelope::decode_2718(&mut t.receipt.as_slice()).map_err(RpcError::internal)?;
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
        .map_err(RpcError::internal)?;
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
                .map_err(RpcError::internal)?
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
        .map_err(RpcError::internal)?;
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
