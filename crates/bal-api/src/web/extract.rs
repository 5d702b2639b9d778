//! What a page handler needs checked before it runs, as extractors, like the API's `Admin`,
//! `Producer` and `Consumer`: the role a page is for ([`WebAdmin`], [`WebProducer`],
//! [`WebConsumer`]; 403 as an HTML page for any other role), and the CSRF token of a posted
//! form ([`Posted`]; 403 when it does not match the session's). A handler cannot forget
//! either: without the extractor it has no user or no form.

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bal_core::Role;
use serde::de::DeserializeOwned;

use super::session::WebUser;
use super::{WebError, check_csrf};
use crate::AppState;
use crate::error::ApiError;

macro_rules! web_role {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        pub struct $name(pub WebUser);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Response;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Response> {
                let who = WebUser::from_request_parts(parts, state)
                    .await
                    .map_err(IntoResponse::into_response)?;
                if who.user.role != $role {
                    let refusal = ApiError::Forbidden(format!(
                        "this page is for the {} role",
                        $role.as_str()
                    ));
                    return Err(WebError::new(refusal, &who).into_response());
                }
                Ok(Self(who))
            }
        }
    };
}

web_role!(
    /// A logged-in admin.
    WebAdmin,
    Role::Admin
);
web_role!(
    /// A logged-in producer.
    WebProducer,
    Role::Producer
);
web_role!(
    /// A logged-in consumer.
    WebConsumer,
    Role::Consumer
);

/// A form that carries the session's CSRF token (a hidden `csrf` field).
pub trait CarriesCsrf {
    fn csrf(&self) -> &str;
}

/// A form posted by a logged-in browser, its CSRF token checked against the session's.
pub struct Posted<T>(pub T);

impl<T> FromRequest<AppState> for Posted<T>
where
    T: DeserializeOwned + CarriesCsrf + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        // The session is looked up once per request (see `WebUser`), whichever extractor asks.
        let who = WebUser::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| {
                WebError::new(ApiError::Unprocessable(e.body_text()), &who).into_response()
            })?;
        check_csrf(&who, form.csrf()).map_err(IntoResponse::into_response)?;
        Ok(Self(form))
    }
}

/// Forms with nothing but the token (buttons that delete, reset, log out).
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `CarriesCsrf` for forms whose token is the field `csrf`.
macro_rules! carries_csrf {
    ($($form:ty),* $(,)?) => {
        $(impl $crate::web::extract::CarriesCsrf for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}
pub(crate) use carries_csrf;

carries_csrf!(CsrfOnly);
