-- Where each measurement came from: a 64-bit digest of the sender's session and packet id
-- (see bal_core::measurement::mqtt_origin), so that a redelivery (an MQTT DUP publish of a
-- message already committed) is recognised and stored once. Not unique: packet ids are reused;
-- a redelivery matches the producer's latest recent row with the same origin and payload hash.
-- No index of its own: redeliveries are rare and recent, so they are found among the
-- producer's latest rows through measurements_by_producer_time, while an index on a random
-- 64-bit value would cost a random B-tree write for every QoS 1 message (it halved ingest
-- throughput in `bal bench`).
ALTER TABLE measurements ADD COLUMN origin INTEGER;
