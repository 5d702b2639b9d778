-- Certification (DESIGN.md, "Merkle format"): measurements and the audit entries of grant
-- decisions are certified in batches. One row per batch: one Merkle tree, one anchor
-- transaction.
--
-- A batch covers every measurement with `measurements_after < id <= measurements_upto` and
-- every `subscription.*` audit entry with `audit_after < id <= audit_upto`. SQLite assigns ids
-- under its single write lock, in commit order, so "everything above the last batch's
-- watermark" never skips a row that commits later. The per-item record the issue asks for
-- (batch, leaf index, root, transaction, block) follows from the batch: `items` lists the ids
-- in leaf order (8 bytes each, big-endian; measurements first, then audit entries) and
-- `leaves` their 32-byte leaf hashes, so a proof is rebuilt from one row, without one write per
-- measurement on the ingest path.
CREATE TABLE cert_batches (
    seq               INTEGER PRIMARY KEY,
    root              BLOB NOT NULL UNIQUE CHECK (length(root) = 32),
    leaf_count        INTEGER NOT NULL CHECK (leaf_count > 0),
    measurement_count INTEGER NOT NULL,
    measurements_after INTEGER NOT NULL,
    measurements_upto  INTEGER NOT NULL,
    audit_after       INTEGER NOT NULL,
    audit_upto        INTEGER NOT NULL,
    items             BLOB NOT NULL CHECK (length(items) = 8 * leaf_count),
    leaves            BLOB NOT NULL CHECK (length(leaves) = 32 * leaf_count),
    created_at        INTEGER NOT NULL,
    -- Filled in once the anchor's receipt is in; NULL while the batch is pending.
    chain_id          INTEGER,
    contract          BLOB,
    tx_hash           BLOB UNIQUE,
    block_number      INTEGER,
    block_time        INTEGER,
    gas_used          INTEGER,
    anchored_at       INTEGER,
    CHECK ((tx_hash IS NULL) = (block_number IS NULL))
) STRICT;
CREATE INDEX cert_batches_by_measurement ON cert_batches (measurements_upto, seq);
CREATE INDEX cert_batches_by_audit ON cert_batches (audit_upto, seq);
CREATE INDEX cert_batches_pending ON cert_batches (seq) WHERE tx_hash IS NULL;

-- Remembered per chain: the certification contract deployed on first use.
CREATE TABLE chain_contracts (
    chain_id INTEGER PRIMARY KEY,
    contract BLOB NOT NULL CHECK (length(contract) = 20),
    created_at INTEGER NOT NULL
) STRICT;
