//! The demo's site: six simulated instruments, their people and bookings,
//! the showcase day that holds every outcome and exception, and the config
//! files the collector and the agents read.

use std::fmt::Write as _;
use std::path::Path;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::profiles::{
    DayPlan, Forced, Intent, PlannedBooking, Profile, Secs, Signal, Span, Usage, Watts, hm,
    plan_day,
};

/// One simulated instrument and how it is wired.
#[derive(Debug, Clone)]
pub struct DemoInstrument {
    pub id: &'static str,
    /// Chinese and English.
    pub name: &'static str,
    pub unit: &'static str,
    /// The meter model its agent is configured with (a preset).
    pub meter: &'static str,
    pub profile: Profile,
    /// `on_above_w`, `running_above_w` of the agent's `[state]`.
    pub on_above_w: f64,
    pub running_above_w: f64,
    /// `[instruments.open_hours]` as TOML, when not the site's.
    pub open_hours: Option<&'static str>,
    /// For `usage_source = "files"`: one result file per run of this length.
    pub file_run_s: Option<Secs>,
    /// The showcase day's forced intents.
    pub showcase: Forced,
}

impl DemoInstrument {
    pub fn agent_id(&self) -> String {
        format!("{}-pc", self.id)
    }

    /// The instrument's plan of `date` (`number` = its place in [`instruments`]).
    pub fn plan(&self, seed: u64, number: usize, date: Date, showcase: Date) -> DayPlan {
        let forced = (date == showcase).then_some(&self.showcase);
        plan_day(&self.profile, seed, number as u32, date, forced)
    }
}

static SEM_SLOTS: [Span; 4] = [
    Span::new(hm(8, 30), hm(10, 30)),
    Span::new(hm(11, 15), hm(12, 15)),
    Span::new(hm(14, 0), hm(16, 0)),
    Span::new(hm(16, 45), hm(18, 15)),
];
static SEM_EVENING: [Span; 1] = [Span::new(hm(19, 0), hm(21, 30))];
static NMR_SLOTS: [Span; 6] = [
    Span::new(hm(8, 0), hm(9, 30)),
    Span::new(hm(9, 30), hm(11, 0)),
    Span::new(hm(11, 0), hm(12, 30)),
    Span::new(hm(13, 30), hm(15, 0)),
    Span::new(hm(15, 0), hm(16, 30)),
    Span::new(hm(16, 30), hm(18, 0)),
];
static NMR_EVENING: [Span; 1] = [Span::new(hm(19, 0), hm(23, 0))];
static QTOF_SLOTS: [Span; 2] = [
    Span::new(hm(9, 0), hm(12, 0)),
    Span::new(hm(13, 30), hm(17, 30)),
];
static QTOF_EVENING: [Span; 1] = [Span::new(hm(18, 30), hm(22, 0))];
static XRD_SLOTS: [Span; 4] = [
    Span::new(hm(9, 0), hm(10, 30)),
    Span::new(hm(10, 30), hm(12, 0)),
    Span::new(hm(14, 0), hm(15, 30)),
    Span::new(hm(15, 30), hm(17, 0)),
];
static CONFOCAL_SLOTS: [Span; 3] = [
    Span::new(hm(9, 0), hm(11, 0)),
    Span::new(hm(14, 0), hm(16, 0)),
    Span::new(hm(16, 30), hm(18, 0)),
];
static FTIR_SLOTS: [Span; 5] = [
    Span::new(hm(9, 0), hm(10, 0)),
    Span::new(hm(10, 0), hm(11, 0)),
    Span::new(hm(14, 0), hm(15, 0)),
    Span::new(hm(15, 0), hm(16, 0)),
    Span::new(hm(16, 0), hm(17, 0)),
];
static SATURDAY: [Span; 1] = [Span::new(hm(9, 0), hm(12, 0))];
static NONE: [Span; 0] = [];

