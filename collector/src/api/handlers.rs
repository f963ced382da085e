//! One handler per route, each with its OpenAPI description.

use std::sync::OnceLock;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::params::{Params, parse_edge};
use super::table::{Format, HoursResponse, XLSX_CONTENT_TYPE, csv_to_xlsx, hours_body, to_csv};
use super::{ApiDoc, ApiError, ApiState, Caller, ErrorBody};
use crate::bookings::Booking;
use crate::bookings::store::{ImportOptions, NotMonitored};
use crate::quarantine::{Detail, Entry, Kind};
use crate::reconcile::PeriodUnit;
use crate::verified::{
    CorrectionSchema, Edge, GroupBy, Health, HoursQuery, InstrumentRow, NewCorrection, OutcomeRow,
    QueryError, Range, Reports, SessionRow, TimelineView,
};

const HOURS_PARAMS: &[&str] = &[
    "from",
    "to",
    "instrument",
    "unit",
    "period",
    "group_by",
    "format",
];
const RANGE_PARAMS: &[&str] = &["from", "to", "instrument", "unit", "format"];
const TIMELINE_PARAMS: &[&str] = &["from", "to", "format"];

/// Query parameters of `GET /api/v1/hours`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HoursParams {
    /// Start of the range: a local date `YYYY-MM-DD` (midnight in each
    /// instrument's zone) or an RFC 3339 instant with offset.
    #[param(example = "2025-03-01")]
    from: String,
    /// End of the range (exclusive), same forms; after `from`.
    #[param(example = "2025-04-01")]
    to: String,
    /// Only this instrument (404 if unknown; not blank).
    #[param(pattern = r"\S")]
    instrument: Option<String>,
    /// Only instruments in this unit or below it, e.g. `Chemistry` (not blank).
    #[param(pattern = r"\S")]
    unit: Option<String>,
    /// Split the range into local days, months or years; absent: one period.
    period: Option<PeriodUnit>,
    /// Rows per instrument (default), per unit or per usage type.
    group_by: Option<GroupBy>,
    /// `csv` or `json`; overrides the Accept header. This route also
    /// answers `xlsx`: the CSV's rows as an Excel workbook.
    format: Option<FormatName>,
}

/// Query parameters of the list routes that take a range.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RangeParams {
    /// Start of the range: `YYYY-MM-DD` or an RFC 3339 instant with offset.
    #[param(example = "2025-03-01")]
    from: String,
    /// End of the range (exclusive), same forms; after `from`.
    #[param(example = "2025-04-01")]
    to: String,
    /// Only this instrument (404 if unknown; not blank).
    #[param(pattern = r"\S")]
    instrument: Option<String>,
    /// Only instruments in this unit or below it (404 if unknown, or
    /// outside the token's unit; not blank).
    #[param(pattern = r"\S")]
    unit: Option<String>,
    /// `csv` or `json`; overrides the Accept header.
    format: Option<FormatName>,
}

/// Query parameters of a timeline.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TimelineParams {
    /// Start of the range: `YYYY-MM-DD` or an RFC 3339 instant with offset.
    #[param(example = "2025-03-01")]
    from: String,
    /// End of the range (exclusive), same forms; after `from`.
    #[param(example = "2025-03-02")]
    to: String,
    /// Only `json` (a timeline has no CSV form: `csv` answers 406).
    format: Option<JsonOnly>,
}

/// Query parameters of `GET /api/v1/instruments`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FormatParams {
    /// Only instruments in this unit or below it (404 if unknown, or
    /// outside the token's unit; not blank).
    #[param(pattern = r"\S")]
    unit: Option<String>,
    /// `csv` or `json`; overrides the Accept header.
    format: Option<FormatName>,
}

/// Query parameters of `POST /api/v1/bookings`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ImportParams {
    /// `true`: report what would change, change nothing.
    dry_run: Option<bool>,
    /// `true`: apply the good bookings even if some are bad (those are still listed).
    skip_invalid: Option<bool>,
}

/// The schema of `from` and `to`: a date (`format: date`) or an RFC 3339
/// instant (`format: date-time`, which always has an offset). Set by
/// [`super::EdgeSchemas`]: utoipa's `schema_with` would drop the
/// parameter's description, example and `required`.
pub(super) fn edge_schema() -> Schema {
    let string = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    OneOfBuilder::new()
        .item(string(KnownFormat::Date))
        .item(string(KnownFormat::DateTime))
        .into()
}

/// An answer format.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum FormatName {
    Json,
    Csv,
}

