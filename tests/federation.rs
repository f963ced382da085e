//! Upward federation with real processes (docs/design/federation.md): two
//! site collectors and one hub, each `labhours-collector`'s `app::run` in
//! its own process (this test binary re-run as `collector_child`), on
//! loopback. Real agents' delivery feeds the sites over MQTT with events
//! dated by the test (the instruments' time is controlled; only the
//! processes' own waits are real, each a poll with a deadline).
//!
//! Checked: the hub's figures equal each site's own answers, instrument by
//! instrument and in sum; the hub is SIGKILLed during a day of site traffic
//! (with a late event re-deriving the day before; site A is SIGKILLed and
//! restarted meanwhile) and, restarted, catches up exactly: its forwarded
//! tables equal the sites' tables row for row, nothing missing, nothing
//! twice.
//!
//! The hub itself forwards to a province (a fourth collector, where the
//! hub is site "campus"): the province's rows equal the hub's under
//! `campus/`, figure for figure.
//!
//! Checkpoints: every site signs them with its collector key and forwards
//! them; the hub verifies each with the site's `checkpoint_key` and checks
//! that it extends the one before. A site whose database is edited (an
//! agent's chain head rewritten) and re-signed is flagged at the hub.
//!
//! A token at the hub scoped to `unit = "site-a"` sees site A only: its
//! hours, instruments, outcomes and freshness, and a 404 for site B.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use labhours_collector::api::hash_token;
use labhours_shared::state::State;
use labhours_shared::trust::Signer;
use labhours_shared::wire::{EventKind, TransitionSource};
use labhours_tests::agent::{PREFIX, TestAgent, mqtt_config};
use labhours_tests::brokers::free_port;
use labhours_tests::http;
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};

const CHILD_CONFIG: &str = "LABHOURS_FEDERATION_CHILD_CONFIG";
const WAIT: Duration = Duration::from_secs(90);
const SITES: [&str; 2] = ["site-a", "site-b"];
/// The same ids on both sites: the hub tells them apart by site.
const INSTRUMENTS: [&str; 2] = ["nmr-600", "xrd-1"];
const ADMIN: &str = "hub-admin-secret";
/// An evaluator's token at the hub, scoped to site A.
const SITE_A_EVALUATOR: &str = "hub-site-a-evaluator-secret";
const FROM: &str = "2026-03-01";
const TO: &str = "2026-03-08";

/// The collector of one test process (run by the parent, never directly).
#[test]
#[ignore = "run as a child process by the federation tests"]
fn collector_child() {
    let Ok(path) = std::env::var(CHILD_CONFIG) else {
        return;
    };
    let config =
        labhours_collector::config::CollectorConfig::load(Path::new(&path)).expect("config");
    // Warnings (an upstream refusal, say) show in the test's output.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(labhours_collector::app::run(
            config,
            labhours_collector::app::shutdown_signal(),
        ))
        .expect("collector runs");
}

/// A collector process; SIGKILLed when dropped.
struct Process {
    config: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn spawn(config: PathBuf) -> Self {
        let mut p = Self {
            config,
            child: None,
        };
        p.resume();
        p
    }