/// Open 08:00–22:00 on weekdays, 09:00–17:00 on Saturdays.
const LONG_HOURS: &str = r#"{ weekly = { mon = ["08:00-22:00"], tue = ["08:00-22:00"], wed = ["08:00-22:00"], thu = ["08:00-22:00"], fri = ["08:00-22:00"], sat = ["09:00-17:00"] } }"#;
/// Around the clock (automated sample changer).
const ALWAYS: &str = r#"{ weekly = { mon = ["00:00-24:00"], tue = ["00:00-24:00"], wed = ["00:00-24:00"], thu = ["00:00-24:00"], fri = ["00:00-24:00"], sat = ["00:00-24:00"], sun = ["00:00-24:00"] } }"#;

/// The six instruments of the demo site.
pub fn instruments() -> Vec<DemoInstrument> {
    let base = |signal, watts| Profile {
        signal,
        watts,
        weekday_slots: &NONE,
        evening_slots: &NONE,
        saturday_slots: &SATURDAY,
        booked_share: 0.7,
        evening_share: 0.25,
        walk_up_share: 0.2,
        off_at_night: false,
        can_fault: false,
        can_drop_out: false,
    };
    vec![
        DemoInstrument {
            id: "sem-01",
            name: "场发射扫描电子显微镜 / Field-emission SEM",
            unit: "Materials 材料学院/Electron Microscopy 电镜中心",
            meter: "sdm120",
            profile: Profile {
                weekday_slots: &SEM_SLOTS,
                evening_slots: &SEM_EVENING,
                can_drop_out: true,
                ..base(
                    Signal::Power,
                    Watts {
                        off: 4.0,
                        standby: 420.0,
                        running: 1650.0,
                    },
                )
            },
            on_above_w: 100.0,
            running_above_w: 1000.0,
            open_hours: Some(LONG_HOURS),
            file_run_s: None,
            showcase: Forced {
                slots: vec![
                    (0, Intent::Overrun),
                    (1, Intent::Normal),
                    (2, Intent::LateStart),
                ],
                walk_up: false,
            },
        },
        DemoInstrument {
            id: "nmr-600",
            name: "600 MHz 核磁共振波谱仪 / 600 MHz NMR spectrometer",
            unit: "Chemistry 化学学院/NMR Centre 核磁中心",
            meter: "sdm630",
            profile: Profile {
                weekday_slots: &NMR_SLOTS,
                evening_slots: &NMR_EVENING,
                booked_share: 0.75,
                evening_share: 0.4,
                walk_up_share: 0.1,
                can_fault: true,
                ..base(
                    Signal::StatusLine,
                    Watts {
                        off: 1500.0,
                        standby: 1800.0,
                        running: 1850.0,
                    },
                )
            },
            on_above_w: 100.0,
            running_above_w: 20_000.0,
            open_hours: Some(ALWAYS),
            file_run_s: None,
            showcase: Forced {
                slots: vec![(1, Intent::Fault), (3, Intent::Normal)],
                walk_up: false,
            },
        },
        DemoInstrument {
            id: "qtof-01",
            name: "四极杆飞行时间质谱仪 / Q-TOF mass spectrometer",
            unit: "Life Sciences 生命科学学院/Proteomics 蛋白质组学平台",
            meter: "sdm120",
            profile: Profile {
                weekday_slots: &QTOF_SLOTS,
                evening_slots: &QTOF_EVENING,
                booked_share: 0.8,
                walk_up_share: 0.15,
                ..base(
                    Signal::Files,
                    Watts {
                        off: 900.0,
                        standby: 1100.0,
                        running: 1150.0,
                    },
                )
            },
            on_above_w: 100.0,
            running_above_w: 5000.0,
            open_hours: None,
            file_run_s: Some(1800),
            showcase: Forced {
                slots: vec![(0, Intent::Normal), (1, Intent::EarlyFinish)],
                walk_up: false,
            },
        },
        DemoInstrument {
            id: "xrd-01",
            name: "X 射线衍射仪 / X-ray diffractometer",
            unit: "Materials 材料学院/Structure Analysis 结构分析室",
            meter: "ddsu666",
            profile: Profile {
                weekday_slots: &XRD_SLOTS,
                evening_share: 0.0,
                can_drop_out: true,
                ..base(
                    Signal::Power,
                    Watts {
                        off: 3.0,
                        standby: 350.0,
                        running: 2400.0,
                    },
                )
            },
            on_above_w: 100.0,
            running_above_w: 1500.0,
            open_hours: None,
            file_run_s: None,
            showcase: Forced {
                slots: vec![
                    (0, Intent::NoShow),
                    (2, Intent::Cancelled),
                    (3, Intent::Normal),
                ],
                walk_up: false,
            },
        },
        DemoInstrument {
            id: "confocal-01",
            name: "激光共聚焦显微镜 / Confocal laser scanning microscope",
            unit: "Life Sciences 生命科学学院/Imaging 成像平台",
            meter: "sdm120",
            profile: Profile {
                weekday_slots: &CONFOCAL_SLOTS,
                evening_share: 0.0,
                walk_up_share: 0.35,
                off_at_night: true,
                can_drop_out: true,
                ..base(
                    Signal::Power,
                    Watts {
                        off: 2.0,
                        standby: 180.0,
                        running: 650.0,
                    },
                )
            },
            on_above_w: 50.0,
            running_above_w: 450.0,
            open_hours: None,
            file_run_s: None,
            showcase: Forced {
                slots: vec![(0, Intent::Normal), (1, Intent::NoData)],
                walk_up: true,
            },
        },
        DemoInstrument {
            id: "ftir-01",
            name: "傅里叶变换红外光谱仪 / FT-IR spectrometer",
            unit: "Chemistry 化学学院/Analytical Lab 分析测试中心",
            meter: "sdm120",
            profile: Profile {
                weekday_slots: &FTIR_SLOTS,
                evening_share: 0.0,
                booked_share: 0.6,
                walk_up_share: 0.6,
                off_at_night: true,
                ..base(
                    Signal::Power,
                    Watts {
                        off: 1.0,
                        standby: 60.0,
                        running: 240.0,
                    },
                )
            },
            on_above_w: 20.0,
            running_above_w: 150.0,
            open_hours: None,
            file_run_s: None,
            showcase: Forced {
                slots: vec![(1, Intent::Normal)],
                walk_up: true,
            },
        },
    ]
}

