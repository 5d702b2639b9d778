//! The `[mqtt.cluster]` settings: this replica as one node of an MQTT cluster of embedded
//! brokers (see `bal_mqtt::cluster`). Unset, the embedded broker is a single node.

use std::net::{IpAddr, SocketAddr};

use bal_mqtt::{ClusterConfig, Peer};
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttClusterSettings {
    /// This node's id, an integer >= 1, distinct per node.
    pub node_id: Option<u64>,
    /// Instead of `node_id`: a StatefulSet pod's index (0, 1, ...), from the pod's
    /// `apps.kubernetes.io/pod-index` label; the node id is the index + 1.
    pub pod_index: Option<u64>,
    /// The node-to-node address (plaintext gRPC: a private address only).
    #[serde(with = "crate::settings::optional_address")]
    pub listen: Option<SocketAddr>,
    /// Every node, this one included, as `ID@HOST:PORT`; in the environment comma-separated.
    #[serde(deserialize_with = "list_or_commas")]
    pub peers: Vec<String>,
    /// A public `listen` address is refused unless this is true.
    pub allow_public: bool,
}

/// A list, or one string of comma-separated items (as an environment variable gives it).
fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        One(String),
    }
    Ok(match Items::deserialize(d)? {
        Items::List(v) => v,
        Items::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Loopback, private (RFC 1918, RFC 4193), link-local or shared (RFC 6598) addresses: not
/// reachable from the internet. The unspecified address binds every interface; in a pod that
/// is the pod network, which the chart's NetworkPolicy closes; elsewhere it is the operator's
/// choice, and the README says to bind a private address.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

impl MqttClusterSettings {
    /// Whether any cluster setting is given.
    fn is_set(&self) -> bool {
        self.node_id.is_some()
            || self.pod_index.is_some()
            || self.listen.is_some()
            || !self.peers.is_empty()
    }

    /// The broker's cluster configuration; `None` for a single node. `embedded` says whether
    /// this process runs the embedded broker (a cluster needs it).
    pub fn config(&self, embedded: bool) -> anyhow::Result<Option<ClusterConfig>> {
        if !self.is_set() {
            return Ok(None);
        }
        anyhow::ensure!(
            embedded,
            "mqtt.cluster.* makes the embedded broker a cluster node: it needs \
             broker.kind = \"embedded\""
        );
        let node_id = match (self.node_id, self.pod_index) {
            (Some(id), _) => id,
            (None, Some(index)) => index + 1,
            (None, None) => anyhow::bail!(
                "mqtt.cluster.node_id (BAL_MQTT__CLUSTER__NODE_ID) is required in a cluster: an \
                 integer >= 1, distinct per node"
            ),
        };
        anyhow::ensure!(
            node_id >= 1,
            "mqtt.cluster.node_id must be an integer >= 1, not {node_id}"
        );
        let listen = self.listen.ok_or_else(|| {
            anyhow::anyhow!(
                "mqtt.cluster.listen (BAL_MQTT__CLUSTER__LISTEN) is required in a cluster: the \
                 node-to-node address, e.g. 10.0.0.5:5363"
            )
        })?;
        anyhow::ensure!(
            is_private(listen.ip()) || self.allow_public,
            "mqtt.cluster.listen {listen} is a public address, and the node-to-node port is \
             plaintext and unauthenticated: bind a private address (the pod network, a VPN) or, \
             behind a firewall of your own, set mqtt.cluster.allow_public = true"
        );
        let peers = self
            .peers
            .iter()
            .map(|p| Peer::parse(p).map_err(|e| anyhow::anyhow!("mqtt.cluster.peers: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            !peers.is_empty(),
            "mqtt.cluster.peers (BAL_MQTT__CLUSTER__PEERS) is required in a cluster: every node \
             as ID@HOST:PORT, comma-separated"
        );
        let config = ClusterConfig {
            node_id,
            listen,
            peers,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(node_id: u64, listen: &str, peers: &str) -> MqttClusterSettings {
        MqttClusterSettings {
            node_id: Some(node_id),
            listen: Some(listen.parse().unwrap()),
            peers: peers.split(',').map(str::to_owned).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn unset_is_a_single_node() {
        assert_eq!(MqttClusterSettings::default().config(true).unwrap(), None);
        assert_eq!(MqttClusterSettings::default().config(false).unwrap(), None);
    }

    #[test]
    fn a_node_needs_its_id_a_private_address_and_its_peers() {
        let ok = settings(1, "10.1.2.3:5363", "1@bal-0:5363,2@bal-1:5363");
        assert_eq!(ok.config(true).unwrap().unwrap().node_id, 1);
        let e = ok.config(false).unwrap_err().to_string();
        assert!(e.contains("broker.kind"), "{e}");

        let mut from_pod = ok.clone();
        from_pod.node_id = None;
        from_pod.pod_index = Some(1);
        assert_eq!(from_pod.config(true).unwrap().unwrap().node_id, 2);

        for (case, want) in [
            (
                settings(1, "203.0.113.7:5363", "1@a:1,2@b:1"),
                "public address",
            ),
            (settings(0, "10.0.0.1:5363", "1@a:1,2@b:1"), ">= 1"),
            (settings(3, "10.0.0.1:5363", "1@a:1,2@b:1"), "node_id 3"),
            (settings(1, "10.0.0.1:5363", "1@a:1,b:1"), "ID@HOST:PORT"),
        ] {
            let e = case.config(true).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
        let mut public = settings(1, "203.0.113.7:5363", "1@a:1,2@b:1");
        public.allow_public = true;
        assert!(public.config(true).is_ok());
        for private in [
            "127.0.0.1:1",
            "0.0.0.0:1",
            "192.168.1.1:1",
            "100.64.0.1:1",
            "[fd00::1]:1",
        ] {
            assert!(
                is_private(private.parse::<SocketAddr>().unwrap().ip()),
                "{private}"
            );
        }
        let mut missing = MqttClusterSettings {
            node_id: Some(1),
            ..Default::default()
        };
        let e = missing.config(true).unwrap_err().to_string();
        assert!(e.contains("mqtt.cluster.listen"), "{e}");
        missing.listen = Some("127.0.0.1:1".parse().unwrap());
        let e = missing.config(true).unwrap_err().to_string();
        assert!(e.contains("mqtt.cluster.peers"), "{e}");
    }
}
