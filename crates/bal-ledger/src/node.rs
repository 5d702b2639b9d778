//! Any Ethereum node over JSON-RPC, through alloy: anvil for tests, Besu or Geth (QBFT, Clique,
//! or a public network) in production. The operator key signs locally; the node only sees
//! signed transactions.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy_network::{EthereumWallet, ReceiptResponse, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes};
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::{BlockNumberOrTag, Filter, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};
use anyhow::Context;
use async_trait::async_trait;
use bal_scd::{CERTIFY_LEASE, SharedStore};
use tokio::sync::Mutex;

use crate::contract::{self, Anchored, anchorCall, isAnchorerCall};
use crate::{Anchor, Ledger, LedgerError, LedgerResult};

/// How long to wait for an anchor's receipt before the certifier retries (it recognises an
/// anchor that lands meanwhile, so a retry never anchors twice).
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP client for JSON-RPC that trusts the usual web roots, plus `ca` if given (a node or
/// an embedded chain behind a private CA).
pub fn http_client(ca: Option<&Path>) -> anyhow::Result<reqwest13::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.with_context(|| format!("{} is not PEM", ca.display()))?)
                .with_context(|| format!("{} holds an unusable certificate", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest13::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")
}

/// A read-only provider, for checking anchors (`bal verify --rpc`).
pub fn read_only(url: &str, ca: Option<&Path>) -> anyhow::Result<DynProvider> {
    let url: reqwest13::Url = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    Ok(ProviderBuilder::new()
        .connect_reqwest(http_client(ca)?, url)
        .erased())
}

/// The URL as logs may show it: scheme, host and port only. Node providers put API keys in the
/// user name, the password, the path or the query.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() != "/" || u.query().is_some() || !u.username().is_empty() {
                "/..."
            } else {
                ""
            };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// Replaces the secret URL in error texts (HTTP client errors quote the URL they failed on).
#[derive(Clone)]
struct Scrubber {
    /// The URL as given and as the HTTP client prints it.
    secrets: Vec<String>,
    shown: String,
}

impl Scrubber {
    fn new(url: &str) -> Self {
        let mut secrets = vec![url.to_owned()];
        if let Ok(u) = url::Url::parse(url) {
            secrets.push(u.to_string());
        }
        // Longest first, so a prefix never leaves the rest of a longer form behind.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            secrets,
            shown: redact(url),
        }
    }

    fn text(&self, e: impl std::fmt::Display) -> String {
        let mut text = e.to_string();
        for s in &self.secrets {
            text = text.replace(s.as_str(), &self.shown);
        }
        text
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Unavailable(self.text(e))
    }

    /// Reads a JSON-RPC error as a contract revert when it carries revert data.
    fn rpc(&self, e: alloy_transport::TransportError) -> LedgerError {
        match e.as_error_resp().and_then(|p| p.as_revert_data()) {
            Some(data) => match contract::already_anchored(&data) {
                Some(block) => LedgerError::AlreadyAnchored(block),
                None => LedgerError::Reverted(contract::revert_reason(&data)),
            },
            None => self.unavailable(e),
        }
    }
}

pub struct NodeChain {
    provider: DynProvider,
    chain_id: u64,
    contract: Address,
    operator: Address,
    url: String,
    scrub: Scrubber,
    /// One anchor in flight at a time, so that nonces follow each other.
    order: Mutex<()>,
}

/// What connecting needs.
pub struct NodeConfig<'a> {
    pub url: &'a str,
    /// A CA to trust for an `https://` node behind a private CA.
    pub ca: Option<&'a Path>,
    pub signer: PrivateKeySigner,
    /// The chain id the node must report, if set.
    pub chain_id: Option<u64>,
    /// The contract to use; otherwise the one remembered for this chain, or a new deployment.
    pub contract: Option<Address>,
    /// This replica's id: a deployment happens under the certification lease, so that replicas
    /// starting together deploy one contract between them.
    pub replica: &'a str,
}

/// How long the lease taken for a deployment lasts: a deployment waits for one receipt.
const DEPLOY_LEASE: Duration = Duration::from_secs(60);

/// How long a replica waits for another's deployment before giving up.
const DEPLOY_WAIT: Duration = Duration::from_secs(90);

