//! The dashboard's routes through the real store, seeded with
//! [`super::scenario`]: status codes, login and sessions, the CSRF check,
//! roles, both languages, and what the pages show.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::Timestamp;
use jiff::civil::{Date, date};
use tower::ServiceExt;

use super::scenario::{ADMIN_TOKEN, EVALUATOR_TOKEN, NMR, ZONE, config, seed};
use super::{DashState, routes};
use crate::api::{ApiState, app};
use crate::config::CollectorConfig;

const DAY: Date = date(2025, 3, 3);

struct Site {
    _dir: tempfile::TempDir,
    router: Router,
}

fn site(tokens: bool) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data, DAY).expect("seed");
    let config = CollectorConfig::parse(&config(&data, "127.0.0.1:0", tokens)).expect("config");
    let reports = crate::verified::store_reports(&config).expect("reports");
    let now: Timestamp = "2025-03-04T04:00:00Z".parse().expect("now");
    reports.catch_up(now).expect("catch up");
    let api = ApiState::new(reports, &config.http.tokens)
        .expect("api")
        .with_clock(Arc::new(move || now));
    let zone = jiff::tz::TimeZone::get(ZONE).expect("zone");
    let router = routes(DashState::new(api.clone(), zone)).merge(app(api));
    Site { _dir: dir, router }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn get(uri: &str, cookie: Option<&str>, lang: &str) -> Request<Body> {
    let mut b = Request::get(uri).header(header::ACCEPT_LANGUAGE, lang);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).expect("request")
}

fn post_form(uri: &str, cookie: Option<&str>, body: &str, same_origin: bool) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if same_origin {
        b = b.header("sec-fetch-site", "same-origin");
    }
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

/// Logs in with `token`; the `lh_session=…` pair to send back.
async fn login(router: &Router, token: &str) -> String {
    let answer = send(
        router,
        post_form("/login", None, &format!("token={token}&next=%2F"), true),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie = answer
        .headers
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    cookie.split(';').next().expect("pair").to_owned()
}

#[tokio::test]
async fn without_tokens_the_fleet_opens_without_login_in_the_accepted_language() {
    let site = site(false);
    let en = send(&site.router, get("/", None, "en-GB,en;q=0.9")).await;
    assert_eq!(en.status, StatusCode::OK);
    let html = en.text();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains(super::scenario::NMR_NAME));
    assert!(html.contains("QTOF mass spectrometer"));
    let zh = send(&site.router, get("/", None, "zh-CN,zh;q=0.9")).await;
    assert!(zh.text().contains("仪器总览"));
    assert!(zh.text().contains("<html lang=\"zh-CN\">"));
    let switched = send(&site.router, get("/lang/zh-CN?back=/report", None, "en")).await;
    assert_eq!(switched.status, StatusCode::SEE_OTHER);
    assert_eq!(switched.headers[header::LOCATION], "/report");
    let cookie = switched.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii");
    assert!(cookie.starts_with("lh_lang=zh-CN"));
    let sticky = send(&site.router, get("/", Some("lh_lang=zh-CN"), "en")).await;
    assert!(sticky.text().contains("仪器总览"));
}

#[tokio::test]
async fn with_tokens_a_visitor_logs_in_with_a_token_and_logging_out_ends_the_session() {
    let site = site(true);
    let anonymous = send(&site.router, get("/report?year=2025", None, "en")).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.headers[header::LOCATION],
        "/login?next=/report%3Fyear%3D2025"
    );
    let wrong = send(&site.router, post_form("/login", None, "token=nope", true)).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let cookie = login(&site.router, ADMIN_TOKEN).await;
    let fleet = send(&site.router, get("/", Some(&cookie), "en")).await;
    assert_eq!(fleet.status, StatusCode::OK);
    assert!(fleet.text().contains("office-admin"));
    let out = send(&site.router, post_form("/logout", Some(&cookie), "", true)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = send(&site.router, get("/", Some(&cookie), "en")).await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the session was deleted"
    );
}

