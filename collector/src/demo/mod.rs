//! `labhours-collector demo`: the whole system on simulated instruments.
//!
//! The collector starts on its embedded defaults with a config the demo
//! writes into its data folder; six simulated instruments each get a real
//! agent (`labhours_agent::app::Agent`) polling a simulated Modbus meter
//! over loopback TCP (the NMR also prints status lines on a pty, the Q-TOF
//! writes result files into a watched folder). Bookings go through the
//! collector's own import. On first start the past days are backfilled
//! through the agents' replay path; then everything runs live.
//!
//! - [`profiles`]: pure day plans (bookings and what really happened);
//! - [`scenario`]: the instruments, people, bookings and config files;
//! - [`history`]: the backfill through `labhours_agent::replay`;
//! - [`live`]: the simulators and their drivers;
//! - [`text`]: what is printed, in Chinese or English.
//!
//! State kept in `<data folder>/demo.json`: the seed, the time zone, the
//! history's range, the tokens, and each instrument's finished backfill (so
//! a rerun neither replays twice nor changes the tokens).

pub mod history;
pub mod live;
pub mod profiles;
pub mod scenario;
pub mod text;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use labhours_agent::app::Agent;
use labhours_agent::clock::SystemClock;
use labhours_agent::config::AgentConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::Running;
use crate::config::CollectorConfig;
use history::Backfilled;
use scenario::{Layout, instruments, midnight};
use text::Lang;

/// `labhours-collector demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps everything (database, configs, agents' outboxes,
    /// simulated result files, tokens).
    #[arg(long, default_value = "labhours-demo-data")]
    pub data_dir: PathBuf,
    /// Delete the data folder first and start over.
    #[arg(long)]
    pub reset: bool,
    /// Days of history to backfill on first start.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub history_days: u32,
    /// HTTP port; when taken, the next free one (up to 20 further). 0: any free port.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Port of the embedded MQTT broker; when taken, any free port.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// Seed of the simulated days (same seed, same days).
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// IANA time zone of the demo site (default: this computer's, else Asia/Shanghai).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Language of what is printed: en or zh (default: from LC_ALL / LC_MESSAGES / LANG).
    #[arg(long)]
    pub lang: Option<String>,
}

impl DemoArgs {
    /// The defaults, with this data folder.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            reset: false,
            history_days: 30,
            http_port: 8080,
            mqtt_port: 1883,
            seed: 2026,
            time_zone: None,
            lang: None,
        }
    }
}

/// The demo's state file.
const STATE_FILE: &str = "demo.json";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Saved {
    seed: u64,
    time_zone: String,
    history_days: u32,
    history_from: Timestamp,
    history_to: Timestamp,
    evaluator_token: String,
    admin_token: String,
    /// Instrument id → its finished backfill.
    #[serde(default)]
    backfilled: BTreeMap<String, Backfilled>,
}

impl Saved {
    fn path(root: &Path) -> PathBuf {
        root.join(STATE_FILE)
    }

