//! The admin's page: users (create with a role, delete, reset a password), every grant, the
//! audit log with filters, and the health of the system: database, broker, chain, and the
//! certification backlog and rate.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bal_core::{Actor, AuditAction, Role, Subscription, User, Username};
use bal_scd::{AuditQuery, SubscriptionQuery};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::extract::{CsrfOnly, Posted, WebAdmin, carries_csrf};
use super::layout::{csrf, page, post_button, when};
use super::session::WebUser;
use super::{WebError, done};
use crate::AppState;
use crate::accounts;
use crate::error::ApiError;

const AUDIT_PAGE: u32 = 50;

#[derive(Deserialize)]
pub struct AdminQuery {
    done: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    object: Option<String>,
    before: Option<i64>,
}

pub async fn show(
    State(state): State<AppState>,
    WebAdmin(who): WebAdmin,
    Query(q): Query<AdminQuery>,
) -> Result<Response, WebError> {
    let now = Utc::now();
    let body = html! {
        (health(&state, now).await?)
        (users(&who, &state.store.users().await?))
        (grants(&state.store.subscriptions(&SubscriptionQuery::default()).await?, now))
        (audit(&state, &who, &q).await?)
    };
    Ok(page("Administration", Some(&who), q.done.as_deref(), body).into_response())
}

/// Database, broker and chain, and the certification backlog and rate.
async fn health(state: &AppState, now: DateTime<Utc>) -> Result<Markup, ApiError> {
    let readiness = crate::routes::health::check(state).await;
    let ledger = &state.certification.ledger;
    let head = ledger.head().await;
    let status = state.store.certification_status().await?;
    let certifier = state
        .certification
        .health
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    // The certification rate: readings in the batches anchored during the last minute.
    let recent = state.store.batches(None, 200).await?;
    let last_minute: u64 = recent
        .iter()
        .filter_map(|b| b.anchor.map(|a| (a, b.measurement_count)))
        .filter(|(a, _)| now - a.anchored_at <= chrono::Duration::minutes(1))
        .map(|(_, n)| u64::from(n))
        .sum();
    Ok(html! {
    section aria-labelledby="health-h" {
        h2 #health-h { "Health" }
        dl #health {
            dt { "Readiness" } dd #readiness { (readiness.status) }
            @for (name, dep) in &readiness.dependencies {
                dt { (name) } dd {
                    @if dep.state == "up" { "up" } @else { span.failed { "down" } }
                    " since " (dep.since.format("%Y-%m-%d %H:%M:%S UTC"))
                    @if let Some(e) = &dep.error { ": " (e) }
                }
            }
            dt { "Replicas" } dd #replicas {
                "this is " span.mono { (readiness.cluster.replica) } "; live: "
                (readiness.cluster.replicas.join(", ")) "; anchoring: "
                @match &readiness.cluster.lease_holder {
                    Some(h) => span.mono #lease-holder { (h) },
                    None => span.failed { "no replica holds the certification lease" },
                }
            }
            dt { "Broker" } dd { (state.config.broker) }
            dt { "Chain" } dd {
                (ledger.describe()) ", chain id " (ledger.chain_id()) ", contract "
                span.mono { (ledger.contract()) }
                @match &head {
                    Ok(n) => { ", latest block " (n) }
                    Err(e) => { ", " span.failed { "unreachable: " (e) } }
                }
            }
            dt { "Certification backlog" } dd {
                (status.unbatched_measurements) " readings not yet in a batch, "
                (status.pending_batches) " batches waiting for their anchor"
            }
            dt { "Certification rate" } dd #rate {
                (last_minute) " readings certified in the last minute"
            }
            dt { "Certified" } dd {
                (status.certified_measurements) " readings in " (status.anchored_batches) " anchored batches; "
                "this run: " (certifier.leaves_anchored) " leaves in " (certifier.batches_anchored) " batches"
                @if let Some(t) = certifier.last_anchor_at {
                    ", last anchor " ((now - t).num_seconds()) " s ago"
                }
            }
            @if let Some(e) = &certifier.last_error {
                dt { "Certifier" } dd { span.failed { (e) } }
            }
        }
    }
    })
}

