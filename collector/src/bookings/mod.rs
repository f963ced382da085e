//! Bookings: the booking system's reservations, imported from CSV or
//! iCalendar and upserted by `booking_id` into the collector's database
//! (reconciliation.md §3; `docs/bookings.md` describes the formats).
//!
//! The import is split in two so that the CLI and, later, the HTTP API can
//! share it:
//! - [`parse`] (pure): file text → [`Parsed`], the good bookings and every
//!   bad row or event with its line number;
//! - [`store::import`]: upserts the good bookings in one transaction (unless
//!   there were errors and `skip_invalid` is off, or `dry_run` is on) and
//!   returns an [`store::ImportReport`] of what was inserted, updated (with
//!   which fields) and unchanged.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

use crate::config::CollectorConfig;

pub mod csv;
pub mod ical;
pub mod store;

#[cfg(test)]
mod tests;

/// What a booking was for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UsageType {
    Teaching,
    Research,
    External,
    Training,
    Maintenance,
}

impl UsageType {
    pub const ALL: [UsageType; 5] = [
        Self::Teaching,
        Self::Research,
        Self::External,
        Self::Training,
        Self::Maintenance,
    ];

    /// The accepted names, as error messages list them.
    pub const ACCEPTED: &'static str = "teaching, research, external, training, maintenance";

    /// Reads a usage type: the English names (any case, surrounding blanks
    /// ignored) or the seeds' 教学 / 科研 / 对外服务.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Some(match text.to_ascii_lowercase().as_str() {
            "teaching" | "教学" => Self::Teaching,
            "research" | "科研" => Self::Research,
            "external" | "对外服务" => Self::External,
            "training" => Self::Training,
            "maintenance" => Self::Maintenance,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Teaching => "teaching",
            Self::Research => "research",
            Self::External => "external",
            Self::Training => "training",
            Self::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for UsageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the booking still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

impl BookingStatus {
    /// `confirmed` or `cancelled` (any case; `canceled` too).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "confirmed" => Some(Self::Confirmed),
            "cancelled" | "canceled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One booking. `start` and `end` are instants (UTC), at millisecond precision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Booking {
    /// Not blank; the upsert key.
    #[schema(pattern = r"\S")]
    pub booking_id: String,
    /// Any id; one the collector does not monitor (see
    /// [`ParseContext::monitors`]) is kept, with outcome `not_monitored`.
    #[schema(pattern = r"\S")]
    pub instrument_id: String,
    pub user: String,
    pub group: String,
    pub usage_type: UsageType,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    pub status: BookingStatus,
}

/// A bad row (CSV) or event (iCalendar): the line it starts on and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What a file holds: the good bookings (with the line each came from) and every error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub bookings: Vec<(u64, Booking)>,
    pub errors: Vec<RowError>,
    /// Instruments of good bookings that the collector does not monitor,
    /// with how many bookings each (a typo shows up here).
    pub not_monitored: BTreeMap<String, u64>,
    /// What was imported by a guess (an iCalendar series that starts
    /// off-rule, a floating UNTIL read in DTSTART's zone): not errors.
    pub warnings: Vec<RowError>,
}

impl Parsed {
    /// The bookings if there was no error, else every error.
    pub fn into_result(self) -> Result<Vec<Booking>, Vec<RowError>> {
        if self.errors.is_empty() {
            Ok(self.bookings.into_iter().map(|(_, b)| b).collect())
        } else {
            Err(self.errors)
        }
    }

    /// Counts the good bookings whose instrument `ctx` does not monitor.
    fn tally_not_monitored(mut self, ctx: &ParseContext) -> Self {
        for (_, b) in &self.bookings {
            if !ctx.monitors(&b.instrument_id) {
                *self
                    .not_monitored
                    .entry(b.instrument_id.clone())
                    .or_default() += 1;
            }
        }
        self
    }

    fn error(&mut self, line: u64, message: impl Into<String>) {
        self.errors.push(RowError {
            line,
            message: message.into(),
        });
    }

