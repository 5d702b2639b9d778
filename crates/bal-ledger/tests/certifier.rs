//! The certifier: batches, proofs, and resuming after a crash or an outage.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::{Address, B256, Bytes};
use async_trait::async_trait;
use bal_core::Role;
use bal_core::merkle::MerkleTree;
use bal_core::proof::Outcome;
use bal_ledger::certifier::{CertifierConfig, batch_id};
use bal_ledger::proofs::{ProofState, Prover, check_with_ledger};
use bal_ledger::{Anchor, Certifier, Ledger, LedgerError, LedgerResult, SharedLedger};
use bal_scd::{BatchKey, ItemKind, NewBatch, SharedStore};
use support::*;

async fn setup() -> (Db, SharedLedger) {
    let db = db().await;
    user(&db.store, "prod1", Role::Producer).await;
    user(&db.store, "cons1", Role::Consumer).await;
    let chain = embedded_chain(&db.store, &db.database.url).await;
    (db, Arc::new(chain))
}

fn certifier(store: &SharedStore, ledger: &SharedLedger, max_batch: u32) -> Certifier {
    Certifier::new(
        store.clone(),
        ledger.clone(),
        CertifierConfig {
            max_batch,
            ..CertifierConfig::default()
        },
        "replica-test",
    )
}

#[tokio::test]
async fn measurements_and_grant_decisions_are_certified_once_with_proofs_that_verify() {
    let (db, ledger) = setup().await;
    let ids = measurements(&db.store, "prod1", 10).await;
    grant(&db.store, "cons1", "prod1").await;
    let c = certifier(&db.store, &ledger, 50_000);

    let batches = c.round().await.unwrap();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    // 10 measurements and the request and acceptance of the grant; user creations are not
    // grant decisions.
    assert_eq!((b.leaf_count, b.measurement_count), (12, 10));
    let anchor = b.anchor.unwrap();
    assert_eq!(anchor.contract, ledger.contract());
    assert_eq!(
        ledger.anchored_at(b.root).await.unwrap(),
        anchor.block_number
    );
    assert_eq!(
        db.store
            .batch(BatchKey::Transaction(anchor.tx_hash))
            .await
            .unwrap()
            .unwrap()
            .seq,
        b.seq
    );

    let prover = Prover::new(db.store.clone());
    for &id in &ids {
        let m = db.store.measurement(id).await.unwrap().unwrap();
        let ProofState::Ready(bundle) = prover.measurement(id, Some(&m.payload)).await.unwrap()
        else {
            panic!("measurement {id} has no proof");
        };
        assert_eq!(bundle.transaction, anchor.tx_hash);
        let verdict = bundle.verify_offline(None);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(
            verdict.checks[1].outcome,
            Outcome::Passed,
            "the embedded payload is checked"
        );
        let on_chain = check_with_ledger(&ledger, &bundle).await;
        assert_eq!(on_chain.outcome, Outcome::Passed, "{on_chain:?}");
        assert!(
            ledger
                .verify(bundle.root, &bundle.proof, bundle.leaf)
                .await
                .unwrap()
        );
    }
    // The audit entries' leaves are in the same tree.
    let leaves = db.store.batch_leaves(b.seq).await.unwrap().unwrap();
    let tree = MerkleTree::new(&leaves.leaves).unwrap();
    let audit = db.store.batch_audit_entries(b).await.unwrap();
    assert_eq!(audit.len(), 2);
    for e in &audit {
        let (values, payload) = db.store.audit_leaf(e.id).await.unwrap().unwrap();
        assert!(
            values.topic.starts_with("audit/subscription."),
            "{}",
            values.topic
        );
        assert_eq!(values.payload_hash, alloy_primitives::keccak256(&payload));
        let i = leaves.index_of(ItemKind::Audit, e.id).unwrap();
        assert_eq!(leaves.leaves[i], values.leaf());
        assert!(
            ledger
                .verify(b.root, &tree.proof(i).unwrap(), values.leaf())
                .await
                .unwrap()
        );
    }

    // Nothing new: no batch, no transaction.
    let head = ledger.head().await.unwrap();
    assert!(c.round().await.unwrap().is_empty());
    assert_eq!(ledger.head().await.unwrap(), head);
    // New measurements go in the next batch only.
    let more = measurements(&db.store, "prod1", 3).await;
    let next = c.round().await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].measurement_count, 3);
    // The new batch starts where the last one ended, and covers only the new rows.
    let first = db
        .store
        .batch_of(ItemKind::Measurement, ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next[0].measurements.after, first.measurements.upto);
    assert_eq!(
        db.store
            .batch_of(ItemKind::Measurement, more[0])
            .await
            .unwrap()
            .unwrap()
            .seq,
        next[0].seq
    );
    assert_eq!(
        db.store
            .batch_of(ItemKind::Measurement, ids[9])
            .await
            .unwrap()
            .unwrap()
            .seq,
        b.seq
    );
    let status = db.store.certification_status().await.unwrap();
    assert_eq!(status.unbatched_measurements, 0);
    assert_eq!(status.certified_measurements, 13);
}

