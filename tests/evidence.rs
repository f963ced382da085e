//! Checkpoints, evidence export and `labhours-verify` (issue 14,
//! docs/evidence.md) against a real SQLite store filled the way ingest
//! fills it: signed, chained envelopes committed through `Store::commit`,
//! bookings through the importer, figures from the reconciler.
//!
//! The claims: a clean bundle verifies; an event edited in the database,
//! a booking edited in the database, and any one byte flipped anywhere in
//! the bundle are each caught and named.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use labhours_collector::bookings::store::ImportOptions;
use labhours_collector::bookings::{Booking, BookingStatus, Parsed, UsageType};
use labhours_collector::config::CollectorConfig;
use labhours_collector::evidence::{checkpoint, export, verify};
use labhours_collector::store::{Batch, Durability, Received, Store};
use labhours_shared::state::State;
use labhours_shared::trust::{ChainHash, Signer, chain_hash};
use labhours_shared::wire::{
    ChainedEnvelope, Event, EventKind, Heartbeat, RawRecord, TransitionSource, decode_envelope,
};

const INSTRUMENT: &str = "nmr-600";
const AGENT: &str = "agent-nmr";

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: CollectorConfig,
    signer: Signer,
    records: Vec<RawRecord>,
    head: ChainHash,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        let text = format!(
            r#"
            data_dir = "{}"
            [site]
            name = "Test Lab"
            time_zone = "UTC"
            [[instruments]]
            id = "{INSTRUMENT}"
            name = "NMR 600"
            "#,
            root.join("data").display()
        );
        let config = CollectorConfig::parse(&text).expect("config");
        let signer = Signer::from_pkcs8(&Signer::generate_pkcs8().expect("key")).expect("key");
        let lab = Self {
            _dir: dir,
            root,
            config,
            signer,
            records: Vec::new(),
            head: [0; 32],
        };
        let store = lab.store();
        labhours_collector::trust::enrol(
            store.connection(),
            AGENT,
            &lab.signer.public_key(),
            at("2026-03-01T00:00:00Z"),
        )
        .expect("enrol");
        lab
    }

    fn store(&self) -> Store {
        Store::open(&self.config.data_dir, Durability::Full).expect("store")
    }

    fn push(&mut self, t: Timestamp, kind: EventKind) {
        let event = Event {
            seq: self.records.len() as u64 + 1,
            at: t,
            kind,
        };
        let json = serde_json::to_string(&event).expect("json");
        let record = RawRecord {
            seq: event.seq,
            prev: self.head,
            json,
        };
        self.head = chain_hash(&self.head, record.json.as_bytes());
        self.records.push(record);
    }

    /// `days` days from 2026-03-02: a heartbeat every `beat_s` seconds,
    /// the instrument running 08:00–11:00 each day.
    fn history(&mut self, days: i64, beat_s: i64) {
        let start = at("2026-03-02T00:00:00Z").as_second();
        let mut state = State::Off;
        for s in (start..start + days * 86_400).step_by(beat_s as usize) {
            let t = Timestamp::from_second(s).expect("ts");
            let hour = (s - start).rem_euclid(86_400) / 3600;
            let want = if (8..11).contains(&hour) {
                State::Running
            } else {
                State::Standby
            };
            if want != state {
                self.push(
                    t,
                    EventKind::Transition {
                        from: state,
                        to: want,
                        source: TransitionSource::Power,
                        reason: "test".into(),
                    },
                );
                state = want;
            }
            self.push(
                t,
                EventKind::Heartbeat(Heartbeat {
                    uptime_s: 1,
                    backlog: 0,
                    oldest_unacked_age_s: None,
                    clock: t,
                    version: "test".into(),
                }),
            );
        }
    }

    /// Commits every record as signed envelopes of `per` events.
    fn deliver(&self, per: usize) {
        let mut store = self.store();
        let mut acked = 0;
        for chunk in self.records.chunks(per) {
            let message = ChainedEnvelope {
                agent_id: AGENT,
                instrument_id: INSTRUMENT,
                sent_at: at("2026-03-01T00:00:00Z"),
                acked_through: acked,
                key_id: Some(self.signer.key_id()),
                rotation: None,
            }
            .encode(chunk)
            .expect("encodes");
            let payload = self.signer.sign_payload(&message);
            let outcome = store
                .commit(&Batch {
                    envelopes: vec![Received {
                        received_at: Timestamp::now(),
                        topic: format!("labhours/v1/{AGENT}/events"),
                        message: decode_envelope(&payload).expect("decodes"),
                    }],
                    ..Batch::default()
                })
                .expect("commit");
            assert_eq!(outcome.trust_refusals, 0, "{outcome:?}");
            acked = chunk.last().map_or(acked, |r| r.seq);
        }
    }

    fn book(&self, bookings: &[(&str, &str, &str)]) {
        let parsed = Parsed {
            bookings: bookings
                .iter()
                .enumerate()
                .map(|(i, (id, start, end))| {
                    (
                        i as u64 + 2,
                        Booking {
                            booking_id: (*id).into(),
                            instrument_id: INSTRUMENT.into(),
                            user: "wang".into(),
                            group: "Li lab".into(),
                            usage_type: UsageType::Research,
                            start: at(start),
                            end: at(end),
                            status: BookingStatus::Confirmed,
                        },
                    )
                })
                .collect(),
            ..Parsed::default()
        };
        self.store()
            .import_bookings(
                parsed,
                "test.csv",
                ImportOptions::default(),
                Timestamp::now(),
            )
            .expect("import");
    }

    fn checkpoint(&self) -> checkpoint::Checkpoint {
        let key = checkpoint::load_key(&self.config).expect("collector key");
        checkpoint::sign(
            self.store().connection(),
            &key,
            &self.config.site.name,
            Timestamp::now(),
        )
        .expect("checkpoint")
    }

    fn sql(&self, statement: &str) -> usize {
        self.store()
            .connection()
            .execute(statement, [])
            .expect("sql")
    }

    fn export(&self, name: &str) -> PathBuf {
        let out = self.root.join(name);
        export::export(
            &self.config,
            INSTRUMENT,
            "2026-03-02",
            "2026-03-05",
            &out,
            Timestamp::now(),
        )
        .expect("export");
        out
    }
}

