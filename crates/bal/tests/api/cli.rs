//! The `bal` binary itself: user commands on the same database, config printing, exit codes.

use std::io::Write;
use std::process::{Output, Stdio};

use reqwest::StatusCode;

use crate::helpers::*;

fn bal(data_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = bal_cli(data_dir)
        .args(args)
        .env_remove("BAL_ADMIN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn users_added_on_the_command_line_log_in_over_the_api() {
    let app = spawn_app().await;
    let dir = app.data_dir.clone();
    let out = bal(
        &dir,
        &[
            "user",
            "add",
            "meter1",
            "--role",
            "producer",
            "--password-stdin",
        ],
        Some("meter-password-1\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("platone/meter1"));

    let out = bal(&dir, &["user", "add", "dso1", "--role", "consumer"], None);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    let generated = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();

    app.token("meter1", "meter-password-1").await;
    app.token("dso1", &generated).await;

    let out = bal(&dir, &["user", "list"], None);
    let listing = text(&out);
    for name in ["admin", "meter1", "dso1"] {
        assert!(listing.contains(name), "{listing}");
    }
    assert!(!listing.contains("argon2"));

    let out = bal(
        &dir,
        &["user", "passwd", "meter1", "--password-stdin"],
        Some("meter-password-2\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        app.login("meter1", "meter-password-1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.token("meter1", "meter-password-2").await;
}

#[tokio::test]
async fn bad_command_line_input_is_a_message_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["user", "add", "Bad Name", "--role", "consumer"],
            "username",
        ),
        (&["user", "add", "goodname", "--role", "root"], "role"),
        (&["user", "passwd", "ghost1"], "not found"),
    ];
    for (args, expected) in cases {
        let out = bal(dir.path(), args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let t = text(&out);
        assert!(
            t.contains("error:") && t.contains(expected),
            "{args:?}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
    let out = bal(dir.path(), &["user", "frobnicate"], None);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn config_default_prints_a_file_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = bal(dir.path(), &["config", "default"], None);
    assert!(out.status.success());
    let file = dir.path().join("bal.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let s = bal::settings::Settings::load(Some(&file), &Default::default()).unwrap();
    assert_eq!(s.http.listen.port(), 8443);
    assert!(String::from_utf8_lossy(&out.stdout).contains("BAL_HTTP__LISTEN"));
}

#[tokio::test]
async fn a_process_with_another_master_key_is_refused_with_a_clear_message() {
    let app = spawn_app().await;
    let out = bal_cli(&app.data_dir)
        .args(["user", "list"])
        .env(
            "BAL_KEYS__MASTER_KEY",
            "not-the-key-this-database-was-made-with",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("another master key") && said.contains("keys.master_key"),
        "{said}"
    );
    assert!(
        !said.contains("not-the-key"),
        "the key itself is never printed: {said}"
    );
    // The right key still works.
    let ok = bal(&app.data_dir, &["user", "list"], None);
    assert!(ok.status.success(), "{}", text(&ok));
}

#[tokio::test]
async fn bal_db_status_and_migrate_report_the_schema() {
    let app = spawn_app().await;
    let out = bal(&app.data_dir, &["db", "status"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("up to date"), "{}", text(&out));
    let out = bal(&app.data_dir, &["db", "migrate"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema version"), "{}", text(&out));
}