/// Who books: `(user, group)`; external users for `external` bookings.
const INTERNAL: [(&str, &str); 8] = [
    ("张伟", "化学学院/李明课题组"),
    ("李娜", "材料学院/王强课题组"),
    ("王芳", "生命科学学院/陈静课题组"),
    ("刘洋", "物理学院/赵磊课题组"),
    ("陈晨", "化学学院/周涛课题组"),
    ("杨帆", "材料学院/王强课题组"),
    ("Emily Chen", "Life Sciences/Garcia Lab"),
    ("黄磊", "环境学院/孙悦课题组"),
];
const EXTERNAL: [(&str, &str); 3] = [
    ("赵敏", "华东新材料研究院"),
    ("孙浩", "江南生物医药有限公司"),
    ("Tom Baker", "Acme Analytics Ltd"),
];

fn person(b: &PlannedBooking) -> (&'static str, &'static str) {
    let n = b.person as usize;
    match b.usage {
        Usage::External => EXTERNAL[n % EXTERNAL.len()],
        Usage::Teaching => ("仪器分析课程", "化学学院/教学中心"),
        Usage::Training => ("新用户上机培训", "平台/培训"),
        Usage::Research => INTERNAL[n % INTERNAL.len()],
    }
}

/// The day whose bookings show every outcome and exception: the last
/// weekday before `today` that the history covers (else yesterday).
pub fn showcase_day(today: Date, history_start: Date) -> Date {
    let mut d = today.yesterday().unwrap_or(today);
    let yesterday = d;
    while d >= history_start {
        if !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) {
            return d;
        }
        match d.yesterday() {
            Ok(prev) => d = prev,
            Err(_) => break,
        }
    }
    yesterday
}