/// The one answer format of a timeline.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum JsonOnly {
    Json,
}

/// `{ "rows": [...] }`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rows<T> {
    pub rows: Vec<T>,
}

/// The body of `POST /api/v1/bookings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingsBody {
    /// Bookings; each is checked on its own and reported by its index (from 0).
    #[schema(value_type = Vec<Booking>)]
    pub bookings: Vec<serde_json::Value>,
}

/// What a bookings import changed (or, when not `applied`, would change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportResponse {
    /// Whether anything was written.
    pub applied: bool,
    pub dry_run: bool,
    pub inserted: Vec<String>,
    pub updated: Vec<UpdatedBooking>,
    pub unchanged: Vec<String>,
    /// Instruments the collector does not monitor (not configured), with
    /// how many bookings name each: accepted, with outcome `not_monitored`.
    pub not_monitored: Vec<NotMonitored>,
    /// Every bad item, by index in `bookings`.
    pub errors: Vec<ItemError>,
}

/// A stored booking that changed, and which fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdatedBooking {
    pub booking_id: String,
    pub fields: Vec<String>,
}

/// A bad booking: its index in the body (from 0) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemError {
    pub index: u64,
    pub message: String,
}

/// Runs a blocking `Reports` call off the async threads, seen from `caller`'s
/// unit (`None`: a route without a token, which names no instrument).
async fn blocking<T: Send + 'static>(
    state: &ApiState,
    caller: Option<&Caller>,
    call: impl FnOnce(&dyn Reports) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking_in(state, caller.and_then(|c| c.unit.as_deref()), call).await
}

/// [`blocking`] held to `unit` (from [`ApiState::unit_for`]: the caller's
/// or one below it).
async fn blocking_in<T: Send + 'static>(
    state: &ApiState,
    unit: Option<&str>,
    call: impl FnOnce(&dyn Reports) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, ApiError> {
    let reports = state.reports_for(unit);
    tokio::task::spawn_blocking(move || call(&*reports))
        .await
        .map_err(|e| ApiError::internal(format!("a Reports call panicked: {e}")))?
        .map_err(ApiError::from)
}

fn answer(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from(body),
    )
        .into_response()
}

/// `{ "rows": [...] }` as JSON, or the rows as CSV.
fn rows_answer<T: Serialize + Default>(rows: Vec<T>, format: Format) -> Result<Response, ApiError> {
    let body = match format {
        Format::Json => serde_json::to_vec(&Rows { rows }).map_err(ApiError::internal)?,
        Format::Csv => to_csv(&rows).map_err(ApiError::internal)?,
    };
    Ok(answer(StatusCode::OK, format, body))
}

/// A `Reports` list over a range and an optional instrument.
type RangeList<T> = fn(&dyn Reports, &Range, Option<&str>) -> Result<Vec<T>, QueryError>;

/// The list routes over `from`/`to` and an optional `instrument`.
async fn range_rows<T: Serialize + Default + Send + 'static>(
    state: &ApiState,
    caller: &Caller,
    params: &Params,
    list: RangeList<T>,
) -> Result<Response, ApiError> {
    params.only(RANGE_PARAMS)?;
    let range = params.range()?;
    let instrument = params.text("instrument")?;
    let format = params.format()?;
    let unit = state.unit_for(caller, params.text("unit")?.as_deref())?;
    let rows = blocking_in(state, unit.as_deref(), move |r| {
        list(r, &range, instrument.as_deref())
    })
    .await?;
    rows_answer(rows, format)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        ApiError::bad_parameter(
            "body",
            format!("the body is not the expected JSON: {}", e.body_text()),
        )
    })
}

/// The [`HoursQuery`] `params` ask for (also what `report` asks).
pub fn hours_query(params: &Params) -> Result<HoursQuery, ApiError> {
    params.only(HOURS_PARAMS)?;
    let query = HoursQuery {
        range: params.range()?,
        instrument: params.text("instrument")?,
        unit: params.text("unit")?,
        period: params.period()?,
        group_by: params.group_by()?,
    };
    Params::check_period_count(&query.range, query.period)?;
    Ok(query)
}

