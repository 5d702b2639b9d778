//! Ingest from Mosquitto: a persistent MQTT 5 session subscribed at QoS 1 to `platone/#`, or to
//! the shared subscription `$share/bal/platone/#` when several BALs split the load
//! (`broker.shared_ingest`), acknowledging each message only once it is committed.
//!
//! - A BAL alone subscribes plainly: Mosquitto 2.0 restores plain subscriptions from its
//!   persistence file after a restart but not shared ones (tested: 61 of 200 readings lost on a
//!   SIGTERM restart with the shared one, none with the plain one).
//! - Several BAL replicas join the same share group and split the load.
//! - The session outlives the BAL (clean start off, a long session expiry): what arrives while
//!   the BAL is down is queued by Mosquitto and delivered on reconnect; what was delivered but
//!   not acknowledged is delivered again with DUP set, and the SCD recognises a redelivery of a
//!   committed message by its origin (this session's client id and the packet id).
//! - A message that can never be stored (not a `platone/<producer>` topic, over the payload
//!   limit) is acknowledged and logged, so it cannot block the queue.

use std::time::Duration;

use bal_core::measurement::mqtt_origin;
use bal_core::{NewMeasurement, Topic};
use bal_metrics::{Refusal, Source};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event};

use super::connection::BrokerConnection;
use crate::ingest::Ingest;

/// The shared subscription every BAL replica joins.
pub const SHARED_FILTER: &str = "$share/bal/platone/#";

/// The plain subscription of a BAL that runs alone: Mosquitto restores it after a restart.
pub const FILTER: &str = "platone/#";

/// How long Mosquitto keeps the session (and queues for it) while the BAL is away: a week.
const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// Messages in flight towards the BAL at once; group commit turns them into few transactions.
const RECEIVE_MAXIMUM: u16 = 4096;

/// How soon the ingest session tries the broker again after losing it, doubling up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Runs until aborted.
pub async fn run(
    conn: BrokerConnection,
    client_id: String,
    filter: &'static str,
    ingest: Ingest,
    max_payload: usize,
) {
    let mut options = conn.options(&client_id);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
        .set_manual_acks(true)
        .set_receive_maximum(Some(RECEIVE_MAXIMUM));
    let (client, mut events) = AsyncClient::new(options, 1024);
    let mut failures = 0u32;
    // Mosquitto 2.0 does not restore shared subscriptions from its persistence file (plain ones
    // it does): after a broker restart, what devices publish before this session subscribes
    // again has no subscriber and is dropped, although the broker acknowledged it. So the
    // first retries come fast, and the subscription is renewed on every connection.
    let mut retry = RETRY_FIRST;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                retry = RETRY_FIRST;
                tracing::info!(
                    client_id,
                    session_present = ack.session_present,
                    "ingest connected to the broker"
                );
                if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                    tracing::error!(error = %e, "ingest cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                if !s
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                {
                    tracing::error!(
                        filter,
                        "the broker refused the ingest subscription: give broker.admin_username's \
                         role subscribePattern {filter} (deploy/mosquitto/bootstrap.sh does)"
                    );
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let client = client.clone();
                let ingest = ingest.clone();
                let origin_id = client_id.clone();
                tokio::spawn(async move {
                    if !store(&ingest, &origin_id, &p, max_payload).await {
                        return;
                    }
                    if let Err(e) = client.ack(&p).await {
                        tracing::warn!(error = %e, "ingest acknowledgement not sent; the broker will redeliver");
                    }
                });
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::error!(error = %e, broker = conn.address(), "ingest lost the broker; retrying");
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Commits one message, retrying while the database fails. `true` when the message may be
/// acknowledged (committed, or never storable); `false` at shutdown, leaving it to be
/// redelivered.
async fn store(ingest: &Ingest, client_id: &str, p: &Publish, max_payload: usize) -> bool {
    let topic = String::from_utf8_lossy(&p.topic);
    let Ok(topic) = Topic::parse(&topic) else {
        tracing::warn!(%topic, "dropped a message outside platone/<producer>");
        ingest
            .metrics()
            .measurement_refused(Source::Mqtt, Refusal::InvalidTopic, 1);
        return true;
    };
    if p.payload.len() > max_payload {
        tracing::warn!(%topic, size = p.payload.len(), "dropped a message over ingest.max_payload_bytes");
        ingest
            .metrics()
            .measurement_refused(Source::Mqtt, Refusal::TooLarge, 1);
        return true;
    }
    let mut m = NewMeasurement::new(topic, p.payload.to_vec());
    if p.qos != QoS::AtMostOnce {
        m = m.with_origin(mqtt_origin(client_id, p.pkid), p.dup);
    }
    let mut delay = Duration::from_millis(100);
    loop {
        match ingest.submit(m.clone()).await {
            Ok(_) => return true,
            Err(crate::ingest::IngestError::Closed) => return false,
            Err(e) => {
                tracing::error!(error = %e, "storing a broker message failed; retrying");
                ingest
                    .metrics()
                    .measurement_refused(Source::Mqtt, Refusal::NotStored, 1);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Ends the persistent ingest session `client_id` for good: a replica removed from the cluster
/// leaves a session that Mosquitto 2.0 keeps handing its share of `$share/bal/...` to (it does
/// not move a dead member's share to the others, mosquitto#2662). Connecting once with a clean
/// start and no session expiry makes Mosquitto drop it and its queue. Run it only once that
/// replica is stopped for good: whatever was queued for it is dropped with the session.
pub async fn retire(conn: &BrokerConnection, client_id: &str) -> anyhow::Result<()> {
    let mut options = conn.options(client_id);
    options
        .set_clean_start(true)
        .set_session_expiry_interval(None);
    let (client, mut events) = AsyncClient::new(options, 10);
    let wait = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.disconnect().await;
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
    });
    match wait.await {
        Ok(result) => result.map_err(|e| {
            anyhow::anyhow!(
                "cannot end session {client_id:?} at {}: {e}",
                conn.address()
            )
        }),
        Err(_) => anyhow::bail!("{} did not answer within 15 s", conn.address()),
    }
}