#[tokio::test]
async fn batches_hold_at_most_max_batch_leaves() {
    let (db, ledger) = setup().await;
    measurements(&db.store, "prod1", 10).await;
    let batches = certifier(&db.store, &ledger, 4).round().await.unwrap();
    let sizes: Vec<u32> = batches.iter().map(|b| b.leaf_count).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert!(batches.iter().all(|b| b.anchor.is_some()));
}

#[tokio::test]
async fn a_measurement_is_pending_until_its_batch_is_anchored() {
    let (db, ledger) = setup().await;
    let ids = measurements(&db.store, "prod1", 2).await;
    let prover = Prover::new(db.store.clone());
    assert!(matches!(
        prover.measurement(ids[0], None).await.unwrap(),
        ProofState::Pending
    ));
    assert!(matches!(
        prover.measurement(999, None).await.unwrap(),
        ProofState::Unknown
    ));
    write_batch(&db.store).await;
    assert!(matches!(
        prover.measurement(ids[0], None).await.unwrap(),
        ProofState::Pending
    ));
    certifier(&db.store, &ledger, 100).round().await.unwrap();
    assert!(matches!(
        prover.measurement(ids[0], None).await.unwrap(),
        ProofState::Ready(_)
    ));
}

/// What the certifier writes before it sends the anchor: the state a crash leaves behind.
async fn write_batch(store: &SharedStore) -> bal_scd::Batch {
    let fence = lease(store, "replica-test")
        .await
        .expect("the lease is free");
    write_batch_as(store, &fence).await
}

/// Writes a batch of everything pending under `fence`.
async fn write_batch_as(store: &SharedStore, fence: &bal_scd::Fence) -> bal_scd::Batch {
    let p = store.pending_items(50_000).await.unwrap();
    let leaves: Vec<B256> = p.items.iter().map(|i| i.values.leaf()).collect();
    store
        .create_batch(
            &NewBatch {
                root: MerkleTree::new(&leaves).unwrap().root(),
                measurement_count: p
                    .items
                    .iter()
                    .filter(|i| i.kind == ItemKind::Measurement)
                    .count() as u32,
                items: p.items.iter().map(|i| i.id).collect(),
                leaves,
                measurements: p.measurements,
                audit: p.audit,
                created_at: chrono::Utc::now(),
            },
            fence,
        )
        .await
        .unwrap()
}

