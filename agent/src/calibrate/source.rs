//! Where `calibrate` gets its samples: a replay CSV, or the configured
//! meters read for a while through the agent's own meter code.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use labhours_shared::state::Reading;

use super::Sample;
use crate::config::AgentConfig;
use crate::meter::Bus;
use crate::meter::poll::combine;
use crate::replay::{ReplayError, StatusLines, for_each_row};

/// The samples of a replay CSV (`timestamp,watts[,status_line]`; status
/// lines are not read: calibration looks at power only).
pub fn load(path: &Path) -> Result<Vec<Sample>, ReplayError> {
    let mut samples = Vec::new();
    for_each_row(path, StatusLines::Ignore, |row| {
        samples.push(Sample {
            at_ms: row.at.as_millisecond(),
            watts: row.watts,
        });
    })?;
    if samples.is_empty() {
        return Err(ReplayError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(samples)
}

/// Writes `samples` as a replay CSV, so a recording can be calibrated again
/// (or replayed) later.
pub fn save(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "timestamp,watts")?;
    for s in samples {
        let at = Timestamp::from_millisecond(s.at_ms).map_err(std::io::Error::other)?;
        match s.watts {
            Some(w) => writeln!(out, "{at},{w}")?,
            None => writeln!(out, "{at},")?,
        }
    }
    out.flush()
}

/// A meter read failure during recording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error(
        "the config has no [[meters]]: there is no power to record (use --samples with a recording)"
    )]
    NoMeters,
    #[error(
        "meter `{meter}` could not be read: {error}. Fix the wiring first (`labhours-agent probe`)"
    )]
    FirstRead { meter: String, error: String },
    #[error(
        "{failed} of {cycles} reads failed ({details}); a recording with that many gaps is not trustworthy: fix the meter (`labhours-agent probe`) and record again"
    )]
    TooManyFailures {
        failed: usize,
        cycles: usize,
        details: String,
    },
}

/// What went wrong with one meter while recording.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterFailures {
    pub count: usize,
    pub last_error: String,
}

/// A recording from the meters, and how often each meter failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub samples: Vec<Sample>,
    pub failures: BTreeMap<String, MeterFailures>,
}

/// More failed cycles than this share refuse the recording.
const MAX_FAILED_SHARE: f64 = 0.05;

/// Reads every meter `cycles` times, one cycle per poll interval, as the
/// agent does (the instrument's power is the sum of its meters; a cycle in
/// which any meter failed is a failed read). A failure in the first cycle
/// ends the recording at once; later ones are counted and named.
pub async fn record(
    config: &AgentConfig,
    cycles: usize,
    mut progress: impl FnMut(usize, Option<f64>),
) -> Result<Recorded, RecordError> {
    if config.meters.is_empty() {
        return Err(RecordError::NoMeters);
    }
    let mut buses = Bus::plan(&config.meters);
    let mut ticker = tokio::time::interval(Duration::from_millis(config.poll_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::with_capacity(cycles);
    let mut failures: BTreeMap<String, MeterFailures> = BTreeMap::new();
    for cycle in 0..cycles {
        ticker.tick().await;
        let at = Timestamp::now();
        let results: Vec<_> = futures_util::future::join_all(buses.iter_mut().map(Bus::read_all))
            .await
            .into_iter()
            .flatten()
            .collect();
        for (meter, result) in &results {
            if let Err(e) = result {
                if cycle == 0 {
                    return Err(RecordError::FirstRead {
                        meter: meter.clone(),
                        error: e.to_string(),
                    });
                }
                let f = failures.entry(meter.clone()).or_insert(MeterFailures {
                    count: 0,
                    last_error: String::new(),
                });
                f.count += 1;
                f.last_error = e.to_string();
            }
        }
        let watts = match combine(at, &results) {
            Reading::Power { watts, .. } => watts,
            Reading::Status { .. } => None,
        };
        samples.push(Sample {
            at_ms: at.as_millisecond(),
            watts,
        });
        progress(cycle + 1, watts);
    }
    let failed = samples.iter().filter(|s| s.watts.is_none()).count();
    if failed as f64 > cycles as f64 * MAX_FAILED_SHARE {
        return Err(RecordError::TooManyFailures {
            failed,
            cycles,
            details: describe(&failures),
        });
    }
    Ok(Recorded { samples, failures })
}

/// `meter `a`: 3 failed, last: no answer …; …`
pub fn describe(failures: &BTreeMap<String, MeterFailures>) -> String {
    failures
        .iter()
        .map(|(m, f)| format!("meter `{m}`: {} failed, last: {}", f.count, f.last_error))
        .collect::<Vec<_>>()
        .join("; ")
}
