//! A [`Calibration`] for a person (tables and a `[state]` block to paste)
//! or for a program (JSON).

use std::fmt::Write as _;

use labhours_shared::state::{State, StateRules};

use super::{Calibration, Outcome};

/// The report for a person; `source` says where the samples came from.
pub fn text(c: &Calibration, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Recording: {} samples over {} from {source} ({} failed reads, left out of the levels).",
        c.samples,
        duration(c.span_s),
        c.failed_reads
    );
    let _ = writeln!(
        out,
        "\nLevels found ({}, from a histogram of log-power):\n",
        c.levels.len()
    );
    let _ = writeln!(
        out,
        "  {:>10}  {:>19}  {:>12}  {:>12}  {:>6}  state",
        "mean W", "range W (99 %)", "held total", "longest", "share"
    );
    for l in &c.levels {
        let _ = writeln!(
            out,
            "  {:>10.1}  {:>19}  {:>12}  {:>12}  {:>5.1}%  {}",
            l.mean_w,
            format!("{:.1} – {:.1}", l.low_w, l.high_w),
            duration(l.total_s),
            duration(l.longest_s),
            l.share * 100.0,
            l.role.as_str()
        );
    }
    let _ = writeln!(
        out,
        "\nSuggested [state]: paste it over the [state] section of the config (nothing was written).\n"
    );
    out.push_str(&state_toml(&c.state));
    let _ = writeln!(out, "\nWhat the agent would have made of this recording:\n");
    let _ = writeln!(
        out,
        "  {:<18} {:>11}  {:>7}  {:>7}  {:>7}  {:>7}",
        "", "transitions", "off", "standby", "running", "unknown"
    );
    for (name, o) in [("suggested", &c.suggested), ("current config", &c.current)] {
        let pct = |s: State| format!("{:.1}%", o.share(s) * 100.0);
        let _ = writeln!(
            out,
            "  {:<18} {:>11}  {:>7}  {:>7}  {:>7}  {:>7}",
            name,
            o.transitions,
            pct(State::Off),
            pct(State::Standby),
            pct(State::Running),
            pct(State::Unknown)
        );
    }
    let _ = writeln!(
        out,
        "  current config: on_above_w = {}, running_above_w = {}, running_exit_below_w = {}",
        c.current_rules.on_above_w,
        c.current_rules.running_above_w,
        c.current_rules.exit_w()
    );
    let notes = c
        .notes
        .iter()
        .cloned()
        .chain(absorbed_note(&c.suggested, c.state.min_dwell_s));
    let mut notes = notes.peekable();
    if notes.peek().is_some() {
        out.push_str("\nNotes:\n");
        for note in notes {
            let _ = writeln!(out, "  - {note}");
        }
    }
    out
}

/// The report as JSON (`state` holds the suggested `[state]` keys).
pub fn json(c: &Calibration, source: &str) -> String {
    let mut value = serde_json::to_value(c).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("source".into(), source.into());
        map.insert("state_toml".into(), state_toml(&c.state).into());
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn absorbed_note(o: &Outcome, dwell_s: u64) -> Option<String> {
    (o.absorbed > 0).then(|| {
        format!(
            "{} brief excursions across a threshold (the longest {:.0} s) were shorter than \
             min_dwell_s = {dwell_s} and did not change the state",
            o.absorbed,
            o.longest_absorbed_ms as f64 / 1000.0
        )
    })
}

/// `[state]` as TOML: every key the agent reads, so pasting it loses nothing.
pub fn state_toml(s: &StateRules) -> String {
    let mut out = String::from("[state]\n");
    let _ = writeln!(out, "on_above_w = {:?}", s.on_above_w);
    let _ = writeln!(out, "running_above_w = {:?}", s.running_above_w);
    let _ = writeln!(out, "running_exit_below_w = {:?}", s.exit_w());
    let _ = writeln!(out, "min_dwell_s = {}", s.min_dwell_s);
    let _ = writeln!(out, "status_stale_after_s = {}", s.status_stale_after_s);
    if let Some(gap) = s.max_sample_gap_s {
        let _ = writeln!(out, "max_sample_gap_s = {gap:?}");
    }
    let _ = writeln!(out, "summary_interval_s = {}", s.summary_interval_s);
    out
}

/// `2 h 05 min`, `4 min 10 s`, `12 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as i64;
    match s {
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}
