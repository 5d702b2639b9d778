-- With broker.kind = "mosquitto" only: the user's MQTT password sealed under the master key
-- (bal_wallet::Sealer), because Mosquitto's Dynamic Security plugin takes passwords only in
-- plaintext and a wiped broker must be rebuilt from the SCD. Written in the same transaction as
-- password_hash, wiped with it when the user is deleted; NULL with the embedded broker.
ALTER TABLE users ADD COLUMN broker_secret TEXT;
