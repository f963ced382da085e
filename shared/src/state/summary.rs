//! Per-interval power statistics.
//!
//! Readings hold their value over time (sample-and-hold, capped as the gap rule
//! says), so statistics are time-weighted: the engine hands over each *held
//! segment* `[from, to)` of a known power value once its end is known, and the
//! accumulator splits it at interval boundaries. Intervals are aligned to UTC
//! multiples of their length. An interval with no reading at all is skipped.

use jiff::Timestamp;

use crate::wire::Summary;

/// A power value held over a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Held {
    pub watts: f64,
    pub volts: Option<f64>,
    pub amps: Option<f64>,
}

#[derive(Debug, Clone)]
pub(crate) struct SummaryAccumulator {
    interval_ms: i64,
    start_ms: Option<i64>,
    samples: u32,
    failed_reads: u32,
    min_w: f64,
    max_w: f64,
    watt_ms: f64,
    covered_ms: i64,
    volt_ms: f64,
    volt_covered_ms: i64,
    amp_ms: f64,
    amp_covered_ms: i64,
}

impl SummaryAccumulator {
    pub fn new(interval_ms: i64) -> Self {
        Self {
            interval_ms,
            start_ms: None,
            samples: 0,
            failed_reads: 0,
            min_w: f64::INFINITY,
            max_w: f64::NEG_INFINITY,
            watt_ms: 0.0,
            covered_ms: 0,
            volt_ms: 0.0,
            volt_covered_ms: 0,
            amp_ms: 0.0,
            amp_covered_ms: 0,
        }
    }

    /// Counts a read taken at `at` (successful or not).
    pub fn count_read(&mut self, at: i64, ok: bool, out: &mut impl FnMut(Timestamp, Summary)) {
        self.roll_to(at, out);
        if ok {
            self.samples += 1;
        } else {
            self.failed_reads += 1;
        }
    }

    /// Adds `held` over `[from, to)`, closing intervals it crosses.
    pub fn add_held(
        &mut self,
        held: Held,
        mut from: i64,
        to: i64,
        out: &mut impl FnMut(Timestamp, Summary),
    ) {
        while from < to {
            self.roll_to(from, out);
            let end = self.end_ms().map_or(to, |end| end.min(to));
            let dt = end - from;
            self.min_w = self.min_w.min(held.watts);
            self.max_w = self.max_w.max(held.watts);
            self.watt_ms += held.watts * dt as f64;
            self.covered_ms += dt;
            if let Some(v) = held.volts {
                self.volt_ms += v * dt as f64;
                self.volt_covered_ms += dt;
            }
            if let Some(a) = held.amps {
                self.amp_ms += a * dt as f64;
                self.amp_covered_ms += dt;
            }
            from = end;
        }
    }

    /// Emits the current interval if `at` lies past its end, and moves to the
    /// interval containing `at`.
    pub fn roll_to(&mut self, at: i64, out: &mut impl FnMut(Timestamp, Summary)) {
        match self.end_ms() {
            Some(end) if at < end => {}
            Some(_) => {
                self.emit(out);
                self.start_ms = Some(self.align(at));
            }
            None => self.start_ms = Some(self.align(at)),
        }
    }

    /// Emits the current interval as it stands (used when the engine stops).
    pub fn flush(&mut self, out: &mut impl FnMut(Timestamp, Summary)) {
        self.emit(out);
        self.start_ms = None;
    }

    fn end_ms(&self) -> Option<i64> {
        self.start_ms.map(|s| s + self.interval_ms)
    }

    fn align(&self, at: i64) -> i64 {
        at.div_euclid(self.interval_ms) * self.interval_ms
    }

    fn emit(&mut self, out: &mut impl FnMut(Timestamp, Summary)) {
        let Some(start) = self.start_ms else { return };
        let fresh = Self::new(self.interval_ms);
        let acc = std::mem::replace(self, fresh);
        if acc.samples == 0 && acc.failed_reads == 0 && acc.covered_ms == 0 {
            return;
        }
        let covered = acc.covered_ms > 0;
        let mean = |sum: f64, ms: i64| (ms > 0).then(|| sum / ms as f64);
        out(
            ms_to_ts(start),
            Summary {
                end: ms_to_ts(start + acc.interval_ms),
                samples: acc.samples,
                failed_reads: acc.failed_reads,
                min_w: covered.then_some(acc.min_w),
                avg_w: mean(acc.watt_ms, acc.covered_ms),
                max_w: covered.then_some(acc.max_w),
                energy_wh: acc.watt_ms / 3_600_000.0,
                covered_s: acc.covered_ms as f64 / 1000.0,
                avg_v: mean(acc.volt_ms, acc.volt_covered_ms),
                avg_a: mean(acc.amp_ms, acc.amp_covered_ms),
            },
        );
    }
}

/// Milliseconds since the Unix epoch to a timestamp (saturating at jiff's range).
pub(crate) fn ms_to_ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}
