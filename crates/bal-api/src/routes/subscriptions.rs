//! Producers and subscriptions: consumers request access to a producer's topic, producers
//! decide, consumers cancel. Every object is checked against the caller: a producer decides
//! only requests on its own topic, a consumer sees and cancels only its own.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bal_core::{
    Actor, GrantAccess, GrantAction, Role, Subscription, SubscriptionId, SubscriptionStatus, Topic,
};
use bal_scd::{SubscriptionQuery, User};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::{AuthUser, Consumer, Producer};
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::views::{ProducerView, SubscriptionView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_producers))
        .routes(routes!(list_subscriptions, request_subscription))
        .routes(routes!(get_subscription))
        .routes(routes!(accept))
        .routes(routes!(refuse))
        .routes(routes!(revoke))
        .routes(routes!(cancel))
}

/// Producers with their topic and wallet; for a consumer, also its latest subscription to each.
#[utoipa::path(get, path = "/api/producers", tag = "subscriptions",
    security(("bearer" = [])),
    responses((status = 200, body = [ProducerView]), (status = 401, body = ErrorBody)))]
async fn list_producers(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<Vec<ProducerView>>, ApiError> {
    let now = Utc::now();
    let mut latest: HashMap<String, Subscription> = HashMap::new();
    if caller.user.role == Role::Consumer {
        let query = SubscriptionQuery {
            consumer: Some(caller.user.username.clone()),
            access: Some(GrantAccess::Read),
            ..Default::default()
        };
        // Newest first, so the first seen per producer is its latest.
        for s in state.store.subscriptions(&query).await? {
            latest.entry(s.producer.to_string()).or_insert(s);
        }
    }
    let producers = state.store.users().await?;
    let views = producers
        .iter()
        .filter_map(|u| {
            let topic = u.topic.as_ref()?;
            let sub = latest.get(u.username.as_str());
            Some(ProducerView {
                username: u.username.to_string(),
                topic: topic.to_string(),
                wallet: u.wallet.to_string(),
                subscription_status: sub.map(|s| s.status_at(now).to_string()),
                subscription_id: sub.map(|s| s.id.to_string()),
            })
        })
        .collect();
    Ok(Json(views))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSubscription {
    /// The producer's topic, `platone/<producer>` (a sub-topic means its producer's topic).
    #[schema(value_type = String, example = "platone/producer1", max_length = 256,
        pattern = "^platone/[a-z][a-z0-9_-]{2,31}(/[^/+#\\x00-\\x1f\\x7f-\\x9f]+)*$")]
    topic: Topic,
    /// `read` (default): the producer's readings; `control`: sending set points to its
    /// devices. Each is a grant of its own.
    #[serde(default)]
    #[schema(value_type = String, pattern = "^(read|control)$", example = "read")]
    access: GrantAccess,
}

/// Requests access to a producer's topic: its readings (`read`) or its devices (`control`).
#[utoipa::path(post, path = "/api/subscriptions", tag = "subscriptions",
    security(("bearer" = [])),
    request_body = RequestSubscription,
    responses(
        (status = 201, body = SubscriptionView),
        (status = 403, body = ErrorBody, description = "the caller is not a consumer"),
        (status = 404, body = ErrorBody, description = "no such producer"),
        (status = 409, body = ErrorBody, description = "a live request or grant of that access exists, or (control) a replica of an earlier release is running"),
        (status = 422, body = ErrorBody, description = "not a producer topic"),
    ))]
async fn request_subscription(
    State(state): State<AppState>,
    Consumer(consumer): Consumer,
    Json(req): Json<RequestSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    if req.access == GrantAccess::Control {
        crate::routes::setpoints::ensure_replicas_know_setpoints(&state).await?;
    }
    let now = Utc::now();
    let request = Subscription::request_access(consumer.username, &req.topic, req.access, now);
    let stored = state.store.request_subscription(request).await?;
    state.metrics.grant_decision(stored.status);
    let location = format!("/api/subscriptions/{}", stored.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SubscriptionView::at(&stored, now)),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only subscriptions with this stored status.
    #[param(pattern = "^(requested|accepted|refused|revoked|cancelled|expired)$")]
    status: Option<String>,
    /// Only grants of this access.
    #[param(pattern = "^(read|control)$")]
    access: Option<String>,
}

/// Subscriptions the caller may see: a consumer its own, a producer those on its topic, an
/// admin all of them. Newest first.
#[utoipa::path(get, path = "/api/subscriptions", tag = "subscriptions",
    security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = [SubscriptionView]), (status = 401, body = ErrorBody)))]
