//! The scope matrix: every route of the API (from the OpenAPI document,
//! which another test holds equal to the router) and of the dashboard
//! (from [`crate::dashboard::pages`], which the router is built from) is
//! called by an admin whose token is scoped to `Chemistry/Mass Spec`, on
//! the dashboard scenario's real store, where `nmr-600` (in
//! `Chemistry/NMR Centre`) has the bookings, sessions, power and a
//! quarantined payload, and `ms-1` (in scope) only an agent.
//!
//! No answer may name anything of `nmr-600` that the request did not
//! itself send; a route naming the outside instrument answers 404; and the
//! same request by the unscoped admin must show the outside data (so the
//! check is not passing on an empty store). A route with no entry in
//! [`requests`] fails the test: a new route must say how it is scoped.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::Timestamp;
use jiff::civil::{Date, date};
use tower::ServiceExt;
use utoipa::OpenApi;

use crate::api::{ApiDoc, ApiState, app};
use crate::config::CollectorConfig;
use crate::dashboard::scenario::{ADMIN_TOKEN, NMR, NMR_NAME, ZONE, config, seed};
use crate::dashboard::{DashState, pages, routes};

const DAY: Date = date(2025, 3, 3);
const SCOPED_TOKEN: &str = "lh_mass-spec-admin-test-token";
const INSIDE: &str = "ms-1";
/// What of the outside instrument the scenario stores: its id, name,
/// agent, bookings and unit.
const OUTSIDE: &[&str] = &[
    NMR,
    NMR_NAME,
    "agent-nmr-600",
    "b-noshow",
    "b-overrun",
    "NMR Centre",
];
const RANGE: &str = "from=2025-03-01&to=2025-03-06";

struct Site {
    _dir: tempfile::TempDir,
    router: Router,
}

fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data, DAY).expect("seed");
    let mut text = config(&data, "127.0.0.1:0", true);
    text.push_str(&format!(
        r#"
[[http.tokens]]
name = "mass-spec-admin"
role = "admin"
sha256 = "{}"
unit = "Chemistry/Mass Spec"
"#,
        crate::api::hash_token(SCOPED_TOKEN)
    ));
    let config = CollectorConfig::parse(&text).expect("config");
    let reports = crate::verified::store_reports(&config).expect("reports");
    let now: Timestamp = "2025-03-04T04:00:00Z".parse().expect("now");
    reports.catch_up(now).expect("catch up");
    // A correction on the outside instrument, for the corrections routes.
    let correction = crate::verified::NewCorrection {
        instrument_id: NMR.into(),
        start: "2025-03-03T08:00:00Z".parse().expect("start"),
        end: "2025-03-03T08:30:00Z".parse().expect("end"),
        user: Some("li".into()),
        group: None,
        usage_type: Some(crate::bookings::UsageType::Teaching),
        booking_id: None,
        from_booking_id: None,
        reason: "booked on paper".into(),
    };
    crate::verified::Reports::add_correction(&*reports, correction, "office-admin", now)
        .expect("correction");
    // A signed checkpoint: it names every instrument, the outside one too.
    let key = labhours_shared::trust::Signer::from_pkcs8(
        &labhours_shared::trust::Signer::generate_pkcs8().expect("key"),
    )
    .expect("signer");
    let store = crate::store::Store::open(&data, crate::store::Durability::Full).expect("store");
    crate::evidence::checkpoint::sign(store.connection(), &key, "scope-matrix", now)
        .expect("checkpoint");
    drop(store);
    let org = reports.registry().organisation().clone();
    let api = ApiState::new(reports, &config.http.tokens)
        .expect("api")
        .with_clock(Arc::new(move || now))
        .with_organisation(org);
    let zone = jiff::tz::TimeZone::get(ZONE).expect("zone");
    let router = routes(DashState::new(api.clone(), zone)).merge(app(api));
    Site { _dir: dir, router }
}

/// What a request must get from the scoped caller.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 404: it names the outside instrument (or its payload).
    NotFound,
    /// A write for outside, refused with the reason (the store is checked
    /// unchanged at the end).
    Refused,
    /// 2xx/3xx, and the unscoped admin's answer names the outside
    /// instrument (the filter is what keeps it out).
    Filtered,
    /// 2xx/3xx; nothing outside exists in it either way (login form, assets).
    Plain,
}

#[derive(Debug, Clone)]
struct Req {
    method: Method,
    uri: String,
    /// Content type and body.
    body: Option<(String, String)>,
    expect: Expect,
}

fn get(uri: impl Into<String>, expect: Expect) -> Req {
    Req {
        method: Method::GET,
        uri: uri.into(),
        body: None,
        expect,
    }
}

