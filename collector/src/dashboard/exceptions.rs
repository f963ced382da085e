//! The exceptions inbox (`/exceptions`): no-shows, overruns, unbooked use,
//! faults, double bookings, data gaps and quarantined payloads, newest
//! first ([`build`], pure), filterable and paged; and the admins' actions,
//! which record §7 corrections through the same code as
//! `POST /api/v1/corrections` (so they are in `GET /api/v1/corrections`,
//! the audit trail):
//!
//! - `POST /exceptions/assign`: assigns the unbooked use in an interval to
//!   a user, group, usage type or booking, with a reason;
//! - `POST /exceptions/review`: marks an item reviewed: a note-only
//!   correction over its interval (`reviewed: <note>`), which changes no
//!   figure;
//! - `POST /exceptions/move`: moves the usage attributed to one booking in
//!   an interval to another booking (disputed time: a double booking, an
//!   overrun into the next booking's window), with a reason.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::i18n::Lang;
use super::page::{Page, duration, hours, local_minute, parse_ms, short_time};
use super::session::{Viewer, safe_next, url_encode};
use super::{DashState, PageError, blocking};
use crate::bookings::UsageType;
use crate::reconcile::PeriodUnit;
use crate::verified::{
    BookingSlot, Correction, Edge, GroupBy, HoursQuery, HoursRow, HoursRows, InstrumentRow,
    NewCorrection, OutcomeRow, Range,
};

/// Items per page.
pub const PER_PAGE: usize = 25;

/// The prefix of a review note's reason.
pub const REVIEWED: &str = "reviewed: ";

/// What kind of exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    NoShow,
    Overrun,
    Unbooked,
    Fault,
    DoubleBooking,
    DataGap,
    Quarantined,
    ThresholdMismatch,
    /// A payload the trust checks refused: bad signature, unknown or
    /// revoked key, another agent's key, a broken chain or a fork.
    Trust,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::NoShow,
        Kind::Overrun,
        Kind::Unbooked,
        Kind::Fault,
        Kind::DoubleBooking,
        Kind::DataGap,
        Kind::Quarantined,
        Kind::ThresholdMismatch,
        Kind::Trust,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NoShow => "no_show",
            Kind::Overrun => "overrun",
            Kind::Unbooked => "unbooked",
            Kind::Fault => "fault",
            Kind::DoubleBooking => "double_booking",
            Kind::DataGap => "data_gap",
            Kind::Quarantined => "quarantined",
            Kind::ThresholdMismatch => "threshold_mismatch",
            Kind::Trust => "trust",
        }
    }

    pub fn label_key(self) -> String {
        format!("exceptions.kind.{}", self.as_str())
    }
}

/// One inbox item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: Kind,
    pub instrument_id: String,
    pub name: String,
    /// The interval an action applies to (items sort by its start, newest first).
    pub start_ms: i64,
    pub end_ms: i64,
    pub booking_id: Option<String>,
    /// Disputed time an admin may move: the booking it is attributed to and
    /// the one it might belong to, as far as the item knows (`""`: to fill).
    pub move_pair: Option<(String, String)>,
    /// The figures, in the page's language.
    pub detail: String,
    /// Who handled it and how, when someone did.
    pub handled: Option<String>,
}

impl Item {
    /// Admins may act on it with a correction (quarantined payloads have
    /// no instrument; a threshold mismatch is fixed in a config file).
    pub fn actionable(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Quarantined | Kind::ThresholdMismatch | Kind::Trust
        )
    }
}

/// What the inbox is built from.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Outcomes worth a look (no-show, fault, overrun).
    pub outcomes: Vec<OutcomeRow>,
    /// Every booking that is not cancelled (double bookings).
    pub slots: Vec<BookingSlot>,
    /// Hours rows per instrument and local day.
    pub days: Vec<HoursRow>,
    pub corrections: Vec<Correction>,
    pub quarantine: Vec<crate::quarantine::Entry>,
    /// The instruments with their agents (threshold mismatches).
    pub instruments: Vec<InstrumentRow>,
    /// When the page is made: a mismatch is a current condition.
    pub now_ms: i64,
}

fn covers(c: &Correction, instrument: &str, start: i64, end: i64) -> bool {
    c.correction.instrument_id == instrument
        && c.correction.start.as_millisecond() <= start
        && c.correction.end.as_millisecond() >= end
}

