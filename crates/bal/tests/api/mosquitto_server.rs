//! A real Mosquitto 2.0 with the Dynamic Security plugin, one per test (the BAL reconciles the
//! whole broker, so tests cannot share one), set up by `deploy/mosquitto/bootstrap.sh` so that
//! the deploy files are exercised too. A missing Mosquitto fails the test: `.ci/run` installs it.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bal::settings::{BrokerKind, Secret, Settings};

use crate::helpers::free_port;

pub const ADMIN: &str = "bal-admin";
pub const ADMIN_PASSWORD: &str = "mosquitto-admin-password-for-tests";

pub struct MosquittoServer {
    /// Plain MQTT on 127.0.0.1.
    pub port: u16,
    /// MQTT over TLS, with a certificate from `ca`.
    pub tls_port: u16,
    pub ca: PathBuf,
    child: Child,
    conf: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn mosquitto_binary() -> String {
    let bin = std::env::var("BAL_TEST_MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
    assert!(
        Path::new(&bin).exists(),
        "Mosquitto is required by the Mosquitto behaviour suite and was not found at {bin}: \
         install the Debian packages mosquitto and mosquitto-clients (.ci/run does), or set \
         BAL_TEST_MOSQUITTO"
    );
    bin
}

fn spawn(conf: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(mosquitto_binary())
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto starts")
}

impl MosquittoServer {
    /// Bootstraps a broker folder and starts Mosquitto on two free ports; waits until both
    /// listen. `max_payload` becomes its `message_size_limit`. A free port can be taken by
    /// another test between its choice and Mosquitto's bind: then it starts again on others.
    pub fn start(max_payload: usize) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(max_payload) {
                Ok(server) => return server,
                Err(log) => last = log,
            }
        }
        panic!("mosquitto found its ports taken 5 times:\n{last}")
    }

    /// `start` once; `Err(log)` when Mosquitto exited because a port was taken.
    fn try_start(max_payload: usize) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        // Mosquitto started as root runs as the user mosquitto: it must reach the folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let broker_dir = dir.path().join("broker");
        let (port, tls_port) = (free_port(), free_port());
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/mosquitto/bootstrap.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&broker_dir)
            .env("MQTT_PORT", port.to_string())
            .env("MQTTS_PORT", tls_port.to_string())
            .env("MAX_PAYLOAD_BYTES", max_payload.to_string())
            .env("BAL_BROKER__ADMIN_USERNAME", ADMIN)
            .env("BAL_BROKER__ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .expect("bootstrap.sh runs");
        assert!(
            out.status.success(),
            "bootstrap.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("mosquitto.log");
        let conf = broker_dir.join("mosquitto.conf");
        let mut server = Self {
            port,
            tls_port,
            ca: broker_dir.join("tls/ca.pem"),
            child: spawn(&conf, &log),
            conf,
            log,
            _dir: dir,
        };
        match server.listening() {
            Ok(()) => Ok(server),
            Err(log) if log.contains("Address already in use") => Err(log),
            Err(log) => panic!("mosquitto exited:\n{log}"),
        }
    }

    /// Stops the broker with `signal` (`TERM`: it saves its persistence file first; `KILL`:
    /// what it acknowledged since its last autosave is gone).
    pub fn stop(&mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap();
    }

    /// Starts the broker again on the same folder, configuration and ports.
    pub fn restart(&mut self) {
        self.child = spawn(&self.conf, &self.log);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        if let Err(log) = self.listening() {
            panic!("mosquitto exited:\n{log}");
        }
    }

    /// Waits until both ports listen; `Err(log)` if Mosquitto exited first.
    fn listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.port, self.tls_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!("({status}) {}", self.log()));
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto does not listen:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Points `settings` at this broker.
    pub fn configure(&self, settings: &mut Settings) {
        settings.broker.kind = BrokerKind::Mosquitto;
        settings.broker.url = format!("mqtt://127.0.0.1:{}", self.port);
        settings.broker.admin_username = ADMIN.into();
        settings.broker.admin_password =
            Some(serde_json::from_value::<Secret>(serde_json::json!(ADMIN_PASSWORD)).unwrap());
        settings.broker.ingest_client_id = Some("bal-ingest-test".into());
        // Changes made by other processes show up within a second.
        settings.broker.reconcile_secs = 1;
    }
}

impl Drop for MosquittoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
