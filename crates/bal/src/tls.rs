//! TLS for the HTTPS listener: the operator's certificate, or a CA and server certificate
//! generated once in `<data_dir>/tls` and reused on every restart, so a client that trusted
//! the CA keeps trusting the server.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate and key come from, and the CA a client should trust.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The generated CA; `None` for an operator-supplied certificate.
    pub ca: Option<PathBuf>,
}

/// The names every generated certificate carries, plus the operator's extra ones.
fn server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Writes a file only its owner may read (keys, generated passwords), and syncs it.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::Duration::from_secs(chrono::Utc::now().timestamp().max(0) as u64);
    params.not_before = now - std::time::Duration::from_secs(24 * 3600);
    params.not_after = now + std::time::Duration::from_secs(days as u64 * 24 * 3600);
}

/// Returns the generated certificate in `dir`, creating the CA and certificate if missing.
pub fn ensure_self_signed(dir: &Path, extra_names: &[String]) -> anyhow::Result<TlsFiles> {
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca: Some(dir.join("ca.pem")),
    };
    let ca_path = files.ca.clone().expect("set above");
    if files.cert.exists() && files.key.exists() && ca_path.exists() {
        return Ok(files);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Platone BAL local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(server_names(extra_names))?;
    server
        .distinguished_name
        .push(DnType::CommonName, "Platone BAL");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    validity(&mut server, 825);
    let cert = server.signed_by(&key, &ca_cert, &ca_key)?;

    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_private(&files.key, &key.serialize_pem())?;
    // The chain a client is sent: the server certificate, then the CA.
    fs::write(&files.cert, format!("{}{}", cert.pem(), ca_cert.pem()))?;
    fs::write(&ca_path, ca_cert.pem())?;
    Ok(files)
}

/// A rustls server configuration for `files`, speaking HTTP/2 and HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in {}", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no certificate in {}",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read private key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_certificate_is_reused_and_its_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_self_signed(dir.path(), &["bal.example".into()]).unwrap();
        let first = fs::read(&a.cert).unwrap();
        let b = ensure_self_signed(dir.path(), &[]).unwrap();
        assert_eq!(fs::read(&b.cert).unwrap(), first, "reused, not regenerated");
        for key in [dir.path().join("ca.key"), a.key.clone()] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        server_config(&a).unwrap();
    }
}