fn post(uri: &str, content_type: &str, body: &str, expect: Expect) -> Req {
    Req {
        method: Method::POST,
        uri: uri.into(),
        body: Some((content_type.into(), body.into())),
        expect,
    }
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// The requests that exercise `method path` (a route template), or `None`
/// when the matrix does not know the route.
fn requests(method: &Method, path: &str) -> Option<Vec<Req>> {
    use Expect::*;
    let outside_instrument = format!("{RANGE}&instrument={NMR}");
    let list = |p: &str| {
        vec![
            get(format!("{p}?{RANGE}"), Filtered),
            get(format!("{p}?{RANGE}&format=csv"), Filtered),
            get(format!("{p}?{outside_instrument}"), NotFound),
            get(format!("{p}?{RANGE}&unit=Chemistry/Mass%20Spec"), Plain),
            get(format!("{p}?{RANGE}&unit=Chemistry"), NotFound),
        ]
    };
    let when = "start=2025-03-03T08:00:00Z&end=2025-03-03T09:00:00Z";
    Some(match (method.as_str(), path) {
        ("GET", "/api/v1/healthz") => vec![get(path, Plain)],
        ("GET", "/api/v1/openapi.json") => vec![get(path, Plain)],
        ("GET", "/api/v1/hours") => vec![
            get(format!("{path}?{RANGE}"), Filtered),
            get(format!("{path}?{RANGE}&group_by=unit"), Filtered),
            get(
                format!("{path}?{RANGE}&group_by=unit&unit=Chemistry/Mass%20Spec"),
                Plain,
            ),
            // A unit above the caller's is not theirs to see.
            get(
                format!("{path}?{RANGE}&group_by=unit&unit=Chemistry"),
                NotFound,
            ),
            get(format!("{path}?{RANGE}&format=xlsx"), Plain),
            get(format!("{path}?{outside_instrument}"), NotFound),
            get(
                format!("{path}?{RANGE}&unit=Chemistry/NMR%20Centre"),
                NotFound,
            ),
        ],
        ("GET", "/api/v1/bookings/outcomes" | "/api/v1/sessions" | "/api/v1/corrections") => {
            list(path)
        }
        ("GET", "/api/v1/instruments") => vec![
            get(path, Filtered),
            get(format!("{path}?format=csv"), Filtered),
            get(format!("{path}?unit=Chemistry/Mass%20Spec"), Plain),
            get(format!("{path}?unit=Chemistry"), NotFound),
        ],
        ("GET", "/api/v1/instruments/{id}/timeline") => vec![
            get(
                format!("/api/v1/instruments/{NMR}/timeline?{RANGE}"),
                NotFound,
            ),
            get(
                format!("/api/v1/instruments/{INSIDE}/timeline?{RANGE}"),
                Plain,
            ),
        ],
        // A checkpoint is signed over every agent and instrument of the
        // collector: a scoped caller gets none (docs/evidence.md).
        ("GET", "/api/v1/checkpoints") => {
            vec![
                get(path, Filtered),
                get(format!("{path}?latest=true"), Filtered),
            ]
        }
        // This collector is no hub: nothing to list, nothing to take; a
        // batch is authenticated by a site credential, never by a token.
        ("GET", "/api/v1/sites") => vec![get(path, Plain)],
        ("POST", "/api/v1/federation/batch") => vec![post(path, JSON, "{}", NotFound)],
        ("GET", "/api/v1/quarantine") => vec![
            get(path, Filtered),
            get(format!("{path}?agent=agent-nmr-600"), Filtered),
        ],
        // The scenario's one payload, from the outside instrument's agent.
        ("GET", "/api/v1/quarantine/{id}") => vec![get("/api/v1/quarantine/1", NotFound)],
        ("POST", "/api/v1/corrections") => vec![post(
            path,
            JSON,
            &format!(
                r#"{{"instrument_id":"{NMR}","start":"2025-03-03T08:00:00Z","end":"2025-03-03T09:00:00Z","reason":"x","usage_type":"research"}}"#
            ),
            NotFound,
        )],
        ("POST", "/api/v1/bookings") => {
            let booking = |id: &str, instrument: &str| {
                format!(
                    r#"{{"bookings":[{{"booking_id":"{id}","instrument_id":"{instrument}","user":"u","group":"g","usage_type":"research","start":"2025-03-05T09:00:00+08:00","end":"2025-03-05T10:00:00+08:00","status":"confirmed"}}]}}"#
                )
            };
            vec![
                post(path, JSON, &booking("b-new", NMR), Refused),
                // An inside instrument taking an outside booking's id.
                post(path, JSON, &booking("b-noshow", INSIDE), Refused),
            ]
        }
        ("GET", "/" | "/fleet/table" | "/agents" | "/exceptions") => {
            vec![get(path, Filtered)]
        }
        ("GET", "/report" | "/report.csv") => vec![
            get(format!("{path}?year=2025"), Filtered),
            get(
                format!("{path}?year=2025&unit=Chemistry/Mass%20Spec"),
                Plain,
            ),
            get(format!("{path}?year=2025&unit=Chemistry"), NotFound),
        ],
        ("GET", "/report.xlsx") => vec![get(format!("{path}?year=2025"), Plain)],
        ("GET", "/instruments/{id}") => vec![
            get(format!("/instruments/{NMR}?day=2025-03-03"), NotFound),
            get(format!("/instruments/{INSIDE}?day=2025-03-03"), Plain),
        ],
        ("POST", "/exceptions/assign") => vec![post(
            path,
            FORM,
            &format!("instrument_id={NMR}&{when}&reason=x&usage_type=research"),
            NotFound,
        )],
        ("POST", "/exceptions/review") => vec![post(
            path,
            FORM,
            &format!("instrument_id={NMR}&{when}&note=x"),
            NotFound,
        )],
        ("POST", "/exceptions/move") => vec![post(
            path,
            FORM,
            &format!(
                "instrument_id={NMR}&{when}&reason=x&from_booking_id=b-overrun&booking_id=b-noshow"
            ),
            NotFound,
        )],
        ("GET", "/bookings" | "/login") => vec![get(path, Plain)],
        ("POST", "/bookings") => {
            let csv = format!(
                "booking_id,instrument_id,user,group,usage_type,start,end,status\r\n\
                 b-up,{NMR},u,g,research,2025-03-05T09:00:00+08:00,2025-03-05T10:00:00+08:00,confirmed\r\n"
            );
            let body = format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.csv\"\r\n\
                 Content-Type: text/csv\r\n\r\n{csv}\r\n\
                 --XyZ\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\napply\r\n--XyZ--\r\n"
            );
            vec![post(
                path,
                "multipart/form-data; boundary=XyZ",
                &body,
                Refused,
            )]
        }
        ("POST", "/login") => vec![post(
            path,
            FORM,
            &format!("token={SCOPED_TOKEN}&next=%2F"),
            Plain,
        )],
        ("POST", "/logout") => vec![post(path, FORM, "", Plain)],
        ("GET", "/lang/{code}") => vec![get("/lang/zh-CN?next=%2F", Plain)],
        ("GET", "/assets/{version}/{name}") => vec![get(
            format!(
                "/assets/{}/style.css",
                crate::dashboard::assets::asset_version()
            ),
            Plain,
        )],
        _ => return None,
    })
}