#[tokio::test]
async fn a_post_without_same_origin_proof_is_refused_before_anything_happens() {
    let site = site(false);
    let body = format!(
        "instrument_id={NMR}&start=2025-03-03T01:00:00Z&end=2025-03-03T03:00:00Z&note=x&back=/exceptions"
    );
    let bare = send(
        &site.router,
        post_form("/exceptions/review", None, &body, false),
    )
    .await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN);
    let mut cross = post_form("/exceptions/review", None, &body, false);
    cross
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().expect("value"));
    assert_eq!(
        send(&site.router, cross).await.status,
        StatusCode::FORBIDDEN
    );
    let mut origin = post_form("/exceptions/review", None, &body, false);
    origin.headers_mut().insert(
        header::ORIGIN,
        "http://127.0.0.1:8080".parse().expect("value"),
    );
    assert_eq!(
        send(&site.router, origin).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn an_evaluator_sees_no_action_and_may_not_post_one() {
    let site = site(true);
    let cookie = login(&site.router, EVALUATOR_TOKEN).await;
    let page = send(
        &site.router,
        get(
            "/exceptions?from=2025-03-03&to=2025-03-03",
            Some(&cookie),
            "en",
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("data-kind=\"no_show\""));
    assert!(!html.contains("assign-form") && !html.contains("review-form"));
    let bookings = send(&site.router, get("/bookings", Some(&cookie), "en")).await;
    assert!(!bookings.text().contains("id=\"upload\""));
    let body =
        format!("instrument_id={NMR}&start=2025-03-03T01:00:00Z&end=2025-03-03T03:00:00Z&note=x");
    let refused = send(
        &site.router,
        post_form("/exceptions/review", Some(&cookie), &body, true),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let admin = login(&site.router, ADMIN_TOKEN).await;
    let html = send(
        &site.router,
        get(
            "/exceptions?from=2025-03-03&to=2025-03-03",
            Some(&admin),
            "en",
        ),
    )
    .await
    .text();
    assert!(html.contains("assign-form") && html.contains("review-form"));
}

#[tokio::test]
async fn the_instrument_day_shows_the_no_show_without_running_under_it_and_the_thresholds() {
    let site = site(false);
    let page = send(
        &site.router,
        get(&format!("/instruments/{NMR}?day=2025-03-03"), None, "en"),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains(r#"data-booking="b-noshow" data-outcome="no_show""#));
    assert!(html.contains(r#"data-booking="b-overrun" data-outcome="used" data-flags="overrun""#));
    assert!(html.contains(r#"data-threshold="running_above_w" data-watts="400""#));
    assert!(html.contains("<polyline"));
    // The no-show's slot, 09:00–11:00 local.
    let (from, to) = (1_740_963_600_000_i64, 1_740_970_800_000_i64);
    let mut running = 0;
    for band in html.split("class=\"band\"").skip(1) {
        let attr = |name: &str| -> i64 {
            let at = band.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
            band[at..at + band[at..].find('"').expect("end")]
                .parse()
                .expect("number")
        };
        if band.starts_with(" data-state=\"running\"") {
            running += 1;
            assert!(
                attr("data-end") <= from || attr("data-start") >= to,
                "a running band under the no-show"
            );
        }
    }
    assert!(running >= 1, "the day has running bands at all");
    let week = send(
        &site.router,
        get(
            &format!("/instruments/{NMR}?day=2025-03-05&span=week"),
            None,
            "zh-CN",
        ),
    )
    .await;
    assert_eq!(week.status, StatusCode::OK);
    assert!(week.text().contains("2025-03-03 – 2025-03-09"));
    let unknown = send(&site.router, get("/instruments/nope", None, "en")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

fn report_unassigned(html: &str) -> String {
    // Column 13: unassigned after corrections, in the nmr-600 row.
    let row = html
        .split("<tr>")
        .find(|r| r.contains(&format!(">{NMR}<")))
        .expect("the instrument's row");
    let cell = row.split("data-col=\"13\">").nth(1).expect("column 13");
    cell[..cell.find('<').expect("end")].to_owned()
}

#[tokio::test]
async fn assigning_unbooked_use_changes_the_report_and_lands_in_the_audit_trail() {
    let site = site(false);
    let exceptions = send(
        &site.router,
        get("/exceptions?from=2025-03-03&to=2025-03-03", None, "en"),
    )
    .await
    .text();
    for kind in ["no_show", "overrun", "unbooked"] {
        assert!(
            exceptions.contains(&format!("data-kind=\"{kind}\"")),
            "{kind}"
        );
    }
    let before = send(&site.router, get("/report?year=2025", None, "en")).await;
    assert_eq!(before.status, StatusCode::OK);
    let before = report_unassigned(&before.text());
    assert_ne!(before, "0.00");
    let body = format!(
        "instrument_id={NMR}&start=2025-03-02T16:00:00Z&end=2025-03-03T16:00:00Z&user=zhao&group=&usage_type=external&booking_id=&reason=paper+booking&back=/exceptions"
    );
    let done = send(
        &site.router,
        post_form("/exceptions/assign", None, &body, true),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    let after = report_unassigned(
        &send(&site.router, get("/report?year=2025", None, "en"))
            .await
            .text(),
    );
    assert_eq!(after, "0.00");
    let audit = send(
        &site.router,
        get(
            "/api/v1/corrections?from=2025-03-01&to=2025-04-01",
            None,
            "en",
        ),
    )
    .await
    .text();
    assert!(audit.contains("\"created_by\":\"local\"") && audit.contains("paper booking"));
}

#[tokio::test]
async fn the_report_downloads_as_csv_and_as_a_workbook_and_the_api_answers_xlsx() {
    let site = site(false);
    let csv = send(&site.router, get("/report.csv?year=2025", None, "zh-CN")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.text().contains("有效工作机时"));
    let xlsx = send(
        &site.router,
        get("/report.xlsx?year=2025&period=month", None, "en"),
    )
    .await;
    assert_eq!(xlsx.status, StatusCode::OK);
    assert_eq!(&xlsx.body[..2], b"PK");
    let api = send(
        &site.router,
        get(
            "/api/v1/hours?from=2025-03-01&to=2025-04-01&format=xlsx",
            None,
            "en",
        ),
    )
    .await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(
        api.headers[header::CONTENT_TYPE],
        crate::api::table::XLSX_CONTENT_TYPE
    );
    assert_eq!(&api.body[..2], b"PK");
}

#[tokio::test]
async fn the_agents_page_counts_the_quarantined_payload_and_assets_are_cached() {
    let site = site(false);
    let agents = send(&site.router, get("/agents", None, "en")).await.text();
    assert!(agents.contains("data-agent=\"agent-nmr-600\""));
    assert!(agents.contains("payload is not valid JSON"));
    let page = send(&site.router, get("/", None, "en")).await.text();
    let at = page.find("/assets/").expect("an asset link");
    let path = &page[at..at + page[at..].find('"').expect("end")];
    let asset = send(&site.router, get(path, None, "en")).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(
        asset.headers[header::CACHE_CONTROL]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
}

/// A same-origin upload of `file` to `/bookings` with action `preview`.
fn preview(name: &str, file: &str, lang: &str) -> Request<Body> {
    let boundary = "XBOUNDARY";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n{file}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\npreview\r\n--{boundary}--\r\n"
    );
    Request::post("/bookings")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("sec-fetch-site", "same-origin")
        .header(header::ACCEPT_LANGUAGE, lang)
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn a_bookings_preview_lists_bad_rows_by_line_and_writes_nothing() {
    let site = site(false);
    let file = "booking_id,instrument_id,user,group,usage_type,start,end,status\n\
                b-new,nmr-600,li,chem,research,2025-03-10 09:00,2025-03-10 10:00,confirmed\n\
                b-bad,nmr-600,li,chem,gardening,2025-03-10 09:00,2025-03-10 10:00,confirmed\n";
    let answer = send(&site.router, preview("march.csv", file, "en")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let html = answer.text();
    assert!(html.contains("id=\"bad-rows\""));
    assert!(
        html.contains("<td class=\"num\">3</td>"),
        "line 3 is bad: {html}"
    );
    assert!(html.contains("id=\"apply\""), "the preview offers to apply");
    let outcomes = send(
        &site.router,
        get(
            "/api/v1/bookings/outcomes?from=2025-03-10&to=2025-03-11",
            None,
            "en",
        ),
    )
    .await;
    assert_eq!(outcomes.status, StatusCode::OK);
    assert!(
        !outcomes.text().contains("b-new"),
        "a preview writes nothing"
    );
}

#[tokio::test]
async fn a_bookings_preview_names_instruments_not_monitored_in_both_languages() {
    let site = site(false);
    let file = "booking_id,instrument_id,user,group,usage_type,start,end,status\n\
                b-new,nmr-600,li,chem,research,2025-03-10 09:00,2025-03-10 10:00,confirmed\n\
                b-sem,sem-2,li,chem,research,2025-03-10 09:00,2025-03-10 10:00,confirmed\n";
    for (lang, label) in [
        ("en", "Instruments not monitored"),
        ("zh-CN", "未监测的仪器"),
    ] {
        let answer = send(&site.router, preview("march.csv", file, lang)).await;
        assert_eq!(answer.status, StatusCode::OK);
        let html = answer.text();
        assert!(!html.contains("id=\"bad-rows\""), "{html}");
        assert!(html.contains("id=\"not-monitored\""), "{html}");
        assert!(html.contains(label), "{lang}: {html}");
        assert!(html.contains("<b>sem-2</b> (1)"), "{html}");
    }
}

#[tokio::test]
async fn every_page_answers_in_both_languages_without_a_raw_label_key() {
    let site = site(false);
    let pages = [
        "/".to_owned(),
        "/fleet/table".to_owned(),
        format!("/instruments/{NMR}?day=2025-03-03"),
        format!("/instruments/{NMR}?day=2025-03-03&span=week"),
        "/exceptions?from=2025-03-03&to=2025-03-03&show=all".to_owned(),
        "/report?year=2025".to_owned(),
        "/report?year=2025&period=month".to_owned(),
        "/agents".to_owned(),
        "/bookings".to_owned(),
    ];
    let en = super::i18n::flatten(include_str!("../../i18n/en.toml")).expect("labels");
    for lang in ["en", "zh-CN"] {
        for path in &pages {
            let answer = send(&site.router, get(path, None, lang)).await;
            assert_eq!(answer.status, StatusCode::OK, "{path} in {lang}");
            let html = answer.text();
            // A key in the text, not a path such as `/report.csv`.
            let leaked: Vec<&String> = en
                .keys()
                .filter(|k| {
                    html.matches(k.as_str()).count() > html.matches(&format!("/{k}")).count()
                })
                .collect();
            assert!(leaked.is_empty(), "{path} in {lang} shows keys {leaked:?}");
        }
    }
}

#[tokio::test]
async fn the_previewed_file_is_applied_from_the_page_without_a_second_upload() {
    let site = site(false);
    let boundary = "XBOUNDARY";
    let file = "booking_id,instrument_id,user,group,usage_type,start,end,status\n\
                b-new,nmr-600,li,chem,research,2025-03-10 09:00,2025-03-10 10:00,confirmed\n";
    // What the preview's "Import" form sends: the file's text and name.
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"carried_name\"\r\n\r\nmarch.csv\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"carried\"\r\n\r\n{file}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\napply\r\n--{boundary}--\r\n"
    );
    let request = Request::post("/bookings")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(body))
        .expect("request");
    let answer = send(&site.router, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.text().contains("id=\"import-report\""));
    assert!(
        !answer.text().contains("id=\"apply\""),
        "nothing left to apply"
    );
    let outcomes = send(
        &site.router,
        get(
            "/api/v1/bookings/outcomes?from=2025-03-10&to=2025-03-11",
            None,
            "en",
        ),
    )
    .await
    .text();
    assert!(
        outcomes.contains("b-new"),
        "the import was applied: {outcomes}"
    );
}
