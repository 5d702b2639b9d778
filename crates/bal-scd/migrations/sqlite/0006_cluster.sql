-- The replica registry and leases (src/cluster.rs), as on PostgreSQL. On SQLite every replica
-- is on one machine, but the rules (one embedded broker per database, one anchoring process)
-- are the same. Times are Unix milliseconds.
CREATE TABLE replicas (
    id              TEXT PRIMARY KEY,
    version         TEXT NOT NULL,
    embedded_broker INTEGER NOT NULL,
    embedded_chain  INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    seen_at         INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- Failed logins, one row per failure and key ("user:<claimed name>", "addr:<client address>"),
-- so that the login limits count across replicas. Rows older than the window are deleted as
-- new failures of the same key come in; a successful login deletes its username's.
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at  INTEGER NOT NULL
) STRICT;
CREATE INDEX login_failures_by_key ON login_failures (key, at);

-- The sealed broker password last given to the external Mosquitto per user, written by the
-- holder of the broker lease: a new holder tells a changed password (and ends that user's
-- sessions on the broker) even when the change was made while another replica held it.
CREATE TABLE broker_pushed (
    username TEXT PRIMARY KEY,
    sealed   TEXT NOT NULL
) STRICT;
