//! The backfill: each instrument's past days written as the recorded
//! readings log that `labhours-agent replay` reads (and, for the Q-TOF, as
//! result files with their past modification times in its watched folder),
//! then replayed through the agent's own engine into its own outbox. The
//! live agent delivers it like any backlog, so history takes the same road
//! as live data.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_agent::config::AgentConfig;
use labhours_agent::outbox::Outbox;

use super::profiles::Secs;
use super::scenario::{DemoInstrument, HISTORY_STEP_S, Layout, at, midnight};

/// What the backfill of one instrument did, kept in the demo's state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backfilled {
    /// Readings in the log.
    pub rows: u64,
    /// Events the replay appended to the outbox.
    pub events: u64,
    /// The last seq of the history in the agent's outbox.
    pub last_seq: u64,
    /// Result files written into the watched folder.
    pub result_files: u64,
}

/// The noise of the simulated meter at `t`, the same in history and live.
pub fn noise(t: Timestamp, number: usize) -> u64 {
    let mut z = (t.as_second() as u64) ^ ((number as u64) << 40);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whole seconds of `t` after `day_start`.
fn secs_after(day_start: Timestamp, t: Timestamp) -> Secs {
    t.duration_since(day_start)
        .as_secs()
        .clamp(0, i64::from(u32::MAX)) as Secs
}

/// One instrument's history to backfill: `[from, to)` of its plans.
#[derive(Debug, Clone)]
pub struct History<'a> {
    pub inst: &'a DemoInstrument,
    /// Its place in [`super::scenario::instruments`] (seeds its days).
    pub number: usize,
    pub seed: u64,
    pub zone: &'a TimeZone,
    pub showcase: jiff::civil::Date,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Its agent has a status port (and rules for the log's status lines).
    pub status_lines: bool,
}

/// Writes the readings log of `[from, to)` (and the result files) for one
/// instrument. Returns the rows and the files written.
pub fn write_history(h: &History<'_>, layout: &Layout) -> anyhow::Result<(u64, u64)> {
    let History {
        inst,
        number,
        seed,
        zone,
        showcase,
        from,
        to,
        status_lines,
    } = *h;
    let path = layout.history_log(inst.id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(b"timestamp,watts,status_line\n")?;
    let mut rows = 0u64;
    let mut files = 0u64;
    let mut date = from.to_zoned(zone.clone()).date();
    let mut last_status: Option<String> = None;
    let mut status_at = i64::MIN;
    let step = jiff::SignedDuration::from_secs(i64::from(HISTORY_STEP_S));
    while midnight(date, zone) < to {
        let day_start = midnight(date, zone);
        let next = date.tomorrow().context("date out of range")?;
        let day_end = midnight(next, zone).min(to);
        let plan = inst.plan(seed, number, date, showcase);
        let mut t = day_start.max(from);
        // Samples on the step grid.
        let rem = t.as_second().rem_euclid(i64::from(HISTORY_STEP_S));
        if rem != 0 {
            t = t
                .checked_add(jiff::SignedDuration::from_secs(
                    i64::from(HISTORY_STEP_S) - rem,
                ))
                .unwrap_or(t);
        }
        while t < day_end {
            let reading =
                plan.reading_at(&inst.profile, secs_after(day_start, t), noise(t, number));
            let watts = reading.watts.map(|w| w.to_string()).unwrap_or_default();
            // A status line when it changes and once a minute otherwise.
            let status = match reading.status.filter(|_| status_lines) {
                Some(s) if last_status.as_ref() != Some(&s) || t.as_second() - status_at >= 60 => {
                    status_at = t.as_second();
                    last_status = Some(s.clone());
                    s
                }
                _ => String::new(),
            };
            writeln!(out, "{t},{watts},{status}")?;
            rows += 1;
            t = t.checked_add(step).unwrap_or(day_end);
        }
        if let Some(run_s) = inst.file_run_s {
            for (secs, sample, k) in plan.result_files(run_s) {
                let done = at(day_start, secs);
                if done >= from && done < to {
                    write_result_file(&layout.results(inst.id), done, zone, &sample, k)?;
                    files += 1;
                }
            }
        }
        date = next;
    }
    out.flush()?;
    Ok((rows, files))
}

/// One result file of the simulated Q-TOF, completed at `done`:
/// `results/YYYY/MM/DD/S0042_1030_2.raw`, its mtime set to `done`.
pub fn write_result_file(
    folder: &Path,
    done: Timestamp,
    zone: &TimeZone,
    sample: &str,
    k: u32,
) -> anyhow::Result<()> {
    let local = done.to_zoned(zone.clone());
    let dir = folder.join(local.strftime("%Y/%m/%d").to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{sample}_{}_{k}.raw", local.strftime("%H%M")));
    let body = format!(
        "LABHOURS-DEMO Q-TOF RAW\nsample={sample}\nacquired_until={done}\nsegment={k}\n{}\n",
        "0123456789abcdef".repeat(64)
    );
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(done.as_millisecond().max(0) as u64);
    file.set_modified(mtime)
        .with_context(|| format!("setting the mtime of {}", path.display()))?;
    Ok(())
}

/// Writes the log and replays it into the agent's outbox (as `labhours-agent
/// replay --no-wait` does). A data folder left by an interrupted backfill is
/// removed first: nothing in it was delivered, since the agent only starts
/// once every backfill is recorded.
pub fn backfill(
    h: &History<'_>,
    layout: &Layout,
    config: &AgentConfig,
) -> anyhow::Result<Backfilled> {
    let inst = h.inst;
    for stale in [config.data_dir.clone(), layout.results(inst.id)] {
        if stale.exists() {
            std::fs::remove_dir_all(&stale).with_context(|| {
                format!("removing the interrupted backfill {}", stale.display())
            })?;
        }
    }
    let (rows, result_files) = write_history(h, layout)?;
    let (outbox, _) = Outbox::open(&config.data_dir, (&config.outbox).into(), Timestamp::now())
        .with_context(|| format!("opening the outbox in {}", config.data_dir.display()))?;
    let stats = labhours_agent::replay::replay(config, &layout.history_log(inst.id), &outbox)
        .with_context(|| format!("replaying the history of {}", inst.id))?;
    outbox.flush()?;
    Ok(Backfilled {
        rows,
        events: stats.events_appended,
        last_seq: outbox.next_seq().saturating_sub(1),
        result_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::instruments;

    #[test]
    fn the_log_has_one_row_per_step_and_status_lines_for_the_nmr() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout {
            root: dir.path().to_path_buf(),
        };
        let zone = TimeZone::get("Asia/Shanghai").expect("zone");
        let all = instruments();
        let nmr = all.iter().position(|i| i.id == "nmr-600").expect("nmr");
        let from: Timestamp = "2026-11-24T00:00:00+08:00".parse().expect("ts");
        let to: Timestamp = "2026-11-24T12:00:05+08:00".parse().expect("ts");
        let (rows, files) =
            write_history(&history(&all[nmr], nmr, &zone, from, to), &layout).expect("written");
        assert_eq!(rows, 12 * 3600 / 10 + 1);
        assert_eq!(files, 0);
        let text = std::fs::read_to_string(layout.history_log("nmr-600")).expect("log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "timestamp,watts,status_line");
        assert!(
            lines[1].starts_with("2026-11-23T16:00:00Z,18"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(",IDLE"), "{}", lines[1]);
        assert!(
            text.contains(",FAULT E-17 probe tuning failed"),
            "the showcase fault"
        );
        assert!(text.contains(",ACQUISITION RUNNING sample=S"));
        // Once a minute while nothing changes.
        assert!(lines[2].ends_with(','), "{}", lines[2]);
        assert!(lines[7].ends_with(",IDLE"), "{}", lines[7]);
    }

    #[test]
    fn the_qtof_history_writes_result_files_with_their_past_mtimes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout {
            root: dir.path().to_path_buf(),
        };
        let zone = TimeZone::get("Asia/Shanghai").expect("zone");
        let all = instruments();
        let q = all.iter().position(|i| i.id == "qtof-01").expect("qtof");
        let from: Timestamp = "2026-11-24T00:00:00+08:00".parse().expect("ts");
        let to: Timestamp = "2026-11-25T00:00:00+08:00".parse().expect("ts");
        let (_, files) =
            write_history(&history(&all[q], q, &zone, from, to), &layout).expect("written");
        assert!(files >= 6, "{files}");
        let found: Vec<_> = walk(&layout.results("qtof-01"));
        assert_eq!(found.len() as u64, files);
        for path in found {
            let mtime = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            let mtime = Timestamp::try_from(mtime).expect("ts");
            assert!(mtime >= from && mtime < to, "{} {mtime}", path.display());
            assert!(path.to_string_lossy().contains("/2026/11/24/S"));
        }
    }

    /// Seed 1, the showcase on 2026-11-24.
    fn history<'a>(
        inst: &'a DemoInstrument,
        number: usize,
        zone: &'a TimeZone,
        from: Timestamp,
        to: Timestamp,
    ) -> History<'a> {
        History {
            inst,
            number,
            seed: 1,
            zone,
            showcase: "2026-11-24".parse().expect("date"),
            from,
            to,
            status_lines: true,
        }
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
