//! A small, fixed scenario for the dashboard's tests: the route tests
//! (`dashboard/tests.rs`) and the browser check (`tests/browser/`, seeded by
//! `cargo run --example dashboard_scenario`). Events go through the
//! store's real commit path (as ingest commits them) and bookings through
//! its real import.
//!
//! On `day` (a local date in Asia/Shanghai), instrument `nmr-600`:
//!
//! - booking `b-noshow` 09:00–11:00: nobody comes (the instrument is off);
//! - booking `b-overrun` 13:00–15:00: used 13:00–16:00 (an overrun);
//! - unbooked use 16:30–17:30;
//! - power summaries every 5 minutes 08:00–18:00 (off 5 W, running 850 W,
//!   standby 60 W), thresholds on 20 W / running 400 W;
//! - a result file at 14:00; one quarantined payload from its agent.
//!
//! Instrument `ms-1` only has an agent that said it is online.

use std::path::Path;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use labhours_shared::state::State;
use labhours_shared::wire::{
    AgentStatus, Envelope, Event, EventKind, Heartbeat, Presence, ResultFile, SCHEMA_VERSION,
    Summary, TransitionSource,
};

use crate::bookings::store::ImportOptions;
use crate::bookings::{Booking, BookingStatus, Parsed, UsageType};
use crate::store::{Batch, Durability, Quarantined, Received, Store};

/// The site zone of the scenario.
pub const ZONE: &str = "Asia/Shanghai";
/// The long-named instrument.
pub const NMR: &str = "nmr-600";
pub const NMR_NAME: &str = "NMR 600 MHz Bruker Avance NEO cryoprobe (room B-114)";
/// Tokens of the scenario's config (test secrets, nothing else).
pub const ADMIN_TOKEN: &str = "lh_dashboard-admin-test-token";
pub const EVALUATOR_TOKEN: &str = "lh_dashboard-evaluator-test-token";

/// The collector config of the scenario, with both tokens when `tokens`.
pub fn config(data_dir: &Path, listen: &str, tokens: bool) -> String {
    let mut text = format!(
        r#"data_dir = {data_dir:?}

[site]
name = "Dashboard scenario"
time_zone = "{ZONE}"

[mqtt]
embedded_listen = "127.0.0.1:0"

[http]
listen = "{listen}"
"#,
        data_dir = data_dir.display().to_string(),
    );
    if tokens {
        text.push_str(&format!(
            r#"
[[http.tokens]]
name = "office-admin"
role = "admin"
sha256 = "{}"

[[http.tokens]]
name = "evaluation-office"
role = "evaluator"
sha256 = "{}"
"#,
            crate::api::hash_token(ADMIN_TOKEN),
            crate::api::hash_token(EVALUATOR_TOKEN)
        ));
    }
    text.push_str(&format!(
        r#"
[[instruments]]
id = "{NMR}"
name = "{NMR_NAME}"
unit = "Chemistry/NMR Centre"

[instruments.thresholds]
on_above_w = 20.0
running_above_w = 400.0

[[instruments]]
id = "ms-1"
name = "QTOF mass spectrometer"
unit = "Chemistry/Mass Spec"
"#
    ));
    text
}

fn local(day: Date, hour: i8, minute: i8) -> Timestamp {
    day.at(hour, minute, 0, 0)
        .to_zoned(TimeZone::get(ZONE).expect("zone"))
        .expect("a local time")
        .timestamp()
}

fn state_at(day: Date, t: Timestamp) -> State {
    let hm = |h, m| local(day, h, m);
    if t >= hm(13, 0) && t < hm(16, 0) || t >= hm(16, 30) && t < hm(17, 30) {
        State::Running
    } else if t >= hm(16, 0) && t < hm(16, 30) {
        State::Standby
    } else {
        State::Off
    }
}

fn booking(id: &str, day: Date, from: (i8, i8), to: (i8, i8)) -> Booking {
    Booking {
        booking_id: id.into(),
        instrument_id: NMR.into(),
        user: "wang".into(),
        group: "Li lab".into(),
        usage_type: UsageType::Research,
        start: local(day, from.0, from.1),
        end: local(day, to.0, to.1),
        status: BookingStatus::Confirmed,
    }
}

