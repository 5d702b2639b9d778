//! The Ethereum JSON-RPC 2.0 requests the embedded chain answers (`POST /rpc`), parsed from the
//! request body into typed methods, and the answers' envelope.
//!
//! Everything a client sends is checked here, before the chain is asked anything: the body, the
//! batch, each call's shape, the method and its parameters. Kept apart from the chain (no EVM,
//! no database) so that the parser can be fuzzed on its own and its rules read in one place.
#![forbid(unsafe_code)]

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{Address, B256, Bytes};
use alloy_rpc_types_eth::Filter;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The most requests in one batch: with the log cap per call, this bounds what one HTTP request
/// can make the server hold.
pub const MAX_BATCH: usize = 20;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// -32602: the parameters are wrong.
    pub fn params(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }
    /// -32600: not a JSON-RPC request.
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(-32600, message)
    }
}

/// A method the embedded chain answers, with its parameters parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    ClientVersion,
    NetVersion,
    NetListening,
    ChainId,
    Syncing,
    Mining,
    GasPrice,
    MaxPriorityFeePerGas,
    Accounts,
    BlockNumber,
    BlockByNumber { block: BlockNumberOrTag, full: bool },
    BlockByHash { hash: B256, full: bool },
    TransactionByHash(B256),
    TransactionReceipt(B256),
    Logs(Box<Filter>),
    Call(CallRequest),
    Code(AccountAt),
    TransactionCount(AccountAt),
    Balance(AccountAt),
}

/// `eth_call`'s parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    pub from: Address,
    pub to: Address,
    pub input: Bytes,
    /// The block named, if any: the chain keeps the latest state only.
    pub block: Option<BlockNumberOrTag>,
}

/// An account read at a block (`eth_getCode`, `eth_getBalance`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAt {
    pub address: Address,
    pub block: Option<BlockNumberOrTag>,
}

/// One call of a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The id to answer with; `None` for a notification, which gets no answer.
    pub id: Option<Value>,
    pub method: Result<Method, RpcError>,
}

/// A request body: one call, a batch, or something that is answered with one error.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    One(Request),
    Batch(Vec<Request>),
    Refused(RpcError),
}

/// Parses a request body. Never fails: what cannot be parsed becomes the error to answer with.
pub fn parse(body: &[u8]) -> Body {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Body::Refused(RpcError::new(-32700, "parse error"));
    };
    match value {
        Value::Array(calls) if calls.is_empty() => Body::Refused(RpcError::invalid("empty batch")),
        Value::Array(calls) if calls.len() > MAX_BATCH => Body::Refused(RpcError::invalid(
            format!("at most {MAX_BATCH} calls per batch"),
        )),
        Value::Array(calls) => Body::Batch(calls.into_iter().map(request).collect()),
        call => Body::One(request(call)),
    }
}

/// The answer to one call.
pub fn reply(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "message": e.message},
        }),
    }
}

fn request(call: Value) -> Request {
    let Value::Object(mut call) = call else {
        return Request {
            id: Some(Value::Null),
            method: Err(RpcError::invalid("invalid request")),
        };
    };
    let id = call.remove("id");
    let params = match call.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(p)) => p,
        // Answered even without an id: a malformed notification is still worth an error.
        Some(_) => {
            return Request {
                id: Some(id.unwrap_or(Value::Null)),
                method: Err(RpcError::params("params must be an array")),
            };
        }
    };
    let method = match call.get("method").and_then(Value::as_str) {
        Some(name) => method(name, &params),
        None => Err(RpcError::invalid("invalid request: no method")),
    };
    Request { id, method }
}

fn param<T: DeserializeOwned>(params: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let v = params
        .get(i)
        .ok_or_else(|| RpcError::params(format!("missing parameter {i}: {what}")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| RpcError::params(format!("parameter {i} ({what}): {e}")))
}

/// An optional block parameter: absent and `null` mean the latest block.
fn block_param(params: &[Value], i: usize) -> Result<Option<BlockNumberOrTag>, RpcError> {
    match params.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => param(params, i, "block").map(Some),
    }
}

