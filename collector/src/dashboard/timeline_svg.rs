//! An instrument's day or week as one SVG, built on the server from plain
//! data (deterministic: the same input gives the same bytes; unit-tested):
//!
//! - a time axis in the instrument's zone (every 3 hours for a day, every
//!   day for a week);
//! - lane 1, bookings: blocks coloured by outcome, outlined for flags;
//! - lane 2, measured state: bands per state;
//! - lane 3, result files: ticks;
//! - under them the power trace (mean watts per summary) with the
//!   instrument's thresholds drawn as dashed lines.
//!
//! Every block, band and tick has a `<title>` (the browser shows it on
//! hover) and `data-` attributes naming what it is.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use labhours_shared::state::State;

use super::i18n::Lang;
use super::page::escape;
use crate::config::Thresholds;
use crate::verified::PowerPoint;

pub const WIDTH: f64 = 1000.0;
pub const LEFT: f64 = 118.0;
pub const RIGHT: f64 = 12.0;
const AXIS_Y: f64 = 16.0;
const BOOKING_Y: f64 = 24.0;
const BOOKING_H: f64 = 30.0;
const STATE_Y: f64 = 62.0;
const STATE_H: f64 = 24.0;
const FILE_Y: f64 = 94.0;
const FILE_H: f64 = 18.0;
const POWER_Y: f64 = 128.0;
const POWER_H: f64 = 150.0;
pub const HEIGHT: f64 = POWER_Y + POWER_H + 24.0;

/// A booking block.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingBlock {
    pub booking_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// `used`, `no_show`, `instrument_fault`, `no_data`, `not_monitored`, `cancelled`, or
    /// `pending` (no outcome yet).
    pub outcome: String,
    /// `late_start`, `early_finish`, `overrun`.
    pub flags: Vec<String>,
    /// What hovering shows (already in the page's language).
    pub title: String,
}

/// A stretch of one measured state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBand {
    pub start_ms: i64,
    pub end_ms: i64,
    pub state: State,
}

/// A result file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTick {
    pub at_ms: i64,
    pub title: String,
}

/// Everything the picture shows.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub from_ms: i64,
    pub to_ms: i64,
    pub zone: TimeZone,
    pub bookings: Vec<BookingBlock>,
    pub states: Vec<StateBand>,
    pub files: Vec<FileTick>,
    pub power: Vec<PowerPoint>,
    pub thresholds: Option<Thresholds>,
}

/// The fill of a booking's outcome.
pub fn outcome_colour(outcome: &str) -> &'static str {
    match outcome {
        "used" => "#2e8b57",
        "no_show" => "#f4c7c3",
        "instrument_fault" => "#8e44ad",
        "no_data" | "not_monitored" => "#9aa4ad",
        "cancelled" => "#eceff2",
        _ => "#8fb3dd",
    }
}

/// The fill of a measured state.
pub fn state_colour(state: State) -> &'static str {
    match state {
        State::Running => "#2e8b57",
        State::Standby => "#e0a82e",
        State::Off => "#9aa4ad",
        State::Fault => "#c0392b",
        State::Unknown => "#e3e7eb",
    }
}

impl Timeline {
    fn span(&self) -> f64 {
        (self.to_ms - self.from_ms).max(1) as f64
    }

    /// The x of an instant, clamped to the plot.
    pub fn x(&self, ms: i64) -> f64 {
        let ms = ms.clamp(self.from_ms, self.to_ms);
        LEFT + (ms - self.from_ms) as f64 / self.span() * (WIDTH - LEFT - RIGHT)
    }

