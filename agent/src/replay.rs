//! `labhours-agent replay`: recorded samples through the same state engine
//! and outbox as live polling.
//!
//! CSV with header `timestamp,watts,status_line` (`status_line` may be left
//! out): RFC 3339 timestamps in time order, an empty `watts` is a failed
//! read, a `status_line` is matched by the config's status rules. The file is
//! checked completely before anything is appended, so a bad row (reported
//! with its line number) changes nothing.

use std::path::Path;

use jiff::Timestamp;
use labhours_shared::state::{EngineSettings, Reading};

use crate::config::AgentConfig;
use crate::outbox::Outbox;
use crate::pipeline::Pipeline;
use crate::status::StatusRules;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: csv::Error },
    #[error(
        "{path}: the header must be `timestamp,watts,status_line` (status_line optional), found `{found}`"
    )]
    Header { path: String, found: String },
    #[error("{path} line {line}: {problem}")]
    Row {
        path: String,
        line: u64,
        problem: String,
    },
    #[error("{path} holds no samples")]
    Empty { path: String },
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub rows: u64,
    pub status_lines_matched: u64,
    pub events_appended: u64,
}

/// Checks the whole file, then feeds it through a pipeline into `outbox`.
pub fn replay(
    config: &AgentConfig,
    samples: &Path,
    outbox: &Outbox,
) -> Result<ReplayStats, ReplayError> {
    let rules = match &config.status {
        Some(s) => Some(StatusRules::new(&s.rules).map_err(|e| ReplayError::Row {
            path: samples.display().to_string(),
            line: 0,
            problem: format!("status rules: {e}"),
        })?),
        None => None,
    };
    // Pass 1: validate everything, append nothing. Status lines are only
    // matched in pass 2 (their text needs no check beyond "rules exist").
    let mut rows = 0u64;
    let mut first = None;
    let mut last = None;
    let status_lines = StatusLines::for_rules(rules.is_some());
    for_each_row(samples, status_lines, |r| {
        rows += 1;
        first.get_or_insert(r.at);
        last = Some(r.at);
    })?;
    let (Some(first), Some(last)) = (first, last) else {
        return Err(ReplayError::Empty {
            path: samples.display().to_string(),
        });
    };

    // Pass 2: feed. Two passes keep memory flat whatever the file's length;
    // the second one reads from the page cache.
    let settings = EngineSettings::new(&config.state, config.poll_interval_ms);
    let mut pipeline = Pipeline::new(settings, outbox.clone(), first);
    let mut readings = Vec::with_capacity(FEED_CHUNK);
    let mut matched = 0u64;
    let mut appended = 0u64;
    let mut feed_error = None;
    for_each_row(samples, status_lines, |r| {
        readings.push(Reading::Power {
            at: r.at,
            watts: r.watts,
            volts: None,
            amps: None,
        });
        if let (Some(text), Some(rules)) = (r.status, rules.as_ref())
            && let Some(m) = rules.classify(text)
        {
            matched += 1;
            readings.push(Reading::Status {
                at: r.at,
                state: m.state,
                sample: m.sample,
            });
        }
        if readings.len() >= FEED_CHUNK && feed_error.is_none() {
            match pipeline.push_many(readings.drain(..)) {
                Ok(n) => appended += n as u64,
                Err(e) => feed_error = Some(e),
            }
        }
    })?;
    if let Some(e) = feed_error {
        return Err(e.into());
    }
    appended += pipeline.push_many(readings.drain(..))? as u64;
    // The last sample holds for one poll interval.
    let end = last
        .checked_add(jiff::SignedDuration::from_millis(
            config.poll_interval_ms as i64,
        ))
        .unwrap_or(last);
    appended += pipeline.finish(end)? as u64;
    Ok(ReplayStats {
        rows,
        status_lines_matched: matched,
        events_appended: appended,
    })
}

/// Readings handed to the pipeline at once.
const FEED_CHUNK: usize = 8192;

/// The CSV reader's buffer: large reads, few system calls.
const READ_BUFFER: usize = 256 * 1024;

/// One parsed row; `status` is the non-empty, trimmed status line.
pub(crate) struct Row<'a> {
    pub at: Timestamp,
    pub watts: Option<f64>,
    pub status: Option<&'a str>,
}

