//! Figure 3: the login page, for every role, and logging out. The same login as the API (same
//! limits on failed attempts, same answer for any wrong name or password).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::WebError;
use super::extract::{CsrfOnly, Posted};
use super::layout::page;
use super::session::{
    LOGIN_COOKIE, SESSION_COOKIE, WebUser, cookie, csrf_for, csrf_matches, set_cookie,
};
use crate::AppState;
use crate::auth::new_token;
use crate::client::ClientAddr;
use crate::error::ApiError;
use crate::routes::auth::authenticate;

#[derive(Deserialize)]
pub struct LoginQuery {
    done: Option<String>,
}

fn form_page(
    csrf: &str,
    error: Option<&str>,
    notice: Option<&str>,
    username: &str,
) -> maud::Markup {
    page(
        "Log in",
        None,
        notice,
        html! {
            @if let Some(e) = error {
                p.error role="alert" #login-error { (e) }
            }
            form.stack method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="username" { "Username" }
                input #username name="username" type="text" autocomplete="username" required value=(username);
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                p { button #login type="submit" { "Log in" } }
            }
        },
    )
}

/// The login form, with a fresh pre-login cookie its CSRF token is bound to.
pub async fn form(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let (secret, _) = new_token();
    let cookie = set_cookie(LOGIN_COOKIE, &secret, 3600, state.config.secure_cookies);
    (
        [(header::SET_COOKIE, cookie)],
        form_page(&csrf_for(&secret), None, q.done.as_deref(), ""),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let secure = state.config.secure_cookies;
    let pre = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let retry = |status: StatusCode, message: &str| {
        let (secret, _) = new_token();
        (
            status,
            [(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, &secret, 3600, secure),
            )],
            form_page(&csrf_for(&secret), Some(message), None, &f.username),
        )
            .into_response()
    };
    if pre.is_empty() || !csrf_matches(&csrf_for(&pre), &f.csrf) {
        return retry(
            StatusCode::FORBIDDEN,
            "The login form expired or did not come from this site. Please try again.",
        );
    }
    match authenticate(&state, &f.username, f.password, client).await {
        Ok(session) => {
            let max_age = (session.expires_at - chrono::Utc::now())
                .num_seconds()
                .max(0) as u64;
            (
                // Appended, not inserted: two cookies need two headers.
                AppendHeaders([
                    (
                        header::SET_COOKIE,
                        set_cookie(SESSION_COOKIE, &session.token, max_age, secure),
                    ),
                    (header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure)),
                ]),
                Redirect::to("/"),
            )
                .into_response()
        }
        Err(ApiError::Unauthorized(m)) => retry(StatusCode::UNAUTHORIZED, &capitalised(m)),
        Err(e @ ApiError::TooManyRequests { .. }) => {
            retry(StatusCode::TOO_MANY_REQUESTS, &capitalised(&e.to_string()))
        }
        Err(e) => WebError::from(e).into_response(),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

/// Ends the session (server-side, so the token stops working at once) and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    who: WebUser,
    _: Posted<CsrfOnly>,
) -> Result<Response, WebError> {
    state.store.delete_session(who.session).await?;
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", 0, state.config.secure_cookies),
        )],
        Redirect::to("/login?done=You+are+logged+out."),
    )
        .into_response())
}