    /// Local instants of the axis ticks and their labels.
    pub fn ticks(&self, lang: Lang) -> Vec<(i64, String)> {
        let Ok(start) = Timestamp::from_millisecond(self.from_ms) else {
            return Vec::new();
        };
        let start = start.to_zoned(self.zone.clone());
        let by_day = self.to_ms - self.from_ms > 36 * 3_600_000;
        let mut out = Vec::new();
        let mut at: Zoned = start;
        for _ in 0..64 {
            let ms = at.timestamp().as_millisecond();
            if ms >= self.to_ms {
                break;
            }
            let label = if by_day {
                format!(
                    "{} {}",
                    at.strftime("%m-%d"),
                    super::page::weekday(lang, at.weekday())
                )
            } else {
                at.strftime("%H:%M").to_string()
            };
            out.push((ms, label));
            let next = if by_day {
                at.date()
                    .tomorrow()
                    .ok()
                    .and_then(|d| d.to_zoned(self.zone.clone()).ok())
            } else {
                at.checked_add(Span::new().hours(3)).ok()
            };
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        out
    }

    /// The highest watt value the chart must show.
    fn power_top(&self) -> f64 {
        let data = self
            .power
            .iter()
            .filter_map(|p| p.max_w.or(p.avg_w))
            .fold(0.0_f64, f64::max);
        let threshold = self
            .thresholds
            .as_ref()
            .map_or(0.0, |t| t.running_above_w.max(t.on_above_w) * 1.25);
        let top = data.max(threshold).max(1.0);
        // A round number above it.
        let magnitude = 10f64.powf(top.log10().floor());
        (top / magnitude).ceil() * magnitude
    }

    fn y_of(&self, watts: f64, top: f64) -> f64 {
        POWER_Y + POWER_H - (watts / top).clamp(0.0, 1.0) * POWER_H
    }

    /// The whole SVG.
    pub fn render(&self, lang: Lang) -> String {
        let mut s = String::with_capacity(16 * 1024);
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" font-family="system-ui, sans-serif" font-size="11">"#,
            escape(lang.t("timeline.aria"))
        );
        // Lane labels.
        for (y, key) in [
            (BOOKING_Y + BOOKING_H / 2.0, "timeline.lane.bookings"),
            (STATE_Y + STATE_H / 2.0, "timeline.lane.state"),
            (FILE_Y + FILE_H / 2.0, "timeline.lane.files"),
            (POWER_Y + 10.0, "timeline.lane.power"),
        ] {
            let _ = write!(
                s,
                r##"<text x="4" y="{:.1}" dominant-baseline="middle" fill="#333">{}</text>"##,
                y,
                escape(lang.t(key))
            );
        }
        // Axis and grid.
        for (ms, label) in self.ticks(lang) {
            let x = self.x(ms);
            let _ = write!(
                s,
                r##"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#dde2e6"/><text x="{:.1}" y="{AXIS_Y}" fill="#555">{}</text>"##,
                AXIS_Y + 3.0,
                POWER_Y + POWER_H,
                x + 2.0,
                escape(&label)
            );
        }
        // Lane backgrounds.
        for (y, h) in [
            (BOOKING_Y, BOOKING_H),
            (STATE_Y, STATE_H),
            (FILE_Y, FILE_H),
            (POWER_Y, POWER_H),
        ] {
            let _ = write!(
                s,
                r##"<rect x="{LEFT}" y="{y}" width="{:.1}" height="{h}" fill="none" stroke="#c9d0d6"/>"##,
                WIDTH - LEFT - RIGHT
            );
        }
        self.render_states(&mut s, lang);
        self.render_bookings(&mut s);
        self.render_files(&mut s);
        self.render_power(&mut s, lang);
        s.push_str("</svg>");
        s
    }

