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
async fn the_report_counts_unsigned_events_per_row_so_an_evaluator_sees_what_is_not_signed() {
    let site = site(false);
    let csv = send(&site.router, get("/report.csv?year=2025", None, "zh-CN")).await;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(csv.body.as_slice());
    let headers = reader.headers().expect("headers").clone();
    let column = headers
        .iter()
        .position(|h| h == "未签名事件数（0 = 全部已签名）")
        .expect("the unsigned-events column");
    // The instrument table ends at the blank line before the units table.
    let unsigned: Vec<u64> = reader
        .records()
        .map(|r| r.expect("row"))
        .take_while(|r| r.len() > 1)
        .map(|r| r[column].parse().expect("a count"))
        .collect();
    // The seeded agents predate signing: every row with events counts them.
    assert!(
        !unsigned.is_empty() && unsigned.iter().any(|n| *n > 0),
        "{unsigned:?}"
    );
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
async fn a_bookings_preview_lists_ical_warnings_with_their_line_in_both_languages() {
    let site = site(false);
    // Tuesday DTSTART, Monday/Wednesday rule: imported, off-rule.
    let file = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:o1\r\nLOCATION:nmr-600\r\n\
                CATEGORIES:research\r\nDTSTART:20250311T010000Z\r\nDTEND:20250311T020000Z\r\n\
                RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=2\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    for (lang, label) in [
        ("en", "Imported with a warning"),
        ("zh-CN", "已导入，但有警告"),
    ] {
        let answer = send(&site.router, preview("feed.ics", file, lang)).await;
        assert_eq!(answer.status, StatusCode::OK);
        let html = answer.text();
        assert!(!html.contains("id=\"bad-rows\""), "{html}");
        assert!(html.contains("id=\"warnings\""), "{html}");
        assert!(html.contains(label), "{lang}: {html}");
        assert!(html.contains("<td class=\"num\">2</td>"), "{html}");
        assert!(html.contains("off-rule"), "{html}");
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

/// Adds to the scenario on nmr-600 (local times): `b-double` 14:00–14:30,
/// inside b-overrun's 13:00–15:00, and `b-next` 15:00–17:00 (teaching), so
/// that §4 gives 14:00–14:30 to b-double and the use from 15:00 on to
/// b-next, through the real `POST /api/v1/bookings` (with `token` when the
/// site has tokens).
async fn book_disputed_time(router: &Router, token: Option<&str>) {
    let booking = |id: &str, start: &str, end: &str, usage: &str| {
        serde_json::json!({
            "booking_id": id, "instrument_id": NMR, "user": "zhao", "group": "Wu lab",
            "usage_type": usage, "start": start, "end": end, "status": "confirmed"
        })
    };
    let body = serde_json::json!({"bookings": [
        booking("b-double", "2025-03-03T06:00:00Z", "2025-03-03T06:30:00Z", "research"),
        booking("b-next", "2025-03-03T07:00:00Z", "2025-03-03T09:00:00Z", "teaching"),
    ]});
    let mut request = post_json("/api/v1/bookings", body);
    if let Some(t) = token {
        let bearer = format!("Bearer {t}").parse().expect("value");
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
    }
    let answer = send(router, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

fn post_json(uri: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn outcomes(router: &Router) -> serde_json::Value {
    let a = send(
        router,
        get(
            &format!("/api/v1/bookings/outcomes?from=2025-03-03&to=2025-03-04&instrument={NMR}"),
            None,
            "en",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let rows: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
    rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["booking_id"].as_str().expect("id").to_owned(), r.clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test]
async fn the_api_lists_disputed_time_and_a_posted_move_changes_only_the_corrected_outcomes() {
    let site = site(false);
    book_disputed_time(&site.router, None).await;
    let before = outcomes(&site.router).await;
    let o = &before["b-overrun"];
    // 13:00–14:00 and 14:30–15:00; 14:00–14:30 went to b-double, 15:00 on to b-next.
    assert_eq!(
        (o["used_s"].as_f64(), o["corrected_used_s"].as_f64()),
        (Some(5400.0), Some(5400.0))
    );
    assert_eq!(o["overlapping_bookings"], serde_json::json!(["b-double"]));
    assert_eq!(
        o["usage_taken_by"],
        serde_json::json!(["b-double", "b-next"])
    );
    assert_eq!(o["took_usage_from"], serde_json::json!(["b-double"]));
    assert_eq!(
        before["b-next"]["took_usage_from"],
        serde_json::json!(["b-overrun"])
    );
    assert_eq!(
        before["b-next"]["overlapping_bookings"],
        serde_json::json!([])
    );
    assert_eq!(before["b-next"]["used_s"].as_f64(), Some(7200.0));

    // The manager: the first user kept running until 16:00.
    let moved = send(
        &site.router,
        post_json(
            "/api/v1/corrections",
            serde_json::json!({
                "instrument_id": NMR, "start": "2025-03-03T07:00:00Z", "end": "2025-03-03T08:00:00Z",
                "from_booking_id": "b-next", "booking_id": "b-overrun",
                "reason": "wang's run went on to 16:00 (logbook p. 31)"
            }),
        ),
    )
    .await;
    assert_eq!(moved.status, StatusCode::CREATED, "{}", moved.text());
    assert!(moved.text().contains("\"from_booking_id\":\"b-next\""));
    let after = outcomes(&site.router).await;
    let (o, n) = (&after["b-overrun"], &after["b-next"]);
    assert_eq!(
        (o["used_s"].as_f64(), o["corrected_used_s"].as_f64()),
        (Some(5400.0), Some(9000.0))
    );
    assert_eq!(
        (n["used_s"].as_f64(), n["corrected_used_s"].as_f64()),
        (Some(7200.0), Some(3600.0))
    );
    // Evidence and the uncorrected outcome stay as they were.
    for key in [
        "outcome",
        "flags",
        "sessions",
        "first_use",
        "last_use",
        "usage_taken_by",
    ] {
        assert_eq!(after["b-next"][key], before["b-next"][key], "{key}");
    }
    // The corrected teaching hours lose the hour; the uncorrected ones keep it.
    let hours = send(
        &site.router,
        get(
            &format!("/api/v1/hours?from=2025-03-03&to=2025-03-04&instrument={NMR}"),
            None,
            "en",
        ),
    )
    .await;
    let hours: serde_json::Value = serde_json::from_slice(&hours.body).expect("json");
    let row = &hours["rows"][0];
    assert_eq!(row["by_usage_type"]["teaching"].as_f64(), Some(2.0));
    assert_eq!(
        row["corrected"]["by_usage_type"]["teaching"].as_f64(),
        Some(1.0)
    );
    assert_eq!(
        row["corrected"]["by_usage_type"]["research"].as_f64(),
        Some(row["by_usage_type"]["research"].as_f64().expect("research") + 1.0)
    );
    // CSV carries the same columns.
    let csv = send(
        &site.router,
        get(&format!("/api/v1/bookings/outcomes?from=2025-03-03&to=2025-03-04&instrument={NMR}&format=csv"), None, "en"),
    )
    .await
    .text();
    assert!(
        csv.lines()
            .next()
            .expect("header")
            .ends_with(",overlapping_bookings,usage_taken_by,took_usage_from,corrected_used_s")
    );
    let next_line = csv
        .lines()
        .find(|l| l.starts_with("b-next,"))
        .expect("b-next");
    assert!(next_line.ends_with(",,,b-overrun,3600.0"), "{next_line}");

    // Usage b-overrun never had cannot be moved from it.
    let refused = send(
        &site.router,
        post_json(
            "/api/v1/corrections",
            serde_json::json!({
                "instrument_id": NMR, "start": "2025-03-03T08:30:00Z", "end": "2025-03-03T09:30:00Z",
                "from_booking_id": "b-overrun", "booking_id": "b-next", "reason": "x"
            }),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let e: serde_json::Value = serde_json::from_slice(&refused.body).expect("json");
    assert_eq!(e["parameter"], "from_booking_id");
    assert!(
        e["error"].as_str().expect("error").contains(
            "from 2025-03-03T16:30:00+08:00 to 2025-03-03T17:30:00+08:00 the usage is attributed to booking \"b-next\""
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_admin_moves_double_booked_time_from_the_inbox_and_the_instrument_page_shows_it() {
    let site = site(true);
    book_disputed_time(&site.router, Some(ADMIN_TOKEN)).await;
    let admin = login(&site.router, ADMIN_TOKEN).await;
    let inbox = send(
        &site.router,
        get(
            "/exceptions?from=2025-03-03&to=2025-03-03&kind=double_booking",
            Some(&admin),
            "zh-CN",
        ),
    )
    .await
    .text();
    assert!(inbox.contains("move-form"), "{inbox}");
    assert!(inbox.contains("将这段时间改记到另一预约"));
    // Prefilled: §4 gave the overlap to b-double (it started last).
    assert!(inbox.contains("name=\"from_booking_id\" value=\"b-double\""));
    assert!(inbox.contains("name=\"booking_id\" value=\"b-overrun\""));
    let evaluator = login(&site.router, EVALUATOR_TOKEN).await;
    let seen = send(
        &site.router,
        get(
            "/exceptions?from=2025-03-03&to=2025-03-03&kind=double_booking",
            Some(&evaluator),
            "en",
        ),
    )
    .await
    .text();
    assert!(!seen.contains("move-form"));

    let body = "instrument_id=nmr-600&start=2025-03-03T06:00:00Z&end=2025-03-03T06:30:00Z\
                &from_booking_id=b-double&booking_id=b-overrun&reason=b-double+never+came&back=/exceptions";
    let refused = send(
        &site.router,
        post_form("/exceptions/move", Some(&admin), body, false),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "no same-origin proof"
    );
    let refused = send(
        &site.router,
        post_form("/exceptions/move", Some(&evaluator), body, true),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "evaluators do not correct"
    );
    let done = send(
        &site.router,
        post_form("/exceptions/move", Some(&admin), body, true),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());

    let page = |lang: &'static str| {
        let router = site.router.clone();
        let admin = admin.clone();
        async move {
            send(
                &router,
                get(
                    &format!("/instruments/{NMR}?day=2025-03-03"),
                    Some(&admin),
                    lang,
                ),
            )
            .await
            .text()
        }
    };
    let en = page("en").await;
    let row = en
        .split("<tr data-booking=\"b-overrun\"")
        .nth(1)
        .expect("row");
    let row = &row[..row.find("</tr>").expect("end")];
    assert!(row.contains("Slot overlaps:</span> b-double"), "{row}");
    assert!(
        row.contains("Use passed on to:</span> b-double, b-next"),
        "{row}"
    );
    // 1 h 30 min used; 2 h once b-double's half hour is moved back.
    let corrected = row.split("corrected-used\">").nth(1).expect("cell");
    assert!(corrected.starts_with("2 h"), "{row}");
    let zh = page("zh-CN").await;
    assert!(zh.contains("使用时长（更正后）") && zh.contains("时段重叠"));

    // The overrun into b-next's window, moved from the instrument page: b-next
    // took use from b-overrun, so its form gives it back over b-next's slot.
    let row = en.split("<tr data-booking=\"b-next\"").nth(1).expect("row");
    let row = &row[..row.find("</tr>").expect("end")];
    assert!(row.contains("Took use from:</span> b-overrun"), "{row}");
    assert!(
        row.contains("name=\"from_booking_id\" value=\"b-next\""),
        "{row}"
    );
    assert!(
        row.contains("name=\"booking_id\" value=\"b-overrun\""),
        "{row}"
    );
    assert!(row.contains("name=\"back\" value=\"/instruments/nmr-600?day=2025-03-03\""));
    let body = "instrument_id=nmr-600&start=2025-03-03T07:00:00Z&end=2025-03-03T08:00:00Z\
                &from_booking_id=b-next&booking_id=b-overrun&reason=wang+ran+on\
                &back=%2Finstruments%2Fnmr-600%3Fday%3D2025-03-03";
    let done = send(
        &site.router,
        post_form("/exceptions/move", Some(&admin), body, true),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    assert_eq!(
        done.headers[header::LOCATION],
        "/instruments/nmr-600?day=2025-03-03"
    );
    let en = page("en").await;
    let row = en
        .split("<tr data-booking=\"b-overrun\"")
        .nth(1)
        .expect("row");
    let corrected = row.split("corrected-used\">").nth(1).expect("cell");
    assert!(corrected.starts_with("3 h"), "{row}");
    let seen = send(
        &site.router,
        get(
            &format!("/instruments/{NMR}?day=2025-03-03"),
            Some(&evaluator),
            "en",
        ),
    )
    .await
    .text();
    assert!(seen.contains("Took use from") && !seen.contains("move-form"));

    // A wrong move is refused with the reason, and nothing is recorded.
    let wrong = "instrument_id=nmr-600&start=2025-03-03T05:00:00Z&end=2025-03-03T06:30:00Z\
                 &from_booking_id=b-double&booking_id=b-overrun&reason=x&back=/exceptions";
    let refused = send(
        &site.router,
        post_form("/exceptions/move", Some(&admin), wrong, true),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("b-overrun"), "{}", refused.text());
}

#[tokio::test]
async fn a_hubs_fleet_page_says_how_fresh_each_sites_figures_are_in_both_languages() {
    use crate::config::HubSiteConfig;
    use crate::federation::{Batch, RegistryEntry};
    use crate::verified::Reports as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data, DAY).expect("seed");
    let config = CollectorConfig::parse(&config(&data, "127.0.0.1:0", false)).expect("config");
    let reports = crate::verified::store_reports(&config).expect("reports");
    let now: Timestamp = "2025-03-04T04:00:00Z".parse().expect("now");
    let batch = Batch {
        site: "site-a".into(),
        registry: Some(vec![RegistryEntry {
            id: "nmr".into(),
            name: "Far NMR".into(),
            unit: None,
            time_zone: "UTC".into(),
            open_hours: None,
        }]),
        settled_through_ms: Some(
            "2025-03-04T02:00:00Z"
                .parse::<Timestamp>()
                .expect("t")
                .as_millisecond(),
        ),
        ..Batch::default()
    };
    reports
        .federation_apply("site-a", None, &batch, now)
        .expect("applied");
    // Site B forwards two checkpoints; the second rewrites an agent's chain.
    let key = labhours_shared::trust::Signer::from_pkcs8(
        &labhours_shared::trust::Signer::generate_pkcs8().expect("key"),
    )
    .expect("signer");
    let note = |time: &str, head: u8| {
        use crate::evidence::checkpoint::{Body, Head};
        let body = Body {
            origin: "labhours/Campus-site-b".into(),
            time: time.parse().expect("time"),
            heads: vec![Head {
                agent_id: "b-pc".into(),
                last_seq: 7,
                head: [head; 32],
            }],
            inputs: Vec::new(),
        };
        crate::evidence::note::sign(&body.text(), &body.origin, &key)
    };
    let rewritten = Batch {
        site: "site-b".into(),
        checkpoints: vec![
            note("2025-03-03T00:00:00Z", 1),
            note("2025-03-04T00:00:00Z", 2),
        ],
        ..Batch::default()
    };
    reports
        .federation_apply("site-b", None, &rewritten, now)
        .expect("applied");
    let sites = ["site-a", "site-b"].map(|id| HubSiteConfig {
        id: id.into(),
        name: format!("Campus {id}"),
        token_sha256: crate::api::hash_token(id),
        checkpoint_key: None,
    });
    let api = ApiState::new(reports, &config.http.tokens)
        .expect("api")
        .with_clock(Arc::new(move || now))
        .with_hub(crate::api::federation::HubSites::new(&sites).expect("sites"));
    let zone = jiff::tz::TimeZone::get(ZONE).expect("zone");
    let router = routes(DashState::new(api.clone(), zone)).merge(app(api));
    let en = send(&router, get("/", None, "en")).await.text();
    assert!(en.contains("Campus site-a</a> (site-a):"), "{en}");
    assert!(en.contains("data up to"), "{en}");
    assert!(
        en.contains("nothing final yet"),
        "site-b settled nothing: {en}"
    );
    assert!(
        en.contains("its signed checkpoints do not agree")
            && en.contains("b-pc&#39;s chain head at seq 7 changed"),
        "site-b is flagged: {en}"
    );
    assert_eq!(en.matches("⚠").count(), 1, "only site-b is flagged: {en}");
    assert!(
        en.contains("Far NMR"),
        "the forwarded instrument is in the fleet"
    );
    let zh = send(&router, get("/", None, "zh-CN")).await.text();
    assert!(
        zh.contains("数据截至")
            && zh.contains("尚无最终数据")
            && zh.contains("签名检查点前后不一致"),
        "{zh}"
    );
}
