//! A producer's data, for its owner, a consumer it granted access to, and admins: a live chart
//! (redrawn on each new reading), the history with time range and paging, each reading's
//! certification, and a CSV download. Access is checked on every request, the chart and the
//! stream included, exactly as the API checks it.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bal_core::{Measurement, Username};
use bal_scd::{ItemKind, MeasurementQuery};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::WebError;
use super::chart;
use super::layout::{page, when};
use super::session::WebUser;
use crate::AppState;
use crate::error::ApiError;
use crate::routes::measurements::{authorize_read, live_readings};

/// Readings per history page.
const PAGE: u32 = 50;
/// The live chart shows the last minutes.
const LIVE_MINUTES: i64 = 2;
/// The most readings a live chart or a CSV file reads.
const LIVE_MAX: u32 = 5_000;
const CSV_MAX: u32 = 100_000;

async fn producer_for(state: &AppState, who: &WebUser, raw: &str) -> Result<Username, WebError> {
    let producer =
        Username::parse(raw).map_err(|_| WebError::new(ApiError::NotFound("producer"), who))?;
    authorize_read(state, &who.user, &producer)
        .await
        .map_err(|e| WebError::new(e, who))?;
    Ok(producer)
}

/// A `datetime-local` value (UTC), or an RFC 3339 time.
fn time(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| Some(t.and_utc()))
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a date and time")))
}

fn local(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

/// The latest readings, for the live chart.
async fn latest(state: &AppState, producer: &Username) -> Result<Vec<Measurement>, ApiError> {
    let mut rows = state
        .store
        .measurements(&MeasurementQuery {
            producers: Some(vec![producer.clone()]),
            from: Some(Utc::now() - Duration::minutes(LIVE_MINUTES)),
            to: None,
            after: None,
            limit: LIVE_MAX,
        })
        .await?
        .items;
    // Oldest first: keep the newest when there are more.
    if rows.len() > 600 {
        rows.drain(..rows.len() - 600);
    }
    Ok(rows)
}

#[derive(Deserialize)]
pub struct DataQuery {
    field: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// The cursor after the last row of the previous page.
    after: Option<String>,
}

fn payload_text(m: &Measurement) -> String {
    match std::str::from_utf8(&m.payload) {
        Ok(t) if t.len() <= 160 => t.to_owned(),
        Ok(t) => format!("{}…", &t[..t.floor_char_boundary(160)]),
        Err(_) => format!("{} bytes (binary)", m.payload.len()),
    }
}

pub async fn show(
    State(state): State<AppState>,
    who: WebUser,
    Path(raw): Path<String>,
    Query(q): Query<DataQuery>,
) -> Result<Response, WebError> {
    let producer = producer_for(&state, &who, &raw).await?;
    let fail = |e: ApiError| WebError::new(e, &who);
    let now = Utc::now();
    let from = time(q.from.as_deref())
        .map_err(fail)?
        .unwrap_or(now - Duration::hours(1));
    let to = time(q.to.as_deref()).map_err(fail)?;
    let recent = latest(&state, &producer).await.map_err(fail)?;
    let fields = chart::fields(&recent);
    let field = q
        .field
        .clone()
        .filter(|f| !f.is_empty())
        .or_else(|| fields.first().cloned())
        .unwrap_or_default();
    let svg = chart::svg(&field, &chart::points(&recent, &field), 800, 360);
    let history = state
        .store
        .measurements(&MeasurementQuery {
            producers: Some(vec![producer.clone()]),
            from: Some(from),
            to,
            after: q.after.as_deref().and_then(|c| c.parse().ok()),
            limit: PAGE,
        })
        .await?;
    let rows = history.items;
    let mut certified = Vec::with_capacity(rows.len());
    for m in &rows {
        certified.push(certification(&state, m.id).await?);
    }
    let next = history.next;
    let range = |extra: &str| {
        let mut qs = format!("from={}", local(&from));
        if let Some(t) = to {
            qs.push_str(&format!("&to={}", local(&t)));
        }
        if !field.is_empty() {
            qs.push_str(&format!("&field={}", enc(&field)));
        }
        format!("{qs}{extra}")
    };
    let chart_url = format!("/data/{producer}/chart.svg?field={}", enc(&field));
    let body = html! {
        section aria-labelledby="live-h" {
            h2 #live-h { "Latest readings" }
            form.inline method="get" action={ "/data/" (producer) } {
                label for="field" { "Field " }
                select #field name="field" {
                    @for f in &fields {
                        option value=(f) selected[*f == field] { (f) }
                    }
                }
                " "
                button type="submit" { "Show" }
            }
            figure #live-chart data-live={ "/data/" (producer) "/events" } data-chart=(chart_url) {
                div.chart { (maud::PreEscaped(svg)) }
                figcaption.status role="status" { "Last " (LIVE_MINUTES) " minutes." }
            }
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "History" }
            form.inline method="get" action={ "/data/" (producer) } {
                input type="hidden" name="field" value=(field);
                label for="from" { "From (UTC) " }
                input #from type="datetime-local" name="from" value=(local(&from));
                " "
                label for="to" { "to " }
                input #to type="datetime-local" name="to" value=(to.as_ref().map(local).unwrap_or_default());
                " "
                button type="submit" { "Show" }
            }
            " "
            a #csv href={ "/data/" (producer) "/history.csv?" (range("")) } download { "Download CSV" }
            (history_table(&rows, &certified))
            @if let Some(c) = next {
                p { a href={ "/data/" (producer) "?" (range(&format!("&after={c}"))) } { "Next page" } }
            }
        }
    };
    Ok(page(&format!("Data of {producer}"), Some(&who), None, body).into_response())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A reading's certification, for the history table.
