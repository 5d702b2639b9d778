//! `bal config check`: reads the settings as `bal serve` would (file, environment, flags) and
//! checks everything that can be checked without starting: each key is known and well-typed,
//! addresses and names are valid, plain listeners are refused where they would expose
//! passwords, the TLS files and given keys can be read. Connects to nothing, creates nothing,
//! prints no secret. A deployment (the Helm chart's test) runs it on its rendered settings.

use anyhow::Context;

use crate::settings::{BrokerKind, Settings};

/// The checks `bal serve` makes before it binds anything; `Application::build` runs them too.
pub fn validate(settings: &Settings) -> anyhow::Result<()> {
    let listen = settings.http.listen;
    if !settings.http.tls && !listen.ip().is_loopback() {
        anyhow::bail!(
            "http.tls = false is allowed only on a loopback address, not {listen}: \
             set http.listen to 127.0.0.1:<port> or turn TLS on"
        );
    }
    settings.trusted_proxies()?;
    settings.replica_id()?;
    let embedded = settings.broker.kind == BrokerKind::Embedded;
    if let Some(addr) = settings.mqtt.listen
        && embedded
        && !addr.ip().is_loopback()
        && !settings.mqtt.allow_plain_remote
    {
        anyhow::bail!(
            "plain MQTT on {addr} would expose passwords and data: use mqtt.listen_tls, \
             a loopback mqtt.listen, or set mqtt.allow_plain_remote = true"
        );
    }
    anyhow::ensure!(
        settings.mqtt.max_queued_messages >= 1,
        "mqtt.max_queued_messages = 0 would drop every message a client is sent while another \
         is in flight: set at least 1 (default 1000)"
    );
    if let Some(addr) = settings.metrics.listen {
        anyhow::ensure!(
            addr != listen || addr.port() == 0,
            "metrics.listen {addr} is http.listen: give /metrics its own port, or set it \"off\""
        );
    }
    if !embedded {
        settings.mosquitto_config()?;
    }
    settings.mqtt.cluster.config(embedded)?;
    let url = settings.database_url();
    anyhow::ensure!(
        ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|s| url.starts_with(s)),
        "database.url must start with sqlite:, postgres:// or postgresql://"
    );
    Ok(())
}

/// Everything `validate` checks, then the files and keys the settings name.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    validate(settings)?;
    let h = &settings.http;
    match (&h.cert_file, &h.key_file) {
        (Some(cert), Some(key)) => {
            crate::tls::server_config(&crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: None,
            })
            .context("http.cert_file / http.key_file")?;
        }
        (None, None) => {}
        _ => anyhow::bail!("set both http.cert_file and http.key_file, or neither"),
    }
    if let Some(key) = &settings.keys.master_key {
        bal_wallet::MasterKey::from_passphrase(key.expose())
            .context("keys.master_key (BAL_KEYS__MASTER_KEY)")?;
    }
    let c = &settings.chain;
    if let Some(key) = &c.operator_key {
        // The file fallback is only read by `serve`: nothing is created here.
        bal_ledger::operator::load(Some(key.expose()), std::path::Path::new("/nonexistent"))
            .context("chain.operator_key (BAL_CHAIN__OPERATOR_KEY)")?;
    }
    if let Some(a) = &c.contract {
        bal_core::WalletAddress::parse(a).map_err(|e| anyhow::anyhow!("chain.contract: {e}"))?;
    }
    if let Some(rpc) = &c.rpc_url {
        let parsed = url::Url::parse(rpc.expose())
            .map_err(|_| anyhow::anyhow!("chain.rpc_url is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "chain.rpc_url must be http:// or https://"
        );
    }
    for (name, file) in [
        ("broker.ca_file", &settings.broker.ca_file),
        ("chain.ca_file", &c.ca_file),
    ] {
        if let Some(f) = file {
            std::fs::metadata(f).with_context(|| format!("{name} {}", f.display()))?;
        }
    }
    println!("settings are valid");
    println!("  replica:   {}", settings.replica_id()?);
    println!(
        "  https:     {} (tls {})",
        settings.http.listen, settings.http.tls
    );
    match settings.metrics.listen {
        Some(a) => println!("  metrics:   http://{a}/metrics"),
        None => println!("  metrics:   on the HTTPS listener"),
    }
    match settings.broker.kind {
        BrokerKind::Embedded => match settings.mqtt.cluster.config(true)? {
            Some(c) => println!(
                "  broker:    embedded, MQTT cluster node {} of {} (node-to-node {})",
                c.node_id,
                c.peers.len(),
                c.listen
            ),
            None => println!("  broker:    embedded"),
        },
        BrokerKind::Mosquitto => println!("  broker:    Mosquitto at {}", settings.broker.url),
    }
    let backend = if settings.database_url().starts_with("sqlite:") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    println!("  database:  {backend}");
    println!(
        "  chain:     {}",
        if c.rpc_url.is_some() {
            "an Ethereum node (chain.rpc_url)"
        } else {
            "embedded"
        }
    );
    Ok(())
}