/// Verified usage hours per instrument, unit or usage type and period.
#[utoipa::path(
    get,
    path = "/api/v1/hours",
    tag = "hours",
    params(HoursParams),
    responses(
        (status = 200, description = "Hours rows (`HoursRow`s, or `UsageTypeRow`s with group_by=usage_type); CSV: the rows only",
            content((HoursResponse = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is missing, malformed or unknown", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 404, description = "Unknown instrument or unit, or one outside the token's unit", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn hours(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    let query = hours_query(&params)?;
    // `xlsx`: the CSV answer as a workbook (only this route has it).
    let xlsx = params.get("format") == Some("xlsx");
    let format = if xlsx { Format::Csv } else { params.format()? };
    let asked = query.clone();
    let hours = blocking(&state, Some(&caller), move |r| r.hours(&asked)).await?;
    let body = hours_body(&query, hours.rows, hours.settled_through, format)
        .map_err(ApiError::internal)?;
    if xlsx {
        let book = csv_to_xlsx(&body, "hours").map_err(ApiError::internal)?;
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, XLSX_CONTENT_TYPE),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"labhours-hours.xlsx\"",
                ),
            ],
            Body::from(book),
        )
            .into_response());
    }
    Ok(answer(StatusCode::OK, format, body))
}

/// Booking outcomes (§5) of the bookings overlapping the range: starting
/// before `to` and ending after `from` (one that began before the range
/// and runs into it is included). `outcome` is used, no_show,
/// instrument_fault, no_data, cancelled or not_monitored (an instrument
/// the collector does not monitor; never a no-show).
#[utoipa::path(
    get,
    path = "/api/v1/bookings/outcomes",
    tag = "bookings",
    params(RangeParams),
    responses(
        (status = 200, description = "One row per booking overlapping the range, by start", content((Rows<OutcomeRow> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is missing, malformed or unknown", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 404, description = "Unknown instrument or unit, or one outside the token's unit", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn outcomes(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    range_rows(&state, &caller, &params, |r, range, instrument| {
        r.outcomes(range, instrument)
    })
    .await
}

/// Usage sessions overlapping the range.
#[utoipa::path(
    get,
    path = "/api/v1/sessions",
    tag = "instruments",
    params(RangeParams),
    responses(
        (status = 200, description = "One row per session", content((Rows<SessionRow> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is missing, malformed or unknown", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 404, description = "Unknown instrument or unit, or one outside the token's unit", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn sessions(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    range_rows(&state, &caller, &params, |r, range, instrument| {
        r.sessions(range, instrument)
    })
    .await
}

/// Every instrument with its latest state and agents.
#[utoipa::path(
    get,
    path = "/api/v1/instruments",
    tag = "instruments",
    params(FormatParams),
    responses(
        (status = 200, description = "One row per instrument", content((Rows<InstrumentRow> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "An unknown parameter or format", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 404, description = "Unknown unit, or one outside the token's", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn instruments(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["unit", "format"])?;
    let format = params.format()?;
    let now = state.now();
    let unit = state.unit_for(&caller, params.text("unit")?.as_deref())?;
    let rows = blocking_in(&state, unit.as_deref(), move |r| r.instruments(now)).await?;
    rows_answer(rows, format)
}

/// One instrument's states, sessions, bookings and result files in the range (JSON only).
#[utoipa::path(
    get,
    path = "/api/v1/instruments/{id}/timeline",
    tag = "instruments",
    params(("id" = String, Path, description = "The instrument id"), TimelineParams),
    responses(
        (status = 200, description = "The timeline", body = TimelineView),
        (status = 400, description = "A parameter is missing, malformed or unknown", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 404, description = "Unknown instrument or unit, or one outside the token's unit", body = ErrorBody),
        (status = 406, description = "CSV was asked for; a timeline is JSON only", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn timeline(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(TIMELINE_PARAMS)?;
    let range = params.range()?;
    if params.format()? == Format::Csv {
        return Err(ApiError::not_acceptable(
            "a timeline is nested and has no CSV form; ask for JSON (format=json, Accept: application/json)",
        ));
    }
    let view = blocking(&state, Some(&caller), move |r| r.timeline(&id, &range)).await?;
    Ok(Json(view).into_response())
}

/// Corrections overlapping the range, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/corrections",
    tag = "corrections",
    params(RangeParams),
    responses(
        (status = 200, description = "One row per correction", content((Rows<CorrectionSchema> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is missing, malformed or unknown", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 404, description = "Unknown instrument or unit, or one outside the token's unit", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn corrections(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    range_rows(&state, &caller, &params, |r, range, instrument| {
        r.corrections(range, instrument)
    })
    .await
}

/// Records a correction (admin); `created_by` is the token's name.
#[utoipa::path(
    post,
    path = "/api/v1/corrections",
    tag = "corrections",
    request_body = NewCorrection,
    responses(
        (status = 201, description = "The recorded correction", body = CorrectionSchema),
        (status = 400, description = "The body or one of its fields is wrong (`parameter` names it)", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token is not an admin's", body = ErrorBody),
        (status = 404, description = "Unknown instrument or unit, or one outside the token's unit", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn add_correction(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    body: Result<Json<NewCorrection>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    params.only(&[])?;
    let correction = json_body(body)?;
    let now = state.now();
    let by = caller.name.clone();
    let recorded = blocking(&state, Some(&caller), move |r| {
        r.add_correction(correction, &by, now)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(recorded)).into_response())
}

/// Imports bookings (admin): upserts by `booking_id`; nothing is applied
/// when an item is bad, unless `skip_invalid=true`.
#[utoipa::path(
    post,
    path = "/api/v1/bookings",
    tag = "bookings",
    params(ImportParams),
    request_body = BookingsBody,
    responses(
        (status = 200, description = "Imported (or, with dry_run, what would be)", body = ImportResponse),
        (status = 400, description = "The body is not JSON of this shape, or a parameter is wrong", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token is not an admin's", body = ErrorBody),
        (status = 422, description = "Some items are bad and skip_invalid is not set: nothing applied; `errors` names each by index", body = ImportResponse),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn import_bookings(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    body: Result<Json<BookingsBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    params.only(&["dry_run", "skip_invalid"])?;
    let dry_run = params.flag("dry_run")?;
    let skip_invalid = params.flag("skip_invalid")?;
    let body = json_body(body)?;
    let mut errors = Vec::new();
    let mut good = Vec::new();
    for (index, item) in body.bookings.into_iter().enumerate() {
        let index = index as u64;
        // The offset is gone once parsed: checked on the text, as in a CSV.
        let offsets: Vec<String> = ["start", "end"]
            .into_iter()
            .filter_map(|k| {
                let problem = crate::bookings::csv::offset_problem(item.get(k)?.as_str()?)?;
                Some(format!("{k} {problem}"))
            })
            .collect();
        if !offsets.is_empty() {
            errors.push(ItemError {
                index,
                message: offsets.join("; "),
            });
            continue;
        }
        match serde_json::from_value::<Booking>(item) {
            Ok(booking) => good.push((index, booking)),
            Err(e) => errors.push(ItemError {
                index,
                message: e.to_string(),
            }),
        }
    }
    // Items that are not even bookings: nothing may be applied unless
    // skip_invalid, so the store only reports.
    let refuse = !errors.is_empty() && !skip_invalid;
    let options = ImportOptions {
        dry_run: dry_run || refuse,
        skip_invalid,
    };
    let now = state.now();
    let report = blocking(&state, Some(&caller), move |r| {
        r.import_bookings(good, options, now, &crate::units::Scope::All)
    })
    .await?;
    errors.extend(report.errors.into_iter().map(|e| ItemError {
        index: e.line,
        message: e.message,
    }));
    errors.sort_by_key(|e| e.index);
    let status = if !errors.is_empty() && !skip_invalid {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let response = ImportResponse {
        applied: report.applied && !refuse,
        dry_run,
        inserted: report.inserted,
        updated: report
            .updated
            .into_iter()
            .map(|u| UpdatedBooking {
                booking_id: u.booking_id,
                fields: u.fields.into_iter().map(str::to_owned).collect(),
            })
            .collect(),
        unchanged: report.unchanged,
        not_monitored: report.not_monitored,
        errors,
    };
    Ok((status, Json(response)).into_response())
}

/// This document (no token needed).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    });
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// Liveness and progress (no token needed): whether the figures are final
/// and what the quarantine holds.
#[utoipa::path(
    get,
    path = "/api/v1/healthz",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The collector is serving", body = Health),
        (status = 500, description = "The database cannot be read (details in the log)", body = ErrorBody),
    )
)]
pub async fn healthz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    let now = state.now();
    let mut health = blocking(&state, None, move |r| r.health(now)).await?;
    health.influxdb = state.sink.as_ref().map(|s| s.health(now.as_millisecond()));
    Ok(Json(health))
}

/// Query parameters of `GET /api/v1/quarantine`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct QuarantineParams {
    /// Only payloads from this agent.
    #[param(pattern = r"\S")]
    agent: Option<String>,
    /// Only this kind of refusal.
    kind: Option<Kind>,
    /// Received at or after: `YYYY-MM-DD` (site zone) or an RFC 3339 instant.
    from: Option<String>,
    /// Received before, same forms.
    to: Option<String>,
    /// At most this many rows, newest first (default 100, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// `csv` or `json`; overrides the Accept header.
    format: Option<FormatName>,
}

/// The default and the largest `limit` of `GET /api/v1/quarantine`.
const QUARANTINE_LIMITS: (usize, usize) = (100, 10_000);

/// Refused payloads, newest first (admin).
#[utoipa::path(
    get,
    path = "/api/v1/quarantine",
    tag = "meta",
    params(QuarantineParams),
    responses(
        (status = 200, description = "One row per refused payload (without its bytes)", content((Rows<Entry> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is malformed or unknown", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn quarantine(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    params.only(&["agent", "kind", "from", "to", "limit", "format"])?;
    let kind = match params.text("kind")? {
        None => None,
        Some(k) => Some(Kind::parse(&k).ok_or_else(|| {
            ApiError::bad_parameter(
                "kind",
                format!("kind {k:?} is not one of {}", Kind::names()),
            )
        })?),
    };
    let edge = |name: &'static str| -> Result<Option<Edge>, ApiError> {
        params
            .text(name)?
            .map(|t| {
                parse_edge(&t).ok_or_else(|| {
                    ApiError::bad_parameter(
                        name,
                        format!("{name} {t:?} is not a date (2025-03-01) or an RFC 3339 instant"),
                    )
                })
            })
            .transpose()
    };
    let (from, to) = (edge("from")?, edge("to")?);
    let (default_limit, max_limit) = QUARANTINE_LIMITS;
    let limit = match params.text("limit")? {
        None => default_limit,
        Some(l) => l
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max_limit).contains(n))
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    "limit",
                    format!("limit {l:?} is not a whole number from 1 to {max_limit}"),
                )
            })?,
    };
    let filter = crate::quarantine::Filter {
        agent_id: params.text("agent")?,
        kind,
        limit,
        ..Default::default()
    };
    let format = params.format()?;
    let rows = blocking(&state, Some(&caller), move |r| {
        r.quarantine_list(&filter, from, to)
    })
    .await?;
    rows_answer(rows, format)
}

/// One refused payload with the bytes kept of it (admin).
#[utoipa::path(
    get,
    path = "/api/v1/quarantine/{id}",
    tag = "meta",
    params(("id" = i64, Path, description = "The row's id")),
    responses(
        (status = 200, description = "The row and its payload", body = Detail),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such row (purged?)", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn quarantine_entry(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Detail>, ApiError> {
    caller.require_admin()?;
    let no_row = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no quarantined payload {id:?}; GET /api/v1/quarantine lists them"),
        )
    };
    let number: i64 = id.parse().map_err(|_| no_row())?;
    blocking(&state, Some(&caller), move |r| r.quarantine_entry(number))
        .await?
        .map(Json)
        .ok_or_else(no_row)
}

/// What `GET /api/v1/checkpoints` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckpointsAnswer {
    /// The key every checkpoint is signed with (absent when the collector
    /// has none loaded).
    pub key: Option<crate::evidence::checkpoint::CollectorKey>,
    /// Oldest first; only the newest with `?latest=true`.
    pub checkpoints: Vec<crate::evidence::checkpoint::Checkpoint>,
}

/// Query parameters of `GET /api/v1/checkpoints`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CheckpointParams {
    /// Only the newest checkpoint (`?latest=true`).
    latest: Option<bool>,
}

/// The collector's signed checkpoints (C2SP signed notes over every
/// agent's chain head and every instrument's bookings) and its key.
#[utoipa::path(
    get,
    path = "/api/v1/checkpoints",
    tag = "evidence",
    params(CheckpointParams),
    responses(
        (status = 200, description = "The key and the checkpoints", body = CheckpointsAnswer),
        (status = 400, description = "A bad parameter (named in the body)", body = ErrorBody),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn checkpoints(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
) -> Result<Json<CheckpointsAnswer>, ApiError> {
    params.only(&["latest"])?;
    let latest = match params.get("latest") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "latest",
                format!("latest {other:?} is not true or false: ask ?latest=true"),
            ));
        }
    };
    let checkpoints = blocking(&state, Some(&caller), move |r| r.checkpoints(latest)).await?;
    Ok(Json(CheckpointsAnswer {
        key: state.collector_key.clone(),
        checkpoints,
    }))
}

/// Any other path.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {}; GET /api/v1/openapi.json lists them",
            uri.path()
        ),
    )
}