/// The certification lease for `holder`, as a certifier takes it.
async fn lease(store: &SharedStore, holder: &str) -> Option<bal_scd::Fence> {
    store
        .acquire_lease(
            bal_scd::CERTIFY_LEASE,
            holder,
            CertifierConfig::default().lease,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_batch_loses_nothing_and_anchors_nothing_twice() {
    let (db, ledger) = setup().await;

    // 1. Crash after the batch was written, before its anchor was sent.
    let first = measurements(&db.store, "prod1", 5).await;
    let b1 = write_batch(&db.store).await;
    // 2. Crash after the anchor went through, before its receipt was recorded.
    measurements(&db.store, "prod1", 4).await;
    let b2 = write_batch(&db.store).await;
    let sent = ledger
        .anchor(b2.root, b2.leaf_count, batch_id(b2.seq))
        .await
        .unwrap();
    // 3. More stored meanwhile, in no batch yet.
    let late = measurements(&db.store, "prod1", 3).await;
    drop(ledger);

    // The restart: a new process opens the same database.
    let store = db.reopen().await;
    let chain = embedded_chain(&store, &db.database.url).await;
    let head_before = chain.head().await.unwrap();
    let ledger: SharedLedger = Arc::new(chain);
    let done = certifier(&store, &ledger, 50_000).round().await.unwrap();
    let seqs: Vec<i64> = done.iter().map(|b| b.seq).collect();
    assert_eq!(seqs, [b1.seq, b2.seq, b2.seq + 1]);
    // b1 and the new batch were sent; b2's anchor was recognised, not sent again.
    assert_eq!(ledger.head().await.unwrap(), head_before + 2);
    assert_eq!(done[1].anchor.unwrap().tx_hash, sent.tx_hash);
    assert_eq!(done[2].measurement_count, late.len() as u32);
    // Every measurement has exactly one batch, and a proof.
    let prover = Prover::new(store.clone());
    for id in first[0]..=*late.last().unwrap() {
        let ProofState::Ready(bundle) = prover.measurement(id, None).await.unwrap() else {
            panic!("measurement {id} is not certified");
        };
        assert!(
            ledger
                .verify(bundle.root, &bundle.proof, bundle.leaf)
                .await
                .unwrap()
        );
    }
    assert!(store.unanchored_batches().await.unwrap().is_empty());
}

/// A chain that is down until told otherwise.
struct Flaky {
    inner: SharedLedger,
    down: AtomicBool,
}

#[async_trait]
impl Ledger for Flaky {
    fn chain_id(&self) -> u64 {
        self.inner.chain_id()
    }
    fn contract(&self) -> Address {
        self.inner.contract()
    }
    fn operator(&self) -> Address {
        self.inner.operator()
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn anchor(&self, root: B256, n: u32, id: B256) -> LedgerResult<Anchor> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable("connection refused".into()));
        }
        self.inner.anchor(root, n, id).await
    }
    async fn call_contract(&self, input: Bytes) -> LedgerResult<Bytes> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable("connection refused".into()));
        }
        self.inner.call_contract(input).await
    }
    async fn verify(&self, root: B256, proof: &[B256], leaf: B256) -> LedgerResult<bool> {
        self.inner.verify(root, proof, leaf).await
    }
    async fn anchor_in_block(&self, root: B256, block: u64) -> LedgerResult<Option<Anchor>> {
        self.inner.anchor_in_block(root, block).await
    }
    async fn head(&self) -> LedgerResult<u64> {
        self.inner.head().await
    }
}

#[tokio::test]
async fn a_chain_outage_pauses_certification_and_it_resumes_after() {
    let (db, real) = setup().await;
    let flaky = Arc::new(Flaky {
        inner: real.clone(),
        down: AtomicBool::new(true),
    });
    let ledger: SharedLedger = flaky.clone();
    let c = certifier(&db.store, &ledger, 50_000);
    let ids = measurements(&db.store, "prod1", 4).await;
    let err = c.round().await.unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert_eq!(db.store.unanchored_batches().await.unwrap().len(), 1);
    // Still down, more data: the pending batch blocks nothing from being stored.
    let more = measurements(&db.store, "prod1", 2).await;
    assert!(c.round().await.is_err());
    // What /metrics reports: four waiting in the unanchored batch, two in none yet.
    let backlog = db.store.certification_backlog().await.unwrap();
    assert_eq!(
        (backlog.unbatched_measurements, backlog.pending_measurements),
        (2, 4)
    );
    flaky.down.store(false, Ordering::SeqCst);
    let done = c.round().await.unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(
        db.store.certification_backlog().await.unwrap(),
        bal_scd::CertificationBacklog::default()
    );
    assert_eq!(done.iter().map(|b| b.measurement_count).sum::<u32>(), 6);
    let prover = Prover::new(db.store.clone());
    for id in ids.iter().chain(&more) {
        assert!(matches!(
            prover.measurement(*id, None).await.unwrap(),
            ProofState::Ready(_)
        ));
    }
    assert!(c.health().lock().unwrap().batches_anchored >= 2);
}