/// Three days of a signed agent, three bookings (one a no-show), a checkpoint.
fn lab() -> Lab {
    let mut lab = Lab::new();
    lab.history(3, 60);
    lab.deliver(200);
    lab.book(&[
        ("b1", "2026-03-02T09:00:00Z", "2026-03-02T11:00:00Z"),
        ("b2", "2026-03-03T08:00:00Z", "2026-03-03T12:00:00Z"),
        ("b3", "2026-03-04T14:00:00Z", "2026-03-04T16:00:00Z"),
    ]);
    lab.checkpoint();
    lab
}

fn problems(dir: &Path) -> Vec<String> {
    verify::verify(dir, None).problems
}

#[test]
fn a_clean_bundle_verifies_and_reports_real_figures() {
    let lab = lab();
    let dir = lab.export("bundle");
    let findings = verify::verify(&dir, None);
    assert_eq!(findings.problems, Vec::<String>::new());
    assert!(findings.events > 800, "{findings:?}");
    assert_eq!(findings.checkpoints, 1);
    let reported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reported.json")).expect("read"))
            .expect("json");
    // Three local days, each with three hours of use; b3 was a no-show.
    let hours = reported["hours"].as_array().expect("rows");
    assert_eq!(hours.len(), 3);
    for row in hours {
        assert_eq!(row["used_hours"], 3.0, "{row}");
    }
    let outcomes = reported["outcomes"].as_array().expect("outcomes");
    let b3 = outcomes
        .iter()
        .find(|o| o["booking_id"] == "b3")
        .expect("b3");
    assert_eq!(b3["outcome"], "no_show");

    // The collector key pinned from elsewhere must be the bundle's.
    let key = checkpoint::load_key(&lab.config).expect("key").public_key();
    assert!(verify::verify(&dir, Some(&key)).verified());
    let other = Signer::from_pkcs8(&Signer::generate_pkcs8().expect("k"))
        .expect("k")
        .public_key();
    let p = verify::verify(&dir, Some(&other)).problems;
    assert!(
        p.iter().any(|l| l.contains("is not the key given")),
        "{p:?}"
    );
}

