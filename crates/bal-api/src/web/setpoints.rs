//! Set points on the dashboard: everyone sees the set points they may see (issued by them, to
//! their devices, or all for an admin) with their states; the admin and holders of control grants
//! issue and cancel them; each transition links to its proof bundle once anchored. The rules and
//! checks are the API's (`routes::setpoints`), called the same way.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bal_core::Role;
use bal_scd::{SetpointQuery, control_scope};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use super::extract::{Posted, carries_csrf};
use super::layout::{csrf, page, post_button, when};
use super::session::WebUser;
use super::{WebError, done};
use crate::AppState;
use crate::error::ApiError;
use crate::routes::setpoints::{cancel, issue, transitions, visible};

#[derive(Deserialize)]
pub struct Notice {
    done: Option<String>,
}

/// The producers `who` may send set points to, by name; empty for a producer.
async fn commandable(state: &AppState, who: &WebUser) -> Result<Vec<String>, WebError> {
    let scope = control_scope(&*state.store, &who.user, None, Utc::now()).await?;
    let producers = state.store.users().await?;
    Ok(producers
        .iter()
        .filter(|u| u.role == Role::Producer && scope.allows(&u.username))
        .map(|u| u.username.to_string())
        .collect())
}

/// The set points `who` may see, newest first, and the form to issue one.
pub async fn list(
    State(state): State<AppState>,
    who: WebUser,
    Query(n): Query<Notice>,
) -> Result<Response, WebError> {
    let query = SetpointQuery {
        visible_to: (who.user.role != Role::Admin).then(|| who.user.username.clone()),
        limit: 100,
        ..SetpointQuery::default()
    };
    let setpoints = state.store.setpoints(&query).await?;
    let producers = commandable(&state, &who).await?;
    let body = html! {
        @if who.user.role == Role::Producer {
            p { "Set points sent to your devices on " code { "setpoints/" (who.user.username) "/<device>" }
                ", and what they answered. Every step is certified." }
        } @else {
            p { "Commands to producers' devices: each is stored, sent over MQTT and followed until the
                device answers; every step is certified on the chain." }
        }
        @if !producers.is_empty() {
            (issue_form(&who, &producers))
        } @else if who.user.role == Role::Consumer {
            p { "To send set points, ask a producer for a control grant on the "
                a href="/consumer" { "Producers" } " page." }
        }
        div.table-wrap {
            table #setpoints {
                caption { "Set points (newest first)" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Producer" }
                    th scope="col" { "Device" } th scope="col" { "Values" }
                    th scope="col" { "State" } th scope="col" { "Issuer" }
                    th scope="col" { "Valid until" } th scope="col" { "Updated" }
                } }
                tbody {
                    @for s in &setpoints {
                        tr data-setpoint=(s.id) {
                            th scope="row" { a href={ "/setpoints/" (s.id) } { (s.id) } }
                            td { (s.producer) }
                            td.mono { (s.device) }
                            td.mono { (s.values.canonical_json()) }
                            td.status { (s.state) }
                            td { (s.issuer) }
                            td { (when(&s.valid_until)) }
                            td { (when(&s.updated_at)) }
                        }
                    }
                    @if setpoints.is_empty() {
                        tr { td colspan="8" { "No set points yet." } }
                    }
                }
            }
        }
    };
    Ok(page("Set points", Some(&who), n.done.as_deref(), body).into_response())
}

