//! CSV bookings: a header row naming the eight columns (any order), then one
//! booking a row. See `docs/bookings.md`.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::fmt::temporal::Pieces;

use super::{
    Booking, BookingStatus, ParseContext, Parsed, Progress, UsageType, local_to_instant, to_millis,
};

/// The columns, all required, no others allowed.
pub const COLUMNS: [&str; 8] = [
    "booking_id",
    "instrument_id",
    "user",
    "group",
    "usage_type",
    "start",
    "end",
    "status",
];

/// The largest UTC offset accepted, in seconds. Offsets in use run from
/// −12:00 to +14:00; RFC 3339's syntax allows up to ±23:59 and jiff's
/// parser ±25:59:59, so anything beyond ±14:00 is a typo, not a place.
pub const MAX_OFFSET_S: i32 = 14 * 3600;

/// Why the UTC offset written in `value` (an RFC 3339 time) is refused:
/// beyond ±14:00. None when it is fine or has none.
pub fn offset_problem(value: &str) -> Option<String> {
    let offset = Pieces::parse(value.trim())
        .ok()?
        .offset()?
        .to_numeric_offset();
    (offset.seconds().abs() > MAX_OFFSET_S).then(|| {
        format!(
            "{:?} has the UTC offset {offset}, beyond ±14:00 (offsets in use run from -12:00 \
             to +14:00)",
            value.trim()
        )
    })
}

/// Reads a time: ISO 8601 / RFC 3339 with an offset (`2026-11-23T09:00:00+08:00`,
/// `...Z`; at most ±14:00) is that instant; without one (`2026-11-23 09:00`,
/// `2026-11-23T09:00:00`) it is a local time in `ctx.zone`.
pub fn parse_time(value: &str, ctx: &ParseContext) -> Result<Timestamp, String> {
    let value = value.trim();
    if let Ok(ts) = value.parse::<Timestamp>() {
        if let Some(problem) = offset_problem(value) {
            return Err(problem);
        }
        return Ok(to_millis(ts));
    }
    match value.parse::<DateTime>() {
        Ok(dt) if value.len() > 10 => local_to_instant(dt, &ctx.zone).map(to_millis),
        _ => Err(format!(
            "{value:?} is not a time (expected e.g. 2026-11-23 09:00, 2026-11-23T09:00:00+08:00)"
        )),
    }
}

/// The 1-based lines of records, counted as the reader moves on: each call
/// only scans the bytes since the previous one, so a file costs one pass
/// (counting from the start for every record made imports quadratic). The
/// csv crate's own line count is off by one after CRLF line ends, as Excel
/// writes them.
struct Lines<'a> {
    bytes: &'a [u8],
    /// Bytes before `at` hold `line - 1` newlines.
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    /// The line of the record starting at byte `at` (line ends before it skipped).
    fn line_at(&mut self, at: usize) -> u64 {
        let bytes = self.bytes;
        let mut at = at.min(bytes.len());
        while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        if at < self.at {
            // Records come in order; start over should one not.
            (self.at, self.line) = (0, 1);
        }
        self.line += bytes[self.at..at].iter().filter(|b| **b == b'\n').count() as u64;
        self.at = at;
        self.line
    }
}

/// Parses CSV text (without BOM).
pub fn parse(text: &str, ctx: &ParseContext, progress: &Progress) -> Parsed {
    let mut parsed = Parsed::default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            parsed.error(1, format!("cannot read the header: {e}"));
            return parsed;
        }
    };
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut extra = Vec::new();
    for (i, name) in headers.iter().enumerate() {
        let name = name.trim();
        match COLUMNS.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            Some(col) => {
                if index.insert(col, i).is_some() {
                    parsed.error(1, format!("column {col:?} appears twice in the header"));
                }
            }
            None => extra.push(format!("{name:?}")),
        }
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !index.contains_key(c))
        .collect();
    if !missing.is_empty() {
        parsed.error(
            1,
            format!(
                "header lacks column(s) {} (expected {})",
                missing.join(", "),
                COLUMNS.join(",")
            ),
        );
    }
    if !extra.is_empty() {
        parsed.error(
            1,
            format!(
                "header has unknown column(s) {} (expected {})",
                extra.join(", "),
                COLUMNS.join(",")
            ),
        );
    }
    if !parsed.errors.is_empty() {
        return parsed;
    }

    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut lines = Lines::new(text);
    for record in reader.records() {
        progress.parsed_one();
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte() as usize));
                parsed.error(line, format!("unreadable row: {e}"));
                continue;
            }
        };
        let line = record
            .position()
            .map_or(0, |p| lines.line_at(p.byte() as usize));
        if record.iter().all(|f| f.trim().is_empty()) {
            continue; // blank line, as spreadsheets leave at the end
        }
        if record.len() != headers.len() {
            parsed.error(
                line,
                format!(
                    "has {} field(s), the header has {}",
                    record.len(),
                    headers.len()
                ),
            );
            continue;
        }
        let field = |name: &str| record.get(index[name]).unwrap_or("").trim();
        let mut problems = Vec::new();

        let booking_id = field("booking_id");
        if booking_id.is_empty() {
            problems.push("booking_id is empty".to_owned());
        }
        let instrument_id = field("instrument_id");
        if let Some(p) = ctx.check_instrument(instrument_id) {
            problems.push(p);
        }
        let usage_type = UsageType::parse(field("usage_type"));
        if usage_type.is_none() {
            problems.push(format!(
                "usage_type {:?} is not one of {}",
                field("usage_type"),
                UsageType::ACCEPTED
            ));
        }
        let status = BookingStatus::parse(field("status"));
        if status.is_none() {
            problems.push(format!(
                "status {:?} is not one of confirmed, cancelled",
                field("status")
            ));
        }
        let start = parse_time(field("start"), ctx)
            .map_err(|e| problems.push(format!("start {e}")))
            .ok();
        let end = parse_time(field("end"), ctx)
            .map_err(|e| problems.push(format!("end {e}")))
            .ok();
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            problems.push(format!(
                "end {} is not after start {}",
                field("end"),
                field("start")
            ));
        }
        if let (Some(s), Some(e)) = (start, end) {
            problems.extend(super::too_long(s, e));
        }
        if !booking_id.is_empty() {
            if let Some(first) = seen.get(booking_id) {
                problems.push(format!("booking_id {booking_id:?} is also on line {first}"));
            } else {
                seen.insert(booking_id.to_owned(), line);
            }
        }
        if !problems.is_empty() {
            parsed.error(line, problems.join("; "));
            continue;
        }
        let (Some(usage_type), Some(status), Some(start), Some(end)) =
            (usage_type, status, start, end)
        else {
            continue;
        };
        parsed.bookings.push((
            line,
            Booking {
                booking_id: booking_id.to_owned(),
                instrument_id: instrument_id.to_owned(),
                user: field("user").to_owned(),
                group: field("group").to_owned(),
                usage_type,
                start,
                end,
                status,
            },
        ));
    }
    parsed
}