impl NodeChain {
    pub async fn connect(config: NodeConfig<'_>, store: &SharedStore) -> anyhow::Result<Self> {
        let url_shown = redact(config.url);
        let scrub = Scrubber::new(config.url);
        let url: reqwest13::Url = config
            .url
            .parse()
            .with_context(|| format!("chain.rpc_url {url_shown:?} is not a URL"))?;
        let operator = config.signer.address();
        // The nonce is asked of the node for every transaction (anchors are sent one at a
        // time): a cached nonce would never recover from a send that failed halfway.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(config.signer))
            .connect_reqwest(http_client(config.ca)?, url);
        // Receipts are polled twice a second (alloy's default for remote nodes is 7 s, which
        // alone would break the latency target).
        provider
            .client()
            .set_poll_interval(Duration::from_millis(500));
        let provider = provider.erased();
        let chain_id = provider.get_chain_id().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the chain at {url_shown} (chain.rpc_url): {}",
                scrub.text(e)
            )
        })?;
        if let Some(expected) = config.chain_id
            && expected != chain_id
        {
            anyhow::bail!(
                "the chain at {url_shown} has chain id {chain_id}, but chain.chain_id is {expected}"
            );
        }
        let mut chain = Self {
            provider,
            chain_id,
            contract: Address::ZERO,
            operator,
            url: url_shown.clone(),
            scrub,
            order: Mutex::new(()),
        };
        chain.contract = match config.contract {
            Some(address) => {
                if chain.code_at(address).await?.is_empty() {
                    anyhow::bail!("chain.contract {address} has no code on chain {chain_id}");
                }
                address
            }
            None => chain.remembered_or_deployed(store, config.replica).await?,
        };
        let allowed = chain
            .view(isAnchorerCall { anchorer: operator })
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the contract at {}: {e}", chain.contract))?;
        if !allowed {
            anyhow::bail!(
                "the operator {operator} may not anchor on contract {}: its owner must call setAnchorer",
                chain.contract
            );
        }
        tracing::info!(url = %url_shown, chain_id, contract = %chain.contract, %operator, "certifying on an Ethereum node");
        Ok(chain)
    }

    /// The contract remembered for this chain, or one deployed now, by this replica under the
    /// certification lease or by the replica that holds it (waited for).
    async fn remembered_or_deployed(
        &self,
        store: &SharedStore,
        replica: &str,
    ) -> anyhow::Result<Address> {
        let started = tokio::time::Instant::now();
        loop {
            let remembered = store.chain_contract(self.chain_id).await?;
            if let Some(address) = remembered
                && !self.code_at(address).await?.is_empty()
            {
                return Ok(address);
            }
            if let Some(fence) = store
                .acquire_lease(CERTIFY_LEASE, replica, DEPLOY_LEASE)
                .await?
            {
                // Read again under the lease: the last holder may have deployed meanwhile.
                let remembered = store.chain_contract(self.chain_id).await?;
                let usable = match remembered {
                    Some(a) => !self.code_at(a).await?.is_empty(),
                    None => false,
                };
                let address = match remembered {
                    Some(a) if usable => a,
                    _ => {
                        if let Some(gone) = remembered {
                            tracing::warn!(
                                contract = %gone, chain_id = self.chain_id,
                                "the remembered certification contract is gone (was the chain reset?): deploying a new one"
                            );
                        }
                        let address = self.deploy().await?;
                        store
                            .remember_chain_contract(self.chain_id, address)
                            .await?;
                        address
                    }
                };
                // The certifier takes the lease again on its first round.
                store.release_lease(&fence).await?;
                return Ok(address);
            }
            anyhow::ensure!(
                started.elapsed() < DEPLOY_WAIT,
                "no certification contract on chain {} after {} s while another replica holds                  the certification lease: is it stuck? (bal cluster status)",
                self.chain_id,
                DEPLOY_WAIT.as_secs()
            );
            tracing::info!(
                chain_id = self.chain_id,
                "another replica holds the certification lease: waiting for its contract"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn code_at(&self, address: Address) -> anyhow::Result<Bytes> {
        self.provider
            .get_code_at(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read code at {address}: {}", self.scrub.text(e)))
    }

    async fn deploy(&self) -> anyhow::Result<Address> {
        let tx =
            TransactionRequest::default().with_deploy_code(contract::creation_bytecode().clone());
        let receipt = self
            .provider
            .send_transaction(tx)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot deploy the certification contract: {}",
                    self.scrub.text(e)
                )
            })?
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "no receipt for the certification contract's deployment: {}",
                    self.scrub.text(e)
                )
            })?;
        let address = receipt
            .contract_address()
            .filter(|_| receipt.status())
            .context("deploying the certification contract failed")?;
        tracing::info!(%address, chain_id = self.chain_id, "certification contract deployed");
        Ok(address)
    }

    async fn view<C: SolCall>(&self, call: C) -> LedgerResult<C::Return> {
        let tx = TransactionRequest::default()
            .with_to(self.contract)
            .with_input(Bytes::from(call.abi_encode()));
        let out = self
            .provider
            .call(tx)
            .await
            .map_err(|e| self.scrub.rpc(e))?;
        C::abi_decode_returns(&out).map_err(|e| self.scrub.unavailable(e))
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }
}