/// Every (method, route) the API document and the dashboard's list hold.
fn every_route() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in ApiDoc::openapi().paths.paths {
        if item.get.is_some() {
            out.push((Method::GET, path.clone()));
        }
        if item.post.is_some() {
            out.push((Method::POST, path.clone()));
        }
        let others = [
            &item.put,
            &item.delete,
            &item.patch,
            &item.head,
            &item.options,
        ];
        assert!(
            others.iter().all(|o| o.is_none()),
            "{path}: a method the matrix does not call; extend every_route"
        );
    }
    out.extend(dashboard_routes());
    out
}

/// The dashboard's (method, path) pairs: each path of [`pages`] probed
/// with GET and POST (a 405 means the path does not serve that method).
fn dashboard_routes() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, _) in pages() {
        for method in [Method::GET, Method::POST] {
            out.push((method, path.to_owned()));
        }
    }
    out
}

struct Answer {
    status: StatusCode,
    body: String,
}

async fn send(router: &Router, req: &Req, bearer: &str, cookie: &str) -> Answer {
    let mut b = Request::builder()
        .method(req.method.clone())
        .uri(&req.uri)
        .header(header::HOST, "127.0.0.1:8080")
        .header("sec-fetch-site", "same-origin")
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(header::COOKIE, cookie);
    let body = match &req.body {
        Some((content_type, body)) => {
            b = b.header(header::CONTENT_TYPE, content_type);
            Body::from(body.clone())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(b.body(body).expect("request"))
        .await
        .expect("answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The session cookie of a login with `token`.
async fn login(router: &Router, token: &str) -> String {
    let req = post(
        "/login",
        FORM,
        &format!("token={token}&next=%2F"),
        Expect::Plain,
    );
    let response = router
        .clone()
        .oneshot(
            Request::post(&req.uri)
                .header(header::HOST, "127.0.0.1:8080")
                .header("sec-fetch-site", "same-origin")
                .header(header::CONTENT_TYPE, FORM)
                .body(Body::from(req.body.expect("form").1))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .expect("session cookie")
        .to_str()
        .expect("ascii");
    cookie.split(';').next().expect("pair").to_owned()
}

/// The outside markers `answer` holds that `req` did not send itself.
fn leaks(req: &Req, answer: &str) -> Vec<&'static str> {
    let sent = format!(
        "{} {}",
        req.uri.replace("%20", " "),
        req.body.as_ref().map_or("", |(_, b)| b.as_str())
    );
    OUTSIDE
        .iter()
        .copied()
        .filter(|m| answer.contains(m) && !sent.contains(m))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_scoped_to_a_unit_sees_nothing_outside_it_on_any_route() {
    // Writes change the store: the unscoped comparison runs on its own copy.
    let scoped_site = site();
    let open_site = site();
    let scoped_cookie = login(&scoped_site.router, SCOPED_TOKEN).await;
    let open_cookie = login(&open_site.router, ADMIN_TOKEN).await;
    let mut problems = Vec::new();
    let mut called = 0;
    for (method, path) in every_route() {
        let Some(reqs) = requests(&method, &path) else {
            // A dashboard path probed with a method it does not serve.
            let probe = get(path.replace(['{', '}'], ""), Expect::Plain);
            let probe = Req {
                method: method.clone(),
                ..probe
            };
            let answer = send(&scoped_site.router, &probe, SCOPED_TOKEN, &scoped_cookie).await;
            if answer.status != StatusCode::METHOD_NOT_ALLOWED {
                problems.push(format!(
                    "{method} {path} is served ({}) but has no entry in scope_matrix::requests: say how it keeps to the caller's unit",
                    answer.status
                ));
            }
            continue;
        };
        for req in reqs {
            called += 1;
            // Logging out ends the session it is sent with: a throwaway one.
            let cookie = if path == "/logout" {
                login(&scoped_site.router, SCOPED_TOKEN).await
            } else {
                scoped_cookie.clone()
            };
            let scoped = send(&scoped_site.router, &req, SCOPED_TOKEN, &cookie).await;
            let at = format!("{} {} → {}", req.method, req.uri, scoped.status);
            let leaked = leaks(&req, &scoped.body);
            if !leaked.is_empty() {
                problems.push(format!("{at}: names {leaked:?}"));
            }
            let ok = scoped.status.is_success() || scoped.status.is_redirection();
            match req.expect {
                Expect::NotFound if scoped.status != StatusCode::NOT_FOUND => {
                    problems.push(format!("{at}: expected 404 for the outside instrument"));
                }
                Expect::Refused
                    if !scoped.body.contains("not in unit")
                        && !scoped.body.contains("outside unit") =>
                {
                    problems.push(format!(
                        "{at}: a write for outside was not refused: {}",
                        scoped.body
                    ));
                }
                Expect::Filtered | Expect::Plain if !ok => {
                    problems.push(format!("{at}: expected success: {}", scoped.body));
                }
                _ => {}
            }
            if req.method == Method::GET
                && (req.expect == Expect::Filtered || req.expect == Expect::NotFound)
            {
                let open = send(&open_site.router, &req, ADMIN_TOKEN, &open_cookie).await;
                let shown = leaks(&get("", Expect::Plain), &open.body);
                if shown.is_empty() {
                    problems.push(format!(
                        "{} {}: the unscoped admin sees nothing outside either ({}); the check would pass on an empty answer",
                        req.method, req.uri, open.status
                    ));
                }
            }
        }
    }
    assert!(called > 30, "only {called} requests");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The writes refused above changed nothing.
    let bookings = send(
        &open_site.router,
        &get(format!("/api/v1/bookings/outcomes?{RANGE}"), Expect::Plain),
        ADMIN_TOKEN,
        &open_cookie,
    )
    .await;
    let scoped_view = send(
        &scoped_site.router,
        &get(format!("/api/v1/bookings/outcomes?{RANGE}"), Expect::Plain),
        ADMIN_TOKEN,
        &open_cookie,
    )
    .await;
    assert!(!scoped_view.body.contains("b-new") && !scoped_view.body.contains("b-up"));
    assert!(bookings.body.contains("b-noshow"));
    assert!(scoped_view.body.contains(&format!(
        "\"booking_id\":\"b-noshow\",\"instrument_id\":\"{NMR}\""
    )));
}
