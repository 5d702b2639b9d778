//! The control client of Mosquitto's Dynamic Security plugin: JSON commands published on
//! `$CONTROL/dynamic-security/v1`, answered (one reply per command, in order) on
//! `.../v1/response`, matched here by `correlationData`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::connection::BrokerConnection;

const COMMANDS: &str = "$CONTROL/dynamic-security/v1";
const RESPONSES: &str = "$CONTROL/dynamic-security/v1/response";

/// Commands sent in one message: big enough to rebuild a broker quickly, small enough that one
/// reply stays far below any packet limit.
const CHUNK: usize = 100;

/// How long a reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a change of the admin's rights may take to disconnect it.
const KICK_WAIT: Duration = Duration::from_secs(2);

/// One command's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub command: String,
    pub data: Value,
    pub error: Option<String>,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;

/// A live control connection. Reconnects by itself; commands wait until it is ready.
pub struct Dynsec {
    client: AsyncClient,
    pending: Pending,
    next: AtomicU64,
    ready: watch::Receiver<Result<(), String>>,
    task: JoinHandle<()>,
    prefix: String,
}

impl Dynsec {
    /// Connects as the admin and waits until replies can be received. Fails with the broker's
    /// reason (refused login, unreachable) after `wait`.
    pub async fn connect(conn: &BrokerConnection, wait: Duration) -> anyhow::Result<Self> {
        let prefix = format!("bal-control-{:08x}", rand::random::<u32>());
        let (client, mut events) = AsyncClient::new(conn.options(&prefix), 256);
        let pending: Pending = Arc::default();
        let (ready_tx, ready) = watch::channel(Err("not connected yet".to_owned()));
        let task = {
            let client = client.clone();
            let pending = pending.clone();
            tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            // A clean session: subscribe again after every reconnect.
                            if let Err(e) = client.subscribe(RESPONSES, QoS::AtLeastOnce).await {
                                let _ = ready_tx.send(Err(e.to_string()));
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(s))) => {
                            let ok = s
                                .return_codes
                                .iter()
                                .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                            let _ = ready_tx.send(if ok {
                                Ok(())
                            } else {
                                Err(format!(
                                    "the broker refused the admin's subscription to {RESPONSES}: \
                                     is broker.admin_username the dynsec admin?"
                                ))
                            });
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => deliver(&pending, &p.payload),
                        Ok(_) => {}
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            })
        };
        let this = Self {
            client,
            pending,
            next: AtomicU64::new(0),
            ready,
            task,
            prefix,
        };
        this.wait_ready(wait)
            .await
            .with_context(|| format!("cannot use the broker at {}", conn.address()))?;
        Ok(this)
    }

    async fn wait_ready(&self, wait: Duration) -> anyhow::Result<()> {
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(wait, ready.wait_for(Result::is_ok)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let last = self.ready.borrow().clone();
                Err(anyhow::anyhow!(last.err().unwrap_or_default()))
            }
        }
    }

    /// Sends `commands` (each a JSON object with `command`) and returns their replies in order.
    /// A reply may carry an `error`: the caller decides which errors matter.
    pub async fn run(&self, commands: Vec<Value>) -> anyhow::Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(commands.len());
        for chunk in commands.chunks(CHUNK) {
            replies.extend(self.run_chunk(chunk).await?);
        }
        Ok(replies)
    }

    /// Like [`Dynsec::run`], but any error reply fails the whole call.
    pub async fn run_ok(&self, commands: Vec<Value>) -> anyhow::Result<Vec<Reply>> {
        let replies = self.run(commands).await?;
        if let Some(r) = replies.iter().find(|r| r.error.is_some()) {
            anyhow::bail!(
                "dynamic security refused {}: {}",
                r.command,
                r.error.as_deref().unwrap_or_default()
            );
        }
        Ok(replies)
    }

    async fn run_chunk(&self, chunk: &[Value]) -> anyhow::Result<Vec<Reply>> {
        self.wait_ready(REPLY_TIMEOUT).await?;
        let mut waiting = Vec::with_capacity(chunk.len());
        let mut body = Vec::with_capacity(chunk.len());
        for command in chunk {
            let id = format!(
                "{}-{}",
                self.prefix,
                self.next.fetch_add(1, Ordering::Relaxed)
            );
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .expect("pending lock")
                .insert(id.clone(), tx);
            let mut c = command.clone();
            c["correlationData"] = json!(id);
            body.push(c);
            waiting.push((id, rx));
        }
        let payload = serde_json::to_vec(&json!({ "commands": body }))?;
        let sent = self
            .client
            .publish(COMMANDS, QoS::AtLeastOnce, false, payload)
            .await;
        let mut replies = Vec::with_capacity(waiting.len());
        let mut failure = sent.err().map(|e| anyhow::anyhow!("sending commands: {e}"));
        for (id, rx) in waiting {
            if failure.is_none() {
                match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
                    Ok(Ok(reply)) => {
                        replies.push(reply);
                        continue;
                    }
                    _ => failure = Some(anyhow::anyhow!("no reply from dynamic security")),
                }
            }
            self.pending.lock().expect("pending lock").remove(&id);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(replies),
        }
    }

    /// Sends `commands` that change the admin's own rights, after which Mosquitto disconnects
    /// the admin without replying; returns once the control connection is back.
    pub async fn run_changing_admin(&self, commands: Vec<Value>) -> anyhow::Result<()> {
        self.wait_ready(REPLY_TIMEOUT).await?;
        let payload = serde_json::to_vec(&json!({ "commands": commands }))?;
        self.client
            .publish(COMMANDS, QoS::AtLeastOnce, false, payload)
            .await?;
        let mut ready = self.ready.clone();
        // The disconnect, if it comes (a broker that does not kick just carries on).
        let _ = tokio::time::timeout(KICK_WAIT, ready.wait_for(Result::is_err)).await;
        self.wait_ready(REPLY_TIMEOUT).await
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        self.task.abort();
    }
}

impl Drop for Dynsec {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hands each reply in a response message to the command waiting for it.
fn deliver(pending: &Pending, payload: &[u8]) {
    let Ok(message) = serde_json::from_slice::<Value>(payload) else {
        tracing::warn!("unreadable dynamic security response");
        return;
    };
    let Some(responses) = message["responses"].as_array() else {
        return;
    };
    for r in responses {
        let Some(id) = r["correlationData"].as_str() else {
            continue;
        };
        // Replies to other admins' commands are broadcast too: only ours are waited for.
        if let Some(tx) = pending.lock().expect("pending lock").remove(id) {
            let _ = tx.send(Reply {
                command: r["command"].as_str().unwrap_or_default().to_owned(),
                data: r["data"].clone(),
                error: r["error"].as_str().map(str::to_owned),
            });
        }
    }
}
