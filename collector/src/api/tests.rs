//! The router against a fake `Reports`: what each route asks of it, what it
//! answers, and every error's status and parameter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::Timestamp;
use jiff::civil::date;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiState, app, hash_token};
use crate::bookings::store::{ImportOptions, ImportReport, Updated};
use crate::bookings::{Booking, BookingStatus, RowError, UsageType};
use crate::config::{TokenConfig, TokenRole};
use crate::quarantine::{Detail, Entry, Filter, Kind};
use crate::reconcile::PeriodUnit;
use crate::verified::health::{QuarantineHealth, ReconciliationHealth};
use crate::verified::*;

const ADMIN: &str = "lh_admin-secret";
const EVALUATOR: &str = "lh_evaluator-secret";

fn now() -> Timestamp {
    "2025-04-02T10:00:00Z".parse().unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Hours(HoursQuery),
    Outcomes(Range, Option<String>),
    Sessions(Range, Option<String>),
    Timeline(String, Range),
    Instruments(Timestamp),
    AddCorrection(NewCorrection, String, Timestamp),
    Corrections(Range, Option<String>),
    Import(Vec<(u64, Booking)>, ImportOptions, Timestamp),
    Health(Timestamp),
    QuarantineList(Filter, Option<Edge>, Option<Edge>),
}

/// Records every call; answers fixed rows. Instrument `nope` is unknown;
/// instrument `broken` fails with a database error.
#[derive(Debug, Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn check(instrument: Option<&str>) -> Result<(), QueryError> {
        match instrument {
            Some("nope") => Err(QueryError::UnknownInstrument("nope".into())),
            Some("broken") => Err(QueryError::Db(rusqlite::Error::QueryReturnedNoRows)),
            _ => Ok(()),
        }
    }
}

fn hours_row() -> HoursRow {
    HoursRow {
        instrument_id: Some("nmr-600".into()),
        name: Some("600 MHz NMR".into()),
        unit: Some("Chemistry/NMR Centre".into()),
        instruments: 1,
        period_start: "2025-03-01T00:00:00+08:00".into(),
        period_end: "2025-04-01T00:00:00+08:00".into(),
        used_hours: 12.5,
        booked_hours: 10.0,
        booked_used_hours: 9.25,
        unbooked_hours: 3.25,
        by_usage_type: BTreeMap::from([("research".into(), 9.25), ("unassigned".into(), 3.25)]),
        external_hours: 0.0,
        share_rate: Some(0.0),
        open_hours: None,
        utilization: Some(0.02),
        no_show_count: 1,
        fault_hours: 0.5,
        unknown_hours: 2.0,
        coverage: 0.99,
        result_files: 7,
        energy_kwh: None,
        corrected: CorrectedHours {
            assigned_hours: 0.0,
            unbooked_hours: 1.25,
            by_usage_type: BTreeMap::from([("research".into(), 9.25), ("teaching".into(), 2.0)]),
            external_hours: 0.0,
            share_rate: None,
        },
        provisional: false,
        signed: true,
        unsigned_events: 0,
    }
}

fn outcome_row() -> OutcomeRow {
    OutcomeRow {
        booking_id: "b-1".into(),
        instrument_id: "nmr-600".into(),
        user: "li".into(),
        group: "chem".into(),
        usage_type: "research".into(),
        start: "2025-03-03T09:00:00+08:00".into(),
        end: "2025-03-03T11:00:00+08:00".into(),
        outcome: "used".into(),
        flags: vec!["late_start".into(), "overrun".into()],
        booked_s: 7200.0,
        used_s: 7000.0,
        early_s: 0.0,
        overrun_s: 600.0,
        first_use: Some("2025-03-03T09:20:00+08:00".into()),
        last_use: None,
        unknown_s: 0.0,
        fault_s: 0.0,
        sessions: vec!["s-1".into(), "s-2".into()],
        result_files: vec![],
        overlapping_bookings: vec!["b-2".into()],
        usage_taken_by: vec![],
        took_usage_from: vec!["b-0".into()],
        corrected_used_s: 6400.0,
    }
}

fn correction(new: NewCorrection, by: &str, at: Timestamp) -> Correction {
    Correction {
        id: 42,
        correction: new,
        created_by: by.into(),
        created_at: at,
    }
}

fn new_correction() -> NewCorrection {
    NewCorrection {
        instrument_id: "nmr-600".into(),
        start: "2025-03-05T01:00:00Z".parse().unwrap(),
        end: "2025-03-05T02:00:00Z".parse().unwrap(),
        user: Some("li".into()),
        group: None,
        usage_type: Some(UsageType::Teaching),
        booking_id: None,
        from_booking_id: None,
        reason: "course lab, booked on paper".into(),
    }
}

impl Reports for Fake {
    fn hours(&self, query: &HoursQuery) -> Result<HoursAnswer, QueryError> {
        self.record(Call::Hours(query.clone()));
        Self::check(query.instrument.as_deref())?;
        let rows = match query.group_by {
            GroupBy::UsageType => HoursRows::UsageTypes(vec![UsageTypeRow {
                period_start: "2025-03-01".into(),
                period_end: "2025-04-01".into(),
                usage_type: "unassigned".into(),
                instruments: 2,
                used_hours: 3.25,
                corrected_used_hours: 1.25,
                provisional: false,
            }]),
            _ => HoursRows::Totals(vec![hours_row()]),
        };
        Ok(HoursAnswer {
            rows,
            settled_through: Some("2025-03-31T16:00:00Z".parse().unwrap()),
        })
    }
    fn health(&self, now: Timestamp) -> Result<Health, QueryError> {
        self.record(Call::Health(now));
        Ok(Health {
            status: "ok",
            reconciliation: ReconciliationHealth {
                settled_through: Some("2025-03-31T16:00:00Z".parse().unwrap()),
                pending_instruments: 1,
                pending_instrument_days: 2,
                pending_since: Some("2025-03-30T00:00:00Z".parse().unwrap()),
            },
            quarantine: QuarantineHealth {
                total: 3,
                by_kind: [(Kind::SeqConflict, 1), (Kind::Undecodable, 2)].into(),
            },
            influxdb: None,
        })
    }
    fn quarantine_list(
        &self,
        filter: &Filter,
        from: Option<Edge>,
        to: Option<Edge>,
    ) -> Result<Vec<Entry>, QueryError> {
        self.record(Call::QuarantineList(filter.clone(), from, to));
        Ok(vec![Entry {
            id: 7,
            received_at: "2025-03-03T01:00:00Z".parse().unwrap(),
            topic: "labhours/v1/agent-1/events".into(),
            agent_id: Some("agent-1".into()),
            kind: Kind::Undecodable,
            reason: "undecodable envelope: eof".into(),
            payload_len: 3,
        }])
    }
    fn checkpoints(
        &self,
        latest: bool,
    ) -> Result<Vec<crate::evidence::checkpoint::Checkpoint>, QueryError> {
        let all: Vec<_> = [1, 2]
            .map(|id| crate::evidence::checkpoint::Checkpoint {
                id,
                signed_at: Timestamp::from_second(86_400 * id).unwrap(),
                key_name: "labhours/test".into(),
                note: format!("labhours/test\ntime {id}\n\n\u{2014} labhours/test AAAA\n"),
            })
            .into();
        Ok(if latest { all[1..].to_vec() } else { all })
    }

