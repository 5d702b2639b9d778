//! The web dashboard (D2.12 §2.1.2, figures 3–5): login for every role, the consumer's list of
//! producers, the producer's requests, each producer's data (a live chart, history, CSV), the
//! admin's users, grants, audit log and health, and a certification explorer. Rendered on the
//! server (maud), charts as SVG (plotters); one small script keeps the live chart current.
//!
//! Every page applies the API's own rules through the same store calls: a consumer never sees
//! data it was not granted, whatever URL it types. Forms post with a CSRF token; decisions
//! redirect back (post/redirect/get) with a notice.
//!
//! - [`session`]: the cookie session and CSRF tokens; `extract`: the role and CSRF checks every
//!   handler gets by extractor.
//! - [`layout`]: the page frame.
//! - [`chart`]: SVG charts.
//! - `login`, `grants`, `data`, `admin`, `explorer`, `setpoints`: the pages.

mod admin;
pub mod chart;
mod data;
mod explorer;
mod extract;
mod grants;
mod layout;
mod login;
pub mod session;
mod setpoints;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use crate::AppState;
use crate::error::ApiError;
use session::WebUser;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/consumer", get(grants::consumer))
        .route("/producer", get(grants::producer))
        .route("/subscriptions", post(grants::request))
        .route("/subscriptions/{id}/{action}", post(grants::decide))
        .route("/data/{producer}", get(data::show))
        .route("/data/{producer}/chart.svg", get(data::chart))
        .route("/data/{producer}/history.csv", get(data::csv))
        .route("/data/{producer}/events", get(data::events))
        .route("/admin", get(admin::show))
        .route("/admin/users", post(admin::create_user))
        .route("/admin/users/{username}/delete", post(admin::delete_user))
        .route(
            "/admin/users/{username}/password",
            post(admin::reset_password),
        )
        .route("/setpoints", get(setpoints::list).post(setpoints::submit))
        .route("/setpoints/{id}", get(setpoints::show))
        .route("/setpoints/{id}/cancel", post(setpoints::cancel_submit))
        .route("/setpoints/{id}/proofs/{audit}", get(setpoints::proof))
        .route("/certification", get(explorer::show))
        .route("/certification/readings/{id}", get(explorer::reading))
        .route(
            "/certification/readings/{id}/bundle.json",
            get(explorer::bundle),
        )
        .route("/static/bal.css", get(css))
        .route("/static/bal.js", get(js))
}

/// Each role's start page.
async fn home(who: WebUser) -> Redirect {
    Redirect::to(match who.user.role {
        bal_core::Role::Admin => "/admin",
        bal_core::Role::Producer => "/producer",
        bal_core::Role::Consumer => "/consumer",
    })
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/bal.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/bal.js"),
    )
}

/// A page that failed: the API's error, as an HTML page with the same status.
pub struct WebError {
    error: ApiError,
    /// Boxed: errors travel through every `Result` of the pages and should stay small.
    who: Option<Box<WebUser>>,
}

impl WebError {
    pub fn new(error: impl Into<ApiError>, who: &WebUser) -> Self {
        Self {
            error: error.into(),
            who: Some(Box::new(who.clone())),
        }
    }
}

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> Self {
        Self { error, who: None }
    }
}

impl From<bal_scd::StoreError> for WebError {
    fn from(e: bal_scd::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, _) = self.error.status_and_code();
        if status.is_server_error() {
            // The cause goes to the log only: a page shows the generic message.
            tracing::error!(error = ?self.error, "page failed");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let message = self.error.to_string();
        let body = html! {
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the start page" } }
        };
        (status, layout::page(title, self.who.as_deref(), None, body)).into_response()
    }
}

/// A checked CSRF token, or 403.
pub fn check_csrf(who: &WebUser, submitted: &str) -> Result<(), WebError> {
    if session::csrf_matches(&who.csrf, submitted) {
        Ok(())
    } else {
        Err(WebError::new(
            ApiError::Forbidden("the form has expired or did not come from this site: reload the page and try again".into()),
            who,
        ))
    }
}

/// Back to `to` with a notice (post/redirect/get).
pub fn done(to: &str, notice: &str) -> Redirect {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!(
        "{to}{sep}done={}",
        url::form_urlencoded::byte_serialize(notice.as_bytes()).collect::<String>()
    ))
}