#[test]
fn an_event_edited_in_the_database_is_caught() {
    let lab = lab();
    // Stretch the first day's run: its transition to idle an hour later.
    let changed = lab.sql(
        "UPDATE events SET payload = replace(payload, '2026-03-02T11:00:00Z', '2026-03-02T12:00:00Z')
         WHERE agent_id = 'agent-nmr' AND type = 'transition' AND at_ms = 1772449200000",
    );
    assert_eq!(changed, 1);
    let seq: i64 = lab
        .store()
        .connection()
        .query_row(
            "SELECT seq FROM events WHERE type = 'transition' AND at_ms = 1772449200000",
            [],
            |r| r.get(0),
        )
        .expect("seq");
    let p = problems(&lab.export("bundle"));
    assert!(
        p.contains(&format!(
            "event seq {seq} of agent {AGENT}: stored content differs from the signed envelope"
        )),
        "{p:?}"
    );
}

#[test]
fn an_event_deleted_from_the_database_is_caught() {
    let lab = lab();
    assert_eq!(lab.sql("DELETE FROM events WHERE seq = 10"), 1);
    let p = problems(&lab.export("bundle"));
    assert!(
        p.iter().any(|l| l.starts_with(&format!(
            "event seq 10 of agent {AGENT}: signed, but missing"
        ))),
        "{p:?}"
    );
}

#[test]
fn a_booking_edited_in_the_database_is_caught_by_the_checkpoint() {
    let lab = lab();
    // b1 an hour longer, without going through an import.
    assert_eq!(
        lab.sql("UPDATE bookings SET end_ms = end_ms + 3600000 WHERE booking_id = 'b1'"),
        1
    );
    let p = problems(&lab.export("bundle"));
    assert!(
        p.iter().any(
            |l| l.starts_with(&format!("bookings of {INSTRUMENT}: the checkpoint of"))
                && l.contains("outside an import")
        ),
        "{p:?}"
    );
}

#[test]
fn a_booking_imported_after_the_newest_checkpoint_is_named_until_one_is_signed() {
    let lab = lab();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    lab.book(&[("b4", "2026-03-04T18:00:00Z", "2026-03-04T19:00:00Z")]);
    let p = problems(&lab.export("before"));
    assert!(
        p.iter()
            .any(|l| l.contains("\"b4\"") && l.contains("after the newest checkpoint")),
        "{p:?}"
    );
    lab.checkpoint();
    assert_eq!(problems(&lab.export("after")), Vec::<String>::new());
}

#[test]
fn one_flipped_byte_anywhere_in_the_bundle_is_caught() {
    let lab = lab();
    let dir = lab.export("bundle");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 11);
    let mut flipped = 0;
    for path in names {
        let original = std::fs::read(&path).expect("read");
        if original.is_empty() {
            continue;
        }
        for at in [0, original.len() / 2, original.len().saturating_sub(2)] {
            let mut bytes = original.clone();
            bytes[at] ^= 0x01;
            std::fs::write(&path, &bytes).expect("write");
            let p = problems(&dir);
            assert!(
                !p.is_empty(),
                "{} byte {at} flipped: verified",
                path.display()
            );
            flipped += 1;
        }
        std::fs::write(&path, &original).expect("restore");
    }
    assert!(flipped >= 27, "{flipped}");
    assert_eq!(problems(&dir), Vec::<String>::new());
}

