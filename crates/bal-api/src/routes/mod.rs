//! One module per resource; each exposes `router()` with its documented routes.

pub mod audit;
pub mod auth;
pub mod certification;
pub mod health;
pub mod measurements;
pub mod metrics;
pub mod rpc;
pub mod setpoints;
pub mod subscriptions;
pub mod users;

use crate::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
