//! The one error type every handler returns, and the JSON extractors that produce it.
//!
//! Clients get `{"error": "<code>", "message": "<text>"}` with the right status. A 5xx never
//! carries its cause: that goes to the log, with the whole chain, and the client gets a
//! generic sentence.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bal_core::GrantError;
use bal_scd::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `not_found` or `conflict`.
    pub error: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(e) | ApiError::Unavailable(e) = &self {
            // `{:#}` prints the whole cause chain on one line.
            tracing::error!(
                error = format!("{e:#}"),
                status = status.as_u16(),
                "request failed"
            );
        }
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        match &self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::Grant(g) => g.into(),
            // The database is unreachable: 503, nothing was half-written, retry later.
            StoreError::Unavailable(_) => ApiError::Unavailable(anyhow::Error::new(e)),
            StoreError::Config(_) | StoreError::Backend(_) => ApiError::internal(e),
        }
    }
}

impl From<bal_auth::password::PasswordError> for ApiError {
    fn from(e: bal_auth::password::PasswordError) -> Self {
        ApiError::internal(e)
    }
}

impl From<bal_auth::password::PolicyError> for ApiError {
    fn from(e: bal_auth::password::PolicyError) -> Self {
        ApiError::Unprocessable(e.to_string())
    }
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::NotProducer { .. } | GrantError::NotConsumer | GrantError::NotSystem => {
                ApiError::Forbidden(e.to_string())
            }
            GrantError::IllegalTransition { .. } | GrantError::NotDue => {
                ApiError::Conflict(e.to_string())
            }
            GrantError::ExpiryInPast => ApiError::Unprocessable(e.to_string()),
        }
    }
}

/// Maps axum's own rejections (which answer in plain text) onto our JSON errors, keeping
/// their status: 400 for malformed JSON, 413 over the body cap, 415 without a JSON content
/// type, 422 for JSON of the wrong shape (unknown fields, invalid names).
fn from_rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("request body is larger than the limit".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(text),
        s if s.is_server_error() => ApiError::internal(anyhow::anyhow!(text)),
        _ => ApiError::BadRequest(text),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        // A query string of the wrong shape is a malformed request, whatever axum thinks.
        ApiError::BadRequest(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_never_reveal_their_cause() {
        let e = ApiError::internal(anyhow::anyhow!("no such table: users at /var/lib/bal.db"));
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(text, r#"{"error":"internal","message":"internal error"}"#);
    }

    #[test]
    fn grant_errors_map_to_the_right_status() {
        let status = |e: GrantError| ApiError::from(e).status_and_code().0;
        assert_eq!(status(GrantError::NotConsumer), StatusCode::FORBIDDEN);
        assert_eq!(
            status(GrantError::ExpiryInPast),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(GrantError::IllegalTransition {
                from: bal_core::SubscriptionStatus::Refused,
                verb: "accept"
            }),
            StatusCode::CONFLICT
        );
    }
}