#[test]
fn a_reported_figure_that_does_not_recompute_is_named_with_both_values() {
    let lab = lab();
    let dir = lab.export("bundle");
    // A figure changed *and* the manifest fixed to match: only the
    // recomputation can tell.
    let path = dir.join("reported.json");
    let mut reported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    reported["hours"][1]["used_hours"] = serde_json::json!(7.25);
    let bytes = serde_json::to_vec_pretty(&reported).expect("json");
    std::fs::write(&path, &bytes).expect("write");
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("read")).expect("json");
    manifest["files"]["reported.json"] =
        serde_json::json!(labhours_collector::evidence::bundle::sha256(&bytes));
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("write");
    assert_eq!(
        problems(&dir),
        vec!["2026-03-03 used_hours: reported 7.25, recomputed 3.0".to_owned()]
    );
}

/// Writes an instrument-year bundle for `scripts/bench-verify.sh`
/// (`BENCH_BUNDLE` names the directory to create).
#[test]
#[ignore = "builds a year of evidence; run by scripts/bench-verify.sh"]
fn write_year_bundle() {
    let out = PathBuf::from(std::env::var("BENCH_BUNDLE").expect("BENCH_BUNDLE"));
    let beat_s: i64 = std::env::var("BENCH_BEAT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut lab = Lab::new();
    lab.history(365, beat_s);
    lab.deliver(500);
    let days: Vec<(String, String, String)> = (0..365)
        .map(|d| {
            let day = at("2026-03-02T00:00:00Z").as_second() + d * 86_400;
            let t = |h: i64| {
                Timestamp::from_second(day + h * 3600)
                    .expect("ts")
                    .to_string()
            };
            (format!("y{d}"), t(9), t(11))
        })
        .collect();
    let refs: Vec<(&str, &str, &str)> = days
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    lab.book(&refs);
    lab.checkpoint();
    export::export(
        &lab.config,
        INSTRUMENT,
        "2026-03-02",
        "2027-03-02",
        &out,
        Timestamp::now(),
    )
    .expect("export");
    println!("{} events", lab.records.len());
}

/// An independent implementation (Python's `cryptography`, following
/// docs/evidence.md) verifies a checkpoint the collector signed, and
/// refuses it with one byte changed.
#[test]
fn python_verifies_a_checkpoint_as_documented() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: python3 with `cryptography` is not installed");
        return;
    }
    let lab = lab();
    let c = lab.checkpoint();
    let key = checkpoint::load_key(&lab.config).expect("key").public_key();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/check_checkpoint.py");
    let run = |note: &str| {
        let file = lab.root.join("note.txt");
        std::fs::write(&file, note).expect("write");
        std::process::Command::new("python3")
            .arg(&script)
            .arg(&file)
            .arg(&c.key_name)
            .arg(key.to_string())
            .output()
            .expect("python3 runs")
    };
    let ok = run(&c.note);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.starts_with("labhours/Test-Lab\ntime "), "{stdout}");
    assert!(stdout.contains(&format!("\nagent {AGENT} ")), "{stdout}");
    assert!(
        stdout.contains(&format!("\ninputs {INSTRUMENT} 3 ")),
        "{stdout}"
    );
    let bad = run(&c.note.replacen("agent ", "agent  ", 1));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("InvalidSignature"));
}

/// The command line `labhours-verify` runs (its `main` is only this call):
/// exit 0 on a clean bundle, 1 when something differs, 2 for a bad key.
#[test]
fn the_command_exits_0_when_verified_1_when_not_2_on_bad_arguments() {
    let lab = lab();
    let dir = lab.export("bundle");
    let code = |key: Option<&str>| {
        let args = verify::Args {
            bundle: dir.clone(),
            collector_key: key.map(str::to_owned),
        };
        format!("{:?}", verify::run(args))
    };
    assert_eq!(code(None), format!("{:?}", std::process::ExitCode::SUCCESS));
    assert_eq!(
        code(Some("nonsense")),
        format!("{:?}", std::process::ExitCode::from(2))
    );
    let events = dir.join("events.jsonl");
    let mut bytes = std::fs::read(&events).expect("read");
    bytes[100] ^= 1;
    std::fs::write(&events, bytes).expect("write");
    assert_eq!(code(None), format!("{:?}", std::process::ExitCode::from(1)));
}
