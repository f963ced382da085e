//! The hub's ingest target (docs/design/federation.md): a year of S sites ×
//! N instruments of daily verified rows (and their months) pushed into a
//! running hub through its real route, `POST /api/v1/federation/batch`,
//! one batch per site (what a site that was away for a year sends), W sites
//! at a time.
//!
//! `--write-config DIR` writes the hub's config (its `[[hub.sites]]` with
//! the credentials' hashes) and exits; without it the batches are
//! generated, posted and timed. Used by scripts/bench-hub.sh.
//!
//! Usage: hub_bench [--sites S] [--instruments N] [--days D] [--workers W]
//!        (--write-config DIR | --url URL)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use labhours_collector::api::hash_token;
use labhours_collector::federation::{Batch, RegistryEntry, RowChange};
use serde_json::{Map, Value};

const DAY_MS: i64 = 86_400_000;
/// 2025-01-01T00:00:00Z.
const YEAR_START_MS: i64 = 1_735_689_600_000;
/// The usage types a row's split is spread over, as the API lists them.
const TYPES: [&str; 6] = labhours_collector::api::table::USAGE_TYPE_COLUMNS;

struct Args {
    sites: usize,
    instruments: usize,
    days: i64,
    workers: usize,
    write_config: Option<PathBuf>,
    url: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        sites: 200,
        instruments: 50,
        days: 365,
        workers: 2,
        write_config: None,
        url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--sites" => a.sites = value().parse().expect("--sites"),
            "--instruments" => a.instruments = value().parse().expect("--instruments"),
            "--days" => a.days = value().parse().expect("--days"),
            "--workers" => a.workers = value().parse().expect("--workers"),
            "--write-config" => a.write_config = Some(value().into()),
            "--url" => a.url = Some(value()),
            other => panic!("unknown argument {other}; see the top of hub_bench.rs"),
        }
    }
    a
}

fn site_id(i: usize) -> String {
    format!("site-{i:03}")
}

fn token(i: usize) -> String {
    format!("bench-credential-{i:03}")
}

/// A pseudo-random but reproducible number in `0..n`.
fn mix(a: u64, b: u64, n: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x % n
}

/// One day's totals, as a site stores them in `day_totals`.
fn day_row(inst: &str, day: i64, seed: u64) -> Map<String, Value> {
    let used = mix(seed, day as u64, 10 * 3_600_000) as i64;
    let booked = mix(seed + 1, day as u64, 10 * 3_600_000) as i64;
    let booked_used = used.min(booked);
    let unbooked = used - booked_used;
    let unknown = mix(seed + 2, day as u64, 3_600_000) as i64;
    let start = YEAR_START_MS + day * DAY_MS;
    let month = jiff::Timestamp::from_millisecond(start)
        .expect("instant")
        .strftime("%Y-%m")
        .to_string();
    let mut m = Map::new();
    m.insert("instrument_id".into(), inst.into());
    m.insert("start_ms".into(), start.into());
    m.insert("end_ms".into(), (start + DAY_MS).into());
    m.insert("month".into(), month.into());
    m.insert("used_ms".into(), used.into());
    m.insert("booked_ms".into(), booked.into());
    m.insert("booked_used_ms".into(), booked_used.into());
    m.insert("unbooked_ms".into(), unbooked.into());
    for (i, t) in TYPES.iter().enumerate() {
        let share = if i == 1 { booked_used } else { 0 };
        let share = if *t == "unassigned" { unbooked } else { share };
        m.insert(format!("{t}_ms"), share.into());
        m.insert(format!("c_{t}_ms"), share.into());
    }
    m.insert("assigned_ms".into(), 0.into());
    m.insert("no_show_count".into(), mix(seed + 3, day as u64, 2).into());
    m.insert("fault_ms".into(), 0.into());
    m.insert("unknown_ms".into(), unknown.into());
    m.insert("result_files".into(), mix(seed + 4, day as u64, 20).into());
    m.insert(
        "energy_wh".into(),
        Value::from(used as f64 / 3_600_000.0 * 350.0),
    );
    m
}

/// The month rows summed from the day rows (as the site materialises them).
fn month_rows(days: &[Map<String, Value>]) -> Vec<Map<String, Value>> {
    let mut months: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for d in days {
        let month = d["month"].as_str().expect("month").to_owned();
        let m = months.entry(month.clone()).or_insert_with(|| {
            let mut m = d.clone();
            m.insert("covered_ms".into(), 0.into());
            for (k, v) in m.iter_mut() {
                if k.ends_with("_ms") && k != "start_ms" && k != "end_ms"
                    || k == "no_show_count"
                    || k == "result_files"
                {
                    *v = 0.into();
                }
            }
            m.insert("energy_wh".into(), Value::from(0.0));
            m
        });
        for (k, v) in d {
            match k.as_str() {
                "instrument_id" | "start_ms" | "month" => {}
                "end_ms" => {
                    m.insert(k.clone(), v.clone());
                }
                "energy_wh" => {
                    let sum = m[k].as_f64().unwrap_or(0.0) + v.as_f64().unwrap_or(0.0);
                    m.insert(k.clone(), Value::from(sum));
                }
                _ => {
                    let sum = m[k].as_i64().unwrap_or(0) + v.as_i64().unwrap_or(0);
                    m.insert(k.clone(), sum.into());
                }
            }
        }
        let covered = m["covered_ms"].as_i64().unwrap_or(0) + DAY_MS;
        m.insert("covered_ms".into(), covered.into());
    }
    months.into_values().collect()
}