fn account_at(params: &[Value]) -> Result<AccountAt, RpcError> {
    Ok(AccountAt {
        address: param(params, 0, "address")?,
        block: block_param(params, 1)?,
    })
}

fn call_request(params: &[Value]) -> Result<CallRequest, RpcError> {
    #[derive(serde::Deserialize)]
    struct Call {
        #[serde(default)]
        from: Option<Address>,
        to: Option<Address>,
        // Clients send the call data as `input`, `data`, or both (Foundry, viem): both are
        // accepted when they are equal.
        #[serde(default)]
        input: Option<Bytes>,
        #[serde(default)]
        data: Option<Bytes>,
    }
    let call: Call = param(params, 0, "call")?;
    let input = match (call.input, call.data) {
        (Some(input), Some(data)) if input != data => {
            return Err(RpcError::params(
                "eth_call: `input` and `data` differ; send one, or both equal",
            ));
        }
        (input, data) => input.or(data).unwrap_or_default(),
    };
    // The block before `to`, as before this parser was split out of the chain.
    let block = block_param(params, 1)?;
    Ok(CallRequest {
        from: call.from.unwrap_or_default(),
        to: call
            .to
            .ok_or_else(|| RpcError::params("eth_call needs a `to` address"))?,
        input,
        block,
    })
}

