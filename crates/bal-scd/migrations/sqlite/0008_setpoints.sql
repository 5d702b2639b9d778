-- Set points (issue 23) and control grants. Added only: a replica of the previous release keeps
-- running on this schema (the rows it writes are data grants, the column's default), but it
-- would read a control grant as a data grant, so the API refuses control grants and set points
-- while one is live (bal-api's `ensure_replicas_know_setpoints`).
--
-- A grant gives `read` (the seed's subscriptions) or `control` (issuing set points to the
-- producer's devices); one live request or grant per consumer, topic and access.
ALTER TABLE subscriptions ADD COLUMN access TEXT NOT NULL DEFAULT 'read'
    CHECK (access IN ('read', 'control'));
DROP INDEX subscriptions_one_live;
CREATE UNIQUE INDEX subscriptions_one_live ON subscriptions (consumer, topic, access)
    WHERE status IN ('requested', 'accepted');

-- One command to one device. Every change of `state` is also an audit entry
-- `setpoint.<state>` on object `setpoint:<id>`, certified like grant decisions. `values_json`
-- is the canonical JSON whose keccak256 is `values_hash` (bal-core's SetpointValues).
-- `next_attempt_at` is when a sender may (re)send it: taking it is claiming it.
CREATE TABLE setpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    issuer          TEXT NOT NULL,
    producer        TEXT NOT NULL REFERENCES users (username),
    device          TEXT NOT NULL,
    values_json     TEXT NOT NULL,
    values_hash     BLOB NOT NULL CHECK (length(values_hash) = 32),
    valid_until     INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered', 'received',
        'applied', 'rejected', 'expired', 'cancelled', 'superseded', 'failed')),
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    signature       TEXT
) STRICT;
CREATE UNIQUE INDEX setpoints_by_device_seq ON setpoints (producer, device, seq);
CREATE INDEX setpoints_by_producer ON setpoints (producer, id);
CREATE INDEX setpoints_by_issuer ON setpoints (issuer, id);
CREATE INDEX setpoints_open ON setpoints (next_attempt_at)
    WHERE state IN ('queued', 'sent', 'delivered', 'received');

-- Each device's last sequence number: it only grows, so a device can refuse replays.
CREATE TABLE setpoint_devices (
    producer TEXT NOT NULL,
    device   TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (producer, device)
) STRICT;
