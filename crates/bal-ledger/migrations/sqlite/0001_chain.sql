-- The embedded chain's tables, owned by bal-ledger and migrated by it (its own history,
-- `_bal_ledger_migrations`). Databases made before 2026-12 got these tables from the SCD's
-- first migrations, hence IF NOT EXISTS: both kinds of database end with the same tables.
-- The embedded chain (bal-ledger): blocks, transactions with their receipts, logs, and the
-- world state, written block by block in one transaction so that a restart resumes exactly at
-- the last block. Headers, transactions and receipts are kept in their Ethereum encodings
-- (RLP / EIP-2718), so hashes served after a restart are the hashes of the same bytes.
CREATE TABLE IF NOT EXISTS chain_blocks (
    number    INTEGER PRIMARY KEY,
    hash      BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    timestamp INTEGER NOT NULL,
    header    BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS chain_transactions (
    hash         BLOB PRIMARY KEY CHECK (length(hash) = 32),
    block_number INTEGER NOT NULL REFERENCES chain_blocks (number),
    tx_index     INTEGER NOT NULL,
    sender       BLOB NOT NULL,
    raw          BLOB NOT NULL,
    receipt      BLOB NOT NULL,
    gas_used     INTEGER NOT NULL,
    contract_address BLOB,
    UNIQUE (block_number, tx_index)
) STRICT;
CREATE TABLE IF NOT EXISTS chain_logs (
    block_number INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    tx_index     INTEGER NOT NULL,
    tx_hash      BLOB NOT NULL,
    address      BLOB NOT NULL,
    topic0       BLOB,
    topic1       BLOB,
    topic2       BLOB,
    topic3       BLOB,
    data         BLOB NOT NULL,
    PRIMARY KEY (block_number, log_index)
) STRICT;
CREATE INDEX IF NOT EXISTS chain_logs_by_topic1 ON chain_logs (topic1);
CREATE TABLE IF NOT EXISTS chain_accounts (
    address BLOB PRIMARY KEY CHECK (length(address) = 20),
    nonce   INTEGER NOT NULL,
    balance BLOB NOT NULL,
    code    BLOB
) STRICT;
CREATE TABLE IF NOT EXISTS chain_storage (
    address BLOB NOT NULL,
    slot    BLOB NOT NULL,
    value   BLOB NOT NULL,
    PRIMARY KEY (address, slot)
) STRICT;