/// What to do with the `status_line` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusLines {
    /// Hand them on: the config has rules to match them.
    Match,
    /// A row with one is an error: nothing could match it.
    Refuse,
    /// Leave them out unread (`calibrate` looks at power only).
    Ignore,
}

impl StatusLines {
    fn for_rules(has_rules: bool) -> Self {
        if has_rules { Self::Match } else { Self::Refuse }
    }
}

/// Reads and checks every row, in order. `ByteRecord` and the cached
/// timestamp parser keep this free of per-row allocation; a field is checked
/// for UTF-8 only when it is used.
pub(crate) fn for_each_row(
    path: &Path,
    status_lines: StatusLines,
    mut each: impl FnMut(Row<'_>),
) -> Result<(), ReplayError> {
    let name = || path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(READ_BUFFER)
        .from_path(path)
        .map_err(|source| ReplayError::Read {
            path: name(),
            source,
        })?;
    let header = reader
        .headers()
        .map_err(|source| ReplayError::Read {
            path: name(),
            source,
        })?
        .clone();
    let fields: Vec<&str> = header
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim())
        .collect();
    if !(fields == ["timestamp", "watts"] || fields == ["timestamp", "watts", "status_line"]) {
        return Err(ReplayError::Header {
            path: name(),
            found: fields.join(","),
        });
    }
    let mut record = csv::ByteRecord::new();
    let mut timestamps = TimestampParser::default();
    let mut previous: Option<Timestamp> = None;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(source) => {
                return Err(ReplayError::Read {
                    path: name(),
                    source,
                });
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let bad = |problem: String| ReplayError::Row {
            path: name(),
            line,
            problem,
        };
        let field = |i: usize, what: &str| -> Result<&str, ReplayError> {
            let bytes = record.get(i).unwrap_or(b"");
            std::str::from_utf8(bytes)
                .map(str::trim)
                .map_err(|_| bad(format!("the {what} is not valid UTF-8")))
        };
        let ts = field(0, "timestamp")?;
        let at = timestamps.parse(ts).map_err(|e| {
            bad(format!(
                "timestamp {ts:?} is not RFC 3339 with an offset: {e}"
            ))
        })?;
        if previous.is_some_and(|p| at < p) {
            return Err(bad(format!(
                "timestamp {ts} is earlier than the row before: samples must be in time order"
            )));
        }
        previous = Some(at);
        let w = field(1, "watts")?;
        let watts = if w.is_empty() {
            None
        } else {
            let value: f64 = w.parse().map_err(|_| {
                bad(format!(
                    "watts {w:?} is not a number (leave it empty for a failed read)"
                ))
            })?;
            if !value.is_finite() {
                return Err(bad(format!("watts {w:?} is not a finite number")));
            }
            Some(value)
        };
        let status = match record.get(2) {
            _ if status_lines == StatusLines::Ignore => None,
            Some(bytes) if !bytes.is_empty() => {
                Some(field(2, "status_line")?).filter(|s| !s.is_empty())
            }
            _ => None,
        };
        if status.is_some() && status_lines == StatusLines::Refuse {
            return Err(bad(
                "a status_line is given but the config has no [status] rules to match it".into(),
            ));
        }
        each(Row { at, watts, status });
    }
}

/// RFC 3339 timestamps, fast for rows that share a date and an offset.
///
/// `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` is the instant of the
/// same date and offset at `00:00:00`, plus the time of day: that base is
/// parsed by jiff once per date (and offset) and the time of day is added
/// here. Anything else (fractional seconds, a leap second, other offset
/// forms) is parsed by jiff, so results and errors are jiff's throughout.
#[derive(Debug, Default)]
struct TimestampParser {
    /// `YYYY-MM-DDT` + offset suffix of `base`, and `base` in seconds.
    key: Vec<u8>,
    base: Option<i64>,
}

impl TimestampParser {
    fn parse(&mut self, text: &str) -> Result<Timestamp, jiff::Error> {
        self.fast(text).map_or_else(|| text.parse(), Ok)
    }

