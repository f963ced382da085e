//! Finding the levels a recording's power sits at: a time-weighted histogram
//! of log-power, split by multi-level Otsu into [`SEARCH_CLASSES`] classes,
//! then neighbours merged until every class is a real level: at least
//! [`MIN_SEPARATION`] spreads from its neighbours and holding at least
//! [`MIN_SHARE`] of the time (and [`MIN_LEVEL_READS`] reads); at most
//! [`MAX_LEVELS`] remain.
//!
//! Log-power because instruments' levels are spread multiplicatively: 3 W
//! off, 350 W standby and 2400 W running are evenly apart in log10(W + 1),
//! and a ±3 % noise is as wide at every level.

use super::Sample;

/// At most this many levels (off, standby and two running levels, e.g. a
/// GC-MS's oven ramp and its hold).
pub const MAX_LEVELS: usize = 4;
/// Otsu splits the histogram into this many classes before merging: more
/// than there are levels, so a few scattered samples (a ramp) taking a
/// class of their own cannot push two real levels into one.
const SEARCH_CLASSES: usize = 6;
/// Bins of the histogram the percentiles are read from (0.1 % of a decade
/// of watts each over a 0–10 kW range).
const FINE_BINS: usize = 4096;
/// Fine bins per bin of the histogram Otsu searches (256 bins: 3 cuts are
/// 2.8 million candidates, a few milliseconds).
const COARSE: usize = 16;
/// A level holds at least this share of the recorded time …
pub const MIN_SHARE: f64 = 0.005;
/// … and at least this many poll intervals, so one spike is not a level.
pub const MIN_LEVEL_READS: i64 = 5;
/// Neighbouring levels' medians are at least this many times their summed
/// spreads apart. Halves of one noisy level come out at 1.1 (normal noise),
/// 1.6 (uniform) or 2.2 (a sine); distinct levels of the simulated
/// instruments at 5 or more.
pub const MIN_SEPARATION: f64 = 3.0;
/// A segment of at least this many samples counts when telling which level
/// a level is entered from (a ramp passing through a band does not).
const SUBSTANTIAL: u32 = 5;

/// log10(W + 1); negative readings (a meter's offset) count as 0 W.
pub fn log_w(watts: f64) -> f64 {
    (watts.max(0.0) + 1.0).log10()
}

pub fn watts_of(log: f64) -> f64 {
    10f64.powf(log) - 1.0
}

/// One level, in log-power unless named `_w`.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// Values below this (and above the previous level's `upper_cut`) belong to it.
    pub upper_cut: f64,
    pub mean_w: f64,
    pub p005: f64,
    pub p50: f64,
    pub p995: f64,
    /// (P90 − P10) / 2.563: the standard deviation for normal noise.
    pub spread: f64,
    pub total_ms: i64,
    pub longest_ms: i64,
    pub share: f64,
    /// Substantial entries into this level from a lower / a higher level.
    pub entered_from_below: u32,
    pub entered_from_above: u32,
}

/// The levels found, lowest first, or why there is only one.
#[derive(Debug, Clone, PartialEq)]
pub struct Levels {
    pub levels: Vec<Level>,
    pub valid_ms: i64,
}

/// How long each sample holds: until the next, at most `max_gap_ms`; the
/// last one for one poll interval. Failed reads hold nothing.
pub fn durations(samples: &[Sample], poll_ms: i64, max_gap_ms: i64) -> impl Iterator<Item = i64> {
    samples.iter().enumerate().map(move |(i, s)| {
        if s.watts.is_none() {
            return 0;
        }
        match samples.get(i + 1) {
            Some(next) => (next.at_ms - s.at_ms).clamp(0, max_gap_ms),
            None => poll_ms,
        }
    })
}

/// The levels of `samples`. Linear in the samples (three passes) plus a
/// constant-size search.
pub fn find(samples: &[Sample], poll_ms: i64, max_gap_ms: i64) -> Levels {
    let (mut lo, mut hi, mut valid_ms) = (f64::INFINITY, f64::NEG_INFINITY, 0i64);
    for (s, d) in samples.iter().zip(durations(samples, poll_ms, max_gap_ms)) {
        if let Some(w) = s.watts {
            let x = log_w(w);
            lo = lo.min(x);
            hi = hi.max(x);
            valid_ms += d;
        }
    }
    // A recording within 0.2 % is one level whatever its shape.
    if valid_ms == 0 || hi - lo < 0.001 {
        let levels = if valid_ms > 0 {
            classes(samples, poll_ms, max_gap_ms, &[], &Histogram::flat(lo))
        } else {
            Vec::new()
        };
        return Levels { levels, valid_ms };
    }
    let hist = Histogram::build(samples, poll_ms, max_gap_ms, lo, hi);
    let min_ms = ((valid_ms as f64 * MIN_SHARE) as i64).max(MIN_LEVEL_READS * poll_ms);
    let cuts = hist.merge(hist.otsu(SEARCH_CLASSES), min_ms as f64);
    let cut_values: Vec<f64> = cuts.iter().map(|&c| hist.edge(c)).collect();
    Levels {
        levels: classes(samples, poll_ms, max_gap_ms, &cut_values, &hist),
        valid_ms,
    }
}