    fn warn(&mut self, line: u64, message: impl Into<String>) {
        self.warnings.push(RowError {
            line,
            message: message.into(),
        });
    }
}

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Ics,
}

impl Format {
    /// From the file's extension (`.csv`, `.ics` / `.ical` / `.ifb`), any case.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "ics" | "ical" | "icalendar" | "ifb" => Some(Self::Ics),
            _ => None,
        }
    }
}

/// What parsing needs from the config.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// Local times (CSV without offset, iCalendar floating and all-day) are read in it.
    pub zone: TimeZone,
    /// The configured instrument ids; `None` (no instruments configured):
    /// every instrument is monitored.
    pub instruments: Option<HashSet<String>>,
    /// iCalendar property holding the instrument (else LOCATION).
    pub ical_instrument_property: String,
    /// iCalendar property holding the group (else the ORGANIZER's domain).
    pub ical_group_property: String,
    /// Open-ended iCalendar rules are expanded up to this many days after `now`.
    pub ical_horizon_days: u32,
    /// The import's clock reading (the horizon counts from it).
    pub now: Timestamp,
}

impl ParseContext {
    /// A context for `zone` that accepts any instrument, with the default iCalendar properties.
    pub fn new(zone: TimeZone) -> Self {
        let defaults = crate::config::BookingsConfig::default();
        Self {
            zone,
            instruments: None,
            ical_instrument_property: defaults.ical_instrument_property,
            ical_group_property: defaults.ical_group_property,
            ical_horizon_days: defaults.ical_horizon_days,
            now: Timestamp::now(),
        }
    }

    /// This context with its clock reading `now`.
    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// Where open-ended iCalendar rules stop: `ical_horizon_days` after `now`.
    pub fn horizon_end(&self) -> Timestamp {
        let horizon = jiff::SignedDuration::from_hours(24 * i64::from(self.ical_horizon_days));
        self.now.saturating_add(horizon).unwrap_or(Timestamp::MAX)
    }

    /// The site zone, the configured instruments and the iCalendar properties of `config`.
    pub fn from_config(config: &CollectorConfig) -> Result<Self, jiff::Error> {
        let zone = TimeZone::get(config.site.time_zone())?;
        let instruments = (!config.instruments.is_empty())
            .then(|| config.instruments.iter().map(|i| i.id.clone()).collect());
        Ok(Self {
            zone,
            instruments,
            ical_instrument_property: config
                .bookings
                .ical_instrument_property
                .to_ascii_uppercase(),
            ical_group_property: config.bookings.ical_group_property.to_ascii_uppercase(),
            ical_horizon_days: config.bookings.ical_horizon_days,
            now: Timestamp::now(),
        })
    }

    /// Whether the collector monitors `id`: it is a configured instrument,
    /// or the config lists none (the same rule as
    /// [`crate::registry::Instrument::monitored`]). Bookings of other
    /// instruments are accepted and get the outcome `not_monitored`:
    /// booking systems list instruments that have no agent yet.
    pub fn monitors(&self, id: &str) -> bool {
        self.instruments
            .as_ref()
            .is_none_or(|known| known.contains(id))
    }

    /// Error message when `id` is empty (any other id is accepted).
    fn check_instrument(&self, id: &str) -> Option<String> {
        id.trim()
            .is_empty()
            .then(|| "instrument_id is empty".to_owned())
    }
}

/// The longest booking accepted. Booking systems export slots of hours or
/// days; a longer one is a data error (a wrong year), and reconciling it
/// would touch every day it spans.
pub const MAX_BOOKING_DAYS: i64 = 366;

/// The problem with a booking longer than [`MAX_BOOKING_DAYS`], if it is.
pub fn too_long(start: Timestamp, end: Timestamp) -> Option<String> {
    let days = (end.as_millisecond() - start.as_millisecond()) / 86_400_000;
    (days > MAX_BOOKING_DAYS).then(|| {
        format!("lasts {days} days, more than {MAX_BOOKING_DAYS}: check the dates, or split it")
    })
}

