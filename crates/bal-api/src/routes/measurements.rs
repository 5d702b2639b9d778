//! Measurements over HTTPS: backends upload batches (P-BAP-02, the seed's 15-minute uploads),
//! and the owner, granted consumers and admins read history, single readings and a live
//! stream. A consumer reads a producer's data only under an accepted, unexpired grant.

use bal_metrics::{Refusal, Source, Stored};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use bal_core::upload::{MAX_READINGS, UploadError, UploadFormat, split_upload};
use bal_core::{Measurement, NewMeasurement, ReadScope, Role, Topic, Username};
use bal_scd::{Change, ItemKind, MeasurementCursor, MeasurementQuery, User, read_scope};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::views::{CertificationView, MeasurementView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest, list_measurements))
        .routes(routes!(stream))
        .routes(routes!(get_measurement))
}

/// The reading a path's `id` names, if `caller` may read it: 404 for an id that is not a
/// number or not stored, 403 outside the caller's read scope.
pub(crate) async fn readable_measurement(
    state: &AppState,
    caller: &User,
    id: &str,
) -> Result<Measurement, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound("measurement"))?;
    let m = state
        .store
        .measurement(id)
        .await?
        .ok_or(ApiError::NotFound("measurement"))?;
    authorize_read(state, caller, &m.producer).await?;
    Ok(m)
}

/// May `caller` read `producer`'s data now? `bal-core`'s read rule (`ReadScope`): owners and
/// admins always; consumers under an accepted, unexpired grant; nobody else.
pub(crate) async fn authorize_read(
    state: &AppState,
    caller: &User,
    producer: &Username,
) -> Result<(), ApiError> {
    let allowed = read_scope(&*state.store, caller, Some(producer), Utc::now())
        .await?
        .allows(producer);
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "no accepted subscription to {producer}'s data"
        )))
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IngestParams {
    /// Where the readings belong: the producer's topic or a sub-topic. Producers may omit it
    /// (their own topic); admins uploading on a producer's behalf must give it.
    #[param(
        max_length = 256,
        pattern = "^platone/[a-z][a-z0-9_-]{2,31}(/[^/+#\\x00-\\x1f\\x7f-\\x9f]+)*$"
    )]
    topic: Option<String>,
}

/// An upload's body as documented: 1 to 10 000 readings, each any JSON value.
pub struct UploadDoc;

impl utoipa::PartialSchema for UploadDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType};
        ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
            .min_items(Some(1))
            .max_items(Some(MAX_READINGS))
            .into()
    }
}

impl ToSchema for UploadDoc {}

#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    /// The ids of the stored readings, in upload order.
    ids: Vec<i64>,
}

/// The upload's payloads, or the status that says why it was refused.
fn payloads(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = UploadFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "send application/json (an array) or application/x-ndjson".into(),
        )
    })?;
    split_upload(format, body).map_err(|e| match e {
        UploadError::Malformed(m) => ApiError::BadRequest(m),
        UploadError::Empty => ApiError::Unprocessable(e.to_string()),
        UploadError::TooMany(_) => ApiError::PayloadTooLarge(e.to_string()),
    })
}

/// Uploads a batch of up to 10 000 readings, all or nothing: 201 means every one is committed.
#[utoipa::path(post, path = "/api/measurements", tag = "measurements",
    security(("bearer" = [])),
    params(IngestParams),
    request_body(content = UploadDoc, description = "A JSON array, or NDJSON with \
        `content-type: application/x-ndjson`. A string element is a text payload; any other \
        value is stored as compact JSON.",
        content_type = "application/json"),
    responses(
        (status = 201, body = IngestResponse),
        (status = 400, body = ErrorBody, description = "not JSON / NDJSON"),
        (status = 403, body = ErrorBody, description = "not the caller's topic"),
        (status = 404, body = ErrorBody, description = "an admin named a topic of no producer"),
        (status = 413, body = ErrorBody, description = "over 10 000 readings, or a reading \
            over the payload limit"),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid topic, or an empty upload"),
    ))]
async fn ingest(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(p): Query<IngestParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let uploaded = upload(&state, caller, p, &headers, &body).await;
    let m = &state.metrics;
    match &uploaded {
        Ok((_, Json(r))) => m.measurement_stored(Source::Https, Stored::New, r.ids.len() as u64),
        // A refused upload counts once, whatever it carried: it may not even parse.
        Err(e) => m.measurement_refused(Source::Https, refusal(e), 1),
    }
    uploaded
}

/// Why an upload was refused, as `bal_measurements_refused_total` counts it.
fn refusal(e: &ApiError) -> Refusal {
    match e {
        ApiError::Forbidden(_) => Refusal::NotAuthorized,
        ApiError::NotFound(_) | ApiError::Unprocessable(_) => Refusal::InvalidTopic,
        ApiError::PayloadTooLarge(_) => Refusal::TooLarge,
        ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => Refusal::Malformed,
        _ => Refusal::NotStored,
    }
}

