//! How the BAL reaches an external broker: `mqtt://host:port` or `mqtts://host:port`, as the
//! dynsec admin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::v5::MqttOptions;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Largest packet the BAL accepts from the broker.
const MAX_PACKET: u32 = 64 * 1024 * 1024;

/// The external broker and the identity the BAL uses there.
#[derive(Clone)]
pub struct BrokerConnection {
    pub host: String,
    pub port: u16,
    /// Trust for `mqtts://`; `None` for plain MQTT.
    tls: Option<Arc<rustls::ClientConfig>>,
    pub username: String,
    password: String,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BrokerConnection {
    /// Parses `url` (`mqtt://host[:1883]` or `mqtts://host[:8883]`); `ca_file` is the PEM CA
    /// that signed the broker's certificate, required with `mqtts`.
    pub fn new(
        url: &str,
        ca_file: Option<PathBuf>,
        username: String,
        password: String,
    ) -> anyhow::Result<Self> {
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("broker.url {url:?} is not mqtt://HOST:PORT or mqtts://HOST:PORT")
        })?;
        let default_port = match scheme {
            "mqtt" => 1883,
            "mqtts" => 8883,
            other => anyhow::bail!("broker.url: unknown scheme {other:?}; use mqtt:// or mqtts://"),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse()
                    .with_context(|| format!("broker.url: bad port {p:?}"))?,
            ),
            _ => (rest.trim_matches(['[', ']']).to_owned(), default_port),
        };
        anyhow::ensure!(!host.is_empty(), "broker.url {url:?} has no host");
        anyhow::ensure!(
            !username.is_empty(),
            "broker.admin_username (BAL_BROKER__ADMIN_USERNAME) is required with broker.kind = \"mosquitto\""
        );
        anyhow::ensure!(
            !password.is_empty(),
            "broker.admin_password (BAL_BROKER__ADMIN_PASSWORD) is required with broker.kind = \"mosquitto\""
        );
        let tls = match (scheme, ca_file) {
            ("mqtts", Some(ca)) => {
                Some(client_tls(&ca).context("broker.ca_file (BAL_BROKER__CA_FILE)")?)
            }
            ("mqtts", None) => anyhow::bail!(
                "broker.url is mqtts://: set broker.ca_file (BAL_BROKER__CA_FILE) to the CA that \
                 signed the broker's certificate"
            ),
            _ => None,
        };
        if tls.is_none() && !is_loopback(&host) {
            tracing::warn!(
                %host,
                "the broker is reached without TLS on a non-loopback host: passwords cross the network in clear"
            );
        }
        Ok(Self {
            host,
            port,
            tls,
            username,
            password,
        })
    }

    /// MQTT 5 options for a connection as the admin with this client id.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, &self.host, self.port);
        o.set_credentials(&self.username, &self.password);
        o.set_keep_alive(Duration::from_secs(20));
        o.set_connection_timeout(10);
        // rumqttc refuses packets over 10 KiB by default; dynsec listings are larger.
        o.set_max_packet_size(Some(MAX_PACKET));
        if let Some(tls) = &self.tls {
            o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        o
    }

    /// True for `mqtts://`.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A TLS client configuration that trusts only the certificates in the PEM file `ca` (the
/// private CA a BAL deployment generates), with rustls' safe protocol versions. Errors name the
/// file; callers say which setting it came from.
pub fn client_tls(ca: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the CA file {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("the CA file {}", ca.display()))?)
            .with_context(|| {
                format!("the CA file {} holds an unusable certificate", ca.display())
            })?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "the CA file {} holds no certificate",
        ca.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(url: &str) -> anyhow::Result<BrokerConnection> {
        BrokerConnection::new(url, None, "bal-admin".into(), "pw".into())
    }

    #[test]
    fn urls_name_host_and_port_with_defaults() {
        let c = conn("mqtt://127.0.0.1:18830").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 18830));
        assert_eq!(conn("mqtt://broker").unwrap().port, 1883);
        assert_eq!(conn("mqtt://[::1]:1884").unwrap().host, "::1");
        assert!(!format!("{c:?}").contains("pw"), "no password in Debug");
    }

    #[test]
    fn bad_urls_and_missing_settings_are_named() {
        for (url, says) in [
            ("127.0.0.1:1883", "mqtt://"),
            ("http://x", "unknown scheme"),
            ("mqtt://x:port", "bad port"),
            ("mqtts://x", "broker.ca_file"),
        ] {
            let e = conn(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = BrokerConnection::new("mqtt://x", None, String::new(), "pw".into()).unwrap_err();
        assert!(e.to_string().contains("admin_username"));
    }
}