    fn render_states(&self, s: &mut String, lang: Lang) {
        for band in &self.states {
            if band.end_ms <= self.from_ms || band.start_ms >= self.to_ms {
                continue;
            }
            let (x0, x1) = (self.x(band.start_ms), self.x(band.end_ms));
            let title = format!(
                "{} {}–{} ({})",
                lang.t(&format!("state.{}", band.state.as_str())),
                self.clock(band.start_ms),
                self.clock(band.end_ms),
                super::page::duration((band.end_ms - band.start_ms) as f64 / 1000.0, lang)
            );
            let _ = write!(
                s,
                r#"<rect class="band" data-state="{}" data-start="{}" data-end="{}" x="{x0:.2}" y="{STATE_Y}" width="{:.2}" height="{STATE_H}" fill="{}"><title>{}</title></rect>"#,
                band.state.as_str(),
                band.start_ms,
                band.end_ms,
                (x1 - x0).max(0.0),
                state_colour(band.state),
                escape(&title)
            );
        }
    }

    fn render_bookings(&self, s: &mut String) {
        for b in &self.bookings {
            if b.end_ms <= self.from_ms || b.start_ms >= self.to_ms {
                continue;
            }
            let (x0, x1) = (self.x(b.start_ms), self.x(b.end_ms));
            let stroke = if b.flags.iter().any(|f| f == "overrun") {
                r##" stroke="#d35400" stroke-width="3""##
            } else if !b.flags.is_empty() {
                r##" stroke="#b7950b" stroke-width="2""##
            } else if b.outcome == "no_show" {
                r##" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="4 2""##
            } else {
                r##" stroke="#ffffff""##
            };
            let _ = write!(
                s,
                r#"<rect class="booking" data-booking="{}" data-outcome="{}" data-flags="{}" data-start="{}" data-end="{}" x="{x0:.2}" y="{BOOKING_Y}" width="{:.2}" height="{BOOKING_H}" rx="3" fill="{}"{stroke}><title>{}</title></rect>"#,
                escape(&b.booking_id),
                escape(&b.outcome),
                escape(&b.flags.join(" ")),
                b.start_ms,
                b.end_ms,
                (x1 - x0).max(1.0),
                outcome_colour(&b.outcome),
                escape(&b.title)
            );
        }
    }

    fn render_files(&self, s: &mut String) {
        for f in &self.files {
            if f.at_ms < self.from_ms || f.at_ms >= self.to_ms {
                continue;
            }
            let x = self.x(f.at_ms);
            let _ = write!(
                s,
                r##"<line class="file" data-at="{}" x1="{x:.2}" x2="{x:.2}" y1="{FILE_Y}" y2="{:.1}" stroke="#1f5fa8" stroke-width="2"><title>{}</title></line>"##,
                f.at_ms,
                FILE_Y + FILE_H,
                escape(&f.title)
            );
        }
    }