/// Every item, newest first.
pub fn build(inputs: &Inputs, lang: Lang, zone: &TimeZone) -> Vec<Item> {
    let names: HashMap<&str, &str> = inputs
        .days
        .iter()
        .filter_map(|r| Some((r.instrument_id.as_deref()?, r.name.as_deref()?)))
        .collect();
    let name = |id: &str| {
        names
            .get(id)
            .map_or_else(|| id.to_owned(), |n| (*n).to_owned())
    };
    // Indexed once: every item looks only at its own instrument's corrections.
    let mut corrections_of: HashMap<&str, Vec<&Correction>> = HashMap::new();
    for c in &inputs.corrections {
        corrections_of
            .entry(c.correction.instrument_id.as_str())
            .or_default()
            .push(c);
    }
    let reviewed = |instrument: &str, start: i64, end: i64| {
        corrections_of
            .get(instrument)?
            .iter()
            .rev()
            .find(|c| covers(c, instrument, start, end))
            .map(|c| format!("{} · {}", c.created_by, c.correction.reason))
    };
    let mut items = Vec::new();
    for o in &inputs.outcomes {
        let (Some(start), Some(end)) = (parse_ms(&o.start), parse_ms(&o.end)) else {
            continue;
        };
        let who = format!("{} · {} · {}", o.booking_id, o.user, o.group);
        let when = format!("{}–{}", short_time(&o.start), super::page::clock(&o.end));
        let mut push = |kind: Kind, figures: String, s: i64, e: i64| {
            let id = o.booking_id.clone();
            // A no-show may have lost its time to a neighbour; an overrun
            // may have been someone else's use.
            let move_pair = match kind {
                Kind::NoShow => Some((o.took_usage_from.join(" "), id.clone())),
                Kind::Overrun => Some((id.clone(), String::new())),
                _ => None,
            };
            items.push(Item {
                kind,
                instrument_id: o.instrument_id.clone(),
                name: name(&o.instrument_id),
                start_ms: s,
                end_ms: e,
                booking_id: Some(id),
                move_pair,
                detail: format!("{who} · {when} · {figures}"),
                handled: reviewed(&o.instrument_id, s, e),
            });
        };
        match o.outcome.as_str() {
            "no_show" => push(
                Kind::NoShow,
                format!("{} {}", lang.t("col.used"), duration(o.used_s, lang)),
                start,
                end,
            ),
            "instrument_fault" => push(
                Kind::Fault,
                format!(
                    "{} {}",
                    lang.t("outcome.fault_time"),
                    duration(o.fault_s, lang)
                ),
                start,
                end,
            ),
            _ => {}
        }
        if o.flags.iter().any(|f| f == "overrun") {
            let over_end = parse_ms(o.last_use.as_deref().unwrap_or(&o.end)).unwrap_or(end);
            push(
                Kind::Overrun,
                format!("{} {}", lang.t("flag.overrun"), duration(o.overrun_s, lang)),
                start,
                over_end.max(end),
            );
        }
    }
    // Double bookings: overlapping bookings of one instrument.
    let mut slots: Vec<&BookingSlot> = inputs.slots.iter().collect();
    slots.sort_by(|a, b| {
        (&a.instrument_id, a.start_ms, &a.booking_id).cmp(&(
            &b.instrument_id,
            b.start_ms,
            &b.booking_id,
        ))
    });
    for (i, a) in slots.iter().enumerate() {
        for b in slots[i + 1..]
            .iter()
            .take_while(|b| b.instrument_id == a.instrument_id && b.start_ms < a.end_ms)
        {
            let (s, e) = (b.start_ms, a.end_ms.min(b.end_ms));
            items.push(Item {
                kind: Kind::DoubleBooking,
                instrument_id: a.instrument_id.clone(),
                name: name(&a.instrument_id),
                start_ms: s,
                end_ms: e,
                booking_id: None,
                // §4 gives the overlap to the booking that started last.
                move_pair: Some((b.booking_id.clone(), a.booking_id.clone())),
                detail: format!(
                    "{} ↔ {} · {} · {}",
                    a.booking_id,
                    b.booking_id,
                    local_minute(s, zone),
                    duration((e - s) as f64 / 1000.0, lang)
                ),
                handled: reviewed(&a.instrument_id, s, e),
            });
        }
    }
    for d in &inputs.days {
        let Some(id) = d.instrument_id.as_deref() else {
            continue;
        };
        let (Some(start), Some(end)) = (day_ms(&d.period_start, zone), day_ms(&d.period_end, zone))
        else {
            continue;
        };
        let day_item = |kind: Kind, detail: String, handled: Option<String>| Item {
            kind,
            instrument_id: id.to_owned(),
            name: name(id),
            start_ms: start,
            end_ms: end,
            booking_id: None,
            move_pair: None,
            detail: format!(
                "{} · {detail}",
                d.period_start.get(0..10).unwrap_or(&d.period_start)
            ),
            handled,
        };
        if d.unbooked_hours > 0.0 {
            let all_assigned = d.corrected.unbooked_hours <= 1e-9;
            let handled = if all_assigned {
                Some(format!(
                    "{} {} h",
                    lang.t("exceptions.assigned"),
                    hours(d.corrected.assigned_hours)
                ))
            } else {
                reviewed(id, start, end)
            };
            items.push(day_item(
                Kind::Unbooked,
                format!(
                    "{} {} h · {} {} h",
                    lang.t("exceptions.unbooked_hours"),
                    hours(d.unbooked_hours),
                    lang.t("exceptions.unassigned_hours"),
                    hours(d.corrected.unbooked_hours)
                ),
                handled,
            ));
        }
        if d.fault_hours > 0.0 {
            items.push(day_item(
                Kind::Fault,
                format!(
                    "{} {} h",
                    lang.t("outcome.fault_time"),
                    hours(d.fault_hours)
                ),
                reviewed(id, start, end),
            ));
        }
        if d.unknown_hours > 0.0 {
            items.push(day_item(
                Kind::DataGap,
                format!(
                    "{} {} h · {} {}",
                    lang.t("exceptions.no_data_hours"),
                    hours(d.unknown_hours),
                    lang.t("report.coverage"),
                    super::page::percent(Some(d.coverage))
                ),
                reviewed(id, start, end),
            ));
        }
    }
    for q in &inputs.quarantine {
        items.push(Item {
            kind: if q.kind.is_trust() {
                Kind::Trust
            } else {
                Kind::Quarantined
            },
            instrument_id: String::new(),
            name: q.agent_id.clone().unwrap_or_else(|| q.topic.clone()),
            start_ms: q.received_at.as_millisecond(),
            end_ms: q.received_at.as_millisecond(),
            booking_id: None,
            move_pair: None,
            detail: format!(
                "{} · {} · {} B · {}",
                local_minute(q.received_at.as_millisecond(), zone),
                q.topic,
                q.payload_len,
                q.reason
            ),
            handled: None,
        });
    }
    for i in &inputs.instruments {
        for a in i.agents.iter().filter(|a| !a.threshold_mismatch.is_empty()) {
            items.push(Item {
                kind: Kind::ThresholdMismatch,
                instrument_id: i.instrument_id.clone(),
                name: i.name.clone(),
                start_ms: inputs.now_ms,
                end_ms: inputs.now_ms,
                booking_id: None,
                detail: format!(
                    "{} {}: {}",
                    lang.t("agents.agent"),
                    a.agent_id,
                    super::agents::mismatch_text(&a.threshold_mismatch, lang)
                ),
                handled: None,
                move_pair: None,
            });
        }
    }
    items.sort_by(|a, b| {
        b.start_ms
            .cmp(&a.start_ms)
            .then(a.kind.cmp(&b.kind))
            .then(a.instrument_id.cmp(&b.instrument_id))
    });
    items
}