/// Local midnight of `date` in `zone`.
pub fn midnight(date: Date, zone: &TimeZone) -> Timestamp {
    date.to_zoned(zone.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The instant of `secs` after local midnight of `day_start`.
pub fn at(day_start: Timestamp, secs: Secs) -> Timestamp {
    day_start
        .checked_add(SignedDuration::from_secs(i64::from(secs)))
        .unwrap_or(day_start)
}

/// The bookings CSV (the collector's import format) for every instrument
/// and every day in `days`, and how many rows it has.
pub fn bookings_csv(
    seed: u64,
    zone: &TimeZone,
    days: impl Iterator<Item = Date> + Clone,
    showcase: Date,
) -> (String, usize) {
    // The csv crate quotes a name or group that holds a comma or a quote.
    let mut out = csv::Writer::from_writer(Vec::new());
    let record = |out: &mut csv::Writer<Vec<u8>>, fields: [&str; 8]| {
        out.write_record(fields).expect("writing to memory");
    };
    record(
        &mut out,
        [
            "booking_id",
            "instrument_id",
            "user",
            "group",
            "usage_type",
            "start",
            "end",
            "status",
        ],
    );
    let mut rows = 0;
    for (number, inst) in instruments().iter().enumerate() {
        for date in days.clone() {
            let plan = inst.plan(seed, number, date, showcase);
            let day_start = midnight(date, zone);
            for b in &plan.bookings {
                let (user, group) = person(b);
                let stamp = |s| {
                    at(day_start, s)
                        .to_zoned(zone.clone())
                        .strftime("%Y-%m-%dT%H:%M:%S%:z")
                        .to_string()
                };
                record(
                    &mut out,
                    [
                        &booking_id(inst.id, date, b.index),
                        inst.id,
                        user,
                        group,
                        b.usage.as_str(),
                        &stamp(b.slot.start),
                        &stamp(b.slot.end),
                        if b.intent == Intent::Cancelled {
                            "cancelled"
                        } else {
                            "confirmed"
                        },
                    ],
                );
                rows += 1;
            }
        }
    }
    let bytes = out.into_inner().expect("flushing to memory");
    (
        String::from_utf8(bytes).expect("the fields are UTF-8"),
        rows,
    )
}

pub fn booking_id(instrument: &str, date: Date, index: usize) -> String {
    format!(
        "DEMO-{}-{}-{}",
        instrument.to_uppercase(),
        date.strftime("%Y%m%d"),
        index + 1
    )
}

/// Where the demo keeps each part, under its data folder.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: std::path::PathBuf,
}

impl Layout {
    pub fn collector_config(&self) -> std::path::PathBuf {
        self.root.join("collector.toml")
    }
    pub fn agent_config(&self, id: &str) -> std::path::PathBuf {
        self.root.join("agents").join(format!("{id}.toml"))
    }
    pub fn agent_data(&self, id: &str) -> std::path::PathBuf {
        self.root.join("agents").join(id)
    }
    pub fn results(&self, id: &str) -> std::path::PathBuf {
        self.root.join("instruments").join(id).join("results")
    }
    pub fn history_log(&self, id: &str) -> std::path::PathBuf {
        self.root.join("instruments").join(id).join("history.csv")
    }
    pub fn bookings(&self) -> std::path::PathBuf {
        self.root.join("bookings.csv")
    }
}

/// TOML's basic string for a path or text.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The collector's config: the registry, the site's open hours, the tokens.
pub fn collector_toml(
    data_dir: &Path,
    zone: &str,
    mqtt: std::net::SocketAddr,
    http: std::net::SocketAddr,
    tokens: &[(&str, &str, String)],
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `labhours-collector demo` at every start; edits are overwritten.\n\
         data_dir = {}\n\n[site]\nname = \"labhours 演示平台 / labhours demo site\"\ntime_zone = {}\n\n\
         [mqtt]\nembedded_listen = \"{mqtt}\"\n\n[http]\nlisten = \"{http}\"\n",
        quoted(&data_dir.display().to_string()),
        quoted(zone),
    );
    for (name, role, sha256) in tokens {
        let _ = writeln!(
            t,
            "[[http.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n"
        );
    }
    let _ = writeln!(
        t,
        "[open_hours]\nweekly = {{ mon = [\"08:30-12:00\", \"13:30-17:30\"], tue = [\"08:30-12:00\", \"13:30-17:30\"], \
         wed = [\"08:30-12:00\", \"13:30-17:30\"], thu = [\"08:30-12:00\", \"13:30-17:30\"], fri = [\"08:30-12:00\", \"13:30-17:30\"] }}\n"
    );
    for inst in instruments() {
        let _ = writeln!(
            t,
            "[[instruments]]\nid = \"{}\"\nname = {}\nunit = {}",
            inst.id,
            quoted(inst.name),
            quoted(inst.unit)
        );
        if let Some(run) = inst.file_run_s {
            let _ = writeln!(t, "usage_source = \"files\"\nfile_run_s = {run}");
        }
        if let Some(open) = inst.open_hours {
            let _ = writeln!(t, "open_hours = {open}");
        }
        let _ = writeln!(
            t,
            "thresholds = {{ on_above_w = {:.1}, running_above_w = {:.1} }}\n",
            inst.on_above_w, inst.running_above_w
        );
    }
    t
}