    fn quarantine_entry(&self, id: i64) -> Result<Option<Detail>, QueryError> {
        Ok((id == 7).then(|| Detail {
            entry: Entry {
                id: 7,
                ..Entry::default()
            },
            payload_text: Some("{no".into()),
            payload_hex: "7b6e6f".into(),
            truncated: false,
        }))
    }
    fn outcomes(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<OutcomeRow>, QueryError> {
        self.record(Call::Outcomes(*range, instrument.map(str::to_owned)));
        Self::check(instrument)?;
        Ok(vec![outcome_row()])
    }
    fn sessions(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<SessionRow>, QueryError> {
        self.record(Call::Sessions(*range, instrument.map(str::to_owned)));
        Self::check(instrument)?;
        Ok(vec![SessionRow {
            session_id: "s-1".into(),
            instrument_id: "nmr-600".into(),
            start: "2025-03-03T09:20:00+08:00".into(),
            end: "2025-03-03T11:10:00+08:00".into(),
            duration_s: 6600.0,
            dropped: false,
            result_files: vec!["agent-1:17".into()],
            segments: vec![],
        }])
    }
    fn timeline(&self, instrument: &str, range: &Range) -> Result<TimelineView, QueryError> {
        self.record(Call::Timeline(instrument.into(), *range));
        Self::check(Some(instrument))?;
        Ok(TimelineView {
            instrument_id: instrument.into(),
            from: "2025-03-03T00:00:00+08:00".into(),
            to: "2025-03-04T00:00:00+08:00".into(),
            states: vec![StatePiece {
                start: "2025-03-03T00:00:00+08:00".into(),
                end: "2025-03-04T00:00:00+08:00".into(),
                state: labhours_shared::state::State::Running,
            }],
            sessions: vec![],
            bookings: vec![],
            result_files: vec![],
        })
    }
    fn instruments(&self, now: Timestamp) -> Result<Vec<InstrumentRow>, QueryError> {
        self.record(Call::Instruments(now));
        Ok(vec![InstrumentRow {
            instrument_id: "nmr-600".into(),
            name: "600 MHz NMR".into(),
            unit: None,
            time_zone: "Asia/Shanghai".into(),
            configured: true,
            state: labhours_shared::state::State::Standby,
            since: Some("2025-04-02T09:00:00+08:00".into()),
            agent_online: true,
            agents: vec![],
        }])
    }
    fn add_correction(
        &self,
        new: NewCorrection,
        created_by: &str,
        now: Timestamp,
    ) -> Result<Correction, QueryError> {
        self.record(Call::AddCorrection(new.clone(), created_by.into(), now));
        Self::check(Some(&new.instrument_id))?;
        if new.reason.trim().is_empty() {
            return Err(QueryError::BadParameter {
                parameter: "reason",
                message: "is empty; say why".into(),
            });
        }
        Ok(correction(new, created_by, now))
    }
    fn corrections(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<Correction>, QueryError> {
        self.record(Call::Corrections(*range, instrument.map(str::to_owned)));
        Self::check(instrument)?;
        Ok(vec![correction(new_correction(), "office-admin", now())])
    }
    fn import_bookings(
        &self,
        bookings: Vec<(u64, Booking)>,
        options: ImportOptions,
        now: Timestamp,
        _scope: &crate::units::Scope,
    ) -> Result<ImportReport, QueryError> {
        self.record(Call::Import(bookings.clone(), options, now));
        let mut report = ImportReport::default();
        for (index, b) in bookings {
            if b.instrument_id == "nope" {
                report.errors.push(RowError {
                    line: index,
                    message: "instrument_id \"nope\" is not a configured instrument".into(),
                });
            } else if b.instrument_id == "xrd-9" {
                report
                    .not_monitored
                    .push(crate::bookings::store::NotMonitored {
                        instrument_id: b.instrument_id,
                        bookings: 1,
                    });
                report.inserted.push(b.booking_id);
            } else if b.booking_id == "b-old" {
                report.updated.push(Updated {
                    booking_id: b.booking_id,
                    fields: vec!["end"],
                });
            } else {
                report.inserted.push(b.booking_id);
            }
        }
        report.applied = !options.dry_run && (report.errors.is_empty() || options.skip_invalid);
        Ok(report)
    }
    // The API does not reach the dashboard's methods (dashboard/tests.rs
    // tests them through the real store).
    fn import_bookings_file(
        &self,
        _format: crate::bookings::Format,
        _text: &str,
        _source: &str,
        _options: ImportOptions,
        _now: Timestamp,
        _scope: &crate::units::Scope,
    ) -> Result<ImportReport, QueryError> {
        Ok(ImportReport::default())
    }
    fn exception_outcomes(&self, _range: &Range) -> Result<Vec<OutcomeRow>, QueryError> {
        Ok(vec![])
    }
    fn booking_slots(&self, _range: &Range) -> Result<Vec<BookingSlot>, QueryError> {
        Ok(vec![])
    }
    fn power(&self, instrument: &str, _range: &Range) -> Result<PowerTrace, QueryError> {
        Err(QueryError::UnknownInstrument(instrument.into()))
    }
    fn create_session(
        &self,
        _id_sha256: &str,
        _session: &DashSession,
        _now: Timestamp,
    ) -> Result<(), QueryError> {
        Ok(())
    }
    fn find_session(
        &self,
        _id_sha256: &str,
        _now: Timestamp,
    ) -> Result<Option<DashSession>, QueryError> {
        Ok(None)
    }
    fn end_session(&self, _id_sha256: &str) -> Result<(), QueryError> {
        Ok(())
    }
}

fn tokens() -> Vec<TokenConfig> {
    vec![
        TokenConfig {
            name: "office-admin".into(),
            role: TokenRole::Admin,
            sha256: hash_token(ADMIN),
            unit: None,
        },
        TokenConfig {
            name: "evaluation-office".into(),
            role: TokenRole::Evaluator,
            sha256: hash_token(EVALUATOR),
            unit: None,
        },
    ]
}

fn setup() -> (Arc<Fake>, axum::Router) {
    setup_with(&tokens())
}

fn setup_with(tokens: &[TokenConfig]) -> (Arc<Fake>, axum::Router) {
    let fake = Arc::new(Fake::default());
    let state = ApiState::new(fake.clone(), tokens)
        .expect("tokens")
        .with_clock(Arc::new(now));
    (fake, app(state))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8")
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }
    /// A 400 naming `parameter`.
    #[track_caller]
    fn assert_bad(&self, parameter: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.text());
        assert_eq!(self.json()["parameter"], parameter, "{}", self.text());
        assert!(self.json()["error"].as_str().unwrap().len() > 10);
    }
}

async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(router: &axum::Router, uri: &str) -> Answer {
    send(router, Method::GET, uri, Some(EVALUATOR), &[], None).await
}

fn march() -> Range {
    Range {
        from: Edge::Date(date(2025, 3, 1)),
        to: Edge::Date(date(2025, 4, 1)),
    }
}

const HOURS_CSV_HEADER: &str = "instrument_id,name,unit,instruments,period_start,period_end,used_hours,booked_hours,booked_used_hours,unbooked_hours,by_usage_type.teaching,by_usage_type.research,by_usage_type.external,by_usage_type.training,by_usage_type.maintenance,by_usage_type.unassigned,external_hours,share_rate,open_hours,utilization,no_show_count,fault_hours,unknown_hours,coverage,result_files,energy_kwh,corrected.assigned_hours,corrected.unbooked_hours,corrected.by_usage_type.teaching,corrected.by_usage_type.research,corrected.by_usage_type.external,corrected.by_usage_type.training,corrected.by_usage_type.maintenance,corrected.by_usage_type.unassigned,corrected.external_hours,corrected.share_rate,provisional,signed,unsigned_events";

// --- happy paths ---

#[tokio::test]
async fn hours_passes_the_query_the_url_names_and_answers_json() {
    let (fake, router) = setup();
    let a = get(
        &router,
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&instrument=nmr-600&unit=Chemistry&period=month&group_by=instrument",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.content_type(), "application/json");
    assert_eq!(
        fake.calls(),
        [Call::Hours(HoursQuery {
            range: march(),
            instrument: Some("nmr-600".into()),
            unit: Some("Chemistry".into()),
            period: Some(PeriodUnit::Month),
            group_by: GroupBy::Instrument,
        })]
    );
    let body = a.json();
    assert_eq!(body["from"], "2025-03-01");
    assert_eq!(body["to"], "2025-04-01");
    assert_eq!(body["period"], "month");
    assert_eq!(body["group_by"], "instrument");
    assert_eq!(body["rows"][0]["used_hours"], 12.5);
    assert_eq!(body["rows"][0]["by_usage_type"]["unassigned"], 3.25);
    assert_eq!(body["rows"][0]["energy_kwh"], Value::Null);
}

#[tokio::test]
async fn hours_take_instants_and_default_to_one_period_per_instrument() {
    let (fake, router) = setup();
    let a = get(
        &router,
        "/api/v1/hours?from=2025-03-01T00:00:00%2B08:00&to=2025-03-02T00:00:00Z&group_by=usage_type",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        fake.calls(),
        [Call::Hours(HoursQuery {
            range: Range {
                from: Edge::Instant("2025-02-28T16:00:00Z".parse().unwrap()),
                to: Edge::Instant("2025-03-02T00:00:00Z".parse().unwrap()),
            },
            instrument: None,
            unit: None,
            period: None,
            group_by: GroupBy::UsageType,
        })]
    );
    let body = a.json();
    assert_eq!(body["from"], "2025-02-28T16:00:00Z");
    assert_eq!(body["period"], Value::Null);
    assert_eq!(body["rows"][0]["usage_type"], "unassigned");
    assert_eq!(body["rows"][0]["corrected_used_hours"], 1.25);
}

#[tokio::test]
async fn hours_as_csv_through_accept_flatten_maps_into_fixed_columns() {
    let (_, router) = setup();
    let a = send(
        &router,
        Method::GET,
        "/api/v1/hours?from=2025-03-01&to=2025-04-01",
        Some(EVALUATOR),
        &[("accept", "text/csv")],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.content_type(), "text/csv; charset=utf-8");
    let text = a.text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HOURS_CSV_HEADER));
    assert_eq!(
        lines.next(),
        Some(
            "nmr-600,600 MHz NMR,Chemistry/NMR Centre,1,2025-03-01T00:00:00+08:00,2025-04-01T00:00:00+08:00,12.5,10.0,9.25,3.25,,9.25,,,,3.25,0.0,0.0,,0.02,1,0.5,2.0,0.99,7,,0.0,1.25,2.0,9.25,,,,,0.0,,false,true,0"
        )
    );
    assert_eq!(lines.next(), None);
}

