-- Where each measurement came from (e.g. `mqtt:<client id>:<packet id>`), so that a
-- redelivery (an MQTT DUP publish of a message already committed) is recognised and stored once.
-- Not unique: packet ids are reused; a redelivery matches the latest row with its key and hash.
ALTER TABLE measurements ADD COLUMN dedup_key TEXT;
CREATE INDEX measurements_by_origin ON measurements (producer, dedup_key, id)
    WHERE dedup_key IS NOT NULL;