/// Site `s`'s year in one batch.
fn site_batch(s: usize, instruments: usize, days: i64) -> Batch {
    let mut rows = Vec::with_capacity(instruments * (days as usize + 13));
    let mut registry = Vec::with_capacity(instruments);
    let mut settled = BTreeMap::new();
    let mut version = 0;
    let mut columns = BTreeMap::new();
    // Maps keep their keys sorted: every row of a table has the same order.
    let mut values = |table: &str, row: Map<String, Value>| -> Vec<Value> {
        columns
            .entry(table.to_owned())
            .or_insert_with(|| row.keys().cloned().collect::<Vec<_>>());
        row.into_iter().map(|(_, v)| v).collect()
    };
    for i in 0..instruments {
        let inst = format!("inst-{i:02}");
        registry.push(RegistryEntry {
            id: inst.clone(),
            name: format!("Instrument {i} of site {s}"),
            unit: Some(format!("Dept {}", i % 5)),
            time_zone: "UTC".into(),
            open_hours: None,
        });
        settled.insert(inst.clone(), Some(YEAR_START_MS + days * DAY_MS));
        let seed = (s * 1000 + i) as u64;
        let day_rows: Vec<_> = (0..days).map(|d| day_row(&inst, d, seed)).collect();
        for month in month_rows(&day_rows) {
            version += 1;
            rows.push(RowChange {
                tbl: "month_totals".into(),
                instrument_id: inst.clone(),
                key_int: 0,
                key_text: month["month"].as_str().expect("month").to_owned(),
                version,
                row: Some(values("month_totals", month)),
            });
        }
        for row in day_rows {
            version += 1;
            rows.push(RowChange {
                tbl: "day_totals".into(),
                instrument_id: inst.clone(),
                key_int: row["start_ms"].as_i64().expect("start"),
                key_text: String::new(),
                version,
                row: Some(values("day_totals", row)),
            });
        }
    }
    Batch {
        site: site_id(s),
        columns,
        rows,
        registry: Some(registry),
        settled,
        settled_through_ms: Some(YEAR_START_MS + days * DAY_MS),
        checkpoints: Vec::new(),
    }
}

fn main() {
    let a = args();
    if let Some(dir) = &a.write_config {
        std::fs::create_dir_all(dir).expect("config dir");
        let mut text = format!(
            "data_dir = {:?}\n[site]\ntime_zone = \"UTC\"\n[mqtt]\nembedded_listen = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("data")
        );
        for s in 0..a.sites {
            text.push_str(&format!(
                "[[hub.sites]]\nid = \"{}\"\ntoken_sha256 = \"{}\"\n",
                site_id(s),
                hash_token(&token(s))
            ));
        }
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        std::fs::write(dir.join("hub.toml"), text).expect("hub.toml");
        return;
    }
    let url = format!(
        "{}/api/v1/federation/batch",
        a.url
            .as_deref()
            .expect("--url or --write-config")
            .trim_end_matches('/')
    );
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into();
    let next = AtomicUsize::new(0);
    let rows = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    let post_ms = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..a.workers.max(1) {
            scope.spawn(|| {
                loop {
                    let s = next.fetch_add(1, Ordering::Relaxed);
                    if s >= a.sites {
                        return;
                    }
                    let batch = site_batch(s, a.instruments, a.days);
                    let body = serde_json::to_vec(&batch).expect("json");
                    let sent = Instant::now();
                    let mut answer = http
                        .post(&url)
                        .content_type("application/json")
                        .header("Authorization", &format!("Bearer {}", token(s)))
                        .send(&body[..])
                        .expect("hub answers");
                    let status = answer.status().as_u16();
                    let text = answer.body_mut().read_to_string().unwrap_or_default();
                    assert_eq!(status, 200, "site {s}: {text}");
                    post_ms.fetch_add(sent.elapsed().as_millis() as usize, Ordering::Relaxed);
                    rows.fetch_add(batch.rows.len(), Ordering::Relaxed);
                    bytes.fetch_add(body.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let rows = rows.into_inner();
    println!(
        "pushed {} sites × {} instruments × {} days: {rows} rows ({:.0} MB of JSON) in {:.1} s ({:.0} rows/s); time in POST (summed over {} workers) {:.1} s",
        a.sites,
        a.instruments,
        a.days,
        bytes.into_inner() as f64 / 1e6,
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        a.workers,
        post_ms.into_inner() as f64 / 1000.0,
    );
}
