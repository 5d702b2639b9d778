-- Where each measurement came from: a 64-bit digest of the sender's session and packet id
-- (see bal_core::measurement::mqtt_origin), so that a redelivery (an MQTT DUP publish of a
-- message already committed) is recognised and stored once. Not unique: packet ids are reused;
-- a redelivery matches the producer's latest row with the same origin and payload hash.
-- An integer, not text: this index is written for every QoS 1 message.
ALTER TABLE measurements ADD COLUMN origin INTEGER;
CREATE INDEX measurements_by_origin ON measurements (origin) WHERE origin IS NOT NULL;
