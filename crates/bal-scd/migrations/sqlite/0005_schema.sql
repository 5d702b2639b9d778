-- What this database needs of a binary (see src/schema.rs): the oldest `bal` version that may
-- use it. A migration that an older release could not work beside raises it.
CREATE TABLE bal_schema (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
INSERT INTO bal_schema (key, value) VALUES ('min_binary', '0.1.0');

