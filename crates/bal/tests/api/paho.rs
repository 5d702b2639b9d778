//! A device we did not write: `paho_device.py` (paho-mqtt from the test virtualenv) as a child
//! process, publishing QoS 1 readings with a persistent session and reconnecting by itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

pub fn python() -> PathBuf {
    match std::env::var_os("BAL_TEST_PYTHON") {
        Some(path) => path.into(),
        None => panic!(
            "BAL_TEST_PYTHON is not set: run scripts/test, which installs paho-mqtt (pinned) in \
             target/py"
        ),
    }
}

/// `python <script>` for a script of this suite (paho-mqtt is in the suite's virtualenv), its
/// stdout piped to the test, killed with the test.
pub fn python_script(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/api")
            .join(script),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    cmd
}

pub struct PahoDevice {
    child: Child,
    output: JoinHandle<Vec<String>>,
    prefix: String,
}

/// What the device does: `count` readings `<prefix>-<i>`, `rate` per second, over MQTT
/// `version` 3 (3.1.1) or 5, as `username` with client id `paho-<prefix>`.
pub struct Readings<'a> {
    pub count: usize,
    pub rate: u32,
    pub version: u8,
    pub prefix: &'a str,
}

impl Default for Readings<'_> {
    fn default() -> Self {
        Self {
            count: 100,
            rate: 40,
            version: 3,
            prefix: "reading",
        }
    }
}

impl PahoDevice {
    /// Starts publishing `count` readings `reading-<i>`, `rate` per second, on
    /// `platone/<username>` at 127.0.0.1:`port`, over MQTT 3.1.1.
    pub fn start(port: u16, username: &str, password: &str, count: usize, rate: u32) -> Self {
        let readings = Readings {
            count,
            rate,
            ..Readings::default()
        };
        Self::start_with(port, username, password, &readings)
    }

    pub fn start_with(port: u16, username: &str, password: &str, r: &Readings) -> Self {
        Self::start_on(&port.to_string(), username, password, r)
    }

    /// As [`PahoDevice::start_with`], on `ports` (comma-separated): the nodes of a cluster,
    /// the next one taken whenever the connection is lost.
    pub fn start_on(ports: &str, username: &str, password: &str, r: &Readings) -> Self {
        let mut child = python_script("paho_device.py")
            .args(["127.0.0.1", ports, username, password])
            .arg(format!("paho-{}", r.prefix))
            .args([
                r.count.to_string(),
                r.rate.to_string(),
                r.version.to_string(),
            ])
            .arg(r.prefix)
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let output = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push(line);
            }
            all
        });
        Self {
            child,
            output,
            prefix: r.prefix.to_owned(),
        }
    }

    /// Waits until the device has every reading acknowledged (it gives up after two minutes);
    /// returns the payloads acknowledged, and panics unless that is all of them.
    pub async fn finish(mut self, count: usize) -> HashSet<String> {
        let status = tokio::time::timeout(Duration::from_secs(180), self.child.wait())
            .await
            .expect("the device finishes")
            .unwrap();
        let lines = self.output.await.unwrap();
        let acked: HashSet<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("acked "))
            .map(|i| format!("{}-{i}", self.prefix))
            .collect();
        assert!(
            status.success() && acked.len() == count,
            "the device got {} of {count} readings acknowledged: {:?}",
            acked.len(),
            lines.last()
        );
        acked
    }
}