    fn resume(&mut self) {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["collector_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_CONFIG, &self.config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("collector starts");
        self.child = Some(child);
    }

    /// SIGKILL, as a power cut would, and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Site {
    id: &'static str,
    dir: PathBuf,
    /// The site collector's checkpoint key (`[trust] key_file`).
    collector_key: Signer,
    http: std::net::SocketAddr,
    process: Process,
    agents: Vec<TestAgent>,
}

struct Rig {
    _tmp: tempfile::TempDir,
    hub_dir: PathBuf,
    hub_http: std::net::SocketAddr,
    hub: Process,
    sites: Vec<Site>,
    /// A hub above the hub (a province): the hub forwards to it as site
    /// "campus".
    province_http: std::net::SocketAddr,
    _province: Process,
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    path.to_owned()
}

impl Rig {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        let hub_port = free_port();
        let hub_dir = root.join("hub");
        std::fs::create_dir_all(&hub_dir).unwrap();
        // The province, with the hub as its one site.
        let province_port = free_port();
        let province_dir = root.join("province");
        std::fs::create_dir_all(&province_dir).unwrap();
        let province = Process::spawn(write(
            &root.join("province.toml"),
            &format!(
                "data_dir = {province_dir:?}\n[site]\ntime_zone = \"UTC\"\n\
                 [mqtt]\nembedded_listen = \"127.0.0.1:{}\"\n\
                 [http]\nlisten = \"127.0.0.1:{province_port}\"\n\
                 [[http.tokens]]\nname = \"office\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
                 [[hub.sites]]\nid = \"campus\"\nname = \"University\"\ntoken_sha256 = \"{}\"\n",
                free_port(),
                hash_token(ADMIN),
                hash_token("campus-credential"),
            ),
        ));
        let campus_token = write(&root.join("campus.token"), "campus-credential\n");
        let mut hub_sites = String::new();
        let mut collector_keys = Vec::new();
        for site in SITES {
            let der = Signer::generate_pkcs8().unwrap();
            let key_file = root.join(format!("{site}.collector.key"));
            std::fs::write(&key_file, &der).unwrap();
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            let key = Signer::from_pkcs8(&der).unwrap();
            let vkey = labhours_collector::evidence::checkpoint::CollectorKey::new(
                &format!("Campus {site}"),
                &key.public_key(),
            )
            .verifier_key;
            hub_sites.push_str(&format!(
                "[[hub.sites]]\nid = \"{site}\"\nname = \"Campus {site}\"\ntoken_sha256 = \"{}\"\n\
                 checkpoint_key = \"{vkey}\"\n",
                hash_token(&format!("{site}-credential"))
            ));
            collector_keys.push((key, key_file));
        }
        let hub_config = write(
            &root.join("hub.toml"),
            &format!(
                "data_dir = {hub_dir:?}\n[site]\ntime_zone = \"UTC\"\n\
                 [mqtt]\nembedded_listen = \"127.0.0.1:{}\"\n\
                 [http]\nlisten = \"127.0.0.1:{hub_port}\"\n\
                 [[http.tokens]]\nname = \"office\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
                 [[http.tokens]]\nname = \"site-a-evaluator\"\nrole = \"evaluator\"\nsha256 = \"{}\"\nunit = \"site-a\"\n\
                 [upstream]\nurl = \"http://127.0.0.1:{province_port}\"\nsite_id = \"campus\"\n\
                 token_file = {campus_token:?}\nretry_max_s = 1\n{hub_sites}",
                free_port(),
                hash_token(ADMIN),
                hash_token(SITE_A_EVALUATOR),
            ),
        );
        let hub = Process::spawn(hub_config);
        let mut sites = Vec::new();
        for (site, (collector_key, key_file)) in SITES.into_iter().zip(collector_keys) {
            let dir = root.join(site);
            std::fs::create_dir_all(&dir).unwrap();
            let token = write(
                &root.join(format!("{site}.token")),
                &format!("{site}-credential\n"),
            );
            let (mqtt, port) = (free_port(), free_port());
            // Signing agents, enrolled in the site's config.
            let agent_keys: Vec<Arc<Signer>> = INSTRUMENTS
                .iter()
                .map(|_| Arc::new(Signer::from_pkcs8(&Signer::generate_pkcs8().unwrap()).unwrap()))
                .collect();
            let enrolled: String = INSTRUMENTS
                .iter()
                .zip(&agent_keys)
                .map(|(inst, k)| {
                    format!(
                        "[[trust.keys]]\nagent_id = \"{site}-{inst}\"\npublic_key = \"{}\"\n",
                        k.public_key()
                    )
                })
                .collect();
            // Silence never makes time unknown here: the test sends
            // transitions only, hours apart.
            let config = write(
                &root.join(format!("{site}.toml")),
                &format!(
                    "data_dir = {dir:?}\n[site]\nname = \"Campus {site}\"\ntime_zone = \"UTC\"\n\
                     [trust]\nkey_file = {key_file:?}\n{enrolled}\
                     [mqtt]\ntopic_prefix = \"{PREFIX}\"\nembedded_listen = \"127.0.0.1:{mqtt}\"\n\
                     [http]\nlisten = \"127.0.0.1:{port}\"\n\
                     [reconciliation]\nsilence_after_s = 8640000\n\
                     [upstream]\nurl = \"http://127.0.0.1:{hub_port}\"\nsite_id = \"{site}\"\n\
                     token_file = {token:?}\nbatch_rows = 7\nretry_max_s = 1\n"
                ),
            );
            let process = Process::spawn(config);
            let http: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            wait_healthy(http).await;
            let agents = INSTRUMENTS
                .iter()
                .zip(agent_keys)
                .map(|(inst, key)| {
                    let agent_dir = dir.join(format!("agent-{inst}"));
                    std::fs::create_dir_all(&agent_dir).unwrap();
                    TestAgent::start_signed_for(
                        &agent_dir,
                        &format!("{site}-{inst}"),
                        inst,
                        &mqtt_config(mqtt),
                        key,
                    )
                })
                .collect();
            sites.push(Site {
                id: site,
                dir,
                collector_key,
                http,
                process,
                agents,
            });
        }
        let hub_http = ([127, 0, 0, 1], hub_port).into();
        wait_healthy(hub_http).await;
        let province_http = ([127, 0, 0, 1], province_port).into();
        wait_healthy(province_http).await;
        Self {
            _tmp: tmp,
            hub_dir,
            hub_http,
            hub,
            sites,
            province_http,
            _province: province,
        }
    }