/// A period edge of an hours row (`YYYY-MM-DD`) as the local midnight.
fn day_ms(text: &str, zone: &TimeZone) -> Option<i64> {
    let date: Date = text.get(0..10)?.parse().ok()?;
    Some(
        date.to_zoned(zone.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExceptionParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub kind: Option<String>,
    pub q: Option<String>,
    /// `open` (default): only items nobody handled; `all`.
    pub show: Option<String>,
    pub page: Option<usize>,
}

/// Applies kind, search and open/all.
pub fn filter(items: Vec<Item>, params: &ExceptionParams) -> Vec<Item> {
    let kind = params.kind.as_deref().filter(|k| !k.is_empty());
    let q = params
        .q
        .as_deref()
        .map(|q| q.trim().to_lowercase())
        .filter(|q| !q.is_empty());
    let open_only = params.show.as_deref() != Some("all");
    items
        .into_iter()
        .filter(|i| kind.is_none_or(|k| i.kind.as_str() == k))
        .filter(|i| {
            q.as_deref().is_none_or(|q| {
                i.instrument_id.to_lowercase().contains(q)
                    || i.name.to_lowercase().contains(q)
                    || i.detail.to_lowercase().contains(q)
            })
        })
        .filter(|i| !open_only || i.handled.is_none())
        .collect()
}

/// An item as the template shows it.
#[derive(Debug)]
pub struct ItemView {
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub instrument_id: String,
    pub name: String,
    pub href: String,
    pub detail: String,
    pub handled: String,
    pub actionable: bool,
    pub assign: bool,
    /// The move form, prefilled with (from, to).
    pub move_pair: Option<(String, String)>,
    pub start: String,
    pub end: String,
    pub booking_id: String,
}

#[derive(askama::Template)]
#[template(path = "exceptions.html")]
struct ExceptionsTemplate {
    page: Page,
    from: String,
    to: String,
    kind: String,
    q: String,
    show_all: bool,
    kinds: Vec<(&'static str, &'static str)>,
    usage_types: Vec<(&'static str, &'static str)>,
    total: usize,
    items: Vec<ItemView>,
    current: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    back: String,
}

fn parse_date(text: Option<&str>, default: Date, name: &str) -> Result<Date, PageError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(t) => t.parse().map_err(|e| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("{name}={t:?} is not a date YYYY-MM-DD: {e}"),
            )
        }),
    }
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `GET /exceptions`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<ExceptionParams>,
) -> Result<Response, PageError> {
    let today = state.today();
    let week_ago = today
        .checked_sub(jiff::Span::new().days(6))
        .unwrap_or(today);
    let from = parse_date(params.from.as_deref(), week_ago, "from")?;
    let to_incl = parse_date(params.to.as_deref(), today, "to")?;
    let to = to_incl.tomorrow().unwrap_or(to_incl);
    if to <= from {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "to is before from"));
    }
    let range = Range {
        from: Edge::Date(from),
        to: Edge::Date(to),
    };
    let now = state.now();
    let inputs = blocking(&state, &viewer, move |r| {
        let days = match r
            .hours(&HoursQuery {
                range,
                instrument: None,
                unit: None,
                period: Some(PeriodUnit::Day),
                group_by: GroupBy::Instrument,
            })?
            .rows
        {
            HoursRows::Totals(rows) => rows,
            HoursRows::UsageTypes(_) => Vec::new(),
        };
        let inputs = Inputs {
            outcomes: r.exception_outcomes(&range)?,
            slots: r.booking_slots(&range)?,
            days,
            corrections: r.corrections(&range, None)?,
            quarantine: r.quarantine_list(
                &crate::quarantine::Filter {
                    limit: 1000,
                    ..Default::default()
                },
                Some(range.from),
                Some(range.to),
            )?,
            instruments: r.instruments(now)?,
            now_ms: now.as_millisecond(),
        };
        Ok(inputs)
    })
    .await?;
    let path = uri
        .path_and_query()
        .map_or("/exceptions".to_owned(), |p| p.as_str().to_owned());
    let page = Page::new(&headers, "exceptions", &path, viewer, "exceptions.title");
    let items = filter(build(&inputs, page.lang, &state.site_zone), &params);
    let total = items.len();
    let pages = total.div_ceil(PER_PAGE).max(1);
    let current = params.page.unwrap_or(1).clamp(1, pages);
    let link = |p: usize| {
        let mut q = format!("/exceptions?from={from}&to={to_incl}");
        for (k, v) in [
            ("kind", &params.kind),
            ("q", &params.q),
            ("show", &params.show),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.push_str(&format!("&{k}={}", url_encode(v)));
            }
        }
        format!("{q}&page={p}")
    };
    let views = items
        .into_iter()
        .skip((current - 1) * PER_PAGE)
        .take(PER_PAGE)
        .map(|i| ItemView {
            kind: i.kind.as_str(),
            kind_label: page.lang.t(&i.kind.label_key()),
            href: if i.instrument_id.is_empty() {
                "/agents".to_owned()
            } else {
                let day = Timestamp::from_millisecond(i.start_ms)
                    .map(|t| t.to_zoned(state.site_zone.clone()).date().to_string())
                    .unwrap_or_default();
                format!("/instruments/{}?day={day}", url_encode(&i.instrument_id))
            },
            actionable: i.actionable(),
            assign: i.kind == Kind::Unbooked,
            move_pair: i.move_pair.clone(),
            start: rfc3339(i.start_ms),
            end: rfc3339(i.end_ms),
            booking_id: i.booking_id.clone().unwrap_or_default(),
            handled: i.handled.clone().unwrap_or_default(),
            instrument_id: i.instrument_id,
            name: i.name,
            detail: i.detail,
        })
        .collect();
    let html = askama::Template::render(&ExceptionsTemplate {
        from: from.to_string(),
        to: to_incl.to_string(),
        kind: params.kind.clone().unwrap_or_default(),
        q: params.q.clone().unwrap_or_default(),
        show_all: params.show.as_deref() == Some("all"),
        kinds: Kind::ALL
            .iter()
            .map(|k| (k.as_str(), page.lang.t(&k.label_key())))
            .collect(),
        usage_types: UsageType::ALL
            .iter()
            .map(|u| (u.as_str(), page.lang.t(&format!("usage.{}", u.as_str()))))
            .collect(),
        total,
        items: views,
        current,
        pages,
        prev: (current > 1).then(|| link(current - 1)),
        next: (current < pages).then(|| link(current + 1)),
        back: path,
        page,
    })?;
    Ok(Html(html).into_response())
}

