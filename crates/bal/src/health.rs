//! `bal health`: asks this machine's `bal serve` whether it is ready, for a container image's
//! `HEALTHCHECK` (a small base image has no curl). Exit 0 when `/readyz` answers 200, 1
//! otherwise.
//!
//! Over HTTPS the server's certificate is checked against the one this process's settings
//! name (the operator's `http.cert_file`, or the generated one in the data folder), pinned:
//! the probe talks to loopback, where no name in a public certificate would match.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::settings::Settings;

/// How long the probe waits for an answer: well within a `HEALTHCHECK`'s timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The address to ask: `http.listen`, with a wildcard address replaced by loopback.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

pub async fn run(settings: &Settings) -> ExitCode {
    match ask(settings).await {
        Ok((status, body)) => {
            println!("{status} {body}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("not ready: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn ask(settings: &Settings) -> anyhow::Result<(u16, String)> {
    let address = probe_address(settings.http.listen);
    let mut client = reqwest::Client::builder().timeout(TIMEOUT);
    let scheme = if settings.http.tls {
        let cert = match &settings.http.cert_file {
            Some(path) => path.clone(),
            None => settings.data_dir.join("tls").join("server.pem"),
        };
        let pinned = CertificateDer::pem_file_iter(&cert)
            .with_context(|| format!("cannot read the server certificate {}", cert.display()))?
            .next()
            .with_context(|| format!("{} holds no certificate", cert.display()))?
            .with_context(|| format!("{} is not PEM", cert.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pinned, provider }))
            .with_no_client_auth();
        client = client.use_preconfigured_tls(tls);
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{address}/readyz");
    let response = client
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let summary = body
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("no readiness body")
        .to_owned();
    Ok((status, summary))
}

/// Accepts exactly one certificate: the server's own, read from its files.
#[derive(Debug)]
struct Pinned {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one in this process's settings".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_probed_on_loopback() {
        let p = |s: &str| probe_address(s.parse().unwrap()).to_string();
        assert_eq!(p("0.0.0.0:8443"), "127.0.0.1:8443");
        assert_eq!(p("[::]:8443"), "[::1]:8443");
        assert_eq!(p("10.1.2.3:8443"), "10.1.2.3:8443");
    }
}