pub(super) struct Certified {
    pub status: &'static str,
    pub block: Option<u64>,
}

async fn certification(state: &AppState, id: i64) -> Result<Certified, ApiError> {
    let batch = state.store.batch_of(ItemKind::Measurement, id).await?;
    Ok(match batch.and_then(|b| b.anchor) {
        Some(a) => Certified {
            status: "anchored",
            block: Some(a.block_number),
        },
        None => Certified {
            status: "pending",
            block: None,
        },
    })
}

fn history_table(rows: &[Measurement], certified: &[Certified]) -> Markup {
    html! {
        div.table-wrap {
            table #history {
                caption { "Readings, oldest first" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Received" } th scope="col" { "Topic" }
                    th scope="col" { "Payload" } th scope="col" { "Certification" }
                } }
                tbody {
                    @for (m, c) in rows.iter().zip(certified) {
                        tr {
                            th scope="row" { (m.id) }
                            td { (when(&m.received_at)) }
                            td.mono { (m.topic) }
                            td.mono { (payload_text(m)) }
                            td {
                                @if let Some(b) = c.block {
                                    a href={ "/certification/readings/" (m.id) } { "anchored, block " (b) }
                                } @else {
                                    (c.status)
                                }
                            }
                        }
                    }
                    @if rows.is_empty() {
                        tr { td colspan="5" { "No readings in this range." } }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ChartQuery {
    field: Option<String>,
}

/// The live chart alone (the page's script fetches it after each new reading).
pub async fn chart(
    State(state): State<AppState>,
    who: WebUser,
    Path(raw): Path<String>,
    Query(q): Query<ChartQuery>,
) -> Result<Response, WebError> {
    let producer = producer_for(&state, &who, &raw).await?;
    let recent = latest(&state, &producer).await?;
    // A page opened before any reading had no field to choose: take the first one there is.
    let field = q
        .field
        .filter(|f| !f.is_empty())
        .or_else(|| chart::fields(&recent).into_iter().next())
        .unwrap_or_default();
    let svg = chart::svg(&field, &chart::points(&recent, &field), 800, 360);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct CsvQuery {
    from: Option<String>,
    to: Option<String>,
    #[allow(dead_code)]
    field: Option<String>,
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The history of a time range as CSV (up to 100 000 readings).
pub async fn csv(
    State(state): State<AppState>,
    who: WebUser,
    Path(raw): Path<String>,
    Query(q): Query<CsvQuery>,
) -> Result<Response, WebError> {
    let producer = producer_for(&state, &who, &raw).await?;
    let fail = |e: ApiError| WebError::new(e, &who);
    let from = time(q.from.as_deref()).map_err(fail)?;
    let to = time(q.to.as_deref()).map_err(fail)?;
    let rows = state
        .store
        .measurements(&MeasurementQuery {
            producers: Some(vec![producer.clone()]),
            from,
            to,
            after: None,
            limit: CSV_MAX,
        })
        .await?
        .items;
    let mut out = String::from("id,received_at,topic,payload_hash,payload\n");
    for m in &rows {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            m.id,
            m.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            csv_cell(m.topic.as_str()),
            m.payload_hash,
            csv_cell(&String::from_utf8_lossy(&m.payload)),
        ));
    }
    let name = format!("attachment; filename=\"{producer}-readings.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        out,
    )
        .into_response())
}

/// The live stream behind the chart: the API's stream, authenticated by the session cookie.
pub async fn events(
    State(state): State<AppState>,
    who: WebUser,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let watch = state.store.watch_measurements();
    let changes = state.store.changes();
    let producer = producer_for(&state, &who, &raw).await?;
    let stream = live_readings(state, who.user, who.session, Some(producer), watch, changes);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
