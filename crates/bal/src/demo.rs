//! `bal demo`: the BAL with demo users, grants and simulated devices, so that a new user sees
//! data flowing at once. Ports that are taken (a system Mosquitto on 1883, say) are replaced by
//! free ones, and every URL, port and password is printed.

/// Prints a line of the demo's instructions. A closed standard output (the reader went away)
/// must not stop the BAL, as `println!` would by panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bal_api::accounts::{self, AccountKeys, FirstAdmin};
use bal_core::{Actor, GrantAccess, GrantAction, Role, Subscription, Topic, Username};
use bal_scd::{SharedStore, SubscriptionQuery};
use rumqttc::QoS;

use crate::app::{Application, shutdown_signal};
use crate::devices::{self, Counters, DeviceSpec};
use crate::settings::{BrokerKind, Settings};

const PRODUCERS: [&str; 3] = ["producer1", "producer2", "producer3"];
const CONSUMERS: [&str; 2] = ["consumer1", "consumer2"];

/// `addr` if it can be bound now, else the same address with a free port.
fn free_or_any(addr: SocketAddr, setting: &str) -> SocketAddr {
    match TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => {
            say!("note: {addr} ({setting}) is in use; the demo takes a free port instead");
            SocketAddr::new(addr.ip(), 0)
        }
    }
}

