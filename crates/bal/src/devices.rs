//! Simulated devices: MQTT clients that publish a reading on a schedule, as the Platone field
//! devices did. Used by `bal demo` to show data flowing, and by `bal bench` as the load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

/// What one simulated device does.
#[derive(Clone)]
pub struct DeviceSpec {
    pub broker: SocketAddr,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub topic: String,
    pub period: Duration,
    pub qos: QoS,
    /// Builds the n-th payload.
    pub payload: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    /// The device name it takes set points for (`setpoints/<username>/<name>`), if any.
    pub setpoints: Option<String>,
}

/// Counts shared by many devices.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    /// QoS 1 messages the broker acknowledged (committed, for the BAL).
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    /// CONNACKs received (reconnections included).
    pub connected: AtomicU64,
    /// Devices subscribed to their set points.
    pub subscribed: AtomicU64,
    /// Set points answered `applied` / `rejected`.
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
}

/// Runs a device until the task is aborted; reconnects after errors.
pub fn spawn(spec: DeviceSpec, counters: Arc<Counters>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut options = MqttOptions::new(
            &spec.client_id,
            spec.broker.ip().to_string(),
            spec.broker.port(),
        );
        options.set_credentials(&spec.username, &spec.password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        // A device that takes set points keeps its session: what is sent while it is away
        // waits for it.
        options.set_clean_session(spec.setpoints.is_none());
        let (client, mut events) = AsyncClient::new(options, 1000);
        let acks = counters.clone();
        let commands = spec
            .setpoints
            .as_ref()
            .map(|device| format!("setpoints/{}/{device}", spec.username));
        let answers = client.clone();
        let poller = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acks.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks.subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        acks.connected.fetch_add(1, Ordering::Relaxed);
                        if let Some(topic) = &commands {
                            let _ = answers.try_subscribe(topic, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if commands.is_some() => {
                        answer_setpoint(&answers, &p.topic, &p.payload, &acks);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        acks.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "simulated device: connection error");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let mut tick = tokio::time::interval(spec.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u64;
        loop {
            tick.tick().await;
            let payload = (spec.payload)(n);
            if client
                .publish(&spec.topic, spec.qos, false, payload)
                .await
                .is_err()
            {
                break;
            }
            counters.published.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        poller.abort();
    })
}

/// Answers a set point as a simple inverter would: `received`, then `applied`, or `rejected`
/// when a value is negative (it cannot export less than nothing). On `<topic>/ack`, with the
/// id from the payload (MQTT 3.1.1 has no response topic). Never blocks the event loop.
fn answer_setpoint(client: &AsyncClient, topic: &str, payload: &[u8], counters: &Counters) {
    let Ok(command) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let Some(id) = command["id"].as_i64() else {
        return;
    };
    let negative = command["values"]
        .as_object()
        .is_some_and(|v| v.values().any(|x| x.as_f64().is_some_and(|x| x < 0.0)));
    let ack = format!("{topic}/ack");
    let send = |body: serde_json::Value| {
        let _ = client.try_publish(&ack, QoS::AtLeastOnce, false, body.to_string());
    };
    send(serde_json::json!({"id": id, "status": "received"}));
    if negative {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        send(
            serde_json::json!({"id": id, "status": "rejected", "reason": "negative values are not accepted"}),
        );
    } else {
        counters.applied.fetch_add(1, Ordering::Relaxed);
        send(serde_json::json!({"id": id, "status": "applied", "values": command["values"]}));
    }
}

/// A JSON reading of active and reactive power and voltage, varying smoothly.
pub fn power_reading(seed: f64) -> Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> {
    Arc::new(move |n| {
        let t = n as f64 / 10.0 + seed;
        let ts = chrono::Utc::now().timestamp_millis();
        format!(
            r#"{{"ts":{ts},"p_kw":{:.3},"q_kvar":{:.3},"v":{:.2}}}"#,
            3.0 + 1.5 * t.sin(),
            0.4 * (t * 0.7).cos(),
            230.0 + 2.0 * (t * 0.3).sin()
        )
        .into_bytes()
    })
}

/// The Platone PMU's tab-separated line: amplitude, phase, frequency, PPS tag, UTC µs.
pub fn pmu_line() -> Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> {
    Arc::new(|n| {
        let t = n as f64 / 10.0;
        let us = chrono::Utc::now().timestamp_micros();
        format!(
            "{:.3}\t{:.3}\t{:.4}\t{}\t{us}",
            230.0 + 0.8 * (t * 0.5).sin(),
            (t * 12.0) % 360.0 - 180.0,
            50.0 + 0.02 * (t * 0.2).sin(),
            n % 10
        )
        .into_bytes()
    })
}