fn issue_form(who: &WebUser, producers: &[String]) -> Markup {
    html! {
        form #issue method="post" action="/setpoints" {
            (csrf(who))
            fieldset {
                legend { "Issue a set point" }
                label for="sp-producer" { "Producer" }
                select #sp-producer name="producer" {
                    @for p in producers { option value=(p) { (p) } }
                }
                label for="sp-device" { "Device" }
                input #sp-device name="device" required maxlength="64" placeholder="meter-1";
                label for="sp-values" { "Values (a JSON object)" }
                textarea #sp-values name="values" required rows="3" { r#"{"p_max_kw": 3.5}"# }
                label for="sp-minutes" { "Valid for (minutes)" }
                input #sp-minutes name="valid_minutes" type="number" min="1" max="10080" value="10" required;
                button type="submit" { "Issue" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct IssueForm {
    csrf: String,
    producer: String,
    device: String,
    values: String,
    valid_minutes: String,
}

carries_csrf!(IssueForm);

pub async fn submit(
    State(state): State<AppState>,
    who: WebUser,
    Posted(f): Posted<IssueForm>,
) -> Result<Response, WebError> {
    let fail = |e: ApiError| WebError::new(e, &who);
    let values: serde_json::Value = serde_json::from_str(&f.values)
        .map_err(|e| fail(ApiError::Unprocessable(format!("values: {e}"))))?;
    let minutes: i64 = f
        .valid_minutes
        .trim()
        .parse()
        .ok()
        .filter(|m| (1..=10_080).contains(m))
        .ok_or_else(|| {
            fail(ApiError::Unprocessable(
                "valid for 1 to 10080 minutes".into(),
            ))
        })?;
    let until = Utc::now() + chrono::Duration::minutes(minutes);
    let issued = issue(&state, &who.user, &f.producer, &f.device, &values, until)
        .await
        .map_err(fail)?;
    let notice = format!(
        "Set point {} issued to {}'s {}.",
        issued.id, issued.producer, issued.device
    );
    Ok(done(&format!("/setpoints/{}", issued.id), &notice).into_response())
}

/// One set point with its transitions and their proofs.
pub async fn show(
    State(state): State<AppState>,
    who: WebUser,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> Result<Response, WebError> {
    let s = visible(&state, &who.user, &id)
        .await
        .map_err(|e| WebError::new(e, &who))?;
    let steps = transitions(&state, &s)
        .await
        .map_err(|e| WebError::new(e, &who))?;
    let may_cancel = (s.issuer.username() == Some(&who.user.username)
        || who.user.role == Role::Admin)
        && s.state
            .can_become(bal_core::setpoint::SetpointState::Cancelled);
    let body = html! {
        dl #setpoint {
            dt { "Producer" } dd { (s.producer) }
            dt { "Device" } dd.mono { (s.device) }
            dt { "Topic" } dd.mono { (bal_core::setpoint::command_topic(&s.producer, &s.device)) }
            dt { "Values" } dd.mono { (s.values.canonical_json()) }
            dt { "Values hash" } dd.mono { (s.values.hash()) }
            dt { "Issuer" } dd { (s.issuer) }
            dt { "Valid until" } dd { (when(&s.valid_until)) }
            dt { "Sequence number" } dd { (s.seq) }
            dt { "State" } dd.status { (s.state) }
            @if let Some(r) = &s.reason { dt { "Reason" } dd { (r) } }
            dt { "Sends" } dd { (s.attempts) }
        }
        @if may_cancel {
            (post_button(&who, &format!("/setpoints/{}/cancel", s.id), "Cancel"))
        }
        div.table-wrap {
            table #transitions {
                caption { "Transitions, each certified" }
                thead { tr {
                    th scope="col" { "State" } th scope="col" { "At" }
                    th scope="col" { "By" } th scope="col" { "Proof" }
                } }
                tbody {
                    @for t in &steps {
                        tr data-state=(t.state) {
                            th scope="row" { (t.state) }
                            td { (when(&t.at)) }
                            td { (t.actor) }
                            td {
                                @match &t.proof {
                                    Some(b) => {
                                        "anchored in block " (b.block_number) " · "
                                        a href={ "/setpoints/" (s.id) "/proofs/" (t.audit_id) } download { "bundle.json" }
                                    }
                                    None => { "pending (the next batch)" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p { "Check a bundle without the BAL: " code { "bal verify bundle.json --rpc <node>" } "." }
        p { a href="/setpoints" { "All set points" } }
    };
    let title = format!("Set point {}", s.id);
    Ok(page(&title, Some(&who), n.done.as_deref(), body).into_response())
}

/// A transition's proof bundle, as a file.
pub async fn proof(
    State(state): State<AppState>,
    who: WebUser,
    Path((id, audit)): Path<(String, i64)>,
) -> Result<Response, WebError> {
    let fail = |e: ApiError| WebError::new(e, &who);
    let s = visible(&state, &who.user, &id).await.map_err(fail)?;
    let step = transitions(&state, &s)
        .await
        .map_err(fail)?
        .into_iter()
        .find(|t| t.audit_id == audit)
        .ok_or_else(|| fail(ApiError::NotFound("transition")))?;
    let bundle = step.proof.ok_or_else(|| {
        fail(ApiError::Conflict(
            "not anchored yet; try again in a few seconds".into(),
        ))
    })?;
    let json = serde_json::to_string_pretty(&bundle).map_err(|e| fail(ApiError::internal(e)))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"setpoint-{}-{}-proof.json\"",
                    s.id, step.state
                ),
            ),
        ],
        json,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
}

carries_csrf!(CancelForm);

pub async fn cancel_submit(
    State(state): State<AppState>,
    who: WebUser,
    Path(id): Path<String>,
    Posted(_): Posted<CancelForm>,
) -> Result<Response, WebError> {
    let cancelled = cancel(&state, &who.user, &id)
        .await
        .map_err(|e| WebError::new(e, &who))?;
    let notice = format!("Set point {} cancelled.", cancelled.id);
    Ok(done(&format!("/setpoints/{}", cancelled.id), &notice).into_response())
}