/// The demo users' passwords, kept (mode 0600) in the data folder so a restarted demo prints
/// the same ones.
fn load_passwords(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_passwords(path: &Path, passwords: &BTreeMap<String, String>) -> anyhow::Result<()> {
    crate::tls::write_private(path, &serde_json::to_string_pretty(passwords)?)
}

fn name(n: &str) -> Username {
    Username::parse(n).expect("demo names are valid")
}

/// Creates the demo users that are missing, saving each password as soon as it exists.
async fn ensure_users(
    store: &SharedStore,
    key: &AccountKeys,
    passwords: &mut BTreeMap<String, String>,
    password_file: &Path,
) -> anyhow::Result<()> {
    let roles = PRODUCERS
        .iter()
        .map(|p| (*p, Role::Producer))
        .chain(CONSUMERS.iter().map(|c| (*c, Role::Consumer)));
    for (user, role) in roles {
        if store.user(&name(user)).await?.is_some() {
            continue;
        }
        let password = accounts::generate_password();
        accounts::create_user(
            store.as_ref(),
            key,
            name(user),
            role,
            password.clone(),
            &Actor::System,
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating demo user {user}: {e}"))?;
        passwords.insert(user.to_owned(), password);
        save_passwords(password_file, passwords)?;
    }
    Ok(())
}

/// consumer1 → producer1 accepted (data, and control: consumer1 plays the aggregator that
/// sends set points), consumer2 → producer2 pending, unless they already have one.
async fn ensure_grants(store: &SharedStore) -> anyhow::Result<()> {
    for (consumer, producer, access, accept) in [
        ("consumer1", "producer1", GrantAccess::Read, true),
        ("consumer2", "producer2", GrantAccess::Read, false),
        ("consumer1", "producer1", GrantAccess::Control, true),
    ] {
        let existing = store
            .subscriptions(&SubscriptionQuery {
                consumer: Some(name(consumer)),
                producer: Some(name(producer)),
                status: None,
                access: Some(access),
            })
            .await?;
        if !existing.is_empty() {
            continue;
        }
        let now = chrono::Utc::now();
        let topic = Topic::for_producer(&name(producer));
        let request = Subscription::request_access(name(consumer), &topic, access, now);
        let stored = store.request_subscription(request).await?;
        if accept {
            let action = GrantAction::Accept { expires_at: None };
            store
                .decide(stored.id, &action, &Actor::User(name(producer)), now)
                .await?;
        }
    }
    Ok(())
}

/// Where the demo's devices publish with Mosquitto: the broker of `broker.url`, which must be
/// plain MQTT (the devices are local and do not carry the broker's CA).
fn mosquitto_address(settings: &Settings) -> anyhow::Result<SocketAddr> {
    let conn = settings.mosquitto_config()?.connection;
    anyhow::ensure!(
        !conn.is_tls(),
        "the demo's devices need a plain mqtt:// broker.url (a loopback listener of Mosquitto)"
    );
    std::net::ToSocketAddrs::to_socket_addrs(&(conn.host.as_str(), conn.port))
        .with_context(|| format!("broker.url: cannot resolve {}", conn.address()))?
        .next()
        .with_context(|| format!("broker.url: no address for {}", conn.address()))
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    settings.http.listen = free_or_any(settings.http.listen, "http.listen");
    let external = match settings.broker.kind {
        BrokerKind::Embedded => {
            if let Some(a) = settings.mqtt.listen {
                settings.mqtt.listen = Some(free_or_any(a, "mqtt.listen"));
            }
            if let Some(a) = settings.mqtt.listen_tls {
                settings.mqtt.listen_tls = Some(free_or_any(a, "mqtt.listen_tls"));
            }
            None
        }
        BrokerKind::Mosquitto => Some(mosquitto_address(&settings)?),
    };
    let data_dir = settings.data_dir.clone();
    let app = Application::build(settings).await?;
    let mqtt = match external {
        Some(a) => a,
        None => app
            .mqtt_addr()
            .context("the demo's devices need the plain MQTT listener (mqtt.listen)")?,
    };
    let store = app.store();

    let password_file = data_dir.join("demo-passwords.json");
    let mut passwords = load_passwords(&password_file);
    match app.first_admin() {
        FirstAdmin::Generated(p) => {
            passwords.insert("admin".into(), p.clone());
        }
        FirstAdmin::Created => {
            passwords.insert("admin".into(), "(BAL_ADMIN_PASSWORD)".into());
        }
        FirstAdmin::Exists => {}
    }
    save_passwords(&password_file, &passwords)?;
    ensure_users(&store, app.account_keys(), &mut passwords, &password_file).await?;
    ensure_grants(&store).await?;

    let counters = Arc::new(Counters::default());
    let pw = |u: &str| passwords.get(u).cloned().unwrap_or_default();
    let device = |client: &str, user: &str, topic: &str, period_ms, qos, payload| DeviceSpec {
        broker: SocketAddr::new(mqtt.ip(), mqtt.port()),
        client_id: client.into(),
        username: user.into(),
        password: pw(user),
        topic: topic.into(),
        period: Duration::from_millis(period_ms),
        qos,
        payload,
        // Each device also takes set points, under its client id as the device name.
        setpoints: Some(client.into()),
    };
    let fleet = [
        device(
            "meter-1",
            "producer1",
            "platone/producer1/meter-1",
            1000,
            QoS::AtLeastOnce,
            devices::power_reading(0.0),
        ),
        device(
            "meter-2",
            "producer2",
            "platone/producer2/meter-2",
            1000,
            QoS::AtLeastOnce,
            devices::power_reading(2.0),
        ),
        device(
            "pmu-1",
            "producer3",
            "platone/producer3/pmu-1",
            100,
            QoS::AtMostOnce,
            devices::pmu_line(),
        ),
    ];
    // A device whose password is unknown (its user was made outside the demo) would only
    // fail to log in again and again, and trip the failed-login limit for everyone local.
    let (fleet, unknown): (Vec<_>, Vec<_>) =
        fleet.into_iter().partition(|d| !d.password.is_empty());
    for d in unknown {
        say!(
            "note: {} already existed without a demo password; its device {} is not started",
            d.username,
            d.client_id
        );
    }
    let tasks: Vec<_> = fleet
        .into_iter()
        .map(|d| devices::spawn(d, counters.clone()))
        .collect();

    print_welcome(&app, &passwords, mqtt, external.is_some());
    let result = app.run_until(shutdown_signal()).await;
    for t in tasks {
        t.abort();
    }
    result
}

fn print_welcome(
    app: &Application,
    passwords: &BTreeMap<String, String>,
    mqtt: SocketAddr,
    mosquitto: bool,
) {
    let base = app.base_url();
    let ca = app.ca_path().map(|p| p.display().to_string());
    say!();
    say!("Platone BAL demo is running. Stop it with Ctrl-C.");
    say!("  Dashboard     {base}/           (log in with a user below)");
    say!("  REST API      {base}/api        (docs: {base}/api/docs)");
    if mosquitto {
        say!("  MQTT          mqtt://{mqtt} (Mosquitto, driven by the BAL)");
    } else {
        say!("  MQTT          mqtt://{mqtt}");
    }
    if let Some(a) = app.mqtts_addr() {
        say!("  MQTT over TLS mqtts://127.0.0.1:{}", a.port());
    }
    say!("  Set points    consumer1 holds a control grant on producer1: issue one to its meter-1");
    say!("                on the dashboard (Set points), or POST {base}/api/setpoints; the");
    say!("                simulated meter answers, and every step is certified");
    if let Some(ca) = &ca {
        say!("  CA to trust   {ca}");
    }
    say!("  Chain         {}", app.chain_summary());
    say!();
    say!("Users (passwords are kept in the data folder, demo-passwords.json):");
    for (user, role) in std::iter::once(("admin", "admin"))
        .chain(PRODUCERS.iter().map(|p| (*p, "producer")))
        .chain(CONSUMERS.iter().map(|c| (*c, "consumer")))
    {
        let pw = passwords.get(user).map_or("(set earlier)", String::as_str);
        say!("  {user:<10} {role:<9} {pw}");
    }
    say!();
    say!("Grants: consumer1 -> producer1 accepted; consumer2 -> producer2 pending.");
    say!("Devices: producer1/meter-1 and producer2/meter-2 send JSON every second (QoS 1);");
    say!("         producer3/pmu-1 sends the PMU's tab-separated line 10 times a second (QoS 0).");
    {
        let a = mqtt;
        let pw = |u: &str| {
            passwords
                .get(u)
                .cloned()
                .unwrap_or_else(|| "<password>".into())
        };
        say!();
        say!("Try:");
        say!(
            "  mosquitto_sub -h {} -p {} -u consumer1 -P '{}' -t 'platone/producer1/#' -v",
            a.ip(),
            a.port(),
            pw("consumer1")
        );
        say!(
            "  mosquitto_pub -h {} -p {} -u producer1 -P '{}' -q 1 -t platone/producer1/test -m '{{\"p_kw\": 1.2}}'",
            a.ip(),
            a.port(),
            pw("producer1")
        );
    }
    if let Some(ca) = &ca {
        say!(
            "  save GET {base}/api/measurements/<id>/proof as proof.json (README, \"Certification\"), then"
        );
        say!("  bal verify proof.json --rpc {base}/rpc --ca {ca}");
    }
    if let (Some(a), Some(ca)) = (app.mqtts_addr(), &ca) {
        say!(
            "  mosquitto_sub --cafile {ca} -h 127.0.0.1 -p {} -u consumer1 -P '{}' -t 'platone/producer1/#' -v",
            a.port(),
            passwords
                .get("consumer1")
                .map_or("<password>", String::as_str)
        );
    }
    say!();
}