async fn list_subscriptions(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(p): Query<ListParams>,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    let status = p
        .status
        .map(|s| s.parse::<SubscriptionStatus>())
        .transpose()
        .map_err(|_| ApiError::BadRequest("unknown status".into()))?;
    let access = p
        .access
        .map(|a| a.parse::<GrantAccess>())
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let me = caller.user.username;
    let query = match caller.user.role {
        Role::Admin => SubscriptionQuery::default(),
        Role::Producer => SubscriptionQuery {
            producer: Some(me),
            ..Default::default()
        },
        Role::Consumer => SubscriptionQuery {
            consumer: Some(me),
            ..Default::default()
        },
    };
    let query = SubscriptionQuery {
        status,
        access,
        ..query
    };
    let now = Utc::now();
    let list = state.store.subscriptions(&query).await?;
    Ok(Json(
        list.iter().map(|s| SubscriptionView::at(s, now)).collect(),
    ))
}

/// Loads a subscription the caller is a party to (or any, for an admin); others get 403.
async fn visible(state: &AppState, caller: &User, id: &str) -> Result<Subscription, ApiError> {
    let id = SubscriptionId::parse(id).map_err(|_| ApiError::NotFound("subscription"))?;
    let sub = state
        .store
        .subscription(id)
        .await?
        .ok_or(ApiError::NotFound("subscription"))?;
    let party = caller.username == sub.consumer || caller.username == sub.producer;
    if party || caller.role == Role::Admin {
        Ok(sub)
    } else {
        Err(ApiError::Forbidden(
            "this subscription is neither yours nor on your topic".into(),
        ))
    }
}

/// One subscription the caller is a party to (any, for an admin).
#[utoipa::path(get, path = "/api/subscriptions/{id}", tag = "subscriptions",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_subscription(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let sub = visible(&state, &caller.user, &id).await?;
    Ok(Json(SubscriptionView::at(&sub, Utc::now())))
}

/// Applies a decision by `caller`. The store re-checks the party and the transition inside its
/// transaction, so two racing decisions cannot both win.
async fn decide(
    state: &AppState,
    caller: User,
    id: &str,
    action: GrantAction,
) -> Result<Json<SubscriptionView>, ApiError> {
    let sub = visible(state, &caller, id).await?;
    let now = Utc::now();
    let actor = Actor::User(caller.username);
    let decided = state.store.decide(sub.id, &action, &actor, now).await?;
    state.metrics.grant_decision(decided.status);
    tracing::info!(subscription = %decided.id, status = %decided.status, "subscription decided");
    Ok(Json(SubscriptionView::at(&decided, now)))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// When the grant lapses; omitted for an open-ended grant.
    expires_at: Option<DateTime<Utc>>,
}

/// Accepts a request on the caller's topic, optionally until `expires_at`. The body is
/// optional.
#[utoipa::path(post, path = "/api/subscriptions/{id}/accept", tag = "subscriptions",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    request_body(content = Option<AcceptBody>, content_type = "application/json"),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 403, body = ErrorBody, description = "not the topic's producer"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not in a state that can be accepted"),
        (status = 422, body = ErrorBody, description = "expires_at is not in the future"),
    ))]
async fn accept(
    State(state): State<AppState>,
    Producer(caller): Producer,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<SubscriptionView>, ApiError> {
    // An empty body or `null` means "no expiry"; anything else must be a valid AcceptBody.
    let body: AcceptBody = if body.iter().all(u8::is_ascii_whitespace) {
        AcceptBody::default()
    } else {
        serde_json::from_slice::<Option<AcceptBody>>(&body)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
                _ => ApiError::BadRequest(e.to_string()),
            })?
            .unwrap_or_default()
    };
    let action = GrantAction::Accept {
        expires_at: body.expires_at,
    };
    decide(&state, caller, &id, action).await
}

/// Refuses a request on the caller's topic.
#[utoipa::path(post, path = "/api/subscriptions/{id}/refuse", tag = "subscriptions",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn refuse(
    State(state): State<AppState>,
    Producer(caller): Producer,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    decide(&state, caller, &id, GrantAction::Refuse).await
}

/// Revokes an accepted grant on the caller's topic.
#[utoipa::path(post, path = "/api/subscriptions/{id}/revoke", tag = "subscriptions",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    Producer(caller): Producer,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    decide(&state, caller, &id, GrantAction::Revoke).await
}

/// Withdraws the caller's own request or grant.
#[utoipa::path(post, path = "/api/subscriptions/{id}/cancel", tag = "subscriptions",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    Consumer(caller): Consumer,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    decide(&state, caller, &id, GrantAction::Cancel).await
}