    fn render_power(&self, s: &mut String, lang: Lang) {
        let top = self.power_top();
        // Scale: 0 and top.
        for (w, y) in [(0.0, POWER_Y + POWER_H), (top, POWER_Y + 8.0)] {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{y:.1}" text-anchor="end" fill="#555">{} W</text>"##,
                LEFT - 4.0,
                fmt_watts(w)
            );
        }
        // The trace: one polyline per stretch without gaps, at most one
        // point per pixel column (the column's highest mean).
        let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut last_end: Option<i64> = None;
        for p in &self.power {
            let Some(w) = p.avg_w else {
                last_end = None;
                continue;
            };
            if p.end_ms <= self.from_ms || p.start_ms >= self.to_ms {
                continue;
            }
            let contiguous = last_end.is_some_and(|e| p.start_ms <= e + 1_000);
            if !contiguous || lines.is_empty() {
                lines.push(Vec::new());
            }
            let line = lines.last_mut().expect("pushed above");
            let x = self.x((p.start_ms + p.end_ms) / 2).round();
            let y = self.y_of(w, top);
            match line.last_mut() {
                Some((lx, ly)) if *lx == x => *ly = ly.min(y),
                _ => line.push((x, y)),
            }
            last_end = Some(p.end_ms);
        }
        for line in &lines {
            let points = line
                .iter()
                .map(|(x, y)| format!("{x:.0},{y:.1}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = write!(
                s,
                r##"<polyline class="power" points="{points}" fill="none" stroke="#1d3557" stroke-width="1.2"/>"##
            );
        }
        // Thresholds.
        if let Some(t) = &self.thresholds {
            let exit = t.to_state_rules().exit_w();
            // The exit threshold's label goes under its line (it is
            // usually just below running_above_w's).
            for (name, w, colour, dy) in [
                ("on_above_w", t.on_above_w, "#e0a82e", -3.0),
                ("running_above_w", t.running_above_w, "#2e8b57", -3.0),
                ("running_exit_below_w", exit, "#5f9c7f", 11.0),
            ] {
                let y = self.y_of(w, top);
                let label = format!("{name} = {} W", fmt_watts(w));
                let _ = write!(
                    s,
                    r##"<line class="threshold" data-threshold="{name}" data-watts="{w}" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"><title>{}</title></line><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">{}</text>"##,
                    WIDTH - RIGHT,
                    escape(&label),
                    WIDTH - RIGHT - 4.0,
                    y + dy,
                    escape(&label)
                );
            }
        } else {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#777">{}</text>"##,
                LEFT + 6.0,
                POWER_Y + 22.0,
                escape(lang.t("timeline.no_thresholds"))
            );
        }
        if self.power.is_empty() {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#777">{}</text>"##,
                LEFT + 6.0,
                POWER_Y + POWER_H / 2.0,
                escape(lang.t("timeline.no_power"))
            );
        }
    }

    fn clock(&self, ms: i64) -> String {
        Timestamp::from_millisecond(ms)
            .map(|t| {
                let z = t.to_zoned(self.zone.clone());
                if self.to_ms - self.from_ms > 36 * 3_600_000 {
                    z.strftime("%m-%d %H:%M").to_string()
                } else {
                    z.strftime("%H:%M").to_string()
                }
            })
            .unwrap_or_default()
    }
}

