-- The embedded chain's tables, owned by bal-ledger and migrated by it (its own history,
-- `_bal_ledger_migrations`). Databases made before 2026-12 got these tables from the SCD's
-- first migrations, hence IF NOT EXISTS: both kinds of database end with the same tables.
CREATE TABLE IF NOT EXISTS chain_blocks (
    number    BIGINT PRIMARY KEY,
    hash      BYTEA NOT NULL UNIQUE CHECK (length(hash) = 32),
    timestamp BIGINT NOT NULL,
    header    BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_transactions (
    hash             BYTEA PRIMARY KEY CHECK (length(hash) = 32),
    block_number     BIGINT NOT NULL REFERENCES chain_blocks (number),
    tx_index         BIGINT NOT NULL,
    sender           BYTEA NOT NULL,
    raw              BYTEA NOT NULL,
    receipt          BYTEA NOT NULL,
    gas_used         BIGINT NOT NULL,
    contract_address BYTEA,
    UNIQUE (block_number, tx_index)
);
CREATE TABLE IF NOT EXISTS chain_logs (
    block_number BIGINT NOT NULL,
    log_index    BIGINT NOT NULL,
    tx_index     BIGINT NOT NULL,
    tx_hash      BYTEA NOT NULL,
    address      BYTEA NOT NULL,
    topic0       BYTEA,
    topic1       BYTEA,
    topic2       BYTEA,
    topic3       BYTEA,
    data         BYTEA NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX IF NOT EXISTS chain_logs_by_topic1 ON chain_logs (topic1);
CREATE TABLE IF NOT EXISTS chain_accounts (
    address BYTEA PRIMARY KEY CHECK (length(address) = 20),
    nonce   BIGINT NOT NULL,
    balance BYTEA NOT NULL,
    code    BYTEA
);
CREATE TABLE IF NOT EXISTS chain_storage (
    address BYTEA NOT NULL,
    slot    BYTEA NOT NULL,
    value   BYTEA NOT NULL,
    PRIMARY KEY (address, slot)
);