/// Every user, with the form that creates one and the buttons that reset or delete one.
fn users(who: &WebUser, users: &[User]) -> Markup {
    html! {
    section aria-labelledby="users-h" {
        h2 #users-h { "Users" }
        form.stack #create-user method="post" action="/admin/users" {
            (csrf(who))
            label for="new-username" { "Username" }
            input #new-username name="username" required autocomplete="off";
            label for="new-role" { "Role" }
            select #new-role name="role" {
                option value="producer" { "producer" }
                option value="consumer" { "consumer" }
                option value="admin" { "admin" }
            }
            label for="new-password" { "Password (empty: generate one)" }
            input #new-password name="password" type="password" autocomplete="new-password";
            p { button type="submit" { "Create user" } }
        }
        div.table-wrap {
            table #users {
                thead { tr {
                    th scope="col" { "Username" } th scope="col" { "Role" } th scope="col" { "Topic" }
                    th scope="col" { "Wallet" } th scope="col" { "Created" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for u in users {
                        tr data-user=(u.username) {
                            th scope="row" { (u.username) }
                            td { (u.role) }
                            td.mono { (u.topic.as_ref().map(ToString::to_string).unwrap_or_default()) }
                            td.mono { (u.wallet) }
                            td { (when(&u.created_at)) }
                            td {
                                (post_button(who, &format!("/admin/users/{}/password", u.username), "Reset password"))
                                @if u.username != who.user.username {
                                    (post_button(who, &format!("/admin/users/{}/delete", u.username), "Delete"))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    }
}

/// Every grant, in its state at `now`.
fn grants(subs: &[Subscription], now: DateTime<Utc>) -> Markup {
    html! {
    section aria-labelledby="grants-h" {
        h2 #grants-h { "Grants" }
        div.table-wrap {
            table #grants {
                thead { tr {
                    th scope="col" { "Consumer" } th scope="col" { "Producer" } th scope="col" { "Status" }
                    th scope="col" { "Created" } th scope="col" { "Modified" } th scope="col" { "Expires" }
                } }
                tbody {
                    @for s in subs {
                        tr {
                            td { (s.consumer) } td { (s.producer) } td { (s.status_at(now)) }
                            td { (when(&s.creation_date)) } td { (when(&s.modification_date)) }
                            td { (s.expires_at.as_ref().map(when).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
    }
}

/// A page of the audit log, filtered as `q` says.
async fn audit(state: &AppState, who: &WebUser, q: &AdminQuery) -> Result<Markup, WebError> {
    let fail = |e: ApiError| WebError::new(e, who);
    let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.trim().is_empty());
    let audit_query = AuditQuery {
        actor: nonempty(&q.actor)
            .map(|a| a.parse())
            .transpose()
            .map_err(|_| fail(ApiError::BadRequest("unknown actor".into())))?,
        action: nonempty(&q.action)
            .map(|a| a.parse::<AuditAction>())
            .transpose()
            .map_err(|_| fail(ApiError::BadRequest("unknown action".into())))?,
        object: nonempty(&q.object),
        before_id: q.before,
        limit: AUDIT_PAGE,
    };
    let audit = state
        .store
        .audit_log(&audit_query)
        .await
        .map_err(|e| fail(e.into()))?;
    let next_before = (audit.len() == AUDIT_PAGE as usize)
        .then(|| audit.last().map(|e| e.id))
        .flatten();
    Ok(html! {
    section aria-labelledby="audit-h" {
        h2 #audit-h { "Audit log" }
        form.inline method="get" action="/admin" {
            label for="f-actor" { "Actor " }
            input #f-actor name="actor" value=(q.actor.clone().unwrap_or_default());
            " "
            label for="f-action" { "Action " }
            select #f-action name="action" {
                option value="" { "any" }
                @for a in AuditAction::ALL {
                    option value=(a.as_str()) selected[q.action.as_deref() == Some(a.as_str())] { (a.as_str()) }
                }
            }
            " "
            label for="f-object" { "Object " }
            input #f-object name="object" value=(q.object.clone().unwrap_or_default());
            " "
            button type="submit" { "Filter" }
        }
        div.table-wrap {
            table #audit {
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "At" } th scope="col" { "Actor" }
                    th scope="col" { "Action" } th scope="col" { "Object" } th scope="col" { "Detail" }
                } }
                tbody {
                    @for e in &audit {
                        tr {
                            th scope="row" { (e.id) } td { (when(&e.at)) } td { (e.actor) }
                            td { (e.action) } td.mono { (e.object) } td.mono { (e.detail) }
                        }
                    }
                }
            }
        }
        @if let Some(b) = next_before {
            p { a href={ "/admin?before=" (b) } { "Older entries" } }
        }
    }
    })
}

#[derive(Deserialize)]
pub struct CreateForm {
    csrf: String,
    username: String,
    role: String,
    password: Option<String>,
}

carries_csrf!(CreateForm);

pub async fn create_user(
    State(state): State<AppState>,
    WebAdmin(who): WebAdmin,
    Posted(f): Posted<CreateForm>,
) -> Result<Response, WebError> {
    let fail = |e: ApiError| WebError::new(e, &who);
    let username = Username::parse(&f.username)
        .map_err(|e| fail(ApiError::Unprocessable(format!("username: {e}"))))?;
    let role: Role = f
        .role
        .parse()
        .map_err(|_| fail(ApiError::Unprocessable("unknown role".into())))?;
    let given = f.password.filter(|p| !p.is_empty());
    let generated = given.is_none();
    let password = zeroize::Zeroizing::new(given.unwrap_or_else(accounts::generate_password));
    let actor = Actor::User(who.user.username.clone());
    let user = accounts::create_user(
        state.store.as_ref(),
        &state.keys,
        username,
        role,
        password.to_string(),
        &actor,
    )
    .await
    .map_err(fail)?;
    let notice = if generated {
        format!(
            "Created {} ({}). Its password, shown once: {}",
            user.username,
            user.role,
            password.as_str()
        )
    } else {
        format!("Created {} ({}).", user.username, user.role)
    };
    Ok(result_page(&who, "User created", &notice))
}

/// A result shown once (a generated password is never put in a URL or a log).
fn result_page(who: &WebUser, title: &str, notice: &str) -> Response {
    page(
        title,
        Some(who),
        Some(notice),
        html! { p { a href="/admin" { "Back to administration" } } },
    )
    .into_response()
}

pub async fn delete_user(
    State(state): State<AppState>,
    WebAdmin(who): WebAdmin,
    Path(name): Path<String>,
    _: Posted<CsrfOnly>,
) -> Result<Response, WebError> {
    let username =
        Username::parse(&name).map_err(|_| WebError::new(ApiError::NotFound("user"), &who))?;
    let actor = Actor::User(who.user.username.clone());
    state
        .store
        .delete_user(&username, &actor, Utc::now())
        .await
        .map_err(|e| WebError::new(e, &who))?;
    Ok(done("/admin", &format!("Deleted {username}.")).into_response())
}

pub async fn reset_password(
    State(state): State<AppState>,
    WebAdmin(who): WebAdmin,
    Path(name): Path<String>,
    _: Posted<CsrfOnly>,
) -> Result<Response, WebError> {
    let fail = |e: ApiError| WebError::new(e, &who);
    let username = Username::parse(&name).map_err(|_| fail(ApiError::NotFound("user")))?;
    let password = zeroize::Zeroizing::new(accounts::generate_password());
    let actor = Actor::User(who.user.username.clone());
    accounts::change_password(
        state.store.as_ref(),
        &state.keys,
        &username,
        password.to_string(),
        &actor,
    )
    .await
    .map_err(fail)?;
    Ok(result_page(
        &who,
        "Password reset",
        &format!(
            "New password of {username}, shown once: {} (its sessions have ended)",
            password.as_str()
        ),
    ))
}
