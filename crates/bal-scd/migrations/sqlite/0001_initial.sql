-- The Shared Customer Database, SQLite flavour. Times are Unix milliseconds (UTC) so that the
-- PostgreSQL flavour can keep the same meaning with BIGINT columns.

-- Table 1 of D2.12, plus bookkeeping. Users are never removed: a deleted user keeps its row
-- (without password or key) so that its name, topic and wallet are never reused for someone
-- else while certified data still names them.
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'producer', 'consumer')),
    topic         TEXT UNIQUE,
    wallet        TEXT NOT NULL UNIQUE,
    account       TEXT,
    created_at    INTEGER NOT NULL,
    deleted_at    INTEGER,
    CHECK ((role = 'producer') = (topic IS NOT NULL)),
    CHECK ((deleted_at IS NULL) = (password_hash IS NOT NULL AND account IS NOT NULL))
) STRICT;

-- Bearer tokens, stored as SHA-256 digests so that a database leak yields no usable token.
CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users (username),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_user ON sessions (username);

-- Table 2 of D2.12, plus producer, expires_at and decided_by.
CREATE TABLE subscriptions (
    id                TEXT PRIMARY KEY,
    consumer          TEXT NOT NULL REFERENCES users (username),
    producer          TEXT NOT NULL REFERENCES users (username),
    topic             TEXT NOT NULL,
    status            TEXT NOT NULL
        CHECK (status IN ('requested', 'accepted', 'refused', 'revoked', 'cancelled', 'expired')),
    creation_date     INTEGER NOT NULL,
    modification_date INTEGER NOT NULL,
    expires_at        INTEGER,
    decided_by        TEXT
) STRICT;
-- At most one live request or grant per consumer and topic.
CREATE UNIQUE INDEX subscriptions_one_live ON subscriptions (consumer, topic)
    WHERE status IN ('requested', 'accepted');
CREATE INDEX subscriptions_by_producer ON subscriptions (producer, creation_date);
CREATE INDEX subscriptions_by_consumer ON subscriptions (consumer, creation_date);
CREATE INDEX subscriptions_due ON subscriptions (expires_at)
    WHERE status = 'accepted' AND expires_at IS NOT NULL;

-- Measurements exactly as received: the payload bytes, their keccak256, and for JSON objects
-- the parsed fields (as JSON text) so that numeric values can be queried and charted.
CREATE TABLE measurements (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    producer     TEXT NOT NULL REFERENCES users (username),
    topic        TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    payload      BLOB NOT NULL,
    payload_hash BLOB NOT NULL CHECK (length(payload_hash) = 32),
    fields       TEXT
) STRICT;
CREATE INDEX measurements_by_producer_time ON measurements (producer, received_at, id);

-- Every change to users and grants, append-only: the triggers refuse edits and deletions.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_log_by_object ON audit_log (object, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