async fn upload(
    state: &AppState,
    caller: AuthUser,
    p: IngestParams,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let caller = caller.user;
    // Who may upload at all comes first: a consumer learns nothing about topics or bodies.
    if caller.role == Role::Consumer {
        return Err(ApiError::Forbidden(
            "a producer uploads only to its own topic".into(),
        ));
    }
    let topic = match (p.topic, caller.role) {
        (Some(t), _) => Topic::parse(&t).map_err(|e| ApiError::Unprocessable(e.to_string()))?,
        (None, Role::Producer) => Topic::for_producer(&caller.username),
        (None, _) => {
            return Err(ApiError::Unprocessable(
                "topic is required when an admin uploads for a producer".into(),
            ));
        }
    };
    match caller.role {
        Role::Producer if topic.producer() == caller.username => {}
        Role::Admin => {
            let owner = state.store.user(&topic.producer()).await?;
            if owner.is_none_or(|u| u.role != Role::Producer) {
                return Err(ApiError::NotFound("producer"));
            }
        }
        _ => {
            return Err(ApiError::Forbidden(
                "a producer uploads only to its own topic".into(),
            ));
        }
    }
    let payloads = payloads(headers, body)?;
    let limit = state.config.max_payload_bytes;
    if let Some(n) = payloads.iter().position(|p| p.len() > limit) {
        return Err(ApiError::PayloadTooLarge(format!(
            "reading {n} is larger than the payload limit of {limit} bytes"
        )));
    }
    let batch: Vec<NewMeasurement> = payloads
        .into_iter()
        .map(|p| NewMeasurement::new(topic.clone(), p))
        .collect();
    let ids = state.store.insert_measurements(&batch).await?;
    tracing::info!(producer = %topic.producer(), count = ids.len(), "readings uploaded");
    Ok((StatusCode::CREATED, Json(IngestResponse { ids })))
}

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Whose readings. Without it, everything the caller may read: all readings for an admin,
    /// a producer's own, a consumer's granted producers'.
    #[param(pattern = "^[a-z][a-z0-9_-]{2,31}$")]
    producer: Option<String>,
    /// Received at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Received before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Readings per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}-[0-9]{1,18}$")]
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MeasurementPage {
    items: Vec<MeasurementView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

fn parse_cursor(raw: &str) -> Result<MeasurementCursor, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest("malformed cursor".into()))
}

/// Whose readings `caller` may read now (`bal-core`'s read rule): `None` for all.
pub(crate) async fn readable_producers(
    state: &AppState,
    caller: &User,
) -> Result<Option<Vec<Username>>, ApiError> {
    let scope = read_scope(&*state.store, caller, None, Utc::now()).await?;
    Ok(scope.producers().map(|p| p.iter().cloned().collect()))
}

fn producer_param(raw: Option<String>) -> Result<Option<Username>, ApiError> {
    raw.map(|p| Username::parse(&p).map_err(|_| ApiError::NotFound("producer")))
        .transpose()
}

/// Whose readings a request reads: the producer it names, if `caller` may read it (403
/// otherwise), or the caller's whole read scope (`None`: everyone's).
async fn readable(
    state: &AppState,
    caller: &User,
    named: Option<Username>,
) -> Result<Option<Vec<Username>>, ApiError> {
    match named {
        Some(producer) => {
            authorize_read(state, caller, &producer).await?;
            Ok(Some(vec![producer]))
        }
        None => readable_producers(state, caller).await,
    }
}

/// Readings in commit order (oldest first), by time range and cursor: one producer's, or
/// without `producer` everything the caller may read. A reader paging while readings arrive
/// sees every reading exactly once: on SQLite the order is also
/// reception-time order; on PostgreSQL, where writers commit concurrently, a page holds only
/// readings of transactions older than every one still running, ordered by transaction, so
/// reception times may interleave by the length of a transaction.
#[utoipa::path(get, path = "/api/measurements", tag = "measurements",
    security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = MeasurementPage),
        (status = 400, body = ErrorBody, description = "a malformed cursor or limit"),
        (status = 403, body = ErrorBody, description = "no accepted grant on the named producer"),
        (status = 404, body = ErrorBody, description = "no such producer")))]
