-- What this database needs of a binary (see src/schema.rs): the oldest `bal` version that may
-- use it. A migration that an older release could not work beside raises it.
CREATE TABLE bal_schema (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
INSERT INTO bal_schema (key, value) VALUES ('min_binary', '0.1.0');

-- The database's own clock for reception times: the last stamp written, by any process. Each
-- ingest transaction advances it under the write lock to max(last, now), so stamps follow
-- commit order even when the system clock steps back or two processes write.
CREATE TABLE scd_clock (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    last_ms INTEGER NOT NULL
) STRICT;
INSERT INTO scd_clock (id, last_ms) SELECT 1, COALESCE(MAX(received_at), 0) FROM measurements;
