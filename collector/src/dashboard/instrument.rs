//! One instrument (`/instruments/{id}?day=YYYY-MM-DD&span=day|week`): the
//! timeline SVG ([`super::timeline_svg`]), then the outcomes of its
//! bookings and its sessions in the range.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use jiff::civil::Date;
use serde::Deserialize;

use super::page::{Page, clock, duration, parse_ms, short_time};
use super::session::{Viewer, url_encode};
use super::timeline_svg::{BookingBlock, FileTick, StateBand, Timeline};
use super::{DashState, PageError, blocking};
use crate::verified::{Edge, OutcomeRow, Range};

#[derive(Debug, Default, Deserialize)]
pub struct InstrumentParams {
    /// `YYYY-MM-DD`; default today (site zone).
    day: Option<String>,
    /// `day` (default) or `week` (Monday to Sunday around `day`).
    span: Option<String>,
}

/// The range a page shows: one day, or the week (from Monday) holding it.
pub fn page_range(day: Date, week: bool) -> (Date, Date) {
    if week {
        let back = i64::from(day.weekday().to_monday_zero_offset());
        let monday = day.checked_sub(jiff::Span::new().days(back)).unwrap_or(day);
        (
            monday,
            monday
                .checked_add(jiff::Span::new().days(7))
                .unwrap_or(monday),
        )
    } else {
        (day, day.tomorrow().unwrap_or(day))
    }
}