/// A file's bytes as text, or where the first byte that is not UTF-8 is
/// (line, column in characters, byte offset, all from 1) and what to do:
/// such files were almost always saved in a local code page (GBK, Windows-1252).
/// iCalendar lines are unfolded as bytes first (RFC 5545 §3.1: a fold may
/// split a character), keeping every line's number.
pub fn decode(name: &str, bytes: Vec<u8>, format: Format) -> Result<String, String> {
    let bytes = match format {
        Format::Ics if std::str::from_utf8(&bytes).is_err() => ical::unfold_bytes(&bytes),
        _ => bytes,
    };
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // The prefix is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let fix = match format {
            Format::Csv => "save the file as \"CSV UTF-8\" (Excel: Save As → CSV UTF-8)",
            Format::Ics => "export the calendar as UTF-8",
        };
        format!(
            "{name} line {}, column {} (byte {}, 0x{:02X}): not UTF-8; {fix} or convert it \
             (iconv -f GBK -t UTF-8) and import it again",
            1 + before.matches('\n').count(),
            1 + before[line_start..].chars().count(),
            at + 1,
            bytes[at],
        )
    })
}

/// How far an import is: rows (CSV) or events (iCalendar) parsed, and
/// bookings compared with the store. Another thread reads it to show
/// progress on a terminal.
#[derive(Debug, Default)]
pub struct Progress {
    parsed: AtomicU64,
    stored: AtomicU64,
}

impl Progress {
    /// (parsed, stored) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.parsed.load(Ordering::Relaxed),
            self.stored.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn parsed_one(&self) {
        self.parsed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stored_one(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }
}

/// Parses a bookings file of `format`. A leading UTF-8 BOM is ignored.
pub fn parse(format: Format, text: &str, ctx: &ParseContext) -> Parsed {
    parse_counted(format, text, ctx, &Progress::default())
}

/// [`parse`], counting rows or events in `progress`.
pub fn parse_counted(
    format: Format,
    text: &str,
    ctx: &ParseContext,
    progress: &Progress,
) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Csv => csv::parse(text, ctx, progress),
        Format::Ics => ical::parse(text, ctx, progress),
    }
    .tally_not_monitored(ctx)
}

/// Checks bookings that arrive already structured (e.g. a JSON body): the
/// same rules as the files — non-empty id and instrument, end after
/// start, no id twice. `line` is whatever locates an item (an index).
pub fn check(items: Vec<(u64, Booking)>, ctx: &ParseContext) -> Parsed {
    let mut parsed = Parsed::default();
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (line, mut booking) in items {
        let mut problems = Vec::new();
        if booking.booking_id.trim().is_empty() {
            problems.push("booking_id is empty".to_owned());
        }
        if let Some(p) = ctx.check_instrument(&booking.instrument_id) {
            problems.push(p);
        }
        booking.start = to_millis(booking.start);
        booking.end = to_millis(booking.end);
        if booking.end <= booking.start {
            problems.push(format!(
                "end {} is not after start {}",
                booking.end, booking.start
            ));
        }
        problems.extend(too_long(booking.start, booking.end));
        match seen.get(&booking.booking_id) {
            Some(first) => problems.push(format!(
                "booking_id {:?} is also on line {first}",
                booking.booking_id
            )),
            None => {
                seen.insert(booking.booking_id.clone(), line);
            }
        }
        if problems.is_empty() {
            parsed.bookings.push((line, booking));
        } else {
            parsed.error(line, problems.join("; "));
        }
    }
    parsed.tally_not_monitored(ctx)
}

/// A local (civil) time in `zone`, by the documented rule: in a backward
/// change (the time happens twice) the **earlier** instant; in a forward
/// change (the time does not exist) an error.
pub fn local_to_instant(dt: DateTime, zone: &TimeZone) -> Result<Timestamp, String> {
    let ambiguous = zone.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Gap { .. } => Err(format!(
            "local time {dt} does not exist in {} (clocks change then)",
            zone.iana_name().unwrap_or("the site zone")
        )),
        _ => ambiguous.earlier().map_err(|e| e.to_string()),
    }
}

/// Drops anything finer than a millisecond (what the database keeps).
fn to_millis(ts: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts)
}