#[derive(Debug, Clone, Copy)]
struct ClassStats {
    weight: f64,
    p005: f64,
    p50: f64,
    p995: f64,
    spread: f64,
}

/// Time-weighted histogram of log-power over `[lo, hi]`.
struct Histogram {
    lo: f64,
    width: f64,
    fine: Vec<f64>,
}

impl Histogram {
    fn flat(x: f64) -> Self {
        let mut fine = vec![0.0; FINE_BINS];
        fine[0] = 1.0;
        Self {
            lo: x,
            width: 1e-9,
            fine,
        }
    }

    fn build(samples: &[Sample], poll_ms: i64, max_gap_ms: i64, lo: f64, hi: f64) -> Self {
        let width = (hi - lo) / FINE_BINS as f64;
        let mut fine = vec![0.0; FINE_BINS];
        for (s, d) in samples.iter().zip(durations(samples, poll_ms, max_gap_ms)) {
            if let Some(w) = s.watts {
                let bin = (((log_w(w) - lo) / width) as usize).min(FINE_BINS - 1);
                fine[bin] += d as f64;
            }
        }
        Self { lo, width, fine }
    }

    /// The log-power where fine bin `bin` starts.
    fn edge(&self, bin: usize) -> f64 {
        self.lo + bin as f64 * self.width
    }

    fn center(&self, bin: usize) -> f64 {
        self.lo + (bin as f64 + 0.5) * self.width
    }

    /// The `k − 1` cuts (fine-bin indices) maximising the between-class
    /// variance over the coarse histogram (fewer if fewer bins hold
    /// anything), by dynamic programming: O(k × bins²).
    fn otsu(&self, k: usize) -> Vec<usize> {
        let n = FINE_BINS / COARSE;
        // Prefix sums of weight and weight × position (in coarse bins).
        let (mut p, mut s) = (vec![0.0; n + 1], vec![0.0; n + 1]);
        for b in 0..n {
            let w: f64 = self.fine[b * COARSE..(b + 1) * COARSE].iter().sum();
            p[b + 1] = p[b] + w;
            s[b + 1] = s[b] + w * (b as f64 + 0.5);
        }
        // Σ over classes of S²/P is maximal where the between-class variance is;
        // an empty class adds nothing, so it is never worth a cut.
        let term = |a: usize, b: usize| {
            let w = p[b] - p[a];
            if w > 0.0 {
                (s[b] - s[a]).powi(2) / w
            } else {
                f64::NEG_INFINITY
            }
        };
        // best[j][b]: bins 0..b in j + 1 classes; from[j][b]: where the last starts.
        let mut best = vec![vec![f64::NEG_INFINITY; n + 1]; k];
        let mut from = vec![vec![0usize; n + 1]; k];
        for (b, v) in best[0].iter_mut().enumerate().skip(1) {
            *v = term(0, b);
        }
        for j in 1..k {
            for b in j + 1..=n {
                for a in j..b {
                    let v = best[j - 1][a] + term(a, b);
                    if v > best[j][b] {
                        best[j][b] = v;
                        from[j][b] = a;
                    }
                }
            }
        }
        let classes = (1..=k)
            .rev()
            .find(|&j| best[j - 1][n].is_finite())
            .unwrap_or(1);
        let mut cuts = Vec::with_capacity(classes - 1);
        let mut b = n;
        for j in (1..classes).rev() {
            b = from[j][b];
            cuts.push(b * COARSE);
        }
        cuts.reverse();
        cuts
    }

