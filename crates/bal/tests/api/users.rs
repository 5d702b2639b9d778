use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn admin_creates_lists_reads_and_deletes_users() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/api/users",
            &app.admin,
            json!({ "username": "producer1", "password": PASSWORD, "role": "producer" }),
        )
        .await;
    assert_eq!(created.headers()["location"], "/api/users/producer1");
    let p = json_ok(created, StatusCode::CREATED).await;
    assert_eq!(p["topic"], "platone/producer1");
    let c = app.create_user("consumer1", "consumer").await;
    assert_eq!(c["topic"], Value::Null);
    assert_ne!(p["wallet"], c["wallet"]);

    let list = json_ok(app.get("/api/users", &app.admin).await, StatusCode::OK).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "consumer1", "producer1"]);

    let one = json_ok(
        app.get("/api/users/producer1", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(one, p);

    let r = app.delete("/api/users/producer1", &app.admin).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.get("/api/users/producer1", &app.admin).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.delete("/api/users/producer1", &app.admin).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.get("/api/users/No-Such-Name", &app.admin).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn no_response_ever_carries_a_password_hash_or_a_key() {
    let app = spawn_app().await;
    let token = app.user("producer1", "producer").await;
    let mut bodies = Vec::new();
    for (path, t) in [
        ("/api/users", &app.admin),
        ("/api/users/producer1", &app.admin),
        ("/api/me", &token),
        ("/api/producers", &token),
        ("/api/audit", &app.admin),
    ] {
        bodies.push(app.get(path, t).await.text().await.unwrap());
    }
    bodies.push(app.login("producer1", PASSWORD).await.text().await.unwrap());
    for body in bodies {
        for secret in [
            "argon2",
            "ciphertext",
            "crypto",
            "password_hash",
            "account",
            PASSWORD,
        ] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
}

#[tokio::test]
async fn non_admins_get_403_on_admin_routes() {
    let app = spawn_app().await;
    for role in ["producer", "consumer"] {
        let name = format!("{role}x");
        let token = app.user(&name, role).await;
        let new = json!({ "username": "sneaky", "password": PASSWORD, "role": "admin" });
        let attempts = [
            app.get("/api/users", &token).await,
            app.post("/api/users", &token, new).await,
            app.get("/api/users/admin", &token).await,
            app.delete("/api/users/admin", &token).await,
            app.get("/api/audit", &token).await,
            app.put(
                "/api/users/admin/password",
                &token,
                json!({ "password": PASSWORD }),
            )
            .await,
        ];
        for r in attempts {
            assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        }
    }
    let users = json_ok(app.get("/api/users", &app.admin).await, StatusCode::OK).await;
    assert_eq!(users.as_array().unwrap().len(), 3, "sneaky was not created");
}

#[tokio::test]
async fn a_username_is_never_given_out_twice() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    let again = json!({ "username": "producer1", "password": PASSWORD, "role": "consumer" });
    let r = app.post("/api/users", &app.admin, again.clone()).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
    app.delete("/api/users/producer1", &app.admin).await;
    let r = app.post("/api/users", &app.admin, again).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn invalid_names_roles_and_passwords_are_422() {
    let app = spawn_app().await;
    let cases = [
        json!({ "username": "ab", "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "a".repeat(33), "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "x".repeat(5000), "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "Alice", "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "al/ce", "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "9lives", "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "alice", "password": PASSWORD, "role": "root" }),
        json!({ "username": "alice", "password": "short", "role": "consumer" }),
        json!({ "username": "alice", "password": "p".repeat(257), "role": "consumer" }),
        json!({ "username": "alice", "password": PASSWORD }),
        json!({ "username": 42, "password": PASSWORD, "role": "consumer" }),
        json!({ "username": "alice", "password": PASSWORD, "role": "consumer", "admin": true }),
    ];
    for body in cases {
        let r = app.post("/api/users", &app.admin, body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "invalid");
    }
    let users = json_ok(app.get("/api/users", &app.admin).await, StatusCode::OK).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in [
        "{",
        "{\"username\": \"alice\",,}",
        "{\"username\": ",
        "not json",
        "",
    ] {
        let r = app
            .client
            .post(app.url("/api/users"))
            .bearer_auth(&app.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body:?}");
        assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn bodies_over_the_cap_get_413_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let huge =
        json!({ "username": "big", "password": "x".repeat(2 * 1024 * 1024), "role": "consumer" });
    let r = app.post("/api/users", &app.admin, huge).await;
    let message = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(message.contains("larger"), "{message}");
    assert_eq!(
        app.get("/api/me", &app.admin).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_change_their_own_password_with_the_current_one() {
    let app = spawn_app().await;
    let token = app.user("consumer1", "consumer").await;
    let path = "/api/users/consumer1/password";
    let r = app
        .put(path, &token, json!({ "password": "brand-new-password" }))
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let wrong = json!({ "password": "brand-new-password", "current_password": "nope-nope" });
    let r = app.put(path, &token, wrong).await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let right = json!({ "password": "brand-new-password", "current_password": PASSWORD });
    assert_eq!(
        app.put(path, &token, right).await.status(),
        StatusCode::NO_CONTENT
    );

    // Every session ended; only the new password works.
    signed_out(&app, &token, "consumer1").await;
    app.token("consumer1", "brand-new-password").await;
}

#[tokio::test]
async fn an_admin_resets_any_password_and_others_cannot() {
    let app = spawn_app().await;
    app.create_user("consumer1", "consumer").await;
    let other = app.user("consumer2", "consumer").await;
    let body = json!({ "password": "reset-by-someone" });
    let r = app
        .put("/api/users/consumer1/password", &other, body.clone())
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .put("/api/users/consumer1/password", &app.admin, body.clone())
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.token("consumer1", "reset-by-someone").await;
    let r = app
        .put("/api/users/ghost1/password", &app.admin, body)
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted() {
    let app = spawn_app().await;
    let r = app.delete("/api/users/admin", &app.admin).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
    let second = app.user("admin2", "admin").await;
    let r = app.delete("/api/users/admin", &second).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.delete("/api/users/admin2", &second).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn a_deleted_users_token_stops_working_and_it_cannot_log_in() {
    let app = spawn_app().await;
    let token = app.user("consumer1", "consumer").await;
    app.delete("/api/users/consumer1", &app.admin).await;
    signed_out(&app, &token, "consumer1").await;
}

/// `token` no longer works, and `user` cannot log in with the old password.
async fn signed_out(app: &TestApp, token: &str, user: &str) {
    let me = app.get("/api/me", token).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let login = app.login(user, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
}