/// What every correction form has: the instrument, the interval, why, and
/// the page to go back to.
#[derive(Debug, Deserialize)]
pub struct CorrectionFields {
    pub instrument_id: String,
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub back: String,
}

impl CorrectionFields {
    /// A correction of the instrument's `[start, end)` for the reason given.
    fn correction(&self) -> Result<NewCorrection, PageError> {
        Ok(NewCorrection {
            instrument_id: self.instrument_id.trim().to_owned(),
            start: instant(&self.start, "start")?,
            end: instant(&self.end, "end")?,
            reason: self.reason.trim().to_owned(),
            ..NewCorrection::default()
        })
    }
}

/// The assign form.
#[derive(Debug, Deserialize)]
pub struct AssignForm {
    #[serde(flatten)]
    pub fields: CorrectionFields,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub usage_type: String,
    #[serde(default)]
    pub booking_id: String,
}

/// The move form.
#[derive(Debug, Deserialize)]
pub struct MoveForm {
    #[serde(flatten)]
    pub fields: CorrectionFields,
    #[serde(default)]
    pub from_booking_id: String,
    #[serde(default)]
    pub booking_id: String,
}

/// The review form.
#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    pub instrument_id: String,
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub back: String,
}

fn instant(text: &str, name: &str) -> Result<Timestamp, PageError> {
    text.trim().parse().map_err(|e| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            format!("{name}={text:?} is not an RFC 3339 instant: {e}"),
        )
    })
}

