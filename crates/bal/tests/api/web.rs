//! The dashboard over HTTP, as a browser without scripts sees it: login with CSRF and cookies,
//! each role's section, decisions by form, the data pages and the certification explorer, and
//! the same authorisation as the API whatever URL is typed. (`browser.rs` drives a real
//! Chromium through the same flows, with the script.)

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::helpers::*;

/// A cookie-keeping client that does not follow redirects, so each answer can be checked.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    /// Every `Set-Cookie` seen, for checking their attributes.
    pub set_cookies: Vec<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        let client = crate::helpers::client_builder_trusting(app.mqtt_ca.as_ref().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            client,
            base: app.base.clone(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        for c in r.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap().to_owned();
            let (pair, _) = c.split_once(';').unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
            self.set_cookies.push(c);
        }
        Page {
            status: r.status(),
            location: r
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    /// Logs in through the form; returns the answer to the form's post.
    pub async fn login(&mut self, username: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        let csrf = csrf_in(&form.body);
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", username),
                ("password", password),
            ],
        )
        .await
    }

    /// The CSRF token of the page at `path`.
    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        csrf_in(&page.body)
    }
}

pub fn csrf_in(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn login_sets_a_strict_httponly_secure_cookie_and_wrong_passwords_get_one_message() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    let mut b = Browser::new(&app);
    let wrong = b.login("producer1", "not-the-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("Invalid username or password."),
        "{}",
        wrong.body
    );
    let unknown = b.login("nobody", "whatever-password").await;
    assert!(unknown.body.contains("Invalid username or password."));

    let ok = b.login("producer1", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let session = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("bal_session=") && !c.starts_with("bal_session=;"))
        .unwrap_or_else(|| panic!("a session cookie in {:?}", b.set_cookies));
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    let home = b.get("/").await;
    assert_eq!(home.location.as_deref(), Some("/producer"));
    let page = b.get("/producer").await;
    assert_eq!(page.status, StatusCode::OK);
    for column in [
        "Consumer",
        "Topic",
        "Status",
        "Creation Date",
        "Modification Date",
        "Actions",
    ] {
        assert!(page.body.contains(&format!(">{column}</th>")), "{column}");
    }

    // A login form posted without its pre-login cookie (another site's form) is refused.
    let mut stranger = Browser::new(&app);
    let forged = stranger
        .post(
            "/login",
            &[
                ("csrf", "x"),
                ("username", "producer1"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Logout ends the session on the server: the old cookie no longer works.
    let token = b.cookies["bal_session"].clone();
    let csrf = b.csrf("/producer").await;
    let out = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let mut replay = Browser::new(&app);
    replay.cookies.insert("bal_session".into(), token);
    assert_eq!(
        replay.get("/producer").await.location.as_deref(),
        Some("/login")
    );
}

#[tokio::test]
async fn the_whole_grant_flow_works_by_forms_and_pages_follow_the_apis_rules() {
    let app = spawn_app_with(|s| s.certify.batch_window_ms = 100).await;
    let p1_api = app.user("producer1", "producer").await;
    let p2_api = app.user("producer2", "producer").await;
    app.create_user("consumer1", "consumer").await;
    let mut c = Browser::new(&app);
    assert_eq!(
        c.login("consumer1", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let mut p = Browser::new(&app);
    assert_eq!(
        p.login("producer1", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );

    // Figure 4: the producers, with the seed's columns.
    let list = c.get("/consumer").await;
    for column in [
        "Username",
        "Topic",
        "Wallet",
        "Subscription Status",
        "Actions",
    ] {
        assert!(list.body.contains(&format!(">{column}</th>")), "{column}");
    }
    // Without the CSRF token a form post is refused.
    let forged = c
        .post(
            "/subscriptions",
            &[("csrf", "nope"), ("topic", "platone/producer1")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let csrf = csrf_in(&list.body);
    let asked = c
        .post(
            "/subscriptions",
            &[("csrf", &csrf), ("topic", "platone/producer1")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER);
    let list = c.get(asked.location.as_deref().unwrap()).await;
    assert!(
        list.body.contains("Requested access to platone/producer1"),
        "{}",
        list.body
    );
    assert!(list.body.contains("Cancel request"));

    // Before acceptance the data is forbidden, by page, chart, CSV and stream alike.
    for path in [
        "/data/producer1",
        "/data/producer1/chart.svg",
        "/data/producer1/history.csv",
        "/data/producer1/events",
    ] {
        assert_eq!(c.get(path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(c.get("/admin").await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/producer").await.status, StatusCode::FORBIDDEN);

    // Figure 5: the producer accepts (with an expiry a day ahead).
    let requests = p.get("/producer").await;
    let id_at = requests.body.find("/subscriptions/").unwrap() + 15;
    let id: String = requests.body[id_at..].split('/').next().unwrap().to_owned();
    let csrf = csrf_in(&requests.body);
    let expiry = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let accepted = p
        .post(
            &format!("/subscriptions/{id}/accept"),
            &[("csrf", &csrf), ("expires_at", &expiry)],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let requests = p.get(accepted.location.as_deref().unwrap()).await;
    assert!(
        requests.body.contains("accepted until"),
        "{}",
        requests.body
    );

    // Readings arrive; the consumer's chart draws them; history, CSV and proofs follow.
    let r = app
        .post(
            "/api/measurements",
            &p1_api,
            json!([{"p_kw": 1.5}, {"p_kw": 2.5}, {"p_kw": 3.5}]),
        )
        .await;
    let ids = json_ok(r, StatusCode::CREATED).await["ids"].clone();
    let id0 = ids[0].as_i64().unwrap();
    let r = app
        .post("/api/measurements", &p2_api, json!([{"p_kw": 9.0}]))
        .await;
    let other = json_ok(r, StatusCode::CREATED).await["ids"][0]
        .as_i64()
        .unwrap();
    let data = c.get("/data/producer1").await;
    assert_eq!(data.status, StatusCode::OK);
    assert!(
        data.body.contains(r#"data-points="3""#),
        "the chart draws the three readings"
    );
    assert!(data.body.contains("p_kw (kW)"));
    // Whatever a crafted link puts in the page comes back escaped, never as markup.
    let crafted = c
        .get("/data/producer1?field=%3Cscript%3Ealert(1)%3C/script%3E&done=%3Cb%3Ex")
        .await;
    assert_eq!(crafted.status, StatusCode::OK);
    assert!(
        !crafted.body.contains("<script>alert"),
        "the field name is escaped"
    );
    let svg = c.get("/data/producer1/chart.svg?field=p_kw").await;
    assert!(svg.body.starts_with("<svg data-points=\"3\""));
    let csv = c.get("/data/producer1/history.csv").await;
    assert_eq!(csv.body.lines().count(), 4, "{}", csv.body);
    assert!(csv.body.contains(r#""{""p_kw"":2.5}""#), "{}", csv.body);
    let mut verified = false;
    for _ in 0..50 {
        let proof = c.get(&format!("/certification/readings/{id0}")).await;
        if proof.status == StatusCode::OK {
            assert!(proof.body.contains("Valid."), "{}", proof.body);
            for check in ["payload_hash", "leaf", "proof", "anchor"] {
                assert!(
                    proof.body.contains(&format!(r#"data-check="{check}""#)),
                    "{check}"
                );
            }
            verified = true;
            break;
        }
        assert_eq!(proof.status, StatusCode::CONFLICT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(verified, "the reading was anchored and verified");
    let bundle = c
        .get(&format!("/certification/readings/{id0}/bundle.json"))
        .await;
    let bundle: serde_json::Value = serde_json::from_str(&bundle.body).unwrap();
    assert_eq!(bundle["format"], "bal-proof/1");
    let explorer = c
        .get(&format!(
            "/certification?transaction={}",
            bundle["transaction"].as_str().unwrap()
        ))
        .await;
    assert!(
        explorer
            .body
            .contains(&format!("/certification/readings/{id0}"))
    );
    // Another producer's reading stays out of reach, even by typing its URL.
    assert_eq!(
        c.get(&format!("/certification/readings/{other}"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(c.get("/data/producer2").await.status, StatusCode::FORBIDDEN);

    // Revocation: the data is gone at once.
    let requests = p.get("/producer").await;
    let csrf = csrf_in(&requests.body);
    let revoked = p
        .post(&format!("/subscriptions/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(c.get("/data/producer1").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get(&format!("/certification/readings/{id0}"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_admin_creates_resets_and_deletes_users_and_sees_health_and_the_audit_log() {
    let app = spawn_app().await;
    let mut a = Browser::new(&app);
    assert_eq!(
        a.login("admin", ADMIN_PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let page = a.get("/admin").await;
    assert_eq!(page.status, StatusCode::OK);
    for part in [
        "Readiness",
        "<dd id=\"readiness\">ready</dd>",
        "<dt>database</dt><dd>up since ",
        "<dt>broker</dt><dd>up since ",
        "<dt>chain</dt><dd>up since ",
        "Broker",
        "Chain",
        "Certification backlog",
    ] {
        assert!(page.body.contains(part), "{part}");
    }
    let csrf = csrf_in(&page.body);
    let created = a
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("username", "meter9"),
                ("role", "producer"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let shown = created.body.split("shown once: ").nth(1).unwrap();
    let password: String = shown
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    app.token("meter9", &password).await;
    let reset = a
        .post("/admin/users/meter9/password", &[("csrf", &csrf)])
        .await;
    assert!(reset.body.contains("shown once"), "{}", reset.body);
    assert_eq!(
        app.login("meter9", &password).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let audit = a.get("/admin?action=user.password").await;
    assert!(
        audit.body.contains("user:meter9"),
        "the audit log lists the reset"
    );
    let deleted = a
        .post("/admin/users/meter9/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(!a.get("/admin").await.body.contains(r#"data-user="meter9""#));
    // A duplicate name is a clear error page, not a crash.
    let dup = a
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("role", "admin"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
}