    fn fast(&mut self, text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        let (date, clock, offset) = (b.get(..11)?, b.get(11..19)?, b.get(19..)?);
        let plain_offset = matches!(offset, b"Z" | b"z")
            || (offset.len() == 6
                && matches!(offset[0], b'+' | b'-')
                && offset[1..3].iter().all(u8::is_ascii_digit)
                && offset[3] == b':'
                && offset[4..].iter().all(u8::is_ascii_digit));
        if !plain_offset || clock[2] != b':' || clock[5] != b':' {
            return None;
        }
        let two = |i: usize| -> Option<i64> {
            let (h, l) = (clock[i], clock[i + 1]);
            (h.is_ascii_digit() && l.is_ascii_digit())
                .then(|| i64::from((h - b'0') * 10 + (l - b'0')))
        };
        let (h, m, s) = (two(0)?, two(3)?, two(6)?);
        if h > 23 || m > 59 || s > 59 {
            return None;
        }
        let same_key = self.base.is_some()
            && self.key.len() == date.len() + offset.len()
            && self.key.starts_with(date)
            && self.key.ends_with(offset);
        if !same_key {
            let base_text = format!("{}00:00:00{}", text.get(..11)?, text.get(19..)?);
            let base = base_text.parse::<Timestamp>().ok()?.as_second();
            self.key.clear();
            self.key.extend_from_slice(date);
            self.key.extend_from_slice(offset);
            self.base = Some(base);
        }
        Timestamp::from_second(self.base? + h * 3600 + m * 60 + s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labhours_shared::wire::EventKind;

    const CONFIG: &str = r#"
        agent_id = "a1"
        instrument_id = "i1"
        [state]
        on_above_w = 10
        running_above_w = 100
        [status]
        serial = { serial_port = "/dev/null" }
        [[status.rules]]
        pattern = "RUN (?P<sample>\\S+)"
        state = "running"
    "#;

    fn setup(csv_text: &str) -> (tempfile::TempDir, AgentConfig, Outbox, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = AgentConfig::parse(CONFIG).expect("valid");
        config.data_dir = dir.path().join("data");
        let (outbox, _) = Outbox::open(
            &config.data_dir,
            (&config.outbox).into(),
            Timestamp::UNIX_EPOCH,
        )
        .expect("open");
        let path = dir.path().join("samples.csv");
        std::fs::write(&path, csv_text).expect("write");
        (dir, config, outbox, path)
    }

    fn rows(from: u32, to: u32, watts: &str) -> String {
        (from..to)
            .map(|s| format!("2026-11-22T08:{:02}:{:02}Z,{watts},\n", s / 60, s % 60))
            .collect()
    }

    #[test]
    fn recorded_samples_become_transitions_and_summaries() {
        let text = format!(
            "timestamp,watts,status_line\n{}{}",
            rows(0, 120, "50"),
            rows(120, 240, "500")
        );
        let (_d, config, outbox, path) = setup(&text);
        let stats = replay(&config, &path, &outbox).expect("replays");
        assert_eq!(stats.rows, 240);
        let events = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
        assert_eq!(stats.events_appended, events.len() as u64);
        let transitions: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Transition { to, .. } => Some(format!("{} {to}", e.at)),
                _ => None,
            })
            .collect();
        assert_eq!(
            transitions,
            [
                "2026-11-22T08:00:00Z standby",
                "2026-11-22T08:02:00Z running",
                "2026-11-22T08:04:00Z unknown"
            ]
        );
        let summaries = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Summary(_)))
            .count();
        assert_eq!(summaries, 4);
    }

    #[test]
    fn status_lines_are_matched_by_the_configs_rules() {
        let text = format!(
            "timestamp,watts,status_line\n2026-11-22T08:00:00Z,5,\"RUN S-7, tube 3\"\n{}",
            rows(1, 60, "5")
        );
        let (_d, config, outbox, path) = setup(&text);
        let stats = replay(&config, &path, &outbox).expect("replays");
        assert_eq!(stats.status_lines_matched, 1);
        let events = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
        assert!(events.iter().any(|e| matches!(&e.kind,
            EventKind::Transition { reason, .. } if reason == "status line reports running (sample S-7,)")));
    }

    #[test]
    fn a_bad_row_is_named_by_line_and_nothing_is_appended() {
        let text = format!(
            "timestamp,watts\n{}2026-11-22T09:00:00Z,lots\n",
            rows(0, 10, "5")
        );
        let (_d, config, outbox, path) = setup(&text);
        let err = replay(&config, &path, &outbox).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} line 12: watts \"lots\" is not a number (leave it empty for a failed read)",
                path.display()
            )
        );
        assert_eq!(outbox.backlog(), 0);
    }

    #[test]
    fn rows_out_of_time_order_are_rejected() {
        let text = "timestamp,watts\n2026-11-22T08:00:05Z,5\n2026-11-22T08:00:04Z,5\n";
        let (_d, config, outbox, path) = setup(text);
        let err = replay(&config, &path, &outbox).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 3: timestamp 2026-11-22T08:00:04Z is earlier"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_header_says_what_is_expected() {
        let (_d, config, outbox, path) = setup("time,power\n");
        let err = replay(&config, &path, &outbox).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be `timestamp,watts,status_line`"),
            "{err}"
        );
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_jiff() {
        let mut parser = TimestampParser::default();
        for text in [
            "2026-11-22T08:00:00Z",
            "2026-11-22T08:00:01Z",
            "2026-11-22T23:59:59Z",
            "2026-11-23T00:00:00Z",
            "2026-11-23t00:00:07z",
            "2026-11-23 00:00:07Z",
            "2026-11-23T00:00:07+01:00",
            "2026-11-23T00:00:08+01:00",
            "2026-11-23T00:00:08-05:30",
            "2026-11-23T00:00:08.250Z",
            "2026-11-23T00:00:08+0100",
            "2026-12-31T23:59:60Z",
            "2024-02-29T12:00:00Z",
            "9999-12-31T23:59:59-23:00",
        ] {
            let fast = parser.parse(text).map_err(|e| e.to_string());
            let jiff = text.parse::<Timestamp>().map_err(|e| e.to_string());
            assert_eq!(fast, jiff, "{text}");
        }
        for bad in [
            "2026-02-30T08:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T08:60:00Z",
            "2026-11-22T08:00:00",
            "2026-11-22T08:00:00+99:00",
            "2026-11-22X08:00:00Z",
            "22/11/2026 08:00:00",
        ] {
            let fast = parser.parse(bad).map_err(|e| e.to_string());
            let jiff = bad.parse::<Timestamp>().map_err(|e| e.to_string());
            assert!(fast.is_err(), "{bad} parsed as {fast:?}");
            assert_eq!(fast, jiff, "{bad}");
        }
    }

    #[test]
    fn rows_with_offsets_and_blank_status_lines_replay() {
        let text = "timestamp,watts,status_line\n\
            2026-11-22T09:00:00+01:00,500,\n\
            2026-11-22T09:00:01+01:00, 500 ,  \n\
            2026-11-22T08:00:02Z,500,IDLE\n";
        let (_d, config, outbox, path) = setup(text);
        let stats = replay(&config, &path, &outbox).expect("replays");
        assert_eq!((stats.rows, stats.status_lines_matched), (3, 0));
    }

    #[test]
    fn a_status_line_without_rules_is_rejected_before_anything_is_appended() {
        let (_d, mut config, outbox, path) = setup(
            "timestamp,watts,status_line\n2026-11-22T08:00:00Z,5,\n2026-11-22T08:00:01Z,5,READY\n",
        );
        config.status = None;
        let err = replay(&config, &path, &outbox).unwrap_err();
        assert!(
            err.to_string().contains("line 3: a status_line is given"),
            "{err}"
        );
        assert_eq!(outbox.backlog(), 0);
    }

    #[test]
    fn an_empty_watts_is_a_failed_read() {
        let text = format!(
            "timestamp,watts\n{}{}",
            rows(0, 60, "500"),
            rows(60, 120, "")
        );
        let (_d, config, outbox, path) = setup(&text);
        replay(&config, &path, &outbox).expect("replays");
        let events = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
        let second = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Summary(s) => Some(s.clone()),
                _ => None,
            })
            .nth(1)
            .expect("second minute");
        assert_eq!(
            (second.samples, second.failed_reads, second.avg_w),
            (0, 60, None)
        );
    }
}