/// Writes the scenario's events and bookings into the store at `data_dir`
/// (created and migrated if needed).
pub fn seed(data_dir: &Path, day: Date) -> anyhow::Result<()> {
    let mut store = Store::open(data_dir, Durability::Normal)?;
    let agent = format!("agent-{NMR}");
    let mut events = Vec::new();
    let mut seq = 0;
    let mut push = |at: Timestamp, kind: EventKind| {
        seq += 1;
        events.push(Event { seq, at, kind });
    };
    let mut t = local(day, 8, 0);
    let end = local(day, 18, 0);
    let mut last = None;
    while t < end {
        let state = state_at(day, t);
        if last != Some(state) {
            push(
                t,
                EventKind::Transition {
                    from: last.unwrap_or(State::Unknown),
                    to: state,
                    source: TransitionSource::Power,
                    reason: "scenario".into(),
                },
            );
            last = Some(state);
        }
        let watts = match state {
            State::Running => 850.0,
            State::Standby => 60.0,
            _ => 5.0,
        };
        let next = t + SignedDuration::from_mins(5);
        push(
            t,
            EventKind::Summary(Summary {
                end: next,
                samples: 300,
                failed_reads: 0,
                min_w: Some(watts - 2.0),
                avg_w: Some(watts),
                max_w: Some(watts + 2.0),
                energy_wh: watts / 12.0,
                covered_s: 300.0,
                avg_v: None,
                avg_a: None,
            }),
        );
        // A sign of life every minute (silence is `unknown`).
        for minute in 0..5 {
            let at = t + SignedDuration::from_mins(minute);
            push(
                at,
                EventKind::Heartbeat(Heartbeat {
                    uptime_s: 1,
                    backlog: 0,
                    oldest_unacked_age_s: None,
                    clock: at,
                    version: "0.1.0".into(),
                }),
            );
        }
        t = next;
    }
    push(
        local(day, 14, 0),
        EventKind::ResultFile(ResultFile {
            path: "wang/2025-03-03/spectrum-01.fid".into(),
            size_bytes: 524_288,
            sha256: "ab".repeat(32),
            mtime: local(day, 14, 0),
            sample_id: Some("S-17".into()),
        }),
    );
    events.sort_by_key(|e| e.at);
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    let received = end;
    let batch = Batch {
        envelopes: vec![Received {
            received_at: received,
            topic: format!("labhours/v1/{agent}/events"),
            message: Envelope {
                v: SCHEMA_VERSION,
                agent_id: agent.clone(),
                instrument_id: NMR.into(),
                sent_at: received,
                acked_through: 0,
                events,
            }
            .into(),
        }],
        statuses: ["agent-nmr-600", "agent-ms-1"]
            .into_iter()
            .map(|a| Received {
                received_at: Timestamp::now(),
                topic: format!("labhours/v1/{a}/status"),
                message: AgentStatus {
                    v: SCHEMA_VERSION,
                    agent_id: a.into(),
                    instrument_id: a.trim_start_matches("agent-").into(),
                    status: Presence::Online,
                    at: Some(Timestamp::now()),
                    version: "0.1.0".into(),
                    state_rules: None,
                },
            })
            .collect(),
        quarantined: vec![Quarantined::new(
            local(day, 12, 0),
            &format!("labhours/v1/{agent}/events"),
            Some(&agent),
            crate::quarantine::Kind::Undecodable,
            "payload is not valid JSON".into(),
            b"{not json",
        )],
    };
    store.commit(&batch)?;
    let parsed = Parsed {
        bookings: vec![
            (2, booking("b-noshow", day, (9, 0), (11, 0))),
            (3, booking("b-overrun", day, (13, 0), (15, 0))),
        ],
        ..Parsed::default()
    };
    store.import_bookings(parsed, "scenario.csv", ImportOptions::default(), received)?;
    Ok(())
}