fn optional(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

async fn record(
    state: &DashState,
    viewer: &Viewer,
    correction: NewCorrection,
    back: &str,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let now = state.now();
    let by = viewer.name.clone();
    blocking(state, viewer, move |r| {
        r.add_correction(correction, &by, now)
    })
    .await?;
    Ok(Redirect::to(&safe_next(Some(back).filter(|b| {
        b.starts_with("/exceptions") || b.starts_with("/instruments/")
    })))
    .into_response())
}

/// `POST /exceptions/assign` (admins).
pub async fn assign(
    State(state): State<DashState>,
    viewer: Viewer,
    Form(form): Form<AssignForm>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let usage_type = match optional(&form.usage_type) {
        None => None,
        Some(u) => Some(UsageType::parse(&u).ok_or_else(|| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("usage_type {u:?} is not one of {}", UsageType::ACCEPTED),
            )
        })?),
    };
    let correction = NewCorrection {
        user: optional(&form.user),
        group: optional(&form.group),
        usage_type,
        booking_id: optional(&form.booking_id),
        ..form.fields.correction()?
    };
    record(&state, &viewer, correction, &form.fields.back).await
}

/// `POST /exceptions/move` (admins): a move correction. Whatever is wrong
/// (a booking missing, the interval not the source booking's usage) comes
/// back from the same checks as the API's, naming the field.
pub async fn move_time(
    State(state): State<DashState>,
    viewer: Viewer,
    Form(form): Form<MoveForm>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let correction = NewCorrection {
        from_booking_id: Some(form.from_booking_id.trim().to_owned()),
        booking_id: Some(form.booking_id.trim().to_owned()),
        ..form.fields.correction()?
    };
    record(&state, &viewer, correction, &form.fields.back).await
}

