//! User administration: admins create, list, read and delete users; anyone changes their own
//! password (with the current one), admins reset anyone's.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bal_core::{Actor, Role, Username};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Admin, AuthUser, begin_attempt};
use crate::client::ClientAddr;
use crate::error::{ApiError, ErrorBody, Json, Path};
use crate::views::UserView;
use crate::{AppState, accounts};
use bal_auth::password;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(change_password))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3 to 32 characters of `a-z 0-9 _ -`, starting with a letter.
    #[schema(value_type = String, example = "producer1", pattern = "^[a-z][a-z0-9_-]{2,31}$")]
    username: Username,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    #[schema(value_type = String, example = "producer", pattern = "^(admin|producer|consumer)$")]
    role: Role,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// Required when changing one's own password; not when an admin resets someone else's.
    current_password: Option<String>,
}

/// Parses a username from the path; a name that cannot exist is simply not found.
fn path_user(raw: &str) -> Result<Username, ApiError> {
    Username::parse(raw).map_err(|_| ApiError::NotFound("user"))
}

/// Every active user, by name.
#[utoipa::path(get, path = "/api/users", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.store.users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

/// Creates a user with a new wallet; a producer also gets its topic `platone/<username>`.
#[utoipa::path(post, path = "/api/users", tag = "users",
    security(("bearer" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, body = UserView),
        (status = 403, body = ErrorBody, description = "the caller is not an admin"),
        (status = 409, body = ErrorBody, description = "username taken, now or before"),
        (status = 422, body = ErrorBody, description = "invalid username, role or password"),
    ))]
async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    let actor = Actor::User(admin.username);
    let user = accounts::create_user(
        state.store.as_ref(),
        &state.keys,
        req.username,
        req.role,
        req.password,
        &actor,
    )
    .await?;
    tracing::info!(username = %user.username, role = %user.role, "user created");
    let location = format!("/api/users/{}", user.username);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserView::from(&user)),
    ))
}

/// One user.
#[utoipa::path(get, path = "/api/users/{username}", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z][a-z0-9_-]{2,31}$")),
    responses((status = 200, body = UserView),
        (status = 403, body = ErrorBody, description = "the caller is not an admin"),
        (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user = state
        .store
        .user(&path_user(&username)?)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(UserView::from(&user)))
}

/// Deletes a user: its sessions end, its live subscriptions are revoked or cancelled, and its
/// name is never given to anyone else. The last admin cannot be deleted.
#[utoipa::path(delete, path = "/api/users/{username}", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z][a-z0-9_-]{2,31}$")),
    responses((status = 204),
        (status = 403, body = ErrorBody, description = "the caller is not an admin"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the last admin")))]
async fn delete_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let username = path_user(&username)?;
    let actor = Actor::User(admin.username);
    let ended = state
        .store
        .delete_user(&username, &actor, chrono::Utc::now())
        .await?;
    tracing::info!(%username, ended_subscriptions = ended.len(), "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a password. Users change their own (giving the current one); admins reset anyone's.
/// Every session of that user ends.
#[utoipa::path(put, path = "/api/users/{username}/password", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path, pattern = "^[a-z][a-z0-9_-]{2,31}$")),
    request_body = ChangePassword,
    responses((status = 204), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "another user's password and the caller \
            is no admin, or one's own without the right current_password"),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the new password breaks the length rule"),
        (status = 429, body = ErrorBody, description = "too many wrong current passwords")))]
async fn change_password(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    caller: AuthUser,
    Path(username): Path<String>,
    Json(req): Json<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    let caller = caller.user;
    let is_self = caller.username.as_str() == username;
    if !is_self && caller.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "only an admin may change another user's password".into(),
        ));
    }
    let username = path_user(&username)?;
    if is_self {
        // A stolen token alone must not be enough to take the account over, nor to guess the
        // password: the check is limited like a login.
        // Without the current password the caller has not shown it may: 403, as for a wrong one.
        let current = req.current_password.ok_or_else(|| {
            ApiError::Forbidden("current_password is required to change your own".into())
        })?;
        let attempt = begin_attempt(&state, username.as_str(), client).await?;
        let stored = state
            .store
            .credentials(&username)
            .await?
            .map(|c| c.password_hash);
        if !password::verify(current, stored).await? {
            tokio::time::sleep(attempt.failed().await).await;
            return Err(ApiError::Forbidden("current_password is wrong".into()));
        }
        attempt.succeeded().await;
    }
    let actor = Actor::User(caller.username);
    accounts::change_password(
        state.store.as_ref(),
        &state.keys,
        &username,
        req.password,
        &actor,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