fn fmt_watts(w: f64) -> String {
    if w.fract() == 0.0 {
        format!("{w:.0}")
    } else {
        format!("{w:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    /// 2025-03-03T00:00:00+08:00.
    const DAY: i64 = 1_740_931_200_000;

    fn zone() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("zone")
    }

    fn day() -> Timeline {
        Timeline {
            from_ms: DAY,
            to_ms: DAY + 24 * H,
            zone: zone(),
            bookings: vec![
                BookingBlock {
                    booking_id: "b-noshow".into(),
                    start_ms: DAY + 9 * H,
                    end_ms: DAY + 11 * H,
                    outcome: "no_show".into(),
                    flags: vec![],
                    title: "li <no-show>".into(),
                },
                BookingBlock {
                    booking_id: "b-over".into(),
                    start_ms: DAY + 13 * H,
                    end_ms: DAY + 15 * H,
                    outcome: "used".into(),
                    flags: vec!["overrun".into()],
                    title: "wang".into(),
                },
            ],
            states: vec![
                StateBand {
                    start_ms: DAY,
                    end_ms: DAY + 13 * H,
                    state: State::Off,
                },
                StateBand {
                    start_ms: DAY + 13 * H,
                    end_ms: DAY + 16 * H,
                    state: State::Running,
                },
            ],
            files: vec![FileTick {
                at_ms: DAY + 14 * H,
                title: "spectrum.fid".into(),
            }],
            power: vec![
                PowerPoint {
                    start_ms: DAY + 13 * H,
                    end_ms: DAY + 13 * H + 60_000,
                    avg_w: Some(850.0),
                    max_w: Some(900.0),
                },
                PowerPoint {
                    start_ms: DAY + 13 * H + 60_000,
                    end_ms: DAY + 13 * H + 120_000,
                    avg_w: Some(860.0),
                    max_w: Some(910.0),
                },
            ],
            thresholds: Some(Thresholds {
                on_above_w: 20.0,
                running_above_w: 400.0,
                running_exit_below_w: None,
                min_dwell_s: None,
                status_stale_after_s: None,
            }),
        }
    }

    #[test]
    fn the_same_timeline_renders_to_the_same_bytes() {
        assert_eq!(day().render(Lang::En), day().render(Lang::En));
    }

    #[test]
    fn instants_map_linearly_onto_the_plot_and_are_clamped() {
        let t = day();
        assert_eq!(t.x(DAY), LEFT);
        assert_eq!(t.x(DAY + 24 * H), WIDTH - RIGHT);
        assert!((t.x(DAY + 12 * H) - (LEFT + (WIDTH - LEFT - RIGHT) / 2.0)).abs() < 1e-9);
        assert_eq!(t.x(DAY - H), LEFT);
    }

    #[test]
    fn a_day_has_ticks_every_three_local_hours_and_a_week_one_per_day() {
        let t = day();
        let ticks = t.ticks(Lang::En);
        assert_eq!(ticks.len(), 8);
        assert_eq!(ticks[0].1, "00:00");
        assert_eq!(ticks[3].1, "09:00");
        let week = Timeline {
            to_ms: DAY + 7 * 24 * H,
            ..day()
        };
        let ticks = week.ticks(Lang::En);
        assert_eq!(ticks.len(), 7);
        assert_eq!(ticks[0].1, "03-03 Mon");
        assert_eq!(
            week.ticks(Lang::Zh)[0].1,
            format!("03-03 {}", Lang::Zh.t("weekday.mon"))
        );
    }

    #[test]
    fn bookings_carry_their_outcome_flags_and_escaped_hover_text() {
        let svg = day().render(Lang::En);
        assert!(svg.contains(r#"data-booking="b-noshow" data-outcome="no_show""#));
        assert!(svg.contains(r#"data-outcome="used" data-flags="overrun""#));
        assert!(svg.contains("<title>li &lt;no-show&gt;</title>"));
        assert!(!svg.contains("<no-show>"));
    }

    #[test]
    fn the_thresholds_are_drawn_at_their_watts_with_the_exit_defaulting_to_ninety_percent() {
        let svg = day().render(Lang::En);
        assert!(svg.contains(r#"data-threshold="running_above_w" data-watts="400""#));
        assert!(svg.contains(r#"data-threshold="running_exit_below_w" data-watts="360""#));
        assert!(svg.contains(r#"data-threshold="on_above_w" data-watts="20""#));
        // 910 W peak → the scale's top is 1000 W.
        assert!(svg.contains(">1000 W<"));
    }

    #[test]
    fn state_bands_and_power_points_are_placed_where_their_time_is() {
        let t = day();
        let svg = t.render(Lang::En);
        let x = t.x(DAY + 13 * H);
        assert!(svg.contains(&format!(
            r#"data-state="running" data-start="{}" data-end="{}" x="{x:.2}""#,
            DAY + 13 * H,
            DAY + 16 * H
        )));
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "contiguous points: one line"
        );
        assert_eq!(svg.matches(r#"class="file""#).count(), 1);
    }

    #[test]
    fn a_gap_in_the_summaries_breaks_the_power_line() {
        let mut t = day();
        t.power.push(PowerPoint {
            start_ms: DAY + 20 * H,
            end_ms: DAY + 20 * H + 60_000,
            avg_w: Some(5.0),
            max_w: Some(5.0),
        });
        assert_eq!(t.render(Lang::En).matches("<polyline").count(), 2);
    }

    #[test]
    fn without_thresholds_or_power_the_chart_says_so() {
        let mut t = day();
        t.thresholds = None;
        t.power.clear();
        let svg = t.render(Lang::En);
        assert!(svg.contains(Lang::En.t("timeline.no_thresholds")));
        assert!(svg.contains(Lang::En.t("timeline.no_power")));
        assert!(!svg.contains("<polyline"));
    }
}