    /// Merges neighbouring classes until every pair stands apart (the
    /// closest pair first, by separation) and every class holds `min_weight`
    /// (a short one joins the nearer neighbour); then at most [`MAX_LEVELS`].
    fn merge(&self, mut cuts: Vec<usize>, min_weight: f64) -> Vec<usize> {
        loop {
            let stats: Vec<ClassStats> = (0..=cuts.len())
                .map(|c| self.class_stats(&cuts, c))
                .collect();
            let separation = |i: usize| {
                (stats[i + 1].p50 - stats[i].p50) / (stats[i].spread + stats[i + 1].spread)
            };
            // The cut between the least separated pair, if they are too close …
            let worst = (0..cuts.len()).min_by(|&a, &b| separation(a).total_cmp(&separation(b)));
            if let Some(i) = worst
                && (separation(i) < MIN_SEPARATION || cuts.len() >= MAX_LEVELS)
            {
                cuts.remove(i);
                continue;
            }
            // … else a class too short to be a level joins its nearer neighbour.
            let Some(c) = (0..stats.len()).find(|&c| stats[c].weight < min_weight) else {
                return cuts;
            };
            let below = c.checked_sub(1).map(|b| stats[c].p50 - stats[b].p50);
            let above = stats.get(c + 1).map(|a| a.p50 - stats[c].p50);
            match (below, above) {
                (Some(d), Some(u)) if d <= u => cuts.remove(c - 1),
                (Some(_), None) => cuts.remove(c - 1),
                (_, Some(_)) => cuts.remove(c),
                (None, None) => return cuts,
            };
        }
    }

    /// Weight and percentiles of class `c` (between cuts, in fine bins).
    fn class_stats(&self, cuts: &[usize], c: usize) -> ClassStats {
        let from = if c == 0 { 0 } else { cuts[c - 1] };
        let to = cuts.get(c).copied().unwrap_or(FINE_BINS);
        let bins = &self.fine[from..to];
        let weight: f64 = bins.iter().sum();
        let pct = |q: f64| {
            let target = weight * q;
            let mut acc = 0.0;
            for (i, w) in bins.iter().enumerate() {
                acc += w;
                if acc >= target && *w > 0.0 {
                    return self.center(from + i);
                }
            }
            self.center(to - 1)
        };
        let (p10, p90) = (pct(0.10), pct(0.90));
        ClassStats {
            weight,
            p005: pct(0.005),
            p50: pct(0.5),
            p995: pct(0.995),
            // At least one bin wide, so a perfectly flat level is not infinitely sharp.
            spread: ((p90 - p10) / 2.563).max(self.width),
        }
    }
}

/// The levels between `cuts` (log-power), with their holds and entries,
/// from one pass over the samples.
fn classes(
    samples: &[Sample],
    poll_ms: i64,
    max_gap_ms: i64,
    cuts: &[f64],
    hist: &Histogram,
) -> Vec<Level> {
    let k = cuts.len() + 1;
    let class_of = |x: f64| cuts.iter().take_while(|&&c| x >= c).count();
    let mut total = vec![0i64; k];
    let mut longest = vec![0i64; k];
    let mut sum_w = vec![0.0; k];
    let mut from_below = vec![0u32; k];
    let mut from_above = vec![0u32; k];
    // The segment under way: class, duration, samples; and the last substantial class.
    let mut run: Option<(usize, i64, u32)> = None;
    let mut last_substantial: Option<usize> = None;
    let mut close = |run: (usize, i64, u32), last: &mut Option<usize>| {
        let (c, ms, n) = run;
        longest[c] = longest[c].max(ms);
        if n >= SUBSTANTIAL {
            match *last {
                Some(prev) if prev < c => from_below[c] += 1,
                Some(prev) if prev > c => from_above[c] += 1,
                _ => {}
            }
            *last = Some(c);
        }
    };
    for (s, d) in samples.iter().zip(durations(samples, poll_ms, max_gap_ms)) {
        let Some(w) = s.watts else { continue };
        let c = class_of(log_w(w));
        total[c] += d;
        sum_w[c] += w * d as f64;
        run = match run {
            Some((rc, ms, n)) if rc == c => Some((c, ms + d, n + 1)),
            Some(done) => {
                close(done, &mut last_substantial);
                Some((c, d, 1))
            }
            None => Some((c, d, 1)),
        };
    }
    if let Some(done) = run {
        close(done, &mut last_substantial);
    }
    let valid: i64 = total.iter().sum();
    let bin_of = |x: f64| (((x - hist.lo) / hist.width).round().max(0.0) as usize).min(FINE_BINS);
    let fine_cuts: Vec<usize> = cuts.iter().map(|&c| bin_of(c)).collect();
    (0..k)
        .map(|c| {
            let stats = hist.class_stats(&fine_cuts, c);
            Level {
                upper_cut: cuts.get(c).copied().unwrap_or(f64::INFINITY),
                mean_w: if total[c] > 0 {
                    sum_w[c] / total[c] as f64
                } else {
                    0.0
                },
                p005: stats.p005,
                p50: stats.p50,
                p995: stats.p995,
                spread: stats.spread,
                total_ms: total[c],
                longest_ms: longest[c],
                share: if valid > 0 {
                    total[c] as f64 / valid as f64
                } else {
                    0.0
                },
                entered_from_below: from_below[c],
                entered_from_above: from_above[c],
            }
        })
        .collect()
}