async fn list_measurements(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(p): Query<ListParams>,
) -> Result<Json<MeasurementPage>, ApiError> {
    let caller = caller.user;
    let named = producer_param(p.producer)?;
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let after = p.cursor.as_deref().map(parse_cursor).transpose()?;
    let query = MeasurementQuery {
        producers: readable(&state, &caller, named).await?,
        from: p.from,
        to: p.to,
        after,
        limit,
    };
    let page = state.store.measurements(&query).await?;
    Ok(Json(MeasurementPage {
        items: page.items.iter().map(MeasurementView::from).collect(),
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

/// One reading, with where it is certified (batch, leaf, root, transaction, block).
#[utoipa::path(get, path = "/api/measurements/{id}", tag = "measurements",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = MeasurementView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_measurement(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<MeasurementView>, ApiError> {
    let m = readable_measurement(&state, &caller.user, &id).await?;
    let mut view = MeasurementView::from(&m);
    view.certification = Some(certification_of(&state, m.id).await?);
    Ok(Json(view))
}

/// Where a reading is certified: its batch and leaf, and the anchor once there is one.
async fn certification_of(state: &AppState, id: i64) -> Result<CertificationView, ApiError> {
    let Some(batch) = state.store.batch_of(ItemKind::Measurement, id).await? else {
        return Ok(CertificationView {
            status: "pending",
            batch: None,
            leaf_index: None,
            root: None,
            transaction: None,
            block_number: None,
        });
    };
    let leaf_index = state
        .certification
        .prover
        .leaf_index(&batch, ItemKind::Measurement, id)
        .await?;
    let anchor = batch.anchor.as_ref();
    Ok(CertificationView {
        status: if anchor.is_some() {
            "anchored"
        } else {
            "pending"
        },
        batch: Some(batch.seq),
        leaf_index,
        root: Some(batch.root.to_string()),
        transaction: anchor.map(|a| a.tx_hash.to_string()),
        block_number: anchor.map(|a| a.block_number),
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Whose readings. Without it, everything the caller may read, as its grants change.
    #[param(pattern = "^[a-z][a-z0-9_-]{2,31}$")]
    producer: Option<String>,
}

/// How often a stream re-checks its grant even without a change announced: bounds how long a
/// lapse the BAL has not yet written down (or a missed announcement) keeps a stream open.
const RECHECK: Duration = Duration::from_millis(500);

/// A live stream (server-sent events) of new readings, one `measurement` event each: one
/// producer's, or without `producer` everything the caller may read (a consumer's stream
/// follows its grants as they are accepted, revoked or expire). A stream of one producer ends
/// within a second of the grant being revoked, cancelled or expiring; every stream ends with
/// the session.
#[utoipa::path(get, path = "/api/measurements/stream", tag = "measurements",
    security(("bearer" = [])),
    params(StreamParams),
    responses((status = 200, content_type = "text/event-stream",
            description = "`measurement` events carrying a MeasurementView"),
        (status = 403, body = ErrorBody, description = "no accepted grant on the named producer"),
        (status = 404, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(p): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let session = caller.session;
    let caller = caller.user;
    let named = producer_param(p.producer)?;
    // Listen before checking, so nothing committed in between is missed.
    let watch = state.store.watch_measurements();
    let changes = state.store.changes();
    if let Some(producer) = &named {
        authorize_read(&state, &caller, producer).await?;
    }
    let events = live_readings(state, caller, session, named, watch, changes);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `measurement` events with each new reading `caller` may read (of `producer` only, when
/// named), for as long as its session lasts and, for a named producer, as long as it may read
/// it; then one `end` event. `watch` and `changes` must be taken (in that order) before access
/// was checked, so that nothing committed in between is missed.
pub(crate) fn live_readings(
    state: AppState,
    caller: User,
    session: [u8; 32],
    producer: Option<Username>,
    watch: bal_scd::MeasurementWatch,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        // Held as long as the stream lives: measurements are announced meanwhile.
        let _watch = watch;
        let mut recheck = tokio::time::interval(RECHECK);
        // What `caller` may read now: re-read on every check and on its grants' changes.
        let scope_now = || read_scope(&*state.store, &caller, producer.as_ref(), Utc::now());
        let mut scope = scope_now().await.ok();
        loop {
            // A stream of one producer ends with the access to it; a scope stream only narrows.
            let allowed = |scope: &Option<ReadScope>| match (scope, &producer) {
                (None, _) => false,
                (Some(s), Some(p)) => s.allows(p),
                (Some(_), None) => true,
            };
            if !allowed(&scope) {
                break;
            }
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change::Measurements(batch)) => {
                        let Some(s) = &scope else { break };
                        let wanted = |m: &&bal_core::Measurement| {
                            producer.as_ref().is_none_or(|p| m.producer == *p)
                                && s.allows(&m.producer)
                        };
                        for m in batch.iter().filter(wanted) {
                            let view = MeasurementView::from(m);
                            if let Ok(e) = Event::default().event("measurement").json_data(&view) {
                                yield Ok(e);
                            }
                        }
                    }
                    Ok(Change::Subscription(s)) if s.consumer == caller.username => {
                        scope = scope_now().await.ok();
                    }
                    Ok(Change::UserDeleted(u))
                        if u == caller.username || producer.as_ref() == Some(&u) => break,
                    // Changes may have been missed: tell the client, and check access now.
                    Ok(Change::Resync) => {
                        yield Ok(Event::default().event("lagged").data("resync"));
                        scope = scope_now().await.ok();
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        yield Ok(Event::default().event("lagged").data(missed.to_string()));
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = recheck.tick() => {
                    // The session too: logout, a password change or deletion ends the stream.
                    let session = state.store.session_user(session, Utc::now()).await;
                    if !matches!(session, Ok(Some(_))) {
                        break;
                    }
                    scope = scope_now().await.ok();
                }
            }
        }
        yield Ok(Event::default().event("end").data("access ended"));
    }
}