#[async_trait]
impl Ledger for NodeChain {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn contract(&self) -> Address {
        self.contract
    }

    fn operator(&self) -> Address {
        self.operator
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn anchor(&self, root: B256, leaf_count: u32, batch_id: B256) -> LedgerResult<Anchor> {
        let _order = self.order.lock().await;
        let tx = TransactionRequest::default()
            .with_from(self.operator)
            .with_to(self.contract)
            .with_input(Bytes::from(
                anchorCall {
                    root,
                    leafCount: leaf_count,
                    batchId: batch_id,
                }
                .abi_encode(),
            ));
        // A dry run first: a revert (already anchored, not allowed) comes back with its reason
        // instead of costing a failed transaction.
        self.provider
            .call(tx.clone())
            .await
            .map_err(|e| self.scrub.rpc(e))?;
        let receipt = self
            .provider
            .send_transaction(tx)
            .await
            .map_err(|e| self.scrub.rpc(e))?
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| self.scrub.unavailable(e))?;
        if !receipt.status() {
            // Lost a race (the same root mined meanwhile) or out of gas: say which.
            return Err(match self.anchored_at(root).await? {
                0 => LedgerError::Reverted(format!(
                    "anchor transaction {} failed",
                    receipt.transaction_hash()
                )),
                block => LedgerError::AlreadyAnchored(block),
            });
        }
        let block_number = receipt.block_number().unwrap_or_default();
        let block_time = match self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(block_number))
            .await
            .map_err(|e| self.scrub.unavailable(e))?
        {
            Some(b) => b.header.timestamp,
            None => 0,
        };
        Ok(Anchor {
            tx_hash: receipt.transaction_hash(),
            block_number,
            block_time,
            gas_used: receipt.gas_used(),
        })
    }

    async fn call_contract(&self, input: Bytes) -> LedgerResult<Bytes> {
        let tx = TransactionRequest::default()
            .with_to(self.contract)
            .with_input(input);
        self.provider.call(tx).await.map_err(|e| self.scrub.rpc(e))
    }

    async fn anchor_in_block(&self, root: B256, block: u64) -> LedgerResult<Option<Anchor>> {
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(Anchored::SIGNATURE_HASH)
            .topic1(root)
            .from_block(block)
            .to_block(block);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| self.scrub.unavailable(e))?;
        let Some(tx_hash) = logs.first().and_then(|l| l.transaction_hash) else {
            return Ok(None);
        };
        let receipt = self
            .provider
            .get_transaction_receipt(tx_hash)
            .await
            .map_err(|e| self.scrub.unavailable(e))?;
        let header = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(block))
            .await
            .map_err(|e| self.scrub.unavailable(e))?;
        Ok(match (receipt, header) {
            (Some(r), Some(b)) => Some(Anchor {
                tx_hash,
                block_number: block,
                block_time: b.header.timestamp,
                gas_used: r.gas_used(),
            }),
            _ => None,
        })
    }

    async fn head(&self) -> LedgerResult<u64> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| self.scrub.unavailable(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_node_urls_never_reach_logs() {
        let url = "https://user:pw@mainnet.example.io/v3/SECRETKEY?token=T0K";
        let shown = redact(url);
        assert_eq!(shown, "https://mainnet.example.io/...");
        let scrub = Scrubber::new(url);
        // How reqwest words a failure: the URL as it parsed it.
        let parsed = url::Url::parse(url).unwrap();
        let err = format!("error sending request for url ({parsed}): connection refused");
        let text = scrub.text(err);
        assert!(
            !text.contains("SECRETKEY") && !text.contains("pw@") && !text.contains("T0K"),
            "{text}"
        );
        assert!(text.contains("https://mainnet.example.io/..."), "{text}");
        assert_eq!(redact("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    }
}
