//! §2 usage sessions: maximal in-use intervals, merged then dropped.

use labhours_shared::state::State;

use super::{InstrumentInputs, Interval, Ms, ResultFileRef, Session, Timeline, secs};
use crate::config::{ReconciliationRules, UsageSource};

/// Sessions of one instrument from the source its config names.
/// `UsageSource::Files` without `file_run_s` (rejected by config validation)
/// yields no sessions.
pub fn sessions(inputs: &InstrumentInputs<'_>) -> Vec<Session> {
    match inputs.usage_source {
        UsageSource::State => sessions_from_states(
            inputs.instrument_id,
            inputs.timeline,
            inputs.result_files,
            inputs.rules,
        ),
        UsageSource::Files => match inputs.file_run_s {
            Some(run) if run > 0 => {
                sessions_from_files(inputs.instrument_id, inputs.result_files, run, inputs.rules)
            }
            _ => Vec::new(),
        },
    }
}

/// Sessions from the state timeline: maximal intervals in `in_use_states`.
pub fn sessions_from_states(
    instrument_id: &str,
    timeline: &Timeline,
    files: &[ResultFileRef],
    rules: &ReconciliationRules,
) -> Vec<Session> {
    let runs: Vec<Interval> = timeline
        .pieces_iter()
        .filter(|(_, s)| rules.in_use_states.contains(s) && *s != State::Unknown)
        .map(|(i, _)| i)
        .collect();
    build(instrument_id, runs, files, rules)
}

/// Sessions from result files: each file is a run `[mtime − file_run_s, mtime)`.
pub fn sessions_from_files(
    instrument_id: &str,
    files: &[ResultFileRef],
    file_run_s: u64,
    rules: &ReconciliationRules,
) -> Vec<Session> {
    let run = secs(file_run_s);
    let runs = files
        .iter()
        .map(|f| Interval::new(f.mtime - run, f.mtime))
        .collect();
    build(instrument_id, runs, files, rules)
}

fn build(
    instrument_id: &str,
    runs: Vec<Interval>,
    files: &[ResultFileRef],
    rules: &ReconciliationRules,
) -> Vec<Session> {
    let merged = merge_runs(runs, secs(rules.merge_gap_s));
    let mut sessions: Vec<Session> = merged
        .into_iter()
        .map(|interval| Session {
            id: session_id(instrument_id, interval.start),
            instrument_id: instrument_id.to_owned(),
            interval,
            dropped: is_too_short(interval, secs(rules.min_session_s)),
            result_files: Vec::new(),
        })
        .collect();
    attach_files(&mut sessions, files);
    sessions
}

/// Merge: overlapping or touching runs always join (a session is maximal);
/// runs separated by a gap strictly shorter than `merge_gap` join too, and
/// the gap counts as use.
pub(crate) fn merge_runs(mut runs: Vec<Interval>, merge_gap: Ms) -> Vec<Interval> {
    runs.retain(|r| !r.is_empty());
    runs.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(last) if r.start <= last.end || r.start - last.end < merge_gap => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Drop rule, applied after merging: strictly shorter than `min_session`.
pub(crate) fn is_too_short(session: Interval, min_session: Ms) -> bool {
    session.len() < min_session
}

/// A file is evidence of the session in which it was completed:
/// `start ≤ mtime ≤ end` (a file completed at the very end of a run, as a
/// files-source run always is, belongs to it). First session wins.
fn attach_files(sessions: &mut [Session], files: &[ResultFileRef]) {
    // Merged sessions are sorted and apart (ends increase), so the only
    // candidate is the first session not ended before `mtime`.
    debug_assert!(
        sessions
            .windows(2)
            .all(|w| w[0].interval.end < w[1].interval.start)
    );
    let mut found: Vec<(usize, &ResultFileRef)> = files
        .iter()
        .filter_map(|f| {
            let i = sessions.partition_point(|s| s.interval.end < f.mtime);
            sessions
                .get(i)
                .filter(|s| s.interval.start <= f.mtime)
                .map(|_| (i, f))
        })
        .collect();
    // Each session's files in file order.
    found.sort();
    for (i, f) in found {
        sessions[i].result_files.push(f.id.clone());
    }
}

/// `"{instrument_id}@{start}"`, without the formatting machinery.
pub(crate) fn session_id(instrument_id: &str, start: Ms) -> String {
    let mut digits = [0u8; 20];
    let mut n = start.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(instrument_id.len() + 22);
    id.push_str(instrument_id);
    id.push('@');
    if start < 0 {
        id.push('-');
    }
    // ASCII digits: always UTF-8.
    id.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
    id
}