fn replica_certifier(
    store: &SharedStore,
    ledger: &SharedLedger,
    holder: &str,
    lease: std::time::Duration,
) -> Certifier {
    Certifier::new(
        store.clone(),
        ledger.clone(),
        CertifierConfig {
            lease,
            ..CertifierConfig::default()
        },
        holder,
    )
}

#[tokio::test]
async fn one_replica_anchors_and_another_takes_over_when_its_lease_lapses() {
    let (db, ledger) = setup().await;
    let lease = std::time::Duration::from_millis(400);
    let r1 = replica_certifier(&db.store, &ledger, "bal-1", lease);
    let r2 = replica_certifier(&db.store, &ledger, "bal-2", lease);
    let first = measurements(&db.store, "prod1", 10).await;
    assert_eq!(r1.round().await.unwrap().len(), 1, "bal-1 takes the lease");
    assert!(r1.health().lock().unwrap().leader);
    measurements(&db.store, "prod1", 5).await;
    // bal-2 waits while bal-1's lease runs: nothing anchored twice, nothing by two replicas.
    assert!(r2.round().await.unwrap().is_empty());
    assert!(!r2.health().lock().unwrap().leader);

    // bal-1 dies (it renews no more); once its lease lapses bal-2 takes over and certifies
    // what bal-1 left.
    tokio::time::sleep(lease * 2).await;
    let taken = r2.round().await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].measurement_count, 5);
    assert!(
        r1.round().await.unwrap().is_empty(),
        "bal-1 is a follower now"
    );
    let status = db.store.certification_status().await.unwrap();
    assert_eq!(
        (
            status.unbatched_measurements,
            status.pending_batches,
            status.anchored_batches
        ),
        (0, 0, 2)
    );
    assert!(
        db.store
            .batch_of(ItemKind::Measurement, first[0])
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_ex_holder_cannot_record_its_anchor_and_the_new_holder_recognises_it() {
    let (db, ledger) = setup().await;
    measurements(&db.store, "prod1", 3).await;
    // bal-1 writes a batch and sends its anchor, then loses the lease before recording it.
    let old = lease(&db.store, "bal-1").await.unwrap();
    let batch = write_batch_as(&db.store, &old).await;
    let anchor = ledger
        .anchor(batch.root, batch.leaf_count, batch_id(batch.seq))
        .await
        .unwrap();
    db.store.release_lease(&old).await.unwrap();
    let new = lease(&db.store, "bal-2").await.expect("released");
    let record = bal_scd::AnchorRecord {
        chain_id: ledger.chain_id(),
        contract: ledger.contract(),
        tx_hash: anchor.tx_hash,
        block_number: anchor.block_number,
        block_time: anchor.block_time,
        gas_used: anchor.gas_used,
        anchored_at: chrono::Utc::now(),
    };
    let refused = db.store.record_anchor(batch.seq, &record, &old).await;
    assert!(
        matches!(&refused, Err(bal_scd::StoreError::Conflict(m)) if m.contains("no longer held")),
        "{refused:?}"
    );
    assert_eq!(db.store.unanchored_batches().await.unwrap().len(), 1);
    drop(new);

    // bal-2 resumes the batch: the root is on chain already, so it records bal-1's anchor
    // instead of sending the root again.
    let r2 = certifier_as(&db.store, &ledger, "bal-2");
    let settled = r2.round().await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].anchor.unwrap().tx_hash, anchor.tx_hash);
    assert!(db.store.unanchored_batches().await.unwrap().is_empty());
}

fn certifier_as(store: &SharedStore, ledger: &SharedLedger, holder: &str) -> Certifier {
    replica_certifier(store, ledger, holder, CertifierConfig::default().lease)
}