/// Status rules of the simulated NMR (its manual's messages).
pub const STATUS_RULES: &str = r#"[[status.rules]]
pattern = "ACQUISITION (STARTED|RUNNING)(?: sample=(?P<sample>\\S+))?"
state = "running"
[[status.rules]]
pattern = "ERROR|FAULT"
state = "fault"
[[status.rules]]
pattern = "IDLE|READY"
state = "standby"
"#;

/// Poll interval of the demo's agents.
pub const POLL_INTERVAL_MS: u64 = 2000;
/// Step of the generated history (one sample every this many seconds).
pub const HISTORY_STEP_S: u32 = 10;

/// One agent's config: its meter on the simulator, the NMR's status port,
/// the Q-TOF's result folder.
pub fn agent_toml(
    inst: &DemoInstrument,
    layout: &Layout,
    mqtt_port: u16,
    meter: std::net::SocketAddr,
    status_port: Option<&str>,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `labhours-collector demo` at every start; edits are overwritten.\n\
         agent_id = \"{}\"\ninstrument_id = \"{}\"\ndata_dir = {}\npoll_interval_ms = {POLL_INTERVAL_MS}\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nheartbeat_interval_s = 30\nack_timeout_s = 10\n\n\
         [state]\non_above_w = {:.1}\nrunning_above_w = {:.1}\n# The history is sampled every {HISTORY_STEP_S} s.\nmax_sample_gap_s = 30.0\n\n\
         [[meters]]\nname = \"mains\"\nmodel = \"{}\"\ntcp = {{ host = \"{}\", port = {} }}\n",
        inst.agent_id(),
        inst.id,
        quoted(&layout.agent_data(inst.id).display().to_string()),
        inst.on_above_w,
        inst.running_above_w,
        inst.meter,
        meter.ip(),
        meter.port(),
    );
    if let Some(port) = status_port {
        let _ = writeln!(
            t,
            "[status]\nserial = {{ serial_port = {} }}\n{STATUS_RULES}",
            quoted(port)
        );
    }
    if inst.file_run_s.is_some() {
        let _ = writeln!(
            t,
            "[[results]]\nfolder = {}\ninclude = [\"**/*.raw\"]\nmin_age_s = 2\nrescan_interval_s = 60\n\
             sample_id_pattern = \"(?P<sample>S\\\\d{{4}})\"\n",
            quoted(&layout.results(inst.id).display().to_string())
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::profiles::Doing;

    fn date(s: &str) -> Date {
        s.parse().expect("date")
    }

    #[test]
    fn the_showcase_day_is_the_last_weekday_the_history_covers() {
        // 2026-11-30 is a Monday.
        assert_eq!(
            showcase_day(date("2026-11-30"), date("2026-11-27")),
            date("2026-11-27")
        );
        assert_eq!(
            showcase_day(date("2026-12-02"), date("2026-11-29")),
            date("2026-12-01")
        );
        // A history of one day on a Monday: Sunday, whatever it holds.
        assert_eq!(
            showcase_day(date("2026-11-30"), date("2026-11-29")),
            date("2026-11-29")
        );
    }

    #[test]
    fn the_showcase_day_holds_every_outcome_and_exception() {
        let day = date("2026-11-27");
        let mut intents = std::collections::BTreeSet::new();
        let mut walk_ups = 0;
        for (n, inst) in instruments().iter().enumerate() {
            let plan = inst.plan(1, n, day, day);
            intents.extend(plan.bookings.iter().map(|b| b.intent.as_str()));
            walk_ups += plan
                .activities
                .iter()
                .filter(|a| a.booking.is_none())
                .count();
            if inst.id == "nmr-600" {
                assert!(
                    plan.activities
                        .iter()
                        .any(|a| matches!(a.doing, Doing::Fault { .. }))
                );
            }
        }
        for want in [
            "normal",
            "no_show",
            "late_start",
            "early_finish",
            "overrun",
            "cancelled",
            "fault",
            "no_data",
        ] {
            assert!(intents.contains(want), "{want} missing from {intents:?}");
        }
        assert!(walk_ups >= 2);
    }

    #[test]
    fn the_generated_configs_are_valid() {
        let dir = Path::new("/tmp/labhours-demo-test");
        let layout = Layout {
            root: dir.to_path_buf(),
        };
        let text = collector_toml(
            dir,
            "Asia/Shanghai",
            "127.0.0.1:1883".parse().expect("addr"),
            "127.0.0.1:8080".parse().expect("addr"),
            &[("demo-evaluator", "evaluator", "a".repeat(64))],
        );
        let config =
            crate::config::CollectorConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.instruments.len(), 6);
        crate::registry::Registry::from_config(&config).expect("a registry");
        for inst in instruments() {
            let status = (inst.profile.signal == Signal::StatusLine).then_some("/dev/pts/9");
            let text = agent_toml(
                &inst,
                &layout,
                1883,
                "127.0.0.1:5020".parse().expect("addr"),
                status,
            );
            let agent = labhours_agent::config::AgentConfig::parse(&text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(agent.instrument_id, inst.id);
            assert_eq!(agent.status.is_some(), status.is_some());
            assert_eq!(agent.results.len(), usize::from(inst.file_run_s.is_some()));
        }
    }

    #[test]
    fn bookings_import_cleanly_with_local_offsets() {
        let zone = TimeZone::get("Asia/Shanghai").expect("zone");
        let days = (0..7).map(|i| {
            date("2026-11-23")
                .checked_add(jiff::Span::new().days(i))
                .expect("date")
        });
        let (csv, rows) = bookings_csv(3, &zone, days, date("2026-11-27"));
        assert!(rows > 40, "{rows}");
        let parsed = crate::bookings::parse(
            crate::bookings::Format::Csv,
            &csv,
            &crate::bookings::ParseContext::new(zone),
        );
        let bookings = parsed.into_result().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(bookings.len(), rows);
        assert!(csv.contains("DEMO-XRD-01-20261127-3,xrd-01,"));
        assert!(csv.contains("+08:00,"));
    }
}
