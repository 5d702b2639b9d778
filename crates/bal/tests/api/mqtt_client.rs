//! A device or consumer speaking MQTT 3.1.1 or 5 with rumqttc, reduced to the events the tests
//! look at.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as v5p;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

pub use Version::{V5, V311};

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Connected,
    /// The connection was refused or dropped; the text names the reason.
    Closed(String),
    /// One entry per filter: granted or not.
    SubAck(Vec<bool>),
    /// A v5 PUBACK reason (`"Success"`, `"NotAuthorized"`, ...); v3.1.1 PUBACKs are `"Success"`.
    PubAck(String),
    Message(String, Vec<u8>),
}

enum Handle {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub struct Mqtt {
    handle: Handle,
    events: mpsc::UnboundedReceiver<Ev>,
}

pub struct Login<'a> {
    pub port: u16,
    pub client_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub tls_ca: Option<&'a std::path::Path>,
    pub will_topic: Option<&'a str>,
}

impl Mqtt {
    /// Starts connecting; the first event is [`Ev::Connected`] or [`Ev::Closed`].
    pub fn connect(version: Version, login: Login<'_>) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let host = "localhost";
        let handle = match version {
            V311 => {
                let mut o = rumqttc::MqttOptions::new(login.client_id, host, login.port);
                o.set_credentials(login.username, login.password);
                o.set_keep_alive(Duration::from_secs(30));
                if let Some(ca) = login.tls_ca {
                    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                        bal_mqtt::mosquitto::connection::client_tls(ca).unwrap(),
                    )));
                }
                if let Some(t) = login.will_topic {
                    o.set_last_will(rumqttc::LastWill::new(
                        t,
                        "gone",
                        rumqttc::QoS::AtMostOnce,
                        false,
                    ));
                }
                let (client, mut lp) = rumqttc::AsyncClient::new(o, 100);
                tokio::spawn(async move {
                    loop {
                        let ev = match lp.poll().await {
                            Ok(rumqttc::Event::Incoming(p)) => match p {
                                rumqttc::Packet::ConnAck(_) => Ev::Connected,
                                rumqttc::Packet::SubAck(s) => Ev::SubAck(
                                    s.return_codes
                                        .iter()
                                        .map(|c| {
                                            matches!(c, rumqttc::SubscribeReasonCode::Success(_))
                                        })
                                        .collect(),
                                ),
                                rumqttc::Packet::PubAck(_) => Ev::PubAck("Success".into()),
                                rumqttc::Packet::Publish(p) => {
                                    Ev::Message(p.topic.clone(), p.payload.to_vec())
                                }
                                _ => continue,
                            },
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(Ev::Closed(format!("{e:?}")));
                                return;
                            }
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
                Handle::V311(client)
            }
            V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(login.client_id, host, login.port);
                o.set_credentials(login.username, login.password);
                o.set_keep_alive(Duration::from_secs(30));
                if let Some(ca) = login.tls_ca {
                    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                        bal_mqtt::mosquitto::connection::client_tls(ca).unwrap(),
                    )));
                }
                if let Some(t) = login.will_topic {
                    o.set_last_will(v5p::LastWill::new(
                        t,
                        "gone",
                        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                        false,
                        None,
                    ));
                }
                let (client, mut lp) = rumqttc::v5::AsyncClient::new(o, 100);
                tokio::spawn(async move {
                    loop {
                        let ev = match lp.poll().await {
                            Ok(rumqttc::v5::Event::Incoming(p)) => match p {
                                v5p::Packet::ConnAck(_) => Ev::Connected,
                                v5p::Packet::SubAck(s) => Ev::SubAck(
                                    s.return_codes
                                        .iter()
                                        .map(|c| matches!(c, v5p::SubscribeReasonCode::Success(_)))
                                        .collect(),
                                ),
                                v5p::Packet::PubAck(a) => Ev::PubAck(format!("{:?}", a.reason)),
                                v5p::Packet::Publish(p) => Ev::Message(
                                    String::from_utf8_lossy(&p.topic).into_owned(),
                                    p.payload.to_vec(),
                                ),
                                v5p::Packet::Disconnect(d) => {
                                    let _ = tx.send(Ev::Closed(format!("{:?}", d.reason_code)));
                                    return;
                                }
                                _ => continue,
                            },
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(Ev::Closed(format!("{e:?}")));
                                return;
                            }
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
                Handle::V5(client)
            }
        };
        Self { handle, events }
    }

    /// Connects and waits for the CONNACK; panics if refused.
    pub async fn online(version: Version, login: Login<'_>) -> Self {
        let mut c = Self::connect(version, login);
        assert_eq!(c.next().await, Some(Ev::Connected));
        c
    }

    /// The next event within 5 s.
    pub async fn next(&mut self) -> Option<Ev> {
        self.next_within(Duration::from_secs(5)).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Option<Ev> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Skips events until one matches, within 5 s.
    pub async fn until(&mut self, want: impl Fn(&Ev) -> bool) -> Option<Ev> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if want(&ev) => return Some(ev),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    pub async fn subscribe(&self, filter: &str) {
        match &self.handle {
            Handle::V311(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap(),
            Handle::V5(c) => c
                .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap(),
        }
    }

    /// Subscribes and returns whether the broker granted it.
    pub async fn try_subscribe(&mut self, filter: &str) -> bool {
        match self.subscribe_answer(filter).await {
            Some(Ev::SubAck(codes)) => codes == [true],
            other => panic!("no SUBACK for {filter}: {other:?}"),
        }
    }

    /// Subscribes and returns the SUBACK, or how the connection ended instead.
    pub async fn subscribe_answer(&mut self, filter: &str) -> Option<Ev> {
        self.subscribe(filter).await;
        self.until(|e| matches!(e, Ev::SubAck(_) | Ev::Closed(_)))
            .await
    }

    pub async fn publish(&self, topic: &str, qos1: bool, payload: &[u8]) {
        match &self.handle {
            Handle::V311(c) => {
                let q = if qos1 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::AtMostOnce
                };
                c.publish(topic, q, false, payload.to_vec()).await.unwrap()
            }
            Handle::V5(c) => {
                use rumqttc::v5::mqttbytes::QoS;
                let q = if qos1 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                c.publish(topic, q, false, payload.to_vec()).await.unwrap()
            }
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason (or how the connection ended).
    pub async fn publish_acked(&mut self, topic: &str, payload: &[u8]) -> Ev {
        self.publish(topic, true, payload).await;
        self.until(|e| matches!(e, Ev::PubAck(_) | Ev::Closed(_)))
            .await
            .expect("a PUBACK or a disconnect")
    }
}