#[tokio::test]
async fn hours_as_xlsx_are_a_workbook_of_the_csv_rows() {
    let (fake, router) = setup();
    let a = send(
        &router,
        Method::GET,
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&format=xlsx",
        Some(EVALUATOR),
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.content_type(),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(&a.body[..4], b"PK\x03\x04", "a zip container");
    assert!(a.body.len() > 2000);
    assert!(matches!(fake.calls().as_slice(), [Call::Hours(_)]));
    let disposition = a.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii");
    assert!(disposition.contains("labhours-hours.xlsx"));
}

#[tokio::test]
async fn format_csv_wins_over_accept_and_format_json_forces_json() {
    let (_, router) = setup();
    let a = get(
        &router,
        "/api/v1/bookings/outcomes?from=2025-03-01&to=2025-04-01&format=csv",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.content_type(), "text/csv; charset=utf-8");
    assert_eq!(
        a.text(),
        "booking_id,instrument_id,user,group,usage_type,start,end,outcome,flags,booked_s,used_s,early_s,overrun_s,first_use,last_use,unknown_s,fault_s,sessions,result_files,overlapping_bookings,usage_taken_by,took_usage_from,corrected_used_s\n\
         b-1,nmr-600,li,chem,research,2025-03-03T09:00:00+08:00,2025-03-03T11:00:00+08:00,used,late_start;overrun,7200.0,7000.0,0.0,600.0,2025-03-03T09:20:00+08:00,,0.0,0.0,s-1;s-2,,b-2,,b-0,6400.0\n"
    );
    let a = send(
        &router,
        Method::GET,
        "/api/v1/sessions?from=2025-03-01&to=2025-04-01&format=json",
        Some(EVALUATOR),
        &[("accept", "text/csv")],
        None,
    )
    .await;
    assert_eq!(a.content_type(), "application/json");
    assert_eq!(a.json()["rows"][0]["session_id"], "s-1");
}

#[tokio::test]
async fn outcomes_sessions_and_corrections_pass_range_and_instrument() {
    let (fake, router) = setup();
    let q = "?from=2025-03-01&to=2025-04-01&instrument=nmr-600";
    let a = get(&router, &format!("/api/v1/bookings/outcomes{q}")).await;
    assert_eq!(
        a.json()["rows"][0]["flags"],
        json!(["late_start", "overrun"])
    );
    let a = get(&router, &format!("/api/v1/sessions{q}")).await;
    assert_eq!(a.json()["rows"][0]["duration_s"], 6600.0);
    let a = get(&router, &format!("/api/v1/corrections{q}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["rows"][0]["id"], 42);
    assert_eq!(a.json()["rows"][0]["reason"], "course lab, booked on paper");
    let nmr = Some("nmr-600".to_owned());
    assert_eq!(
        fake.calls(),
        [
            Call::Outcomes(march(), nmr.clone()),
            Call::Sessions(march(), nmr.clone()),
            Call::Corrections(march(), nmr),
        ]
    );
}

#[tokio::test]
async fn instruments_are_listed_as_of_the_clock() {
    let (fake, router) = setup();
    let a = get(&router, "/api/v1/instruments").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["rows"][0]["state"], "standby");
    assert_eq!(fake.calls(), [Call::Instruments(now())]);
    let a = get(&router, "/api/v1/instruments?format=csv").await;
    assert_eq!(
        a.text().lines().next(),
        Some("instrument_id,name,unit,time_zone,configured,state,since,agent_online,agents")
    );
}

#[tokio::test]
async fn a_timeline_is_json_and_has_no_csv_form() {
    let (fake, router) = setup();
    let a = get(
        &router,
        "/api/v1/instruments/nmr-600/timeline?from=2025-03-03&to=2025-03-04",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["states"][0]["state"], "running");
    assert_eq!(
        fake.calls(),
        [Call::Timeline(
            "nmr-600".into(),
            Range {
                from: Edge::Date(date(2025, 3, 3)),
                to: Edge::Date(date(2025, 3, 4)),
            }
        )]
    );
    let a = get(
        &router,
        "/api/v1/instruments/nmr-600/timeline?from=2025-03-03&to=2025-03-04&format=csv",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(a.json()["parameter"], "format");
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn an_admin_records_a_correction_under_the_tokens_name() {
    let (fake, router) = setup();
    let body = serde_json::to_value(new_correction()).unwrap();
    let a = send(
        &router,
        Method::POST,
        "/api/v1/corrections",
        Some(ADMIN),
        &[],
        Some(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let got = a.json();
    assert_eq!(got["id"], 42);
    assert_eq!(got["created_by"], "office-admin");
    assert_eq!(got["created_at"], "2025-04-02T10:00:00Z");
    assert_eq!(got["usage_type"], "teaching");
    assert_eq!(
        fake.calls(),
        [Call::AddCorrection(
            new_correction(),
            "office-admin".into(),
            now()
        )]
    );
}

#[tokio::test]
async fn a_bad_correction_field_is_a_400_naming_it() {
    let (_, router) = setup();
    let mut body = serde_json::to_value(new_correction()).unwrap();
    body["reason"] = json!(" ");
    let a = send(
        &router,
        Method::POST,
        "/api/v1/corrections",
        Some(ADMIN),
        &[],
        Some(body),
    )
    .await;
    a.assert_bad("reason");
    let a = send(
        &router,
        Method::POST,
        "/api/v1/corrections",
        Some(ADMIN),
        &[],
        Some(json!({"instrument_id": "nmr-600"})),
    )
    .await;
    a.assert_bad("body");
}

/// `POST /api/v1/bookings` as an admin.
async fn post_bookings(router: &axum::Router, body: Value) -> Answer {
    send(
        router,
        Method::POST,
        "/api/v1/bookings",
        Some(ADMIN),
        &[],
        Some(body),
    )
    .await
}

fn booking(id: &str, instrument: &str) -> Value {
    json!({
        "booking_id": id, "instrument_id": instrument, "user": "li", "group": "chem",
        "usage_type": "research", "start": "2025-03-03T01:00:00Z",
        "end": "2025-03-03T03:00:00Z", "status": "confirmed"
    })
}

#[tokio::test]
async fn an_item_with_an_offset_beyond_14_hours_is_refused_by_index() {
    let (fake, router) = setup();
    let mut bad = booking("b-bad", "nmr-600");
    bad["start"] = json!("2025-03-03T09:00:00+25:00");
    let body = json!({"bookings": [booking("b-new", "nmr-600"), bad]});
    let a = post_bookings(&router, body).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
    let errors = &a.json()["errors"];
    assert_eq!(errors[0]["index"], 1);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("start \"2025-03-03T09:00:00+25:00\" has the UTC offset"),
        "{errors}"
    );
    let Call::Import(items, _, _) = &fake.calls()[0] else {
        panic!("{:?}", fake.calls())
    };
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn the_import_answer_lists_instruments_not_monitored() {
    let (_fake, router) = setup();
    let body = json!({"bookings": [booking("b-new", "xrd-9")]});
    let a = post_bookings(&router, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.json()["not_monitored"],
        json!([{"instrument_id": "xrd-9", "bookings": 1}])
    );
}

#[tokio::test]
async fn bookings_are_imported_and_the_report_is_answered() {
    let (fake, router) = setup();
    let body = json!({"bookings": [booking("b-new", "nmr-600"), booking("b-old", "nmr-600")]});
    let a = post_bookings(&router, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.json(),
        json!({
            "applied": true, "dry_run": false, "inserted": ["b-new"],
            "updated": [{"booking_id": "b-old", "fields": ["end"]}],
            "unchanged": [], "not_monitored": [], "errors": []
        })
    );
    let Call::Import(items, options, at) = &fake.calls()[0] else {
        panic!("{:?}", fake.calls())
    };
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].0, 1);
    assert_eq!(items[0].1.usage_type, UsageType::Research);
    assert_eq!(items[0].1.status, BookingStatus::Confirmed);
    assert_eq!(*options, ImportOptions::default());
    assert_eq!(*at, now());
}

#[tokio::test]
async fn bad_bookings_are_a_422_naming_each_index_and_nothing_is_applied() {
    let (fake, router) = setup();
    let mut party = booking("b-2", "nmr-600");
    party["usage_type"] = json!("party");
    let body = json!({"bookings": [booking("b-1", "nmr-600"), party, booking("b-3", "nope")]});
    let a = send(
        &router,
        Method::POST,
        "/api/v1/bookings",
        Some(ADMIN),
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
    let got = a.json();
    assert_eq!(got["applied"], false);
    let errors = got["errors"].as_array().unwrap();
    let indexes: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 2]);
    assert!(
        errors[0]["message"].as_str().unwrap().contains("party"),
        "{got}"
    );
    assert!(
        errors[1]["message"].as_str().unwrap().contains("nope"),
        "{got}"
    );
    // The malformed item forced a dry run in the store.
    let Call::Import(items, options, _) = &fake.calls()[0] else {
        panic!()
    };
    assert_eq!(items.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(
        *options,
        ImportOptions {
            dry_run: true,
            skip_invalid: false
        }
    );

    // skip_invalid applies the good ones and answers 200 with the errors.
    let a = send(
        &router,
        Method::POST,
        "/api/v1/bookings?skip_invalid=true",
        Some(ADMIN),
        &[],
        Some(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["applied"], true);
    assert_eq!(a.json()["inserted"], json!(["b-1"]));
    assert_eq!(a.json()["errors"].as_array().unwrap().len(), 2);
    let Call::Import(_, options, _) = &fake.calls()[1] else {
        panic!()
    };
    assert_eq!(
        *options,
        ImportOptions {
            dry_run: false,
            skip_invalid: true
        }
    );
}

#[tokio::test]
async fn a_dry_run_reaches_the_store_as_one() {
    let (fake, router) = setup();
    let body = json!({"bookings": [booking("b-1", "nmr-600")]});
    let a = send(
        &router,
        Method::POST,
        "/api/v1/bookings?dry_run=true",
        Some(ADMIN),
        &[],
        Some(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["applied"], false);
    assert_eq!(a.json()["dry_run"], true);
    let Call::Import(_, options, _) = &fake.calls()[0] else {
        panic!()
    };
    assert!(options.dry_run);
}

// --- parameter errors ---

#[tokio::test]
async fn every_parameter_error_is_a_400_naming_the_parameter_and_asks_nothing() {
    let (fake, router) = setup();
    let cases = [
        ("/api/v1/hours?to=2025-04-01", "from"),
        ("/api/v1/hours?from=2025-03-01", "to"),
        ("/api/v1/hours?from=2025-13-01&to=2025-04-01", "from"),
        ("/api/v1/hours?from=March&to=2025-04-01", "from"),
        (
            "/api/v1/hours?from=2025-03-01T00:00:00&to=2025-04-01",
            "from",
        ),
        ("/api/v1/hours?from=2025-04-01&to=2025-03-01", "to"),
        ("/api/v1/hours?from=2025-04-01&to=2025-04-01", "to"),
        (
            "/api/v1/hours?from=2025-03-01T10:00:00Z&to=2025-03-01T09:00:00Z",
            "to",
        ),
        (
            "/api/v1/hours?from=2025-03-01&to=2025-04-01&period=week",
            "period",
        ),
        (
            "/api/v1/hours?from=2025-03-01&to=2025-04-01&group_by=user",
            "group_by",
        ),
        (
            "/api/v1/hours?from=2025-03-01&to=2025-04-01&colour=red",
            "colour",
        ),
        (
            "/api/v1/hours?from=2025-03-01&to=2025-04-01&format=xml",
            "format",
        ),
        // Only the hours answer as a workbook.
        (
            "/api/v1/sessions?from=2025-03-01&to=2025-04-01&format=xlsx",
            "format",
        ),
        (
            "/api/v1/hours?from=2025-03-01&from=2025-03-02&to=2025-04-01",
            "from",
        ),
        (
            "/api/v1/hours?from=2025-03-01&to=2025-04-01&instrument=",
            "instrument",
        ),
        (
            "/api/v1/bookings/outcomes?from=2025-03-01&to=2025-04-01&period=day",
            "period",
        ),
        ("/api/v1/sessions?to=2025-04-01", "from"),
        ("/api/v1/corrections?from=2025-03-01", "to"),
        ("/api/v1/instruments?from=2025-03-01", "from"),
        (
            "/api/v1/instruments/nmr-600/timeline?from=2025-03-01&to=x",
            "to",
        ),
    ];
    for (uri, parameter) in cases {
        let a = get(&router, uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.text());
        assert_eq!(a.json()["parameter"], parameter, "{uri}: {}", a.text());
    }
    assert_eq!(fake.calls(), []);
}

#[tokio::test]
async fn error_messages_say_what_is_accepted() {
    let (_, router) = setup();
    let a = get(
        &router,
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&period=week",
    )
    .await;
    assert_eq!(
        a.json()["error"],
        "period=\"week\" is not one of: day, month, year"
    );
    let a = get(
        &router,
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&colour=red",
    )
    .await;
    assert_eq!(
        a.json()["error"],
        "unknown parameter \"colour\"; accepted: from, to, instrument, unit, period, group_by, format"
    );
    let a = get(&router, "/api/v1/hours?to=2025-04-01").await;
    assert!(a.json()["error"].as_str().unwrap().contains("YYYY-MM-DD"));
    let a = send(
        &router,
        Method::POST,
        "/api/v1/bookings?dry_run=yes",
        Some(ADMIN),
        &[],
        Some(json!({"bookings": []})),
    )
    .await;
    a.assert_bad("dry_run");
}

// --- auth ---

#[tokio::test]
async fn no_token_or_a_wrong_one_is_a_401_with_a_bearer_challenge() {
    let (fake, router) = setup();
    for token in [None, Some("lh_wrong"), Some("")] {
        let a = send(
            &router,
            Method::GET,
            "/api/v1/instruments",
            token,
            &[],
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token:?}");
        let challenge = a.headers.get(header::WWW_AUTHENTICATE).expect("challenge");
        assert!(challenge.to_str().unwrap().starts_with("Bearer"));
        assert!(a.json()["error"].is_string());
    }
    let a = send(
        &router,
        Method::GET,
        "/api/v1/instruments",
        None,
        &[("authorization", &format!("Basic {ADMIN}"))],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Before any parameter is looked at.
    let a = send(
        &router,
        Method::GET,
        "/api/v1/hours?colour=red",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(fake.calls(), []);
}

#[tokio::test]
async fn an_evaluator_may_read_but_not_write() {
    let (fake, router) = setup();
    let body = serde_json::to_value(new_correction()).unwrap();
    let a = send(
        &router,
        Method::POST,
        "/api/v1/corrections",
        Some(EVALUATOR),
        &[],
        Some(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("evaluation-office")
    );
    let body = json!({"bookings": [booking("b-1", "nmr-600")]});
    let a = send(
        &router,
        Method::POST,
        "/api/v1/bookings",
        Some(EVALUATOR),
        &[],
        Some(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(fake.calls(), []);
    let a = get(&router, "/api/v1/corrections?from=2025-03-01&to=2025-04-01").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn without_configured_tokens_every_caller_is_the_local_admin() {
    let (fake, router) = setup_with(&[]);
    let body = serde_json::to_value(new_correction()).unwrap();
    let a = send(
        &router,
        Method::POST,
        "/api/v1/corrections",
        None,
        &[],
        Some(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.json()["created_by"], "local");
    assert_eq!(fake.calls().len(), 1);
}

// --- not found, internal errors ---

#[tokio::test]
async fn an_unknown_instrument_is_a_404() {
    let (_, router) = setup();
    let a = get(
        &router,
        "/api/v1/instruments/nope/timeline?from=2025-03-01&to=2025-03-02",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"].as_str().unwrap().contains("nope"));
    let a = get(
        &router,
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&instrument=nope",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(&router, "/api/v1/nothing-here").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"].is_string());
}

#[tokio::test]
async fn a_database_error_is_a_500_that_leaks_nothing() {
    let (_, router) = setup();
    let a = get(
        &router,
        "/api/v1/sessions?from=2025-03-01&to=2025-04-01&instrument=broken",
    )
    .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        a.json(),
        json!({"error": "internal error; the collector's log has the details"})
    );
}

// --- meta ---

#[tokio::test]
async fn healthz_needs_no_token_and_says_how_far_figures_are_final() {
    let (fake, router) = setup();
    let a = send(&router, Method::GET, "/api/v1/healthz", None, &[], None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        json!({
            "status": "ok",
            "reconciliation": {
                "settled_through": "2025-03-31T16:00:00Z",
                "pending_instruments": 1,
                "pending_instrument_days": 2,
                "pending_since": "2025-03-30T00:00:00Z",
            },
            "quarantine": {"total": 3, "by_kind": {"undecodable": 2, "seq_conflict": 1}},
            "influxdb": null,
        })
    );
    assert_eq!(fake.calls(), [Call::Health(now())]);
}

#[tokio::test]
async fn hours_answers_say_through_when_figures_are_final() {
    let (_, router) = setup();
    let a = get(&router, "/api/v1/hours?from=2025-03-01&to=2025-04-01").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["settled_through"], "2025-03-31T16:00:00Z");
    assert_eq!(a.json()["rows"][0]["provisional"], false);
}

#[tokio::test]
async fn the_quarantine_is_for_admins_and_its_filters_reach_the_store() {
    let (fake, router) = setup();
    let evaluator = get(&router, "/api/v1/quarantine").await;
    assert_eq!(evaluator.status, StatusCode::FORBIDDEN);
    let admin = |uri: &str| {
        let uri = uri.to_owned();
        let router = router.clone();
        async move { send(&router, Method::GET, &uri, Some(ADMIN), &[], None).await }
    };
    let a = admin("/api/v1/quarantine?agent=agent-1&kind=undecodable&from=2025-03-01&to=2025-03-05T00:00:00Z&limit=5").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["rows"][0]["kind"], "undecodable");
    assert_eq!(a.json()["rows"][0]["agent_id"], "agent-1");
    assert_eq!(
        fake.calls(),
        [Call::QuarantineList(
            Filter {
                agent_id: Some("agent-1".into()),
                kind: Some(Kind::Undecodable),
                limit: 5,
                ..Filter::default()
            },
            Some(Edge::Date(date(2025, 3, 1))),
            Some(Edge::Instant("2025-03-05T00:00:00Z".parse().unwrap())),
        )]
    );
    let csv = admin("/api/v1/quarantine?format=csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.text()
            .starts_with("id,received_at,topic,agent_id,kind,reason,payload_len"),
        "{}",
        csv.text()
    );
    for (query, parameter) in [
        ("kind=nope", "kind"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("from=yesterday", "from"),
        ("agent=", "agent"),
        ("colour=red", "colour"),
    ] {
        let a = admin(&format!("/api/v1/quarantine?{query}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(a.json()["parameter"], parameter, "{query}");
    }
    let one = admin("/api/v1/quarantine/7").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["payload_text"], "{no");
    assert_eq!(one.json()["id"], 7);
    for missing in ["/api/v1/quarantine/8", "/api/v1/quarantine/x"] {
        assert_eq!(
            admin(missing).await.status,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
    let evaluator = get(&router, "/api/v1/quarantine/7").await;
    assert_eq!(evaluator.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_its_statuses_and_the_bearer_scheme() {
    let (_, router) = setup();
    let a = send(
        &router,
        Method::GET,
        "/api/v1/openapi.json",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type(), "application/json");
    let doc = a.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "/api/v1/bookings",
            "/api/v1/bookings/outcomes",
            "/api/v1/checkpoints",
            "/api/v1/corrections",
            "/api/v1/federation/batch",
            "/api/v1/healthz",
            "/api/v1/hours",
            "/api/v1/instruments",
            "/api/v1/instruments/{id}/timeline",
            "/api/v1/openapi.json",
            "/api/v1/quarantine",
            "/api/v1/quarantine/{id}",
            "/api/v1/sessions",
            "/api/v1/sites",
        ]
    );
    // A hub's batches authenticate with the site's own credential.
    assert_eq!(
        paths["/api/v1/federation/batch"]["post"]["security"],
        json!([{"site": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["site"]["scheme"],
        "bearer"
    );
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(paths["/api/v1/healthz"]["get"]["security"], json!([{}]));

    let statuses = |path: &str, method: &str| -> Vec<String> {
        let mut s: Vec<String> = paths[path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        s.sort();
        s
    };
    assert_eq!(
        statuses("/api/v1/hours", "get"),
        ["200", "400", "401", "404", "500"]
    );
    assert_eq!(
        statuses("/api/v1/corrections", "post"),
        ["201", "400", "401", "403", "404", "500"]
    );
    assert_eq!(
        statuses("/api/v1/bookings", "post"),
        ["200", "400", "401", "403", "422", "500"]
    );
    assert_eq!(
        statuses("/api/v1/instruments/{id}/timeline", "get"),
        ["200", "400", "401", "404", "406", "500"]
    );
    let params: Vec<&str> = paths["/api/v1/hours"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "from",
            "to",
            "instrument",
            "unit",
            "period",
            "group_by",
            "format"
        ]
    );
    let from = &paths["/api/v1/hours"]["get"]["parameters"][0];
    assert_eq!(from["required"], true);
    assert_eq!(from["in"], "query");
    let csv = &paths["/api/v1/hours"]["get"]["responses"]["200"]["content"]["text/csv"];
    assert!(csv.is_object(), "{}", paths["/api/v1/hours"]);
    assert_eq!(
        doc["components"]["schemas"]["NewCorrection"]["properties"]["start"],
        json!({"type": "string", "format": "date-time"})
    );
    for schema in [
        "HoursRow",
        "UsageTypeRow",
        "OutcomeRow",
        "NewCorrection",
        "Correction",
        "Booking",
        "ErrorBody",
        "TimelineView",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

// --- found by schemathesis (tests/interop/run.sh schemathesis) ---

async fn openapi(router: &axum::Router) -> Value {
    send(router, Method::GET, "/api/v1/openapi.json", None, &[], None)
        .await
        .json()
}

/// Every `$ref` in `value`, as the names of the component schemas it points to.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The `format` parameters pointed to `FormatName`, which was not in the
/// document's components: schemathesis could not resolve it.
#[tokio::test]
async fn every_reference_in_the_openapi_document_resolves() {
    let (_, router) = setup();
    let doc = openapi(&router).await;
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.iter().any(|r| r.ends_with("/FormatName")));
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["FormatName"]["enum"],
        json!(["json", "csv"])
    );
}

/// A `Correction` was documented as `allOf` a `NewCorrection` (which allows
/// no other properties) and `id`, `created_by`, `created_at`: no correction
/// matched it. Its schema now lists exactly the fields it is answered with.
#[tokio::test]
async fn the_correction_schema_lists_exactly_the_fields_a_correction_is_answered_with() {
    let (_, router) = setup();
    let doc = openapi(&router).await;
    let schema = &doc["components"]["schemas"]["Correction"];
    assert_eq!(schema["type"], "object", "{schema}");
    assert!(schema.get("allOf").is_none(), "{schema}");
    let mut documented: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    documented.sort();
    let answer = get(&router, "/api/v1/corrections?from=2025-03-01&to=2025-04-01").await;
    let row = answer.json()["rows"][0].clone();
    let mut answered: Vec<&String> = row.as_object().unwrap().keys().collect();
    answered.sort();
    assert_eq!(documented, answered);
    for required in schema["required"].as_array().unwrap() {
        assert!(row.get(required.as_str().unwrap()).is_some(), "{required}");
    }
    // The request body still refuses anything else.
    assert_eq!(
        doc["components"]["schemas"]["NewCorrection"]["additionalProperties"],
        false
    );
}

/// `rows` was `oneOf` a list of `HoursRow`s and a list of `UsageTypeRow`s:
/// an answer with no rows (`[]`) is both, which `oneOf` forbids.
#[tokio::test]
async fn no_hours_rows_are_a_valid_rows_list() {
    let (_, router) = setup();
    let doc = openapi(&router).await;
    let rows = &doc["components"]["schemas"]["HoursRowsBody"];
    assert!(rows.get("oneOf").is_none(), "{rows}");
    let lists = rows["anyOf"].as_array().expect("anyOf");
    let items: Vec<&Value> = lists.iter().map(|l| &l["items"]["$ref"]).collect();
    assert_eq!(
        items,
        [
            "#/components/schemas/HoursRow",
            "#/components/schemas/UsageTypeRow"
        ]
    );
    assert!(doc["components"]["schemas"]["HoursRow"].is_object());
    assert!(doc["components"]["schemas"]["UsageTypeRow"].is_object());
}

/// The parameters were documented as any string, so schemathesis sent
/// `instrument=` (refused: blank), `from=garbage` (refused: not a date or
/// instant) and `format=csv` to a timeline (406) as valid requests. The
/// document now says what each accepts.
#[tokio::test]
async fn the_document_says_what_from_to_instrument_and_format_accept() {
    let (_, router) = setup();
    let doc = openapi(&router).await;
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no {name}"))
            .clone()
    };
    let edge = json!({"oneOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"}
    ]});
    for path in [
        "/api/v1/hours",
        "/api/v1/bookings/outcomes",
        "/api/v1/sessions",
        "/api/v1/corrections",
        "/api/v1/instruments/{id}/timeline",
    ] {
        for name in ["from", "to"] {
            let p = param(path, name);
            assert_eq!(p["schema"], edge, "{path} {name}");
            assert_eq!(p["required"], true, "{path} {name}");
            assert!(!p["description"].as_str().unwrap().is_empty());
            assert!(p["example"].is_string(), "{path} {name}");
        }
    }
    for (path, name) in [
        ("/api/v1/hours", "instrument"),
        ("/api/v1/hours", "unit"),
        ("/api/v1/sessions", "instrument"),
    ] {
        assert_eq!(param(path, name)["schema"]["pattern"], r"\S");
    }
    for name in ["instrument_id", "reason"] {
        assert_eq!(
            doc["components"]["schemas"]["NewCorrection"]["properties"][name]["pattern"],
            r"\S"
        );
    }
    for name in ["booking_id", "instrument_id"] {
        assert_eq!(
            doc["components"]["schemas"]["Booking"]["properties"][name]["pattern"],
            r"\S"
        );
    }
    assert_eq!(
        param("/api/v1/instruments/{id}/timeline", "format")["schema"]["$ref"],
        "#/components/schemas/JsonOnly"
    );
    assert_eq!(
        doc["components"]["schemas"]["JsonOnly"]["enum"],
        json!(["json"])
    );
    // What the document calls invalid is refused.
    for uri in [
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&instrument=%20",
        "/api/v1/hours?from=2025-03-01&to=2025-04-01&unit=",
        "/api/v1/sessions?from=%C3%AC&to=2025-04-01",
    ] {
        assert_eq!(
            get(&router, uri).await.status,
            StatusCode::BAD_REQUEST,
            "{uri}"
        );
    }
}

/// `period=day` over a range of centuries took minutes and hundreds of
/// megabytes (schemathesis timed out): an hours answer has at most
/// `MAX_PERIODS` periods, else a 400 naming `period` before any work.
#[tokio::test]
async fn hours_split_into_too_many_periods_are_a_400_naming_period() {
    let (fake, router) = setup();
    for uri in [
        "/api/v1/hours?from=0001-01-01&to=9999-12-31&period=day",
        "/api/v1/hours?from=1900-01-01&to=2100-01-01&period=day",
        "/api/v1/hours?from=1500-01-01&to=2100-01-01&period=month",
        "/api/v1/hours?from=0001-01-01T00:00:00Z&to=9999-01-01T00:00:00Z&period=year",
    ] {
        let a = get(&router, uri).await;
        a.assert_bad("period");
        assert!(
            a.json()["error"].as_str().unwrap().contains("at most 5000"),
            "{}",
            a.text()
        );
    }
    assert_eq!(fake.calls(), []);
    for uri in [
        // 13 years of days, 400 of months, any range as one period.
        "/api/v1/hours?from=2020-01-01&to=2033-01-01&period=day",
        "/api/v1/hours?from=1700-01-01&to=2100-01-01&period=month",
        "/api/v1/hours?from=1900-01-01&to=2100-01-01&period=year",
        "/api/v1/hours?from=0001-01-01&to=9999-12-31",
    ] {
        let a = get(&router, uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
    }
    assert_eq!(fake.calls().len(), 4);
}

#[tokio::test]
async fn accept_with_q_zero_never_gets_that_format() {
    let (_, router) = setup();
    let url = "/api/v1/bookings/outcomes?from=2025-03-01&to=2025-04-01";
    for (accept, status, content_type) in [
        (
            "text/csv;q=0, application/json",
            StatusCode::OK,
            "application/json",
        ),
        (
            "application/json;q=0, text/csv;q=0.5",
            StatusCode::OK,
            "text/csv; charset=utf-8",
        ),
        (
            "application/json;q=0",
            StatusCode::NOT_ACCEPTABLE,
            "application/json",
        ),
    ] {
        let a = send(
            &router,
            Method::GET,
            url,
            Some(EVALUATOR),
            &[("accept", accept)],
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.content_type()),
            (status, content_type),
            "{accept}"
        );
        if status == StatusCode::NOT_ACCEPTABLE {
            assert_eq!(a.json()["parameter"], "format");
        }
    }
}

#[tokio::test]
async fn checkpoints_are_served_to_evaluators_all_or_the_newest() {
    let (_, router) = setup();
    let all = get(&router, "/api/v1/checkpoints").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text());
    let ids: Vec<i64> = all.json()["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    {
        let uri = "/api/v1/checkpoints?latest=true";
        let newest = get(&router, uri).await;
        assert_eq!(newest.status, StatusCode::OK, "{uri}");
        assert_eq!(newest.json()["checkpoints"][0]["id"], 2, "{uri}");
        assert_eq!(newest.json()["checkpoints"].as_array().unwrap().len(), 1);
        assert!(
            newest.json()["checkpoints"][0]["note"]
                .as_str()
                .unwrap()
                .contains("\u{2014} labhours/test ")
        );
    }
    // The parameter is a boolean (the OpenAPI document says so): an empty
    // or other value is refused, naming it.
    for uri in [
        "/api/v1/checkpoints?latest=maybe",
        "/api/v1/checkpoints?latest=",
        "/api/v1/checkpoints?latest",
    ] {
        let bad = get(&router, uri).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(bad.json()["parameter"], "latest");
    }
    let unknown = get(&router, "/api/v1/checkpoints?newest").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_hub_takes_batches_only_with_a_site_credential_naming_that_site() {
    use crate::config::HubSiteConfig;
    let site_token = "site-a-secret";
    let sites = [HubSiteConfig {
        id: "site-a".into(),
        name: "Site A".into(),
        token_sha256: hash_token(site_token),
        checkpoint_key: None,
    }];
    let batch = |site: &str| Some(json!({ "site": site, "rows": [] }));
    let uri = "/api/v1/federation/batch";

    // Not a hub: 404 whatever the credential, 401 without one.
    let (_, plain) = setup();
    let a = send(
        &plain,
        Method::POST,
        uri,
        Some(site_token),
        &[],
        batch("site-a"),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    let a = send(&plain, Method::POST, uri, None, &[], batch("site-a")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());

    let fake = Arc::new(Fake::default());
    let hub = app(ApiState::new(fake, &tokens())
        .expect("tokens")
        .with_clock(Arc::new(now))
        .with_hub(super::federation::HubSites::new(&sites).expect("sites")));
    // An API token is not a site credential, nor is nothing.
    for token in [Some(ADMIN), None, Some("site-a-secreT")] {
        let a = send(&hub, Method::POST, uri, token, &[], batch("site-a")).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{token:?}: {}",
            a.text()
        );
    }
    let as_site = |body| send(&hub, Method::POST, uri, Some(site_token), &[], body);
    // The site id comes from the credential: a batch naming another is refused.
    let a = as_site(batch("site-b")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    assert!(a.text().contains("site-b"), "{}", a.text());
    // A body that is not a batch names the problem.
    let a = as_site(Some(json!({"rows": 3}))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert_eq!(a.json()["parameter"], "body");
    // Past the gate, the batch reaches the store (the fake keeps nothing: 400 from it).
    let a = as_site(batch("site-a")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(
        a.text().contains("keeps no forwarded results"),
        "{}",
        a.text()
    );
}