/// `POST /exceptions/review` (admins): a note-only correction.
pub async fn review(
    State(state): State<DashState>,
    viewer: Viewer,
    Form(form): Form<ReviewForm>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let start = instant(&form.start, "start")?;
    let mut end = instant(&form.end, "end")?;
    if end <= start {
        // A point in time (a quarantined payload): one second.
        end = start + jiff::SignedDuration::from_secs(1);
    }
    let note = form.note.trim();
    let correction = NewCorrection {
        instrument_id: form.instrument_id.trim().to_owned(),
        start,
        end,
        reason: format!("{REVIEWED}{}", if note.is_empty() { "-" } else { note }),
        ..NewCorrection::default()
    };
    record(&state, &viewer, correction, &form.back).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::thresholds_check::ThresholdDifference;
    use crate::verified::{AgentView, CorrectedHours};

    fn zone() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("zone")
    }

    fn outcome(id: &str, start: &str, end: &str, outcome: &str, flags: &[&str]) -> OutcomeRow {
        OutcomeRow {
            booking_id: id.into(),
            instrument_id: "nmr-600".into(),
            user: "li".into(),
            group: "chem".into(),
            usage_type: "research".into(),
            start: start.into(),
            end: end.into(),
            outcome: outcome.into(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            overrun_s: if flags.contains(&"overrun") {
                1800.0
            } else {
                0.0
            },
            ..OutcomeRow::default()
        }
    }

    fn day(unbooked: f64, assigned: f64, unknown: f64) -> HoursRow {
        HoursRow {
            instrument_id: Some("nmr-600".into()),
            name: Some("NMR 600 MHz".into()),
            period_start: "2025-03-03".into(),
            period_end: "2025-03-04".into(),
            unbooked_hours: unbooked,
            unknown_hours: unknown,
            coverage: 0.9,
            corrected: CorrectedHours {
                assigned_hours: assigned,
                unbooked_hours: unbooked - assigned,
                ..CorrectedHours::default()
            },
            ..HoursRow::default()
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            outcomes: vec![
                outcome(
                    "b-1",
                    "2025-03-03T09:00:00+08:00",
                    "2025-03-03T11:00:00+08:00",
                    "no_show",
                    &[],
                ),
                outcome(
                    "b-2",
                    "2025-03-03T13:00:00+08:00",
                    "2025-03-03T15:00:00+08:00",
                    "used",
                    &["overrun", "late_start"],
                ),
                outcome(
                    "b-3",
                    "2025-03-03T14:00:00+08:00",
                    "2025-03-03T16:00:00+08:00",
                    "used",
                    &[],
                ),
            ],
            slots: [
                (
                    "b-1",
                    "2025-03-03T09:00:00+08:00",
                    "2025-03-03T11:00:00+08:00",
                ),
                (
                    "b-2",
                    "2025-03-03T13:00:00+08:00",
                    "2025-03-03T15:00:00+08:00",
                ),
                (
                    "b-3",
                    "2025-03-03T14:00:00+08:00",
                    "2025-03-03T16:00:00+08:00",
                ),
            ]
            .into_iter()
            .map(|(id, s, e)| BookingSlot {
                instrument_id: "nmr-600".into(),
                booking_id: id.into(),
                start_ms: parse_ms(s).expect("time"),
                end_ms: parse_ms(e).expect("time"),
            })
            .collect(),
            days: vec![day(1.5, 0.0, 2.0)],
            corrections: vec![],
            quarantine: vec![crate::quarantine::Entry {
                id: 1,
                received_at: Timestamp::from_millisecond(1_741_000_000_000).unwrap(),
                topic: "labhours/v1/agent-9/events".into(),
                agent_id: Some("agent-9".into()),
                kind: crate::quarantine::Kind::Undecodable,
                reason: "malformed".into(),
                payload_len: 12,
            }],
            instruments: vec![InstrumentRow {
                instrument_id: "nmr-600".into(),
                name: "NMR 600 MHz".into(),
                unit: None,
                time_zone: "Asia/Shanghai".into(),
                configured: true,
                state: labhours_shared::state::State::Off,
                since: None,
                agent_online: true,
                agents: vec![AgentView {
                    agent_id: "agent-nmr".into(),
                    online: true,
                    last_seen: None,
                    backlog: None,
                    clock_skew_ms: None,
                    version: None,
                    applied_thresholds: None,
                    registry_thresholds: None,
                    threshold_mismatch: vec![ThresholdDifference {
                        field: "running_above_w".into(),
                        registry: 800.0,
                        agent: 500.0,
                    }],
                    signing_key: None,
                }],
            }],
            now_ms: 1_742_000_000_000,
        }
    }

    #[test]
    fn every_kind_is_found_and_the_newest_comes_first() {
        let items = build(&inputs(), Lang::En, &zone());
        let kinds: Vec<Kind> = items.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::ThresholdMismatch,
                Kind::Quarantined,
                Kind::DoubleBooking,
                Kind::Overrun,
                Kind::NoShow,
                Kind::Unbooked,
                Kind::DataGap,
            ]
        );
        assert!(items.windows(2).all(|w| w[0].start_ms >= w[1].start_ms));
        assert_eq!(
            items[0].detail,
            "Agent agent-nmr: running_above_w registry 800 W, agent 500 W"
        );
        assert!(
            !items[0].actionable(),
            "fixed in a config file, not by a correction"
        );
        let double = &items[2];
        assert!(double.detail.starts_with("b-2 ↔ b-3"));
        assert_eq!(double.end_ms - double.start_ms, 3_600_000);
        assert_eq!(items[5].name, "NMR 600 MHz");
    }

    #[test]
    fn a_note_covering_an_item_marks_it_reviewed_and_open_hides_it() {
        let mut input = inputs();
        input.corrections.push(Correction {
            id: 1,
            correction: NewCorrection {
                instrument_id: "nmr-600".into(),
                start: "2025-03-03T01:00:00Z".parse().expect("ts"),
                end: "2025-03-03T03:00:00Z".parse().expect("ts"),
                reason: "reviewed: student was ill".into(),
                ..NewCorrection::default()
            },
            created_by: "office".into(),
            created_at: Timestamp::UNIX_EPOCH,
        });
        let items = build(&input, Lang::En, &zone());
        let no_show = items
            .iter()
            .find(|i| i.kind == Kind::NoShow)
            .expect("no-show");
        assert_eq!(
            no_show.handled.as_deref(),
            Some("office · reviewed: student was ill")
        );
        let open = filter(items.clone(), &ExceptionParams::default());
        assert!(open.iter().all(|i| i.kind != Kind::NoShow));
        let all = filter(
            items,
            &ExceptionParams {
                show: Some("all".into()),
                ..ExceptionParams::default()
            },
        );
        assert!(all.iter().any(|i| i.kind == Kind::NoShow));
    }

    #[test]
    fn unbooked_use_is_handled_once_all_of_it_is_assigned() {
        let mut input = inputs();
        input.days = vec![day(1.5, 1.5, 0.0)];
        let items = build(&input, Lang::En, &zone());
        let unbooked = items
            .iter()
            .find(|i| i.kind == Kind::Unbooked)
            .expect("unbooked");
        assert!(unbooked.handled.is_some());
        input.days = vec![day(1.5, 0.5, 0.0)];
        let items = build(&input, Lang::En, &zone());
        assert!(
            items
                .iter()
                .any(|i| i.kind == Kind::Unbooked && i.handled.is_none())
        );
    }

    #[test]
    fn the_filter_selects_a_kind_and_searches_instrument_and_detail() {
        let items = build(&inputs(), Lang::En, &zone());
        let only = filter(
            items.clone(),
            &ExceptionParams {
                kind: Some("overrun".into()),
                ..ExceptionParams::default()
            },
        );
        assert_eq!(only.len(), 1);
        let found = filter(
            items,
            &ExceptionParams {
                q: Some("AGENT-9".into()),
                ..ExceptionParams::default()
            },
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Quarantined);
        assert!(!found[0].actionable());
    }
}
