//! A full disk under SQLite, the laptop deployment's likeliest outage: while there is no room,
//! HTTPS writes get 503 and QoS 1 readings are not acknowledged (so the device keeps them);
//! nothing stored before is lost; once there is room again the BAL goes on by itself and every
//! reading the device sent arrives, once. The data folder is on a small tmpfs of its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, eventually, readings_of, start, test_settings};
use crate::paho::PahoDevice;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        // Mounting needs root, which the test command has in CI (it installs Debian packages).
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs for the full-disk test (run the tests as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system at `path` until a write fails for lack of room.
fn fill(path: &Path) {
    let mut ballast = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while ballast.write_all(&chunk).is_ok() {}
    let _ = ballast.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_what_was_stored_and_recovers_when_room_is_back() {
    if bal_scd::testing::backend() != bal_scd::Backend::Sqlite {
        return;
    }
    const READINGS: usize = 200;
    let mount = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(mount.path(), "24m");
    let data = mount.path().join("data");
    let app = start(test_settings(&data)).await;
    let producer = app.user("device1", "producer").await;
    let before = json!(["stored before the disk filled"]);
    let r = app.post("/api/measurements", &producer, before).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let device = PahoDevice::start(app.mqtt_port, "device1", PASSWORD, READINGS, 40);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ballast = mount.path().join("ballast");
    fill(&ballast);
    eventually(
        20,
        "uploads refused with 503 while the disk is full",
        || async {
            let r = app
                .post("/api/measurements", &producer, json!(["x".repeat(4096)]))
                .await;
            assert_ne!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            r.status() == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
    // Reads go on: nothing stored before was lost.
    let texts = readings_of(&app.client, &app.base, &producer, "device1").await;
    assert_eq!(texts[0].1, "stored before the disk filled");
    tokio::time::sleep(Duration::from_secs(2)).await;

    std::fs::remove_file(&ballast).unwrap();
    let acked = device.finish(READINGS).await;
    let r = app
        .post("/api/measurements", &producer, json!(["after"]))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "writes work again");

    let seen = app.reading_counts("device1").await;
    for payload in &acked {
        assert_eq!(seen.get(payload), Some(&1), "{payload}");
    }
    assert_eq!(seen.get("stored before the disk filled"), Some(&1));
    app.stop().await;
}