/// One outcome as the table shows it.
#[derive(Debug)]
pub struct OutcomeView {
    pub booking_id: String,
    pub who: String,
    pub usage_type: String,
    pub when: String,
    pub outcome: String,
    pub flags: String,
    pub booked: String,
    pub used: String,
    pub overrun: String,
    /// Set when move corrections changed the used time.
    pub corrected_used: String,
    /// (label, booking ids) of each kind of disputed time the booking has.
    pub disputes: Vec<(&'static str, String)>,
    /// The move form's prefill when the booking has disputed time: from,
    /// to, and the booking's slot as RFC 3339 instants.
    pub move_form: Option<MovePrefill>,
}

/// What the instrument page's move form starts with (all editable).
#[derive(Debug)]
pub struct MovePrefill {
    pub from: String,
    pub to: String,
    pub start: String,
    pub end: String,
}

/// The move a manager most likely wants for a disputed booking: give back
/// what it took from a neighbour, else take back what a neighbour took,
/// else take the slot's time from an overlapping booking; over its slot.
fn move_prefill(o: &OutcomeRow) -> Option<MovePrefill> {
    let first = |ids: &[String]| ids.first().cloned();
    let (from, to) = if let Some(other) = first(&o.took_usage_from) {
        (o.booking_id.clone(), other)
    } else if let Some(other) = first(&o.usage_taken_by).or_else(|| first(&o.overlapping_bookings))
    {
        (other, o.booking_id.clone())
    } else {
        return None;
    };
    let instant = |t: &str| t.parse::<jiff::Timestamp>().map(|t| t.to_string()).ok();
    Some(MovePrefill {
        from,
        to,
        start: instant(&o.start)?,
        end: instant(&o.end)?,
    })
}

/// One session as the table shows it.
#[derive(Debug)]
pub struct SessionView {
    pub when: String,
    pub duration: String,
    pub dropped: bool,
    /// `booking id` or empty for unbooked, with its times.
    pub segments: Vec<(String, String)>,
    pub files: usize,
}

#[derive(askama::Template)]
#[template(path = "instrument.html")]
struct InstrumentTemplate {
    page: Page,
    id: String,
    name: String,
    unit: String,
    range_label: String,
    week: bool,
    day_href: String,
    week_href: String,
    prev_href: String,
    next_href: String,
    svg: String,
    outcomes: Vec<OutcomeView>,
    sessions: Vec<SessionView>,
    thresholds: String,
    exceptions_href: String,
}

/// The hover text of a booking.
fn booking_title(
    page: &Page,
    row: Option<&OutcomeRow>,
    user: &str,
    start: &str,
    end: &str,
) -> String {
    let mut t = format!("{user} {}–{}", clock(start), clock(end));
    if let Some(o) = row {
        t.push_str(&format!(
            "\n{}: {}\n{}: {} / {}: {}",
            page.t("outcome.label"),
            page.lang.t(&format!("outcome.{}", o.outcome)),
            page.t("col.booked"),
            duration(o.booked_s, page.lang),
            page.t("col.used"),
            duration(o.used_s, page.lang)
        ));
        if o.overrun_s > 0.0 {
            t.push_str(&format!(
                "\n{}: {}",
                page.t("flag.overrun"),
                duration(o.overrun_s, page.lang)
            ));
        }
        for f in &o.flags {
            if f != "overrun" {
                t.push_str(&format!("\n{}", page.lang.t(&format!("flag.{f}"))));
            }
        }
    }
    t
}

/// `GET /instruments/{id}`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Query(params): Query<InstrumentParams>,
) -> Result<Response, PageError> {
    let day = match params.day.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => d.parse::<Date>().map_err(|e| {
            PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!("day={d:?} is not a date YYYY-MM-DD: {e}"),
            )
        })?,
        None => state.today(),
    };
    let week = params.span.as_deref() == Some("week");
    let (from, to) = page_range(day, week);
    let range = Range {
        from: Edge::Date(from),
        to: Edge::Date(to),
    };
    let asked = id.clone();
    let (view, outcomes, power) = blocking(&state, &viewer, move |r| {
        let power = r.power(&asked, &range)?;
        let view = r.timeline(&asked, &range)?;
        let outcomes = r.outcomes(&range, Some(&asked))?;
        Ok((view, outcomes, power))
    })
    .await?;
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let page = Page::new(&headers, "fleet", &path, viewer, "instrument.title");

    let by_booking: HashMap<&str, &OutcomeRow> = outcomes
        .iter()
        .map(|o| (o.booking_id.as_str(), o))
        .collect();
    let timeline = Timeline {
        from_ms: power.from_ms,
        to_ms: power.to_ms,
        zone: power.zone.clone(),
        bookings: view
            .bookings
            .iter()
            .map(|b| {
                let row = by_booking.get(b.booking_id.as_str()).copied();
                BookingBlock {
                    booking_id: b.booking_id.clone(),
                    start_ms: parse_ms(&b.start).unwrap_or(power.from_ms),
                    end_ms: parse_ms(&b.end).unwrap_or(power.from_ms),
                    outcome: row.map_or_else(
                        || {
                            if b.status == "cancelled" {
                                "cancelled".to_owned()
                            } else {
                                "pending".to_owned()
                            }
                        },
                        |o| o.outcome.clone(),
                    ),
                    flags: row.map(|o| o.flags.clone()).unwrap_or_default(),
                    title: format!(
                        "{} · {}\n{}",
                        b.booking_id,
                        b.group,
                        booking_title(&page, row, &b.user, &b.start, &b.end)
                    ),
                }
            })
            .collect(),
        states: view
            .states
            .iter()
            .filter_map(|p| {
                Some(StateBand {
                    start_ms: parse_ms(&p.start)?,
                    end_ms: parse_ms(&p.end)?,
                    state: p.state,
                })
            })
            .collect(),
        files: view
            .result_files
            .iter()
            .filter_map(|f| {
                Some(FileTick {
                    at_ms: parse_ms(&f.mtime)?,
                    title: format!(
                        "{}\n{} · {} B{}",
                        f.path,
                        clock(&f.mtime),
                        f.size_bytes,
                        f.sample_id
                            .as_deref()
                            .map(|s| format!(" · {s}"))
                            .unwrap_or_default()
                    ),
                })
            })
            .collect(),
        power: power.points.clone(),
        thresholds: power.thresholds.clone(),
    };
    let svg = timeline.render(page.lang);

    let base = format!("/instruments/{}", url_encode(&id));
    let step = if week { 7 } else { 1 };
    let shift = |days: i64| day.checked_add(jiff::Span::new().days(days)).unwrap_or(day);
    let span = if week { "&span=week" } else { "" };
    let last = to.yesterday().unwrap_or(to);
    let range_label = if week {
        format!("{from} – {last}")
    } else {
        format!("{from} {}", super::page::weekday(page.lang, from.weekday()))
    };
    let thresholds = power.thresholds.as_ref().map_or_else(
        || page.t("timeline.no_thresholds").to_owned(),
        |t| {
            format!(
                "on_above_w = {} W · running_above_w = {} W · running_exit_below_w = {} W",
                t.on_above_w,
                t.running_above_w,
                t.to_state_rules().exit_w()
            )
        },
    );
    let html = askama::Template::render(&InstrumentTemplate {
        id: id.clone(),
        name: power.name.clone(),
        unit: power.unit.clone().unwrap_or_default(),
        range_label,
        week,
        day_href: format!("{base}?day={day}"),
        week_href: format!("{base}?day={day}&span=week"),
        prev_href: format!("{base}?day={}{span}", shift(-step)),
        next_href: format!("{base}?day={}{span}", shift(step)),
        svg,
        outcomes: outcomes
            .iter()
            .map(|o| OutcomeView {
                booking_id: o.booking_id.clone(),
                who: format!("{} · {}", o.user, o.group),
                usage_type: page.lang.t(&format!("usage.{}", o.usage_type)).to_owned(),
                when: format!("{}–{}", short_time(&o.start), clock(&o.end)),
                outcome: o.outcome.clone(),
                flags: o
                    .flags
                    .iter()
                    .map(|f| page.lang.t(&format!("flag.{f}")))
                    .collect::<Vec<_>>()
                    .join(", "),
                booked: duration(o.booked_s, page.lang),
                used: duration(o.used_s, page.lang),
                overrun: if o.overrun_s > 0.0 {
                    duration(o.overrun_s, page.lang)
                } else {
                    String::new()
                },
                corrected_used: if o.corrected_used_s != o.used_s {
                    duration(o.corrected_used_s, page.lang)
                } else {
                    String::new()
                },
                disputes: [
                    ("dispute.overlaps", &o.overlapping_bookings),
                    ("dispute.taken_by", &o.usage_taken_by),
                    ("dispute.took_from", &o.took_usage_from),
                ]
                .into_iter()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(key, ids)| (page.t(key), ids.join(", ")))
                .collect(),
                move_form: move_prefill(o),
            })
            .collect(),
        sessions: view
            .sessions
            .iter()
            .map(|s| SessionView {
                when: format!("{}–{}", short_time(&s.start), clock(&s.end)),
                duration: duration(s.duration_s, page.lang),
                dropped: s.dropped,
                segments: s
                    .segments
                    .iter()
                    .map(|g| {
                        (
                            g.booking_id.clone().unwrap_or_default(),
                            format!("{}–{}", clock(&g.start), clock(&g.end)),
                        )
                    })
                    .collect(),
                files: s.result_files.len(),
            })
            .collect(),
        thresholds,
        exceptions_href: format!("/exceptions?q={}", url_encode(&id)),
        page,
    })?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn a_week_runs_from_the_monday_before_the_day_to_the_next_monday() {
        // 2025-03-05 is a Wednesday.
        assert_eq!(
            page_range(date(2025, 3, 5), true),
            (date(2025, 3, 3), date(2025, 3, 10))
        );
        assert_eq!(
            page_range(date(2025, 3, 3), true),
            (date(2025, 3, 3), date(2025, 3, 10))
        );
        assert_eq!(
            page_range(date(2025, 3, 5), false),
            (date(2025, 3, 5), date(2025, 3, 6))
        );
    }
}
