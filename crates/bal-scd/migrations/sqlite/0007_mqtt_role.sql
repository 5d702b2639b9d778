-- As on PostgreSQL (postgres/0003_mqtt_role.sql): how each replica serves MQTT
-- (src/cluster.rs, `MqttRole`): "embedded" (alone on the database), "cluster:<node
-- id>:<membership>" (one node of an embedded MQTT cluster), "mosquitto" or "mosquitto-shared"
-- (ingest from an external Mosquitto, plain or shared subscription). Nullable and added only:
-- the previous release keeps writing rows without it (read from embedded_broker then).
ALTER TABLE replicas ADD COLUMN mqtt TEXT;
