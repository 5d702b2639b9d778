//! Browser sessions: the same server-side sessions as API tokens (so logout, a password change
//! and deleting a user end them the same way), carried in an HttpOnly, SameSite=Strict cookie
//! (Secure over HTTPS). Every form carries a CSRF token derived from the session token, which
//! only the cookie holds: a page of another site can neither read it nor compute it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use bal_scd::User;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::digest;

/// The session cookie.
pub const SESSION_COOKIE: &str = "bal_session";
/// Before login: a random value the login form must echo (login CSRF).
pub const LOGIN_COOKIE: &str = "bal_login";

/// A logged-in browser.
#[derive(Clone)]
pub struct WebUser {
    pub user: User,
    /// The session's digest (to end exactly this session).
    pub session: [u8; 32],
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl std::fmt::Debug for WebUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebUser")
            .field("user", &self.user.username)
            .finish_non_exhaustive()
    }
}

/// The CSRF token of a session (or of a pre-login cookie).
pub fn csrf_for(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("bal-csrf:{secret}").as_bytes()))
}

/// Constant-time comparison of a submitted CSRF token with the expected one.
pub fn csrf_matches(expected: &str, submitted: &str) -> bool {
    expected.len() == submitted.len() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure over HTTPS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age_secs}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie values are base64url or hex")
}

/// Not logged in (or the session ended): off to the login page.
pub struct LoginFirst;

impl IntoResponse for LoginFirst {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = LoginFirst;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, LoginFirst> {
        // Several extractors of one request ask (a role and a posted form): one lookup.
        if let Some(who) = parts.extensions.get::<WebUser>() {
            return Ok(who.clone());
        }
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(LoginFirst)?;
        let session = digest(&token);
        let user = state
            .store
            .session_user(session, chrono::Utc::now())
            .await
            .ok()
            .flatten()
            .ok_or(LoginFirst)?;
        let who = Self {
            user,
            session,
            csrf: csrf_for(&token),
        };
        parts.extensions.insert(who.clone());
        Ok(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_csrf_tokens_bind_to_the_session() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; bal_session=tok; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "bal_sess"), None);
        let t = csrf_for("tok");
        assert!(csrf_matches(&t, &csrf_for("tok")));
        assert!(!csrf_matches(&t, &csrf_for("other")));
        assert!(!csrf_matches(&t, ""));
        let c = set_cookie(SESSION_COOKIE, "tok", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
    }
}