    /// `GET /api/v1/hours` per instrument and day at the hub, as `token` sees it.
    async fn hub_hours_as(&self, token: &str) -> Vec<Value> {
        hours(self.hub_http, Some(token), "").await
    }

    /// Waits until every site has ingested and reconciled everything its
    /// agents sent, and has forwarded it all.
    async fn wait_sites_settled(&self, forwarded: bool) {
        let deadline = Instant::now() + WAIT;
        for site in &self.sites {
            for agent in &site.agents {
                agent
                    .wait_drained(deadline.saturating_duration_since(Instant::now()))
                    .await;
            }
        }
        loop {
            let mut done = true;
            for site in &self.sites {
                let health = http::get(site.http, "/api/v1/healthz")
                    .await
                    .and_then(|r| r.json());
                let pending = health
                    .ok()
                    .and_then(|h| h["reconciliation"]["pending_instruments"].as_u64())
                    .unwrap_or(1);
                done &= pending == 0 && (!forwarded || outbox_len(&site.dir) == 0);
            }
            if done {
                return;
            }
            if Instant::now() >= deadline {
                for site in &self.sites {
                    let health = http::get(site.http, "/api/v1/healthz").await;
                    eprintln!(
                        "{}: outbox {} health {:?}",
                        site.id,
                        outbox_len(&site.dir),
                        health.and_then(|r| r.json())
                    );
                }
                panic!("sites did not settle in {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the hub's forwarded tables equal the sites' own, row for
    /// row, then returns.
    async fn wait_hub_equals_sites(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.wait_sites_settled(true).await;
            let (hub, sites) = (self.hub_tables(), self.site_tables());
            if hub == sites {
                return;
            }
            if Instant::now() >= deadline {
                for (table, rows) in &sites {
                    assert_eq!(hub.get(table), Some(rows), "hub's {table} vs the sites'");
                }
                panic!("hub tables differ from the sites'");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn site_tables(&self) -> BTreeMap<&'static str, Vec<Vec<Sql>>> {
        let mut out: BTreeMap<&'static str, Vec<Vec<Sql>>> = BTreeMap::new();
        for site in &self.sites {
            let conn = labhours_collector::store::open_read_only(&site.dir).expect("site db");
            for (table, rows) in tables(&conn, "") {
                out.entry(table).or_default().extend(
                    rows.into_iter()
                        .map(|row| namespace_row(table, site.id, row)),
                );
            }
        }
        for rows in out.values_mut() {
            rows.sort_by_key(|r| format!("{r:?}"));
        }
        out
    }

    fn hub_tables(&self) -> BTreeMap<&'static str, Vec<Vec<Sql>>> {
        let conn = labhours_collector::store::open_read_only(&self.hub_dir).expect("hub db");
        let mut out = tables(&conn, "%/%");
        for rows in out.values_mut() {
            rows.sort_by_key(|r| format!("{r:?}"));
        }
        out
    }
}

/// The forwarded tables' rows (instruments matching `like`, all when empty).
fn tables(conn: &rusqlite::Connection, like: &str) -> BTreeMap<&'static str, Vec<Vec<Sql>>> {
    let mut out = BTreeMap::new();
    for (table, key) in [
        ("day_totals", "instrument_id"),
        ("month_totals", "instrument_id"),
        ("booking_outcomes", "instrument_id"),
        ("bookings", "booking_id"),
    ] {
        let filter = if like.is_empty() {
            String::new()
        } else {
            format!("WHERE {key} LIKE '{like}'")
        };
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} {filter}"))
            .expect("query");
        let n = stmt.column_count();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .filter(|i| names[*i] != "imported_at_ms" && names[*i] != "source")
                    .map(|i| r.get::<_, Sql>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("rows")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("rows");
        out.insert(table, rows);
    }
    out
}

/// A site's row as the hub stores it: instrument and booking ids under the site.
fn namespace_row(table: &str, site: &str, mut row: Vec<Sql>) -> Vec<Sql> {
    // booking_outcomes: (booking_id, instrument_id, ...); bookings: (booking_id, instrument_id, ...);
    // the totals: (instrument_id, ...).
    let ids: &[usize] = match table {
        "booking_outcomes" | "bookings" => &[0, 1],
        _ => &[0],
    };
    for &i in ids {
        if let Sql::Text(id) = &row[i] {
            row[i] = Sql::Text(format!("{site}/{id}"));
        }
    }
    row
}

fn outbox_len(dir: &Path) -> i64 {
    labhours_collector::store::open_read_only(dir)
        .expect("db")
        .query_row("SELECT COUNT(*) FROM fed_outbox", [], |r| r.get(0))
        .expect("outbox")
}

async fn wait_healthy(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while !http::get(addr, "/api/v1/healthz")
        .await
        .is_ok_and(|r| r.status == 200)
    {
        assert!(
            Instant::now() < deadline,
            "collector at {addr} did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Hours rows per instrument and day over the test week.
async fn hours(addr: std::net::SocketAddr, token: Option<&str>, extra: &str) -> Vec<Value> {
    let target = format!("/api/v1/hours?from={FROM}&to={TO}&period=day{extra}");
    let answer = match token {
        Some(t) => http::get_with_token(addr, &target, t).await,
        None => http::get(addr, &target).await,
    }
    .expect("hours");
    assert_eq!(answer.status, 200, "{}", answer.text().unwrap_or(""));
    answer.json().expect("json")["rows"]
        .as_array()
        .expect("rows")
        .clone()
}

/// The figures of a row that must travel unchanged (not the unit, which
/// the hub puts under the site, nor what is about events the hub does not
/// hold: `signed`, `unsigned_events`, `provisional`).
fn figures(row: &Value) -> Value {
    let mut row = row.clone();
    let obj = row.as_object_mut().expect("object");
    for k in [
        "instrument_id",
        "unit",
        "signed",
        "unsigned_events",
        "provisional",
    ] {
        obj.remove(k);
    }
    row
}

fn transition(from: State, to: State) -> EventKind {
    EventKind::Transition {
        from,
        to,
        source: TransitionSource::Power,
        reason: "federation test".into(),
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// A day of runs on every instrument of every site, different per agent;
/// `part` 0 or 1: the morning or the afternoon.
fn day_of_traffic(rig: &mut Rig, day: &str, part: usize) {
    for (s, site) in rig.sites.iter_mut().enumerate() {
        for (i, agent) in site.agents.iter_mut().enumerate() {
            for run in 0..3 {
                let hour = 7 + part * 8 + run * 2;
                let minutes = 15 + 7 * (s + 2 * i + run);
                let start = at(&format!("{day}T{hour:02}:00:00Z"));
                let end = at(&format!("{day}T{hour:02}:{minutes:02}:00Z"));
                agent.append_at(start, vec![transition(State::Off, State::Running)]);
                agent.append_at(end, vec![transition(State::Running, State::Off)]);
            }
        }
    }
}

/// Every site's rows, namespaced, against the hub's: equal row for row,
/// and in sum.
async fn assert_hub_answers_like_the_sites(rig: &Rig) {
    let hub = rig.hub_hours_as(ADMIN).await;
    let by_id: BTreeMap<(String, String), &Value> = hub
        .iter()
        .map(|r| {
            (
                (
                    r["instrument_id"].as_str().unwrap().to_owned(),
                    r["period_start"].as_str().unwrap().to_owned(),
                ),
                r,
            )
        })
        .collect();
    let mut site_rows = 0;
    let (mut site_used, mut hub_used) = (0.0, 0.0);
    for site in &rig.sites {
        for row in hours(site.http, None, "").await {
            let id = format!("{}/{}", site.id, row["instrument_id"].as_str().unwrap());
            let start = row["period_start"].as_str().unwrap().to_owned();
            let at_hub = by_id
                .get(&(id.clone(), start.clone()))
                .unwrap_or_else(|| panic!("{id} {start} missing at the hub"));
            assert_eq!(figures(at_hub), figures(&row), "{id} {start}");
            assert_eq!(at_hub["unit"], json!(site.id), "{id}: unit under the site");
            site_used += row["used_hours"].as_f64().unwrap();
            site_rows += 1;
        }
    }
    for row in &hub {
        hub_used += row["used_hours"].as_f64().unwrap();
    }
    assert_eq!(hub.len(), site_rows, "the hub has rows no site has");
    assert!(site_used > 0.0, "the sites measured nothing");
    assert!(
        (hub_used - site_used).abs() < 1e-6,
        "{hub_used} vs {site_used}"
    );
    // One site's share, by its unit.
    let a = hours(rig.hub_http, Some(ADMIN), "&unit=site-a&group_by=unit").await;
    let a_used: f64 = a.iter().map(|r| r["used_hours"].as_f64().unwrap()).sum();
    let own: f64 = hours(rig.sites[0].http, None, "&group_by=unit")
        .await
        .iter()
        .map(|r| r["used_hours"].as_f64().unwrap())
        .sum();
    assert!(
        (a_used - own).abs() < 1e-6,
        "site-a at the hub {a_used} vs its own {own}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_and_a_hub_agree_and_the_hub_catches_up_after_a_kill() {
    let mut rig = Rig::start().await;
    // History: a first day, and a booking at site A (outcomes and bookings travel).
    day_of_traffic(&mut rig, "2026-03-03", 0);
    day_of_traffic(&mut rig, "2026-03-03", 1);
    let booking = json!({"bookings": [{
        "booking_id": "b-1", "instrument_id": "nmr-600", "user": "li", "group": "chem",
        "usage_type": "research", "start": "2026-03-03T07:00:00Z", "end": "2026-03-03T08:00:00Z",
        "status": "confirmed"
    }]});
    let imported = http::post_json(rig.sites[0].http, "/api/v1/bookings", &booking)
        .await
        .expect("import");
    assert_eq!(imported.status, 200, "{}", imported.text().unwrap_or(""));
    rig.wait_hub_equals_sites().await;
    assert_hub_answers_like_the_sites(&rig).await;
    let outcomes = http::get_with_token(
        rig.hub_http,
        &format!("/api/v1/bookings/outcomes?from={FROM}&to={TO}"),
        ADMIN,
    )
    .await
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(
        outcomes["rows"][0]["booking_id"], "site-a/b-1",
        "{outcomes}"
    );
    assert_eq!(outcomes["rows"][0]["instrument_id"], "site-a/nmr-600");
    assert_eq!(outcomes["rows"][0]["outcome"], "used");

    // The hub dies mid-morning of the next day and stays away while the
    // sites take the rest of the day, and a late event that re-derives the
    // day before.
    day_of_traffic(&mut rig, "2026-03-04", 0);
    rig.hub.kill();
    day_of_traffic(&mut rig, "2026-03-04", 1);
    for site in &mut rig.sites {
        site.agents[1].append_at(
            at("2026-03-03T22:00:00Z"),
            vec![transition(State::Off, State::Running)],
        );
        site.agents[1].append_at(
            at("2026-03-03T22:45:00Z"),
            vec![transition(State::Running, State::Off)],
        );
    }
    rig.wait_sites_settled(false).await;
    for site in &rig.sites {
        assert!(
            outbox_len(&site.dir) > 0,
            "{}: with the hub away, the changes wait in the outbox",
            site.id
        );
    }
    // Site A is SIGKILLed too, with its changes waiting, and restarted:
    // its outbox is in its database, so it resumes where it was.
    let waiting = outbox_len(&rig.sites[0].dir);
    rig.sites[0].process.kill();
    rig.sites[0].process.resume();
    wait_healthy(rig.sites[0].http).await;
    assert!(
        outbox_len(&rig.sites[0].dir) >= waiting,
        "site A's restart kept its {waiting} waiting changes"
    );
    rig.hub.resume();
    wait_healthy(rig.hub_http).await;
    rig.wait_hub_equals_sites().await;
    assert_hub_answers_like_the_sites(&rig).await;

    // Per-site freshness.
    let sites = http::get_with_token(rig.hub_http, "/api/v1/sites", ADMIN)
        .await
        .unwrap()
        .json()
        .unwrap();
    let rows = sites["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{sites}");
    for (row, site) in rows.iter().zip(SITES) {
        assert_eq!(row["site_id"], site);
        assert_eq!(row["name"], format!("Campus {site}"));
        assert!(row["last_batch"].is_string(), "{row}");
        assert_eq!(row["instruments"], 2, "{row}");
    }
    assert_a_site_token_sees_its_site_only(&rig).await;
    the_province_above_the_hub_answers_like_the_hub(&rig).await;
    a_site_that_rewrites_history_is_flagged_at_the_hub(&rig).await;
    for site in &mut rig.sites {
        site.process.kill();
    }
}

/// The hub forwards what it holds further up: the province's rows are the
/// hub's, under `campus/`, figure for figure, and its one site is fresh.
async fn the_province_above_the_hub_answers_like_the_hub(rig: &Rig) {
    let hub = rig.hub_hours_as(ADMIN).await;
    assert!(!hub.is_empty());
    let expected: BTreeMap<String, Value> = hub
        .iter()
        .map(|r| {
            (
                format!(
                    "campus/{} {}",
                    r["instrument_id"].as_str().unwrap(),
                    r["period_start"].as_str().unwrap()
                ),
                figures(r),
            )
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let province: BTreeMap<String, Value> = hours(rig.province_http, Some(ADMIN), "")
            .await
            .iter()
            .map(|r| {
                (
                    format!(
                        "{} {}",
                        r["instrument_id"].as_str().unwrap(),
                        r["period_start"].as_str().unwrap()
                    ),
                    figures(r),
                )
            })
            .collect();
        if province == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the province's rows differ from the hub's: {} against {} rows; first of the province: {:?}",
            province.len(),
            expected.len(),
            province.iter().next()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sites = http::get_with_token(rig.province_http, "/api/v1/sites", ADMIN)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(sites["rows"][0]["site_id"], "campus", "{sites}");
    assert_eq!(sites["rows"][0]["instruments"], 4, "{sites}");
}

/// Each site signs a checkpoint over its chains (as `labhours-collector
/// checkpoint sign` does); the hub verifies them. Then site B's database
/// is edited (one agent's newest chained event gets another hash) and
/// re-signed: the hub flags site B, not site A.
async fn a_site_that_rewrites_history_is_flagged_at_the_hub(rig: &Rig) {
    for site in &rig.sites {
        sign_checkpoint(site);
    }
    let rows = wait_sites_row(rig, |rows| {
        rows.iter().all(|r| r["checkpoints"].as_u64() >= Some(2))
    })
    .await;
    for row in &rows {
        assert_eq!(row["checkpoints_verified"], row["checkpoints"], "{row}");
        assert_eq!(row["history"], Value::Null, "{row}");
    }
    let site_b = &rig.sites[1];
    {
        let store = labhours_collector::store::Store::open(
            &site_b.dir,
            labhours_collector::store::Durability::Full,
        )
        .unwrap();
        let changed = store
            .connection()
            .execute(
                "UPDATE events SET chain_hash = zeroblob(32)
                 WHERE agent_id = 'site-b-nmr-600'
                   AND seq = (SELECT MAX(seq) FROM events WHERE agent_id = 'site-b-nmr-600'
                              AND chain_hash IS NOT NULL)",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1, "site B's agent has a chained event");
    }
    sign_checkpoint(site_b);
    let rows = wait_sites_row(rig, |rows| rows[1]["history"].is_string()).await;
    let flagged = rows[1]["history"].as_str().unwrap();
    assert!(
        flagged.contains("history rewritten") && flagged.contains("site-b-nmr-600"),
        "{flagged}"
    );
    assert_eq!(rows[0]["history"], Value::Null, "site A is not flagged");
}

/// Signs a checkpoint of `site`'s store now, with its collector key.
fn sign_checkpoint(site: &Site) {
    let store = labhours_collector::store::Store::open(
        &site.dir,
        labhours_collector::store::Durability::Full,
    )
    .unwrap();
    labhours_collector::evidence::checkpoint::sign(
        store.connection(),
        &site.collector_key,
        &format!("Campus {}", site.id),
        Timestamp::now(),
    )
    .unwrap();
}

/// The hub's `/api/v1/sites` rows once `done` holds of them.
async fn wait_sites_row(rig: &Rig, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer: Value = http::get_with_token(rig.hub_http, "/api/v1/sites", ADMIN)
            .await
            .unwrap()
            .json()
            .unwrap();
        let rows = answer["rows"].as_array().unwrap().clone();
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "the hub's sites: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The hub's token scoped to site A: site A's rows exactly, nothing of
/// site B on any list, and a 404 for anything naming site B.
async fn assert_a_site_token_sees_its_site_only(rig: &Rig) {
    let scoped = rig.hub_hours_as(SITE_A_EVALUATOR).await;
    let site_a: Vec<Value> = rig
        .hub_hours_as(ADMIN)
        .await
        .into_iter()
        .filter(|r| r["instrument_id"].as_str().unwrap().starts_with("site-a/"))
        .collect();
    assert!(!site_a.is_empty(), "site A has no rows at the hub");
    assert_eq!(scoped, site_a, "the scoped token's hours are site A's");
    for (target, list) in [
        ("/api/v1/instruments".to_owned(), "rows"),
        ("/api/v1/sites".to_owned(), "rows"),
        (
            format!("/api/v1/bookings/outcomes?from={FROM}&to={TO}"),
            "rows",
        ),
    ] {
        let answer: Value = http::get_with_token(rig.hub_http, &target, SITE_A_EVALUATOR)
            .await
            .unwrap()
            .json()
            .unwrap();
        let text = answer.to_string();
        assert!(!text.contains("site-b"), "{target} names site B: {text}");
        assert!(
            !answer[list].as_array().unwrap().is_empty(),
            "{target} is empty for site A: {text}"
        );
    }
    for target in [
        format!("/api/v1/hours?from={FROM}&to={TO}&unit=site-b"),
        format!("/api/v1/hours?from={FROM}&to={TO}&instrument=site-b/nmr-600"),
        format!("/api/v1/instruments/site-b/nmr-600/timeline?from={FROM}&to={TO}"),
    ] {
        let answer = http::get_with_token(rig.hub_http, &target, SITE_A_EVALUATOR)
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            404,
            "{target}: {}",
            answer.text().unwrap_or("")
        );
    }
}
