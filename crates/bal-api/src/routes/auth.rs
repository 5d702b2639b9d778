//! Logging in and out, and who the caller is.

use axum::extract::State;
use axum::http::StatusCode;
use bal_core::Username;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::accounts;
use crate::auth::{AuthUser, begin_attempt, new_token};
use crate::client::ClientAddr;
use crate::error::{ApiError, ErrorBody, Json};
use crate::views::UserView;
use bal_auth::password;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    expires_at: DateTime<Utc>,
    user: UserView,
}

/// The one answer for every wrong name or password, so that it reveals nothing.
const BAD_LOGIN: &str = "invalid username or password";

/// Exchanges a username and password for a bearer token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, body = ErrorBody, description = "wrong username or password"),
        (status = 429, body = ErrorBody, description = "too many failed attempts"),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let session = authenticate(&state, &req.username, req.password, client).await?;
    Ok(Json(LoginResponse {
        token: session.token,
        expires_at: session.expires_at,
        user: UserView::from(&session.user),
    }))
}

/// A new session.
pub(crate) struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: bal_scd::User,
}

/// Checks a username and password under the login limits and opens a session: the one login
/// of the API and the dashboard.
pub(crate) async fn authenticate(
    state: &AppState,
    username: &str,
    password: String,
    address: std::net::IpAddr,
) -> Result<NewSession, ApiError> {
    let attempt = begin_attempt(state, username, address).await?;
    let credentials = match Username::parse(username) {
        Ok(name) => state.store.credentials(&name).await?,
        Err(_) => None,
    };
    let phc = credentials.as_ref().map(|c| c.password_hash.clone());
    // Kept only where an external broker needs a copy it does not have yet: one write at the
    // first login after the switch, none after (see `keep_broker_secret`).
    let needs_copy =
        state.keys.broker.is_some() && credentials.as_ref().is_some_and(|c| !c.has_broker_secret);
    let plain = needs_copy.then(|| zeroize::Zeroizing::new(password.clone()));
    // Unknown users are checked against a dummy hash: same time, same answer.
    if !password::verify(password, phc).await? {
        let delay = attempt.failed().await;
        tracing::warn!(%address, "failed login");
        tokio::time::sleep(delay).await;
        return Err(ApiError::Unauthorized(BAD_LOGIN));
    }
    attempt.succeeded().await;
    let credentials = credentials.expect("verify is false without credentials");
    let user = credentials.user;
    let (token, digest) = new_token();
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(state.config.session_ttl).map_err(ApiError::internal)?;
    let expires_at = now + ttl;
    // Only if the password checked is still the current one: a change that committed while
    // this login was being checked has already ended every session, this one included.
    let created = state
        .store
        .create_session(
            digest,
            &user.username,
            &credentials.password_hash,
            now,
            expires_at,
        )
        .await?;
    if !created {
        return Err(ApiError::Unauthorized(BAD_LOGIN));
    }
    if let Some(plain) = plain {
        accounts::keep_broker_secret(
            state.store.as_ref(),
            &state.keys,
            &user.username,
            &credentials.password_hash,
            &plain,
        )
        .await;
    }
    tracing::info!(username = %user.username, "login");
    Ok(NewSession {
        token,
        expires_at,
        user,
    })
}

/// Ends the caller's session; its token stops working at once.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, caller: AuthUser) -> Result<StatusCode, ApiError> {
    state.store.delete_session(caller.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller: username, role, topic and wallet.
#[utoipa::path(get, path = "/api/me", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
async fn me(caller: AuthUser) -> Json<UserView> {
    Json(UserView::from(&caller.user))
}
