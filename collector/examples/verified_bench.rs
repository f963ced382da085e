//! Benchmark of the verified-hours targets (issue 5):
//! - a year of data for 3,000 instruments (about 20 state changes and 3
//!   bookings per instrument-day) fully reconciled in ≤ 30 s;
//! - `GET /api/v1/hours` for all of them over the year: p95 ≤ 200 ms
//!   (`scripts/bench-verified.sh` measures it over HTTP; this program
//!   also times the query behind it).
//!
//! ```text
//! cargo run --release -p labhours-collector --example verified_bench -- \
//!     --instruments 3000 --days 365 --dir /tmp/labhours-bench
//! ```
//!
//! It writes what ingest would have derived from the agents' events
//! (`transitions`, `alive_spans`) and the imported bookings straight into a
//! fresh database, with a fixed seed, then times `rebuild` (what
//! `labhours-collector rebuild` runs) and the hours query. It also writes
//! `collector.toml` for that database, so the script can serve it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use jiff::civil::date;
use jiff::tz::TimeZone;
use labhours_collector::bookings::ParseContext;
use labhours_collector::config::CollectorConfig;
use labhours_collector::reconcile::PeriodUnit;
use labhours_collector::registry::Registry;
use labhours_collector::store::{Durability, Store};
use labhours_collector::verified::materialize::{catch_up, rebuild};
use labhours_collector::verified::store_reports::open_writer;
use labhours_collector::verified::{
    Edge, GroupBy, HoursQuery, HoursRows, Range, Reports, StoreReports,
};
use rusqlite::params;