fn method(name: &str, params: &[Value]) -> Result<Method, RpcError> {
    // A missing or malformed `full transactions` flag means hashes only, as nodes do.
    let full = || param(params, 1, "full transactions").unwrap_or(false);
    Ok(match name {
        "web3_clientVersion" => Method::ClientVersion,
        "net_version" => Method::NetVersion,
        "net_listening" => Method::NetListening,
        "eth_chainId" => Method::ChainId,
        "eth_syncing" => Method::Syncing,
        "eth_mining" => Method::Mining,
        "eth_gasPrice" => Method::GasPrice,
        "eth_maxPriorityFeePerGas" => Method::MaxPriorityFeePerGas,
        "eth_accounts" => Method::Accounts,
        "eth_blockNumber" => Method::BlockNumber,
        "eth_getBlockByNumber" => Method::BlockByNumber {
            block: param(params, 0, "block")?,
            full: full(),
        },
        "eth_getBlockByHash" => Method::BlockByHash {
            hash: param(params, 0, "block hash")?,
            full: full(),
        },
        "eth_getTransactionByHash" => {
            Method::TransactionByHash(param(params, 0, "transaction hash")?)
        }
        "eth_getTransactionReceipt" => {
            Method::TransactionReceipt(param(params, 0, "transaction hash")?)
        }
        "eth_getLogs" => Method::Logs(Box::new(param(params, 0, "filter")?)),
        "eth_call" => Method::Call(call_request(params)?),
        "eth_getCode" => Method::Code(account_at(params)?),
        "eth_getTransactionCount" => Method::TransactionCount(account_at(params)?),
        "eth_getBalance" => Method::Balance(account_at(params)?),
        "eth_sendRawTransaction" | "eth_sendTransaction" => {
            return Err(RpcError::new(
                -32601,
                "the embedded chain accepts transactions from the BAL's certifier only",
            ));
        }
        other => {
            return Err(RpcError::new(
                -32601,
                format!("the method {other} does not exist/is not available"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Request {
        match parse(body.as_bytes()) {
            Body::One(r) => r,
            other => panic!("not one call: {other:?}"),
        }
    }

    #[test]
    fn bodies_that_are_not_requests_get_one_error() {
        assert_eq!(
            parse(b"{"),
            Body::Refused(RpcError::new(-32700, "parse error"))
        );
        assert!(matches!(parse(b"[]"), Body::Refused(e) if e.code == -32600));
        let many = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        assert!(matches!(parse(many.as_bytes()), Body::Refused(e) if e.code == -32600));
        let r = one("7");
        assert_eq!(r.id, Some(Value::Null));
        assert_eq!(r.method.unwrap_err().code, -32600);
    }

    #[test]
    fn notifications_have_no_id_and_null_is_an_id() {
        let r = one(r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#);
        assert_eq!((r.id, r.method), (None, Ok(Method::ChainId)));
        let r = one(r#"{"jsonrpc":"2.0","id":null,"method":"eth_blockNumber","params":null}"#);
        assert_eq!(
            (r.id, r.method),
            (Some(Value::Null), Ok(Method::BlockNumber))
        );
        // Bad params are answered even on a notification.
        let r = one(r#"{"method":"eth_chainId","params":{}}"#);
        assert_eq!(r.id, Some(Value::Null));
        assert_eq!(r.method.unwrap_err().code, -32602);
    }

    #[test]
    fn eth_call_takes_input_data_or_both_equal() {
        let to = "0x00000000000000000000000000000000000000aa";
        for call in [
            format!(r#"{{"to":"{to}","input":"0x1234"}}"#),
            format!(r#"{{"to":"{to}","data":"0x1234"}}"#),
            format!(r#"{{"to":"{to}","input":"0x1234","data":"0x1234"}}"#),
        ] {
            let r = one(&format!(
                r#"{{"id":1,"method":"eth_call","params":[{call},"latest"]}}"#
            ));
            let Ok(Method::Call(c)) = r.method else {
                panic!("{call}: {:?}", r.method)
            };
            assert_eq!(c.input, Bytes::from(vec![0x12, 0x34]));
            assert_eq!(c.block, Some(BlockNumberOrTag::Latest));
        }
        let r = one(&format!(
            r#"{{"id":1,"method":"eth_call","params":[{{"to":"{to}","input":"0x12","data":"0x34"}}]}}"#
        ));
        assert!(r.method.unwrap_err().message.contains("differ"));
        let r = one(r#"{"id":1,"method":"eth_call","params":[{"data":"0x12"}]}"#);
        assert!(r.method.unwrap_err().message.contains("`to`"));
    }

    #[test]
    fn unknown_and_sending_methods_are_refused() {
        let r = one(r#"{"id":1,"method":"eth_sendRawTransaction","params":["0x00"]}"#);
        assert_eq!(r.method.unwrap_err().code, -32601);
        let r = one(r#"{"id":"a","method":"debug_traceTransaction"}"#);
        assert_eq!(r.id, Some(json!("a")));
        assert!(
            r.method
                .unwrap_err()
                .message
                .contains("debug_traceTransaction")
        );
    }

    #[test]
    fn parameters_are_checked_before_the_chain_is_asked() {
        let r = one(r#"{"id":1,"method":"eth_getTransactionReceipt","params":["0x12"]}"#);
        assert!(
            r.method
                .unwrap_err()
                .message
                .starts_with("parameter 0 (transaction hash)")
        );
        let r = one(r#"{"id":1,"method":"eth_getBlockByNumber","params":[]}"#);
        assert_eq!(r.method.unwrap_err().message, "missing parameter 0: block");
        let r = one(r#"{"id":1,"method":"eth_getBlockByNumber","params":["0x10", true]}"#);
        assert_eq!(
            r.method,
            Ok(Method::BlockByNumber {
                block: BlockNumberOrTag::Number(16),
                full: true
            })
        );
    }

    #[test]
    fn replies_carry_the_id_and_either_result_or_error() {
        assert_eq!(
            reply(json!(3), Ok(json!("0x1"))),
            json!({"jsonrpc":"2.0","id":3,"result":"0x1"})
        );
        assert_eq!(
            reply(Value::Null, Err(RpcError::params("no"))),
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"no"}})
        );
    }
}
