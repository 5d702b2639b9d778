//! The dashboard in a real browser: headless Chromium driven through chromedriver (Debian
//! packages `chromium` and `chromium-driver`, which `.ci/run` installs; missing, these tests
//! fail rather than skip), with `thirtyfour`. Each page visited is saved as a screenshot under
//! `target/screenshots/`, at laptop and at phone width, for review.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use thirtyfour::prelude::*;
use thirtyfour::{ChromiumLikeCapabilities, DesiredCapabilities};

use crate::helpers::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port; stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install the Debian packages chromium and chromium-driver \
                 (.ci/run does)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    /// A fresh headless browser window of the given size.
    async fn browser(&self, width: u32, height: u32) -> WebDriver {
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            // The test server's CA is generated per test.
            "--ignore-certificate-errors",
            &format!("--window-size={width},{height}"),
        ] {
            caps.add_arg(arg).unwrap();
        }
        WebDriver::new(&self.url, caps)
            .await
            .expect("a browser session")
    }
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &WebDriver, name: &str) {
    b.screenshot(&shots().join(format!("{name}.png")))
        .await
        .unwrap();
}

/// Clicks what `css` finds and waits for the page it leads to: the old document's root goes
/// stale when the new one replaces it.
async fn click_and_load(b: &WebDriver, css: &str) {
    let old = b.find(By::Tag("html")).await.unwrap();
    b.find(By::Css(css)).await.unwrap().click().await.unwrap();
    eventually(10, &format!("the page after clicking {css}"), || async {
        old.tag_name().await.is_err()
    })
    .await;
    eventually(10, "the page to load", || async {
        matches!(
            b.execute("return document.readyState", Vec::new()).await,
            Ok(r) if r.json() == "complete"
        )
    })
    .await;
}