    fn load(root: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(root);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; use --reset（文件已损坏，请加 --reset 重新开始）",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written to a temporary file and renamed over the old one; readable by
    /// its owner only (it holds the tokens).
    fn save(&self, root: &Path) -> anyhow::Result<()> {
        let path = Self::path(root);
        let tmp = root.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Prepares the data folder: `--reset` removes it (only if it is a demo's);
/// a folder holding something else is refused.
fn prepare_folder(root: &Path, reset: bool, lang: Lang) -> anyhow::Result<()> {
    if root.exists() {
        let is_demo = Saved::path(root).exists();
        let empty = std::fs::read_dir(root)
            .with_context(|| format!("reading {}", root.display()))?
            .next()
            .is_none();
        if !is_demo && !empty {
            bail!(text::not_a_demo_folder(lang, root, STATE_FILE));
        }
        if reset && is_demo {
            std::fs::remove_dir_all(root)
                .with_context(|| format!("removing {} (--reset)", root.display()))?;
        }
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    Ok(())
}

/// `preferred`, or the next free port among `tries`, or 0 (any free port).
fn pick_port(preferred: u16, tries: u16) -> u16 {
    if preferred == 0 {
        return 0;
    }
    (preferred..=preferred.saturating_add(tries))
        .find(|p| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, *p)).is_ok())
        .unwrap_or(0)
}

fn default_zone() -> String {
    TimeZone::system()
        .iana_name()
        .filter(|n| TimeZone::get(n).is_ok())
        .map_or_else(|| "Asia/Shanghai".to_owned(), str::to_owned)
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    pub http_addr: SocketAddr,
    pub mqtt_addr: SocketAddr,
    pub evaluator_token: String,
    pub admin_token: String,
    /// The backfilled history: `[history_from, history_to)`.
    pub history_from: Timestamp,
    pub history_to: Timestamp,
    pub time_zone: TimeZone,
    pub data_dir: PathBuf,
    lang: Lang,
    collector: Running,
    agents: Vec<Agent>,
    sims: Vec<live::SimInstrument>,
    drivers: JoinSet<()>,
    stop_drivers: CancellationToken,
    ready: tokio::sync::watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Demo {
    /// Starts everything and returns once the agents run (the history may
    /// still be on its way: see [`Demo::ready`]).
    pub async fn start(args: DemoArgs) -> anyhow::Result<Self> {
        let started = Instant::now();
        let lang = match &args.lang {
            Some(l) => Lang::parse(l)
                .with_context(|| format!("--lang {l:?}: use en or zh（可选 en 或 zh）"))?,
            None => Lang::from_env(|k| std::env::var(k).ok()),
        };
        let root = std::path::absolute(&args.data_dir)
            .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
        prepare_folder(&root, args.reset, lang)?;
        let layout = Layout { root: root.clone() };

        let now = Timestamp::now();
        let (mut saved, continuing) = match Saved::load(&root)? {
            Some(s) => (s, true),
            None => {
                let time_zone = args.time_zone.clone().unwrap_or_else(default_zone);
                let zone = TimeZone::get(&time_zone)
                    .with_context(|| text::not_a_zone(lang, &time_zone))?;
                let today = now.to_zoned(zone.clone()).date();
                let first = today
                    .checked_sub(jiff::Span::new().days(i64::from(args.history_days)))
                    .context("--history-days reaches too far back")?;
                let s = Saved {
                    seed: args.seed,
                    time_zone,
                    history_days: args.history_days,
                    history_from: midnight(first, &zone),
                    history_to: now,
                    evaluator_token: crate::api::new_token()?,
                    admin_token: crate::api::new_token()?,
                    backfilled: BTreeMap::new(),
                };
                s.save(&root)?;
                (s, false)
            }
        };
        let zone = TimeZone::get(&saved.time_zone)
            .with_context(|| format!("{STATE_FILE}: time zone {:?}", saved.time_zone))?;
        let today = now.to_zoned(zone.clone()).date();
        let first_day = saved.history_from.to_zoned(zone.clone()).date();
        let history_end_day = saved.history_to.to_zoned(zone.clone()).date();
        let showcase = scenario::showcase_day(history_end_day, first_day);

        // The collector, from the config file the demo writes.
        let mqtt = SocketAddr::from(([127, 0, 0, 1], pick_port(args.mqtt_port, 0)));
        let http = SocketAddr::from(([127, 0, 0, 1], pick_port(args.http_port, 20)));
        let tokens = [
            (
                "demo-evaluator",
                "evaluator",
                crate::api::hash_token(&saved.evaluator_token),
            ),
            (
                "demo-admin",
                "admin",
                crate::api::hash_token(&saved.admin_token),
            ),
        ];
        let config_path = layout.collector_config();
        std::fs::write(
            &config_path,
            scenario::collector_toml(&root, &saved.time_zone, mqtt, http, &tokens),
        )
        .with_context(|| format!("writing {}", config_path.display()))?;
        let config = CollectorConfig::load(&config_path)?;
        let mut log = config.log.clone();
        log.level = "warn".into();
        log.init();
        let collector = crate::app::start(config.clone(), crate::ingest::IngestOptions::default())
            .await
            .context("starting the collector")?;
        tokio::time::timeout(Duration::from_secs(10), collector.subscribed())
            .await
            .context("the collector did not subscribe to its own broker within 10 s")?;
        let http_addr = collector.http_addr();
        let mqtt_addr = collector.broker_addr().unwrap_or(mqtt);
        let last_day = today
            .checked_add(jiff::Span::new().days(8))
            .context("date out of range")?;
        println!(
            "{}",
            text::banner(
                lang,
                &text::Banner {
                    data_dir: &root,
                    http: http_addr,
                    mqtt: mqtt_addr,
                    instruments: instruments().len(),
                    evaluator_token: &saved.evaluator_token,
                    admin_token: &saved.admin_token,
                    from: first_day,
                    to: today.tomorrow().unwrap_or(today),
                    time_zone: &saved.time_zone,
                    continuing,
                }
            )
        );

        // Bookings: the history, today and the next week, through the real import.
        let days = day_range(first_day, last_day);
        let (csv, _) = scenario::bookings_csv(saved.seed, &zone, days.iter().copied(), showcase);
        std::fs::write(layout.bookings(), &csv)
            .with_context(|| format!("writing {}", layout.bookings().display()))?;
        {
            let config = config.clone();
            let path = layout.bookings();
            tokio::task::spawn_blocking(move || import_bookings(&config, &path, &csv))
                .await
                .context("the bookings import panicked")??;
        }

        // Simulators first (their ports go into the agents' configs).
        let all = instruments();
        let mut sims = Vec::with_capacity(all.len());
        let mut agent_configs = Vec::with_capacity(all.len());
        std::fs::create_dir_all(root.join("agents"))?;
        for inst in &all {
            let sim = live::SimInstrument::start(inst)
                .await
                .with_context(|| format!("starting the simulators of {}", inst.id))?;
            std::fs::create_dir_all(layout.results(inst.id))?;
            let path = layout.agent_config(inst.id);
            std::fs::write(
                &path,
                scenario::agent_toml(
                    inst,
                    &layout,
                    mqtt_addr.port(),
                    sim.meter_addr(),
                    sim.status_path(),
                ),
            )
            .with_context(|| format!("writing {}", path.display()))?;
            agent_configs.push(AgentConfig::load(&path)?);
            sims.push(sim);
        }

        // The backfill, once per instrument.
        let todo: Vec<usize> = (0..all.len())
            .filter(|&n| !saved.backfilled.contains_key(all[n].id))
            .collect();
        if !todo.is_empty() {
            let began = Instant::now();
            let mut jobs = JoinSet::new();
            for n in todo {
                let (inst, config, layout, zone) = (
                    all[n].clone(),
                    agent_configs[n].clone(),
                    layout.clone(),
                    zone.clone(),
                );
                let (seed, from, to) = (saved.seed, saved.history_from, saved.history_to);
                jobs.spawn_blocking(move || {
                    let history = history::History {
                        inst: &inst,
                        number: n,
                        seed,
                        zone: &zone,
                        showcase,
                        from,
                        to,
                        status_lines: config.status.is_some(),
                    };
                    let done = history::backfill(&history, &layout, &config);
                    (inst.id, done)
                });
            }
            while let Some(job) = jobs.join_next().await {
                let (id, done) = job.context("a backfill panicked")?;
                saved.backfilled.insert(id.to_owned(), done?);
                saved.save(&root)?;
            }
            let (rows, events) = saved
                .backfilled
                .values()
                .fold((0, 0), |(r, e), b| (r + b.rows, e + b.events));
            println!(
                "{}",
                text::backfilled(
                    lang,
                    saved.history_days,
                    rows,
                    events,
                    began.elapsed().as_secs_f64()
                )
            );
        }

        // The agents and the drivers.
        let mut agents = Vec::with_capacity(all.len());
        for config in agent_configs {
            let id = config.instrument_id.clone();
            agents.push(
                Agent::start(config, Arc::new(SystemClock))
                    .with_context(|| format!("starting the agent of {id}"))?,
            );
        }
        let stop_drivers = CancellationToken::new();
        let mut drivers = JoinSet::new();
        for (n, (inst, sim)) in all.iter().zip(sims.iter_mut()).enumerate() {
            let spec = live::DriverSpec {
                inst: inst.clone(),
                number: n,
                seed: saved.seed,
                zone: zone.clone(),
                showcase,
                results: layout.results(inst.id),
            };
            let status = sim.status.take().map(|(port, _path)| port);
            drivers.spawn(live::drive(
                spec,
                sim.sim.clone(),
                status,
                stop_drivers.child_token(),
            ));
        }

        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(watch_ready(
            root.clone(),
            saved.clone(),
            all.iter().map(|i| (i.id, i.agent_id())).collect(),
            started,
            lang,
            ready_tx,
        ));
        Ok(Self {
            http_addr,
            mqtt_addr,
            evaluator_token: saved.evaluator_token.clone(),
            admin_token: saved.admin_token.clone(),
            history_from: saved.history_from,
            history_to: saved.history_to,
            time_zone: zone,
            data_dir: root,
            lang,
            collector,
            agents,
            sims,
            drivers,
            stop_drivers,
            ready,
            watcher,
        })
    }

    /// Waits until the history is delivered and reconciled.
    pub async fn ready(&self) {
        let mut rx = self.ready.clone();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Stops the agents (each flushes its outbox), then the simulators, then
    /// the collector (it commits and acknowledges what it received).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        println!("{}", text::stopping(self.lang));
        self.watcher.abort();
        // The agents first, while their meters and status port still answer.
        for agent in self.agents {
            agent.stop().await?;
        }
        self.stop_drivers.cancel();
        while self.drivers.join_next().await.is_some() {}
        for sim in &mut self.sims {
            sim.meter.stop().await;
        }
        self.collector.shutdown().await?;
        println!("{}", text::stopped(self.lang));
        Ok(())
    }
}

/// Runs the demo until `shutdown` (Ctrl-C).
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // Ctrl-C while starting (during the backfill): leave. A backfill not
    // recorded as finished is done again at the next start.
    let demo = tokio::select! {
        demo = Demo::start(args) => demo?,
        () = &mut shutdown => return Ok(()),
    };
    shutdown.await;
    demo.stop().await
}

fn day_range(first: Date, last: Date) -> Vec<Date> {
    let mut days = Vec::new();
    let mut d = first;
    while d <= last {
        days.push(d);
        match d.tomorrow() {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    days
}

/// The bookings through the collector's own import (what `labhours-collector
/// bookings import` does): upserts by booking id, so a rerun changes nothing
/// it imported before.
fn import_bookings(config: &CollectorConfig, path: &Path, csv: &str) -> anyhow::Result<()> {
    let ctx = crate::bookings::ParseContext::from_config(config)?;
    let parsed = crate::bookings::parse(crate::bookings::Format::Csv, csv, &ctx);
    let mut store = crate::store::Store::open(&config.data_dir, crate::store::Durability::Full)?;
    let name = path.file_name().map_or_else(
        || "bookings.csv".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let report = store.import_bookings(
        parsed,
        &name,
        crate::bookings::store::ImportOptions::default(),
        Timestamp::now(),
    )?;
    if !report.errors.is_empty() {
        bail!(
            "the demo's bookings did not import: {}",
            report
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    tracing::info!(summary = %report.summary(), "demo bookings imported");
    Ok(())
}

/// Polls the database until every agent's history is committed, the
/// Q-TOF's past result files are in, and nothing before the end of the
/// history waits to be reconciled; then prints how long it took.
async fn watch_ready(
    root: PathBuf,
    saved: Saved,
    agents: Vec<(&'static str, String)>,
    started: Instant,
    lang: Lang,
    ready: tokio::sync::watch::Sender<bool>,
) {
    loop {
        let check = {
            let (root, saved, agents) = (root.clone(), saved.clone(), agents.clone());
            tokio::task::spawn_blocking(move || history_reconciled(&root, &saved, &agents)).await
        };
        match check {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "demo: readiness check"),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("{}", text::ready(lang, started.elapsed().as_secs_f64()));
    ready.send_replace(true);
}

fn history_reconciled(
    root: &Path,
    saved: &Saved,
    agents: &[(&'static str, String)],
) -> anyhow::Result<bool> {
    let conn = crate::store::open_read_only(root)?;
    for (instrument, agent) in agents {
        let Some(done) = saved.backfilled.get(*instrument) else {
            continue;
        };
        let through = crate::store::stored_committed_through(&conn, agent)?.unwrap_or(0);
        if through < done.last_seq {
            return Ok(false);
        }
        if done.result_files > 0 {
            let files: i64 = conn.query_row(
                "SELECT count(*) FROM result_files WHERE instrument_id = ?1 AND mtime_ms < ?2",
                rusqlite::params![instrument, saved.history_to.as_millisecond()],
                |r| r.get(0),
            )?;
            if (files as u64) < done.result_files {
                return Ok(false);
            }
        }
    }
    let pending: i64 = conn.query_row(
        "SELECT count(*) FROM dirty WHERE from_ms IS NULL OR from_ms < ?1",
        [saved.history_to.as_millisecond()],
        |r| r.get(0),
    )?;
    Ok(pending == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_removes_a_demo_folder_and_a_foreign_folder_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("demo");
        prepare_folder(&root, false, Lang::En).expect("a new folder");
        std::fs::write(Saved::path(&root), "{}").expect("state");
        std::fs::write(root.join("labhours.sqlite3"), "db").expect("db");
        prepare_folder(&root, false, Lang::En).expect("a demo's folder is reused");
        assert!(root.join("labhours.sqlite3").exists());
        prepare_folder(&root, true, Lang::En).expect("reset");
        assert!(root.exists() && !root.join("labhours.sqlite3").exists());

        let foreign = dir.path().join("thesis");
        std::fs::create_dir(&foreign).expect("dir");
        std::fs::write(foreign.join("chapter1.tex"), "…").expect("file");
        for reset in [false, true] {
            let err = prepare_folder(&foreign, reset, Lang::En).unwrap_err();
            assert!(
                err.to_string().contains("is not a demo's data folder"),
                "{err}"
            );
            assert!(foreign.join("chapter1.tex").exists());
        }
        let err = prepare_folder(&foreign, false, Lang::Zh).unwrap_err();
        assert!(err.to_string().contains("不是演示数据目录"), "{err}");
    }

    #[test]
    fn the_state_file_round_trips_and_a_damaged_one_says_reset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let saved = Saved {
            seed: 1,
            time_zone: "Asia/Shanghai".into(),
            history_days: 30,
            history_from: "2026-11-03T00:00:00+08:00".parse().expect("ts"),
            history_to: "2026-12-03T21:00:00+08:00".parse().expect("ts"),
            evaluator_token: "lh_e".into(),
            admin_token: "lh_a".into(),
            backfilled: BTreeMap::new(),
        };
        saved.save(dir.path()).expect("saved");
        let back = Saved::load(dir.path()).expect("loads").expect("present");
        assert_eq!(back.evaluator_token, "lh_e");
        assert_eq!(back.history_to, saved.history_to);
        std::fs::write(Saved::path(dir.path()), "{").expect("damage");
        let err = Saved::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("use --reset"), "{err:#}");
    }

    #[test]
    fn a_taken_port_moves_to_the_next_free_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let picked = pick_port(port, 20);
        assert_ne!(picked, port);
        assert_eq!(pick_port(0, 20), 0);
    }
}