const DAY_MS: i64 = 86_400_000;
const ZONE: &str = "Asia/Shanghai";

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Args {
    instruments: usize,
    days: i64,
    dir: PathBuf,
    queries: usize,
    /// Stop after writing the database (scripts/bench-verified.sh times
    /// `labhours-collector rebuild` itself).
    generate_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        instruments: 3000,
        days: 365,
        dir: std::env::temp_dir().join("labhours-verified-bench"),
        queries: 20,
        generate_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--generate-only" {
            a.generate_only = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--instruments" => a.instruments = value.parse()?,
            "--days" => a.days = value.parse()?,
            "--dir" => a.dir = value.into(),
            "--queries" => a.queries = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn config_text(instruments: usize, dir: &std::path::Path) -> String {
    let mut text = format!(
        "data_dir = {:?}\n[site]\ntime_zone = \"{ZONE}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [mqtt]\nembedded_listen = \"127.0.0.1:0\"\n",
        dir.display()
    );
    for i in 0..instruments {
        text.push_str(&format!(
            "[[instruments]]\nid = \"inst-{i:04}\"\nname = \"Instrument {i}\"\nunit = \"Institute {}/Lab {}\"\n",
            i % 10,
            i % 100
        ));
    }
    text
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    let text = config_text(args.instruments, &args.dir);
    let config = CollectorConfig::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = Arc::new(Registry::from_config(&config).map_err(|e| anyhow::anyhow!("{e}"))?);
    drop(Store::open(&args.dir, Durability::Normal)?);
    std::fs::write(args.dir.join("collector.toml"), &text)?;

    let zone = TimeZone::get(ZONE)?;
    let first = date(2025, 1, 1)
        .to_zoned(zone.clone())?
        .timestamp()
        .as_millisecond();
    let end = first + args.days * DAY_MS;
    let mut conn = open_writer(&args.dir)?;
    let started = Instant::now();
    let (mut transitions, mut bookings) = (0u64, 0u64);
    let tx = conn.transaction()?;
    {
        let mut t_stmt = tx.prepare(
            "INSERT INTO transitions (instrument_id, at_ms, agent_id, seq, state) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut s_stmt = tx.prepare(
            "INSERT INTO alive_spans (instrument_id, start_ms, end_ms) VALUES (?1, ?2, ?3)",
        )?;
        let mut b_stmt = tx.prepare(
            "INSERT INTO bookings (booking_id, instrument_id, user, group_name, usage_type, start_ms,
                 end_ms, status, imported_at_ms, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'bench')",
        )?;
        let types = ["research", "research", "teaching", "external", "training"];
        for i in 0..args.instruments {
            let id = format!("inst-{i:04}");
            let agent = format!("agent-{i:04}");
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            let mut seq = 0i64;
            // Alive all year but for a 3-hour outage every 30 days.
            let mut span_start = first;
            let mut outage = first + 30 * DAY_MS;
            while outage < end {
                s_stmt.execute(params![id, span_start, outage])?;
                span_start = outage + 3 * 3_600_000;
                outage += 30 * DAY_MS;
            }
            s_stmt.execute(params![id, span_start, end])?;
            for d in 0..args.days {
                let day = first + d * DAY_MS;
                // 20 changes: standby/running alternating at sorted random minutes.
                let mut minutes: Vec<i64> = (0..20).map(|_| rng.below(1440) as i64).collect();
                minutes.sort_unstable();
                for (k, m) in minutes.iter().enumerate() {
                    seq += 1;
                    let state = if k % 2 == 0 { "running" } else { "standby" };
                    t_stmt.execute(params![id, day + m * 60_000, agent, seq, state])?;
                    transitions += 1;
                }
                for (k, base_h) in [8i64, 13, 18].into_iter().enumerate() {
                    let start = day + base_h * 3_600_000 + rng.below(4) as i64 * 900_000;
                    let len = (1 + rng.below(3) as i64) * 3_600_000;
                    let status = if rng.below(20) == 0 {
                        "cancelled"
                    } else {
                        "confirmed"
                    };
                    b_stmt.execute(params![
                        format!("{id}-{d}-{k}"),
                        id,
                        format!("user{}", rng.below(50)),
                        format!("group{}", rng.below(10)),
                        types[rng.below(types.len() as u64) as usize],
                        start,
                        start + len,
                        status,
                        day,
                    ])?;
                    bookings += 1;
                }
            }
        }
    }
    tx.commit()?;
    println!(
        "generated {} instruments × {} days: {transitions} transitions, {bookings} bookings in {:.1} s",
        args.instruments,
        args.days,
        started.elapsed().as_secs_f64()
    );

    if args.generate_only {
        return Ok(());
    }
    let started = Instant::now();
    let pass = rebuild(&mut conn, &registry, 0)?;
    let rebuild_s = started.elapsed().as_secs_f64();
    println!(
        "rebuild: {} instruments, {} instrument-days, {} booking outcomes in {rebuild_s:.2} s",
        pass.instruments, pass.days, pass.bookings
    );

    // A live pass: one new transition an hour before the end on every
    // tenth instrument, then what the background reconciler does.
    let touched: Vec<String> = (0..args.instruments)
        .step_by(10)
        .map(|i| format!("inst-{i:04}"))
        .collect();
    for id in &touched {
        conn.execute(
            "INSERT INTO transitions (instrument_id, at_ms, agent_id, seq, state)
             VALUES (?1, ?2, 'live', 1, 'running')",
            params![id, end - 3_600_000],
        )?;
        labhours_collector::store::derived::mark_dirty(&conn, id, end - 3_600_000)?;
    }
    let started = Instant::now();
    let pass = catch_up(&mut conn, &registry, 0)?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "incremental pass: {} instruments, {} instrument-days rewritten in {took:.0} ms ({:.2} ms per instrument)",
        pass.instruments,
        pass.days,
        took / pass.instruments.max(1) as f64
    );
    drop(conn);

    let parse = ParseContext::from_config(&config)?;
    let reports = StoreReports::new(&args.dir, registry, parse);
    for (label, period) in [
        ("year, one period", None),
        ("year by month", Some(PeriodUnit::Month)),
    ] {
        let query = HoursQuery {
            range: Range {
                from: Edge::Date(date(2025, 1, 1)),
                to: Edge::Date(date(2026, 1, 1)),
            },
            instrument: None,
            unit: None,
            period,
            group_by: GroupBy::Instrument,
        };
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..args.queries {
            let t = Instant::now();
            let answer = reports.hours(&query)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            rows = match answer.rows {
                HoursRows::Totals(r) => r.len(),
                HoursRows::UsageTypes(r) => r.len(),
            };
        }
        times.sort_by(f64::total_cmp);
        let p =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "hours query ({label}): {rows} rows, p50 {:.1} ms, p95 {:.1} ms over {} runs",
            p(0.5),
            p(0.95),
            times.len()
        );
    }
    Ok(())
}
