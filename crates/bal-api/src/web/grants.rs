//! Figures 4 and 5: a consumer's producers (subscribe, cancel, open the data of an accepted
//! grant; ask for control of its devices) and a producer's requests, data and control grants
//! alike (accept with an optional expiry, refuse, revoke).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bal_core::{
    Actor, GrantAccess, GrantAction, Role, Subscription, SubscriptionId, SubscriptionStatus, Topic,
};
use bal_scd::SubscriptionQuery;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::html;
use serde::Deserialize;

use super::extract::{Posted, WebConsumer, WebProducer, carries_csrf};
use super::layout::{csrf, page, post_button, when};
use super::session::WebUser;
use super::{WebError, done};
use crate::AppState;
use crate::error::ApiError;

#[derive(Deserialize)]
pub struct Notice {
    done: Option<String>,
}

/// Figure 4: every producer, with this consumer's latest subscription to it.
pub async fn consumer(
    State(state): State<AppState>,
    WebConsumer(who): WebConsumer,
    Query(n): Query<Notice>,
) -> Result<Response, WebError> {
    let now = Utc::now();
    // The latest grant of each access per producer (newest first, so the first seen).
    let mut latest: HashMap<(String, GrantAccess), Subscription> = HashMap::new();
    let mine = SubscriptionQuery {
        consumer: Some(who.user.username.clone()),
        ..Default::default()
    };
    for s in state.store.subscriptions(&mine).await? {
        latest
            .entry((s.producer.to_string(), s.access))
            .or_insert(s);
    }
    let users = state.store.users().await?;
    let body = html! {
        p { "Ask a producer for its data; once it accepts, open its readings." }
        div.table-wrap {
            table #producers {
                caption { "Producers" }
                thead { tr {
                    th scope="col" { "Username" } th scope="col" { "Topic" }
                    th scope="col" { "Wallet" } th scope="col" { "Subscription Status" }
                    th scope="col" { "Actions" } th scope="col" { "Control of its devices" }
                } }
                tbody {
                    @for u in users.iter().filter(|u| u.role == Role::Producer) {
                        @let topic = u.topic.as_ref().map(ToString::to_string).unwrap_or_default();
                        @let sub = latest.get(&(u.username.to_string(), GrantAccess::Read));
                        @let control = latest.get(&(u.username.to_string(), GrantAccess::Control));
                        @let control_status = control.map(|s| s.status_at(now));
                        @let status = sub.map(|s| s.status_at(now));
                        tr data-producer=(u.username) {
                            th scope="row" { (u.username) }
                            td.mono { (topic) }
                            td.mono { (u.wallet) }
                            td.status { (status.map_or("none".to_owned(), |s| s.to_string())) }
                            td {
                                @match (sub, status) {
                                    (Some(s), Some(SubscriptionStatus::Accepted)) => {
                                        a href={ "/data/" (u.username) } { "View data" } " "
                                        (post_button(&who, &format!("/subscriptions/{}/cancel", s.id), "Cancel"))
                                    }
                                    (Some(s), Some(SubscriptionStatus::Requested)) => {
                                        (post_button(&who, &format!("/subscriptions/{}/cancel", s.id), "Cancel request"))
                                    }
                                    _ => {
                                        form.inline method="post" action="/subscriptions" {
                                            (csrf(&who))
                                            input type="hidden" name="topic" value=(topic);
                                            button type="submit" aria-label={ "Subscribe to " (u.username) } { "Subscribe" }
                                        }
                                    }
                                }
                            }
                            td.control {
                                (control_status.map_or("none".to_owned(), |s| s.to_string())) " "
                                @match (control, control_status) {
                                    (Some(s), Some(SubscriptionStatus::Accepted | SubscriptionStatus::Requested)) => {
                                        @if control_status == Some(SubscriptionStatus::Accepted) {
                                            a href="/setpoints" { "Set points" } " "
                                        }
                                        (post_button(&who, &format!("/subscriptions/{}/cancel", s.id), "Give up control"))
                                    }
                                    _ => {
                                        form.inline method="post" action="/subscriptions" {
                                            (csrf(&who))
                                            input type="hidden" name="topic" value=(topic);
                                            input type="hidden" name="access" value="control";
                                            button type="submit" aria-label={ "Ask " (u.username) " for control" } { "Ask for control" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Producers", Some(&who), n.done.as_deref(), body).into_response())
}

/// Figure 5: the requests and grants on this producer's topic.
pub async fn producer(
    State(state): State<AppState>,
    WebProducer(who): WebProducer,
    Query(n): Query<Notice>,
) -> Result<Response, WebError> {
    let now = Utc::now();
    let query = SubscriptionQuery {
        producer: Some(who.user.username.clone()),
        ..Default::default()
    };
    let subs = state.store.subscriptions(&query).await?;
    let body = html! {
        p {
            "Consumers asking for your data. "
            a href={ "/data/" (who.user.username) } { "Your own data" }
            " shows your readings and their certification."
        }
        div.table-wrap {
            table #requests {
                caption { "Requests and grants" }
                thead { tr {
                    th scope="col" { "Consumer" } th scope="col" { "Topic" }
                    th scope="col" { "Access" }
                    th scope="col" { "Status" } th scope="col" { "Creation Date" }
                    th scope="col" { "Modification Date" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for s in &subs {
                        @let status = s.status_at(now);
                        tr data-consumer=(s.consumer) {
                            th scope="row" { (s.consumer) }
                            td.mono { (s.topic) }
                            td.access { @if s.access == GrantAccess::Control { "control of your devices" } @else { "your data" } }
                            td.status {
                                (status)
                                @if let (SubscriptionStatus::Accepted, Some(e)) = (status, s.expires_at) {
                                    " until " (when(&e))
                                }
                            }
                            td { (when(&s.creation_date)) }
                            td { (when(&s.modification_date)) }
                            td {
                                @match status {
                                    SubscriptionStatus::Requested => {
                                        form.inline method="post" action={ "/subscriptions/" (s.id) "/accept" } {
                                            (csrf(&who))
                                            label for={ "expiry-" (s.id) } { "Expires (UTC, optional) " }
                                            input id={ "expiry-" (s.id) } type="datetime-local" name="expires_at";
                                            " "
                                            button type="submit" aria-label={ "Accept " (s.consumer) } { "Accept" }
                                        }
                                        (post_button(&who, &format!("/subscriptions/{}/refuse", s.id), "Refuse"))
                                    }
                                    SubscriptionStatus::Accepted => {
                                        (post_button(&who, &format!("/subscriptions/{}/revoke", s.id), "Revoke"))
                                    }
                                    _ => {}
                                }
                            }
                        }
                    }
                    @if subs.is_empty() {
                        tr { td colspan="7" { "No requests yet." } }
                    }
                }
            }
        }
    };
    Ok(page("Requests", Some(&who), n.done.as_deref(), body).into_response())
}

#[derive(Deserialize)]
pub struct RequestForm {
    csrf: String,
    topic: String,
    /// `control` for a control grant; data otherwise.
    access: Option<String>,
}

carries_csrf!(RequestForm);

pub async fn request(
    State(state): State<AppState>,
    WebConsumer(who): WebConsumer,
    Posted(f): Posted<RequestForm>,
) -> Result<Response, WebError> {
    let topic = Topic::parse(&f.topic)
        .map_err(|e| WebError::new(ApiError::Unprocessable(e.to_string()), &who))?;
    let access = match f.access.as_deref() {
        None | Some("") => GrantAccess::Read,
        Some(raw) => raw
            .parse()
            .map_err(|e: bal_core::subscription::UnknownAccess| {
                WebError::new(ApiError::Unprocessable(e.to_string()), &who)
            })?,
    };
    if access == GrantAccess::Control {
        crate::routes::setpoints::ensure_replicas_know_setpoints(&state)
            .await
            .map_err(|e| WebError::new(e, &who))?;
    }
    let request =
        Subscription::request_access(who.user.username.clone(), &topic, access, Utc::now());
    state
        .store
        .request_subscription(request)
        .await
        .map_err(|e| WebError::new(e, &who))?;
    state.metrics.grant_decision(SubscriptionStatus::Requested);
    let what = match access {
        GrantAccess::Read => "access to",
        GrantAccess::Control => "control of the devices of",
    };
    Ok(done("/consumer", &format!("Requested {what} {topic}.")).into_response())
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    /// From a `datetime-local` input: no zone, taken as UTC; empty for no expiry.
    expires_at: Option<String>,
}

fn expiry(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| Some(t.and_utc()))
        .map_err(|_| ApiError::Unprocessable(format!("{raw:?} is not a date and time")))
}

carries_csrf!(DecisionForm);

pub async fn decide(
    State(state): State<AppState>,
    who: WebUser,
    Path((id, action)): Path<(String, String)>,
    Posted(f): Posted<DecisionForm>,
) -> Result<Response, WebError> {
    let fail = |e: ApiError| WebError::new(e, &who);
    let action = match action.as_str() {
        "accept" => GrantAction::Accept {
            expires_at: expiry(f.expires_at.as_deref()).map_err(fail)?,
        },
        "refuse" => GrantAction::Refuse,
        "revoke" => GrantAction::Revoke,
        "cancel" => GrantAction::Cancel,
        _ => return Err(fail(ApiError::NotFound("action"))),
    };
    let id = SubscriptionId::parse(&id).map_err(|_| fail(ApiError::NotFound("subscription")))?;
    let sub = state
        .store
        .subscription(id)
        .await?
        .ok_or_else(|| fail(ApiError::NotFound("subscription")))?;
    if who.user.username != sub.consumer && who.user.username != sub.producer {
        return Err(fail(ApiError::Forbidden(
            "this subscription is neither yours nor on your topic".into(),
        )));
    }
    let actor = Actor::User(who.user.username.clone());
    let decided = state
        .store
        .decide(sub.id, &action, &actor, Utc::now())
        .await
        .map_err(|e| WebError::new(e, &who))?;
    state.metrics.grant_decision(decided.status);
    let back = if who.user.role == Role::Producer {
        "/producer"
    } else {
        "/consumer"
    };
    let notice = match who.user.role {
        Role::Producer => format!("{}'s request: {}.", decided.consumer, decided.status),
        _ => format!(
            "Your subscription to {}: {}.",
            decided.producer, decided.status
        ),
    };
    Ok(done(back, &notice).into_response())
}