async fn login(b: &WebDriver, app: &TestApp, username: &str, password: &str) {
    b.goto(app.url("/login")).await.unwrap();
    b.find(By::Id("username"))
        .await
        .unwrap()
        .send_keys(username)
        .await
        .unwrap();
    b.find(By::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click_and_load(b, "#login").await;
}

async fn logout(b: &WebDriver) {
    click_and_load(b, "form[action='/logout'] button").await;
    assert!(b.current_url().await.unwrap().path().ends_with("/login"));
}

async fn text_of(b: &WebDriver, css: &str) -> String {
    match b.find(By::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!(
            "no {css} at {}: {e}\n{}",
            b.current_url().await.unwrap(),
            b.source().await.unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_asks_producer_accepts_readings_chart_live_and_revocation_stops_the_stream() {
    let app = spawn_app_with(|s| s.certify.batch_window_ms = 200).await;
    let p1_api = app.user("producer1", "producer").await;
    app.create_user("producer2", "producer").await;
    app.create_user("consumer1", "consumer").await;
    let driver = Driver::start().await;
    let consumer = driver.browser(1280, 900).await;
    let producer = driver.browser(390, 844).await;

    // The consumer subscribes (figure 4).
    login(&consumer, &app, "consumer1", PASSWORD).await;
    assert!(
        consumer
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/consumer")
    );
    shot(&consumer, "consumer-producers").await;
    click_and_load(&consumer, "tr[data-producer='producer1'] button").await;
    assert_eq!(
        text_of(&consumer, "tr[data-producer='producer1'] td.status").await,
        "requested"
    );

    // The producer accepts, on a phone-width window (figure 5).
    login(&producer, &app, "producer1", PASSWORD).await;
    shot(&producer, "producer-requests-phone").await;
    click_and_load(
        &producer,
        "tr[data-consumer='consumer1'] button[aria-label='Accept consumer1']",
    )
    .await;
    assert!(
        text_of(&producer, "tr[data-consumer='consumer1'] td.status")
            .await
            .starts_with("accepted")
    );

    // The consumer opens the data: readings published now appear in the live chart.
    consumer.goto(app.url("/consumer")).await.unwrap();
    assert_eq!(
        text_of(&consumer, "tr[data-producer='producer1'] td.status").await,
        "accepted"
    );
    consumer.goto(app.url("/data/producer1")).await.unwrap();
    let live = consumer.find(By::Id("live-chart")).await.unwrap();
    eventually(5, "the live stream opening", || async {
        live.attr("data-state").await.unwrap().as_deref() == Some("live")
    })
    .await;
    for i in 0..3 {
        let r = app
            .post(
                "/api/measurements",
                &p1_api,
                json!([{"p_kw": 1.0 + f64::from(i)}]),
            )
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    eventually(10, "three readings in the consumer's chart", || async {
        match consumer.find(By::Css("#live-chart svg")).await {
            // The script may replace the chart between the find and the read: try again.
            Ok(svg) => svg.attr("data-points").await.ok().flatten().as_deref() == Some("3"),
            Err(_) => false,
        }
    })
    .await;
    shot(&consumer, "consumer-data-live").await;

    // The producer revokes: the consumer's stream ends and the page says so.
    producer.goto(app.url("/producer")).await.unwrap();
    click_and_load(&producer, "tr[data-consumer='consumer1'] button").await;
    eventually(5, "the stream ending", || async {
        live.attr("data-state").await.unwrap().as_deref() == Some("ended")
    })
    .await;
    assert!(
        text_of(&consumer, "#live-chart .status")
            .await
            .contains("ended")
    );
    shot(&consumer, "consumer-data-ended").await;
    // And typing the URL again answers 403.
    consumer.goto(app.url("/data/producer1")).await.unwrap();
    assert!(text_of(&consumer, "h1").await.contains("Forbidden"));
    shot(&consumer, "consumer-forbidden").await;

    consumer.quit().await.unwrap();
    producer.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_logs_in_sees_its_pages_and_is_refused_the_others() {
    let app = spawn_app_with(|s| s.certify.batch_window_ms = 200).await;
    let p1_api = app.user("producer1", "producer").await;
    app.create_user("consumer1", "consumer").await;
    let r = app
        .post(
            "/api/measurements",
            &p1_api,
            json!([{"v": 230.1}, {"v": 229.8}]),
        )
        .await;
    let id = json_ok(r, reqwest::StatusCode::CREATED).await["ids"][0]
        .as_i64()
        .unwrap();
    let driver = Driver::start().await;

    for (width, height, suffix) in [(1280, 900, ""), (390, 844, "-phone")] {
        let b = driver.browser(width, height).await;
        b.goto(app.url("/login")).await.unwrap();
        shot(&b, &format!("login{suffix}")).await;
        // A wrong password: a clear message on the login page.
        login(&b, &app, "admin", "wrong-password-here").await;
        assert!(
            text_of(&b, "#login-error")
                .await
                .contains("Invalid username or password")
        );
        shot(&b, &format!("login-error{suffix}")).await;

        login(&b, &app, "admin", ADMIN_PASSWORD).await;
        assert!(text_of(&b, "h1").await.contains("Administration"));
        assert!(text_of(&b, "#health").await.contains("Chain"));
        shot(&b, &format!("admin{suffix}")).await;
        b.goto(app.url("/certification")).await.unwrap();
        shot(&b, &format!("certification{suffix}")).await;
        logout(&b).await;

        login(&b, &app, "producer1", PASSWORD).await;
        assert!(text_of(&b, "h1").await.contains("Requests"));
        shot(&b, &format!("producer-requests{suffix}")).await;
        b.goto(app.url("/data/producer1")).await.unwrap();
        assert!(text_of(&b, "#history").await.contains("230.1"));
        shot(&b, &format!("producer-data{suffix}")).await;
        // The proof page of its own reading, verified on the server.
        let mut valid = false;
        for _ in 0..50 {
            b.goto(app.url(&format!("/certification/readings/{id}")))
                .await
                .unwrap();
            if text_of(&b, "h1").await.starts_with("Proof") {
                valid = text_of(&b, "#verdict").await == "Valid.";
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(valid, "the proof page shows a valid verdict");
        shot(&b, &format!("proof{suffix}")).await;
        b.goto(app.url("/admin")).await.unwrap();
        assert!(text_of(&b, "h1").await.contains("Forbidden"));
        logout(&b).await;

        login(&b, &app, "consumer1", PASSWORD).await;
        assert!(text_of(&b, "h1").await.contains("Producers"));
        shot(&b, &format!("consumer-producers{suffix}")).await;
        for path in ["/admin", "/producer", "/data/producer1"] {
            b.goto(app.url(path)).await.unwrap();
            assert!(text_of(&b, "h1").await.contains("Forbidden"), "{path}");
        }
        b.goto(app.url(&format!("/certification/readings/{id}")))
            .await
            .unwrap();
        assert!(text_of(&b, "h1").await.contains("Forbidden"));
        b.quit().await.unwrap();
    }
}
