//! The certification contract on both backends: every function, including the reverts.

mod support;

use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer::SignerSync;
use alloy_sol_types::SolCall;
use bal_core::merkle::{LeafValues, MerkleTree};
use bal_ledger::contract::{anchorCall, isAnchorerCall, ownerCall, setAnchorerCall};
use bal_ledger::embedded::DEFAULT_CHAIN_ID;
use bal_ledger::node::{NodeChain, NodeConfig};
use bal_ledger::{Ledger, LedgerError};
use support::*;

fn tree(n: u64) -> (MerkleTree, Vec<B256>) {
    let leaves: Vec<B256> = (0..n)
        .map(|id| {
            LeafValues {
                producer_wallet: Address::repeat_byte(9),
                topic: "platone/p/meter".into(),
                id,
                received_at_ms: 1_700_000_000_000 + id,
                payload_hash: keccak256(id.to_be_bytes()),
            }
            .leaf()
        })
        .collect();
    (MerkleTree::new(&leaves).unwrap(), leaves)
}

/// What both backends must do through the [`Ledger`] trait.
async fn behaves(ledger: &dyn Ledger) {
    let (t, leaves) = tree(7);
    let root = t.root();
    assert_eq!(ledger.anchored_at(root).await.unwrap(), 0);
    assert!(
        !ledger
            .verify(root, &t.proof(3).unwrap(), leaves[3])
            .await
            .unwrap(),
        "not anchored yet"
    );
    assert!(ledger.find_anchor(root).await.unwrap().is_none());

    let a = ledger
        .anchor(root, 7, B256::with_last_byte(1))
        .await
        .unwrap();
    assert!(a.block_number > 0);
    assert!(a.gas_used > 21_000, "gas {}", a.gas_used);
    assert_eq!(ledger.anchored_at(root).await.unwrap(), a.block_number);
    assert_eq!(ledger.find_anchor(root).await.unwrap(), Some(a));
    assert!(ledger.head().await.unwrap() >= a.block_number);

    // Real proofs verify on chain; forged ones do not.
    for (i, leaf) in leaves.iter().enumerate() {
        assert!(
            ledger
                .verify(root, &t.proof(i).unwrap(), *leaf)
                .await
                .unwrap(),
            "leaf {i}"
        );
    }
    let mut forged = leaves[2];
    forged.0[31] ^= 1;
    assert!(
        !ledger
            .verify(root, &t.proof(2).unwrap(), forged)
            .await
            .unwrap()
    );
    let mut bad_proof = t.proof(2).unwrap();
    bad_proof[0].0[0] ^= 0x80;
    assert!(!ledger.verify(root, &bad_proof, leaves[2]).await.unwrap());
    assert!(!ledger.verify(root, &[], leaves[2]).await.unwrap());

    // Re-anchoring reverts and names the block; empty batches revert.
    match ledger.anchor(root, 7, B256::with_last_byte(2)).await {
        Err(LedgerError::AlreadyAnchored(b)) => assert_eq!(b, a.block_number),
        other => panic!("re-anchoring: {other:?}"),
    }
    match ledger.anchor(B256::ZERO, 1, B256::ZERO).await {
        Err(LedgerError::Reverted(r)) => assert_eq!(r, "EmptyBatch()"),
        other => panic!("zero root: {other:?}"),
    }
    let (t2, _) = tree(2);
    match ledger.anchor(t2.root(), 0, B256::ZERO).await {
        Err(LedgerError::Reverted(r)) => assert_eq!(r, "EmptyBatch()"),
        other => panic!("zero leaves: {other:?}"),
    }
    // A single-leaf tree: the root is the leaf, the proof empty.
    let (one, one_leaves) = tree(1);
    ledger.anchor(one.root(), 1, B256::ZERO).await.unwrap();
    assert!(ledger.verify(one.root(), &[], one_leaves[0]).await.unwrap());
}

fn sign(key: &str, chain_id: u64, nonce: u64, to: Address, input: Vec<u8>) -> TxEnvelope {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: 0,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list: Default::default(),
        input: input.into(),
    };
    let sig = signer(key).sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::Eip1559(tx.into_signed(sig))
}

