//! Set points through Mosquitto: a client of the BAL's own (the dynsec admin, whose role
//! [`super::plan`] gives `publishClientSend setpoints/+/+`) publishes them and takes the
//! devices' answers from `setpoints/+/+/ack`. Dynsec lets only a device's producer publish on
//! its ack topics (`publishClientSend setpoints/<producer>/+/ack`), so the topic names the
//! producer truthfully.
//!
//! The answers' session is persistent and acknowledged after the answer is recorded, as ingest
//! is: an answer sent while the BAL was away, or whose write failed, comes again. With several
//! replicas the answers are shared among them (`$share/bal/...`), and two answers of one device
//! may then be recorded by two replicas out of order: a `received` that arrives after `applied`
//! is not recorded (the final state is right; the step is missing). Mosquitto shows the BAL no
//! device's PUBACK, so set points go from `sent` straight to the device's answer.

use std::time::Duration;

use async_trait::async_trait;
use bal_core::setpoint::{ack_topic, command_topic, delivery_payload, parse_ack_topic};
use bal_scd::{Setpoint, SharedStore};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event};

use super::connection::BrokerConnection;
use crate::setpoints::{AnswerOutcome, SetpointLink, take_answer};

/// Answers, for a BAL alone (Mosquitto restores plain subscriptions after a restart).
pub const ANSWERS: &str = "setpoints/+/+/ack";
/// Answers shared among replicas.
pub const SHARED_ANSWERS: &str = "$share/bal/setpoints/+/+/ack";

/// How long Mosquitto keeps the answers' session while the BAL is away: a day.
const SESSION_EXPIRY_SECS: u32 = 24 * 3600;

/// Publishes set points through Mosquitto.
pub struct MosquittoLink {
    client: AsyncClient,
}

#[async_trait]
impl SetpointLink for MosquittoLink {
    async fn publish(&self, s: &Setpoint) -> anyhow::Result<()> {
        let left = (s.valid_until - chrono::Utc::now()).num_seconds();
        if left <= 0 {
            return Ok(());
        }
        let expiry = u32::try_from(left).unwrap_or(u32::MAX);
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(expiry),
            response_topic: Some(ack_topic(&s.producer, &s.device)),
            correlation_data: Some(s.id.to_string().into()),
            content_type: Some("application/json".into()),
            ..PublishProperties::default()
        };
        let payload = delivery_payload(s.id, &s.values, s.valid_until, s.seq);
        // Never waits: while the broker is away the client's queue fills, and the sender (and
        // its expiry sweep) must go on; a set point not queued here is sent at its next retry.
        self.client.try_publish_with_properties(
            command_topic(&s.producer, &s.device),
            QoS::AtLeastOnce,
            false,
            payload,
            properties,
        )?;
        Ok(())
    }
}

/// Connects the set point client and starts taking answers; runs until aborted.
pub fn start(
    conn: BrokerConnection,
    client_id: String,
    shared: bool,
    store: SharedStore,
) -> (MosquittoLink, tokio::task::JoinHandle<()>) {
    let mut options = conn.options(&client_id);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
        .set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(options, 1024);
    let filter = if shared { SHARED_ANSWERS } else { ANSWERS };
    let link = MosquittoLink {
        client: client.clone(),
    };
    // Answers are recorded one after another, in the order they arrive: a device's `received`
    // then `applied` must not be recorded the other way round (the second would be refused).
    let (answers, mut queue) =
        tokio::sync::mpsc::unbounded_channel::<rumqttc::v5::mqttbytes::v5::Publish>();
    let recorder = {
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(p) = queue.recv().await {
                // A database that fails is tried again, in order, as ingest does: an answer
                // left unacknowledged would hold one of Mosquitto's in-flight slots until a
                // reconnect.
                let mut wait = Duration::from_millis(100);
                while !record(&store, &p).await {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                let _ = client.ack(&p).await;
            }
        })
    };
    let task = tokio::spawn(async move {
        let _recorder = AbortOnDrop(recorder);
        let mut failures = 0u32;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                        tracing::error!(error = %e, "set point answers: cannot subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = answers.send(p);
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::error!(error = %e, "set point client lost the broker; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    (link, task)
}

/// Records one answer; `true` when it may be acknowledged (recorded, or never recordable).
async fn record(store: &SharedStore, p: &rumqttc::v5::mqttbytes::v5::Publish) -> bool {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let Some((producer, device)) = parse_ack_topic(&topic) else {
        return true;
    };
    match take_answer(&**store, &producer, &device, &p.payload).await {
        Ok(AnswerOutcome::Invalid) => {
            tracing::warn!(%topic, "not a set point answer; dropped");
            true
        }
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e.report(), "set point answer not recorded; retrying");
            false
        }
    }
}

/// Stops the recorder with the client's task.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
