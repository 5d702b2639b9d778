-- Several replicas on one database (src/cluster.rs, and the login limits of src/accounts.rs).
-- Expand only: the previous release ignores these tables, so it keeps working beside this one
-- during a rolling update. Times are Unix milliseconds on the database's clock (bal_now_ms),
-- never a replica's.

-- The live replicas: each refreshes its row (heartbeat); a row past expires_at is a dead one.
CREATE TABLE replicas (
    id              TEXT PRIMARY KEY,
    version         TEXT NOT NULL,
    embedded_broker BOOLEAN NOT NULL,
    embedded_chain  BOOLEAN NOT NULL,
    started_at      BIGINT NOT NULL,
    seen_at         BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

-- Leases: one holder at a time per name until expires_at. epoch grows each time the lease
-- changes hands or lapses, so that a fence (holder, epoch) taken before never matches again.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Failed logins, one row per failure and key ("user:<claimed name>", "addr:<client address>"),
-- so that the login limits count across replicas. Rows older than the window are deleted as
-- new failures of the same key come in; a successful login deletes its username's.
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at  BIGINT NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures (key, at);

-- The sealed broker password last given to the external Mosquitto per user, written by the
-- holder of the broker lease: a new holder tells a changed password (and ends that user's
-- sessions on the broker) even when the change was made while another replica held it.
CREATE TABLE broker_pushed (
    username TEXT PRIMARY KEY,
    sealed   TEXT NOT NULL
);