#[tokio::test]
async fn the_contract_on_the_embedded_chain() {
    let db = db().await;
    let chain = embedded_chain(&db.store, &db.database.url).await;
    behaves(&chain).await;

    // The deployer owns the contract and is its first anchorer; a stranger is neither.
    let stranger = signer(ANVIL_KEY_1).address();
    let contract = chain.contract();
    let view = |data: Vec<u8>| chain.call(Address::ZERO, contract, data.into());
    let owner = view(ownerCall {}.abi_encode()).await.unwrap();
    assert_eq!(
        ownerCall::abi_decode_returns(&owner).unwrap(),
        chain.operator()
    );
    let is = |a: Address| isAnchorerCall { anchorer: a }.abi_encode();
    let op = view(is(chain.operator())).await.unwrap();
    assert!(isAnchorerCall::abi_decode_returns(&op).unwrap());
    let st = view(is(stranger)).await.unwrap();
    assert!(!isAnchorerCall::abi_decode_returns(&st).unwrap());

    // Only anchorers anchor; only the owner names anchorers.
    // A transaction of `key` with `nonce` to the contract, on this chain; its outcome.
    let submit = |key: &'static str, nonce: u64, input: Vec<u8>| {
        chain.submit(sign(key, DEFAULT_CHAIN_ID, nonce, contract, input))
    };
    let (t, _) = tree(3);
    let anchor = anchorCall {
        root: t.root(),
        leafCount: 3,
        batchId: B256::ZERO,
    }
    .abi_encode();
    let m = submit(ANVIL_KEY_1, 0, anchor.clone()).await.unwrap();
    assert!(!m.success);
    assert_eq!(
        bal_ledger::contract::revert_reason(&m.output),
        format!("NotAnchorer({stranger})")
    );
    let set = setAnchorerCall {
        anchorer: stranger,
        allowed: true,
    }
    .abi_encode();
    let m = submit(ANVIL_KEY_1, 1, set.clone()).await.unwrap();
    assert_eq!(
        bal_ledger::contract::revert_reason(&m.output),
        format!("NotOwner({stranger})")
    );
    let owner_nonce = chain.nonce(chain.operator()).await;
    let m = submit(ANVIL_KEY_0, owner_nonce, set).await.unwrap();
    assert!(m.success);
    let allowed = chain
        .call(
            Address::ZERO,
            contract,
            isAnchorerCall { anchorer: stranger }.abi_encode().into(),
        )
        .await
        .unwrap();
    assert!(isAnchorerCall::abi_decode_returns(&allowed).unwrap());
    let m = submit(ANVIL_KEY_1, 2, anchor).await.unwrap();
    assert!(
        m.success,
        "{}",
        bal_ledger::contract::revert_reason(&m.output)
    );
    // A transaction for another chain is refused outright.
    let err = chain
        .submit(sign(ANVIL_KEY_1, 1, 3, contract, vec![]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid transaction"), "{err}");
}

#[tokio::test]
async fn the_embedded_chain_survives_a_restart() {
    let db = db().await;
    let (t, leaves) = tree(5);
    let (contract, anchor, head) = {
        let chain = embedded_chain(&db.store, &db.database.url).await;
        let a = chain.anchor(t.root(), 5, B256::ZERO).await.unwrap();
        (chain.contract(), a, chain.head().await.unwrap())
    };
    let store = db.reopen().await;
    let chain = embedded_chain(&store, &db.database.url).await;
    assert_eq!(
        chain.contract(),
        contract,
        "the contract is not deployed again"
    );
    assert_eq!(chain.head().await.unwrap(), head);
    assert_eq!(
        chain.anchored_at(t.root()).await.unwrap(),
        anchor.block_number
    );
    assert!(
        chain
            .verify(t.root(), &t.proof(4).unwrap(), leaves[4])
            .await
            .unwrap()
    );
    assert_eq!(chain.find_anchor(t.root()).await.unwrap(), Some(anchor));
    let tx = chain
        .blocks()
        .chain_transaction(anchor.tx_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tx.block_number, anchor.block_number);
    // Nonces continue where they were: a new anchor goes through.
    let (t2, _) = tree(6);
    let a2 = chain.anchor(t2.root(), 6, B256::ZERO).await.unwrap();
    assert_eq!(a2.block_number, head + 1);
    assert!(matches!(
        chain.anchor(t.root(), 5, B256::ZERO).await,
        Err(LedgerError::AlreadyAnchored(b)) if b == anchor.block_number
    ));
}

/// The chain at `anvil` operated by `key`, for the SCD of `db` (as `bal` connects to a node).
async fn node_chain(
    anvil: &Anvil,
    db: &Db,
    key: &str,
    chain_id: Option<u64>,
    contract: Option<Address>,
) -> anyhow::Result<NodeChain> {
    let config = NodeConfig {
        url: &anvil.url,
        ca: None,
        signer: signer(key),
        chain_id,
        contract,
        replica: "replica-test",
    };
    NodeChain::connect(config, &db.store).await
}

#[tokio::test]
async fn the_contract_on_anvil() {
    let anvil = anvil().await;
    let db = db().await;
    let chain = node_chain(&anvil, &db, ANVIL_KEY_0, Some(31337), None)
        .await
        .unwrap();
    assert_eq!(chain.chain_id(), 31337);
    behaves(&chain).await;

    // The contract is remembered: connecting again does not deploy another.
    let again = node_chain(&anvil, &db, ANVIL_KEY_0, None, None)
        .await
        .unwrap();
    assert_eq!(again.contract(), chain.contract());

    // Another key is refused as operator until the owner names it.
    let err = node_chain(&anvil, &db, ANVIL_KEY_1, None, Some(chain.contract()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("may not anchor"), "{err}");
    let stranger = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer(ANVIL_KEY_1)))
        .connect_http(anvil.url.parse().unwrap());
    let set = TransactionRequest::default()
        .with_to(chain.contract())
        .with_input(Bytes::from(
            setAnchorerCall {
                anchorer: signer(ANVIL_KEY_1).address(),
                allowed: true,
            }
            .abi_encode(),
        ));
    let err = stranger.call(set.clone()).await.unwrap_err().to_string();
    assert!(err.contains("revert"), "{err}");
    let owner = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer(ANVIL_KEY_0)))
        .connect_http(anvil.url.parse().unwrap());
    assert!(
        owner
            .send_transaction(set)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
            .status()
    );
    node_chain(&anvil, &db, ANVIL_KEY_1, None, Some(chain.contract()))
        .await
        .unwrap();

    // A wrong chain id is a clear start-up error.
    let err = node_chain(&anvil, &db, ANVIL_KEY_0, Some(5), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("chain id 31337"), "{err}");
    let _ = Arc::new(());
}
