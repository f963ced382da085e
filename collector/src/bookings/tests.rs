use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::Connection;

use super::store::{ImportOptions, import};
use super::*;

const HEADER: &str = "booking_id,instrument_id,user,group,usage_type,start,end,status\n";

fn shanghai() -> ParseContext {
    ParseContext::new(TimeZone::get("Asia/Shanghai").unwrap())
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn csv_of(rows: &str) -> Parsed {
    parse(Format::Csv, &format!("{HEADER}{rows}"), &shanghai())
}

fn only_error(p: &Parsed) -> &RowError {
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    &p.errors[0]
}

// ---- CSV ----

#[test]
fn a_csv_row_with_local_times_is_read_in_the_site_zone() {
    let p = csv_of(
        "B1,nmr-600,alice,Chem/Li,research,2026-11-23 09:00,2026-11-23T11:30:00,confirmed\n",
    );
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.start, ts("2026-11-23T01:00:00Z"));
    assert_eq!(b.end, ts("2026-11-23T03:30:00Z"));
    assert_eq!(b.usage_type, UsageType::Research);
    assert_eq!(b.status, BookingStatus::Confirmed);
    assert_eq!(b.group, "Chem/Li");
}

#[test]
fn times_with_an_offset_are_taken_as_given() {
    let p =
        csv_of("B1,nmr,a,g,teaching,2026-11-23T09:00:00+01:00,2026-11-23T10:00:00Z,cancelled\n");
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.start, ts("2026-11-23T08:00:00Z"));
    assert_eq!(b.end, ts("2026-11-23T10:00:00Z"));
    assert_eq!(b.status, BookingStatus::Cancelled);
}

#[test]
fn a_bom_and_any_column_order_are_accepted() {
    let text = "\u{feff}status,end,start,usage_type,group,user,instrument_id,booking_id\r\nconfirmed,2026-11-23 10:00,2026-11-23 09:00,教学,g,u,nmr,B1\r\n";
    let b = parse(Format::Csv, text, &shanghai())
        .into_result()
        .unwrap()
        .remove(0);
    assert_eq!(b.booking_id, "B1");
    assert_eq!(b.usage_type, UsageType::Teaching);
}

#[test]
fn chinese_usage_types_map_to_teaching_research_external() {
    assert_eq!(UsageType::parse("教学"), Some(UsageType::Teaching));
    assert_eq!(UsageType::parse("科研"), Some(UsageType::Research));
    assert_eq!(UsageType::parse(" 对外服务 "), Some(UsageType::External));
    assert_eq!(
        UsageType::parse("Maintenance"),
        Some(UsageType::Maintenance)
    );
}

#[test]
fn extra_columns_are_an_error_naming_them() {
    let p = parse(
        Format::Csv,
        "booking_id,instrument_id,user,group,usage_type,start,end,status,room,notes\n",
        &shanghai(),
    );
    let e = only_error(&p);
    assert_eq!(e.line, 1);
    assert!(e.message.contains("\"room\", \"notes\""), "{e}");
}

#[test]
fn missing_columns_are_an_error_naming_them() {
    let p = parse(
        Format::Csv,
        "booking_id,user,group,usage_type,start,end\n",
        &shanghai(),
    );
    let e = only_error(&p);
    assert!(e.message.contains("instrument_id, status"), "{e}");
}

#[test]
fn an_empty_booking_id_is_reported_with_its_line() {
    let p = csv_of(
        "B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n ,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n",
    );
    let e = only_error(&p);
    assert_eq!(e.line, 3);
    assert!(e.message.contains("booking_id is empty"));
    assert_eq!(p.bookings.len(), 1);
}

#[test]
fn an_unknown_usage_type_lists_the_accepted_ones() {
    let p = csv_of("B1,nmr,a,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\n");
    assert_eq!(
        only_error(&p).to_string(),
        "line 2: usage_type \"lab\" is not one of teaching, research, external, training, maintenance"
    );
}

#[test]
fn an_unknown_status_is_reported() {
    let p = csv_of("B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,pending\n");
    assert!(only_error(&p).message.contains("status \"pending\""));
}

#[test]
fn an_end_not_after_the_start_is_reported() {
    let p = csv_of("B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 09:00,confirmed\n");
    assert!(only_error(&p).message.contains("is not after start"));
}

#[test]
fn a_booking_longer_than_a_year_is_reported_as_a_date_error() {
    let p = csv_of("B1,nmr,a,g,research,2026-11-23 09:00,2028-11-23 09:00,confirmed\n");
    let e = only_error(&p);
    assert_eq!(e.line, 2);
    assert!(e.message.contains("lasts 731 days"), "{}", e.message);
    let ok = csv_of("B1,nmr,a,g,maintenance,2026-11-23 09:00,2027-11-23 09:00,confirmed\n");
    assert!(ok.errors.is_empty(), "{:?}", ok.errors);
}

#[test]
fn an_unparseable_time_is_reported_with_its_value() {
    let p = csv_of("B1,nmr,a,g,research,23/11/2026 9am,2026-11-23 10:00,confirmed\n");
    assert!(only_error(&p).message.contains("\"23/11/2026 9am\""));
}

#[test]
fn bookings_of_instruments_not_monitored_are_kept_and_counted_by_id() {
    let mut ctx = shanghai();
    ctx.instruments = Some(["nmr-600".to_owned()].into());
    let p = parse(
        Format::Csv,
        &format!(
            "{HEADER}B1,xrd,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n\
             B2,nmr-600,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n\
             B3,nmr-6OO,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n\
             B4,xrd,a,g,research,2026-11-23 11:00,2026-11-23 12:00,cancelled\n\
             B5,xrd,a,g,lab,2026-11-23 11:00,2026-11-23 12:00,confirmed\n"
        ),
        &ctx,
    );
    // B5 is bad for its usage type; only good bookings are counted.
    assert_eq!(only_error(&p).line, 6);
    assert_eq!(p.bookings.len(), 4);
    let counts: Vec<(&str, u64)> = p
        .not_monitored
        .iter()
        .map(|(id, n)| (id.as_str(), *n))
        .collect();
    assert_eq!(counts, [("nmr-6OO", 1), ("xrd", 2)]);
    // Without instruments in the config, every instrument is monitored.
    let p = csv_of("B1,xrd,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n");
    assert!(p.not_monitored.is_empty());
    assert!(p.errors.is_empty());
}

#[test]
fn structured_bookings_of_instruments_not_monitored_are_counted_too() {
    let mut ctx = shanghai();
    ctx.instruments = Some(["nmr-600".to_owned()].into());
    let b = csv_of("B1,xrd,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n")
        .into_result()
        .unwrap()
        .remove(0);
    let p = check(vec![(0, b)], &ctx);
    assert!(p.errors.is_empty());
    assert_eq!(p.not_monitored.get("xrd"), Some(&1));
}

#[test]
fn an_empty_instrument_is_still_an_error() {
    let p = csv_of("B1,,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n");
    assert!(only_error(&p).message.contains("instrument_id is empty"));
}

#[test]
fn offsets_beyond_14_hours_are_refused_with_the_line() {
    let p = csv_of(
        "B1,nmr,a,g,research,2026-11-23T09:00:00+25:00,2026-11-23T10:00:00+08:00,confirmed\n\
         B2,nmr,a,g,research,2026-11-23T09:00:00+14:00,2026-11-23T10:00:00+14:00,confirmed\n\
         B3,nmr,a,g,research,2026-11-23T09:00:00-12:00,2026-11-23T10:00:00-14:01,confirmed\n",
    );
    let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 4], "{:?}", p.errors);
    assert!(p.errors[0].message.contains("+25"), "{}", p.errors[0]);
    assert!(p.errors[0].message.contains("beyond ±14:00"));
    assert!(p.errors[1].message.starts_with("end "), "{}", p.errors[1]);
    assert_eq!(p.bookings[0].1.start, ts("2026-11-22T19:00:00Z"));
}

#[test]
fn a_file_that_is_not_utf8_names_the_line_column_and_fix() {
    // "张" in GBK is D5 C5: invalid UTF-8 on line 3, after "B2,nmr,é" (8 characters).
    let mut bytes = format!("{HEADER}B1,nmr,a\nB2,nmr,é").into_bytes();
    bytes.extend([0xD5, 0xC5]);
    bytes.extend(b",g\n");
    let e = decode("b.csv", bytes, Format::Csv).unwrap_err();
    assert!(e.starts_with("b.csv line 3, column 9 (byte "), "{e}");
    assert!(e.contains("0xD5"), "{e}");
    assert!(e.contains("CSV UTF-8"), "{e}");
    assert_eq!(
        decode("b.csv", b"ok\n".to_vec(), Format::Csv).unwrap(),
        "ok\n"
    );
}

#[test]
fn line_numbers_stay_right_over_many_rows_and_blank_lines() {
    let mut text = HEADER.to_owned();
    for i in 0..500 {
        text.push_str(&format!(
            "B{i},nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\r\n"
        ));
        if i % 100 == 0 {
            text.push_str("\r\n");
        }
    }
    text.push_str("B-bad,nmr,a,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\n");
    let p = parse(Format::Csv, &text, &shanghai());
    // 1 header + 500 rows + 5 blank lines, then the bad row.
    assert_eq!(only_error(&p).line, 507);
    assert_eq!(p.bookings[499].0, 506);
}

#[test]
fn line_numbers_are_right_with_crlf_line_ends() {
    let text = format!(
        "{}\r\nB1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\r\nB2,nmr,a,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\r\n",
        HEADER.trim_end()
    );
    let p = parse(Format::Csv, &text, &shanghai());
    assert_eq!(only_error(&p).line, 3);
}

#[test]
fn a_duplicate_booking_id_names_both_lines() {
    let row = "B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n";
    let p = csv_of(&format!("{row}{row}"));
    let e = only_error(&p);
    assert_eq!(e.line, 3);
    assert!(e.message.contains("also on line 2"));
}

#[test]
fn every_bad_row_is_reported_not_just_the_first() {
    let p = csv_of(
        "B1,nmr,a,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\nB2,nmr,a,g,research,x,2026-11-23 10:00,confirmed\nB3,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n",
    );
    let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3]);
    assert_eq!(p.bookings.len(), 1);
}

#[test]
fn a_local_time_in_a_spring_forward_gap_is_an_error_and_an_ambiguous_one_takes_the_earlier() {
    let ctx = ParseContext::new(TimeZone::get("Europe/Berlin").unwrap());
    let text = format!(
        "{HEADER}B1,nmr,a,g,research,2026-03-29 02:30,2026-03-29 04:00,confirmed\nB2,nmr,a,g,research,2026-10-25 02:30,2026-10-25 04:00,confirmed\n"
    );
    let p = parse(Format::Csv, &text, &ctx);
    let e = only_error(&p);
    assert_eq!(e.line, 2);
    assert!(e.message.contains("does not exist"), "{e}");
    // 02:30 happens twice on 25 October: the earlier one is 00:30Z (CEST).
    assert_eq!(p.bookings[0].1.start, ts("2026-10-25T00:30:00Z"));
}

#[test]
fn bookings_serialize_with_the_documented_field_names() {
    let b = csv_of("B1,nmr,a,g,external,2026-11-23 09:00,2026-11-23 10:00,confirmed\n")
        .into_result()
        .unwrap()
        .remove(0);
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["usage_type"], "external");
    assert_eq!(json["status"], "confirmed");
    assert_eq!(json["start"], "2026-11-23T01:00:00Z");
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8);
    assert_eq!(serde_json::from_value::<Booking>(json).unwrap(), b);
}

#[test]
fn structured_bookings_are_checked_by_the_same_rules() {
    let good = csv_of("B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\n")
        .into_result()
        .unwrap()
        .remove(0);
    let mut reversed = good.clone();
    reversed.booking_id = "B2".into();
    reversed.end = reversed.start;
    let p = check(
        vec![(0, good.clone()), (1, good), (2, reversed)],
        &shanghai(),
    );
    assert_eq!(p.bookings.len(), 1);
    assert!(p.errors[0].message.contains("also on line 0"));
    assert!(p.errors[1].message.contains("is not after start"));
}

// ---- iCalendar ----

fn ics(events: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{events}END:VCALENDAR\r\n")
}

fn ical(events: &str) -> Parsed {
    parse(Format::Ics, &ics(events), &shanghai())
}

const ORG: &str = "ORGANIZER;CN=Alice Li:mailto:alice@chem.example.edu\r\nCATEGORIES:research\r\nLOCATION:nmr-600\r\n";

#[test]
fn an_event_with_tzid_is_read_in_that_zone() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART;TZID=Europe/Berlin:20261123T090000\r\nDTEND;TZID=Europe/Berlin:20261123T100000\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.booking_id, "e1");
    assert_eq!(b.start, ts("2026-11-23T08:00:00Z"));
    assert_eq!(b.end, ts("2026-11-23T09:00:00Z"));
    assert_eq!(b.user, "Alice Li");
    assert_eq!(b.group, "chem.example.edu");
    assert_eq!(b.instrument_id, "nmr-600");
    assert_eq!(b.usage_type, UsageType::Research);
}

#[test]
fn utc_and_floating_times_are_utc_and_site_local() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T100000\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.start, ts("2026-11-23T01:00:00Z"));
    assert_eq!(b.end, ts("2026-11-23T02:00:00Z"));
}

#[test]
fn windows_tzids_are_read_as_their_cldr_zones() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART;TZID=W. Europe Standard Time:20261123T090000\r\nDTEND;TZID=W. Europe Standard Time:20261123T100000\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.start, ts("2026-11-23T08:00:00Z"));
}

/// Outlook's own VTIMEZONE for a zone under a name no table knows.
const CUSTOM_EASTERN: &str = "BEGIN:VTIMEZONE\r\nTZID:Lab Eastern\r\nBEGIN:STANDARD\r\nDTSTART:16011104T020000\r\nRRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=11\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nEND:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010311T020000\r\nRRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=3\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n";

#[test]
fn an_unknown_tzid_falls_back_to_the_files_vtimezone() {
    let p = ical(&format!(
        "{CUSTOM_EASTERN}BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART;TZID=Lab Eastern:20261031T090000\r\nDTEND;TZID=Lab Eastern:20261031T100000\r\nRRULE:FREQ=DAILY;COUNT=2\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap();
    assert_eq!(b[0].start, ts("2026-10-31T13:00:00Z"));
    assert_eq!(b[1].start, ts("2026-11-01T14:00:00Z"));
}

#[test]
fn an_unknown_tzid_without_a_vtimezone_is_an_error_naming_the_event() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART;TZID=Lab Time:20261123T090000\r\nDTEND;TZID=Lab Time:20261123T100000\r\nEND:VEVENT\r\n"
    ));
    let e = only_error(&p);
    assert_eq!(e.line, 4);
    assert!(
        e.message.contains("event UID \"e1\"") && e.message.contains("Lab Time"),
        "{e}"
    );
}

#[test]
fn an_all_day_event_spans_site_local_midnights() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART;VALUE=DATE:20261123\r\nDTEND;VALUE=DATE:20261125\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.start, ts("2026-11-22T16:00:00Z"));
    assert_eq!(b.end, ts("2026-11-24T16:00:00Z"));
}

#[test]
fn an_all_day_event_without_dtend_lasts_one_day() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART;VALUE=DATE:20261123\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.end, ts("2026-11-23T16:00:00Z"));
}

#[test]
fn a_duration_gives_the_end() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART:20261123T090000Z\r\nDURATION:PT1H30M\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(p.into_result().unwrap()[0].end, ts("2026-11-23T10:30:00Z"));
}

#[test]
fn a_cancelled_event_is_a_cancelled_booking() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}STATUS:CANCELLED\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:e2\r\n{ORG}STATUS:TENTATIVE\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap();
    assert_eq!(b[0].status, BookingStatus::Cancelled);
    assert_eq!(b[1].status, BookingStatus::Confirmed);
}

#[test]
fn folded_lines_are_unfolded_and_text_is_unescaped() {
    let p = ical(
        "BEGIN:VEVENT\r\nUID:e1\r\nORGANIZER;CN=\"Li, Alice\":mailto:al\r\n ice@chem.example.edu\r\nCATEGORIES:Meeting,科\r\n\t研\r\nLOCATION:nmr\\,600\r\nX-LABHOURS-GROUP:Chem\\; Li lab\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nEND:VEVENT\r\n",
    );
    let b = p.into_result().unwrap().remove(0);
    assert_eq!(b.user, "Li, Alice");
    assert_eq!(b.usage_type, UsageType::Research);
    assert_eq!(b.instrument_id, "nmr,600");
    assert_eq!(b.group, "Chem; Li lab");
}

#[test]
fn the_user_falls_back_to_the_organizer_address_then_the_first_attendee() {
    let p = ical(
        "BEGIN:VEVENT\r\nUID:e1\r\nORGANIZER:mailto:bob@x.org\r\nCATEGORIES:training\r\nLOCATION:nmr\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:e2\r\nATTENDEE;CN=Carol:mailto:carol@y.org\r\nCATEGORIES:training\r\nLOCATION:nmr\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nEND:VEVENT\r\n",
    );
    let b = p.into_result().unwrap();
    assert_eq!(
        (b[0].user.as_str(), b[0].group.as_str()),
        ("bob@x.org", "x.org")
    );
    assert_eq!((b[1].user.as_str(), b[1].group.as_str()), ("Carol", ""));
}

#[test]
fn the_configured_instrument_property_wins_over_location() {
    let p = ical(
        "BEGIN:VEVENT\r\nUID:e1\r\nCATEGORIES:research\r\nLOCATION:Room 101\r\nX-LABHOURS-INSTRUMENT:xrd-1\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nEND:VEVENT\r\n",
    );
    assert_eq!(p.into_result().unwrap()[0].instrument_id, "xrd-1");
}

#[test]
fn occurrences_of_an_instrument_not_monitored_are_counted_each() {
    let mut ctx = shanghai();
    ctx.instruments = Some(["nmr-600".to_owned()].into());
    let p = parse(
        Format::Ics,
        &ics(
            "BEGIN:VEVENT\r\nUID:e1\r\nCATEGORIES:research\r\nLOCATION:Room 101\r\nDTSTART:20261123T090000Z\r\nDTEND:20261123T100000Z\r\nRRULE:FREQ=DAILY;COUNT=3\r\nEND:VEVENT\r\n",
        ),
        &ctx,
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.bookings.len(), 3);
    assert_eq!(p.not_monitored.get("Room 101"), Some(&3));
}

#[test]
fn a_weekly_rrule_with_byday_and_exdate_expands_to_occurrences() {
    // Mondays and Wednesdays 09:00-11:00 Shanghai, 6 occurrences, the 25th excluded.
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:r1\r\n{ORG}DTSTART;TZID=Asia/Shanghai:20261123T090000\r\nDTEND;TZID=Asia/Shanghai:20261123T110000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=6\r\nEXDATE;TZID=Asia/Shanghai:20261125T090000\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap();
    let ids: Vec<&str> = b.iter().map(|b| b.booking_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "r1/20261123T010000Z",
            "r1/20261130T010000Z",
            "r1/20261202T010000Z",
            "r1/20261207T010000Z",
            "r1/20261209T010000Z",
        ]
    );
    assert!(
        b.iter()
            .all(|b| b.end.duration_since(b.start).as_hours() == 2)
    );
}

#[test]
fn a_daily_rrule_with_interval_and_until_stops_at_until() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:d1\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nRRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20261129T010000Z\r\nEND:VEVENT\r\n"
    ));
    let ids: Vec<String> = p
        .into_result()
        .unwrap()
        .into_iter()
        .map(|b| b.booking_id)
        .collect();
    assert_eq!(
        ids,
        [
            "d1/20261123T010000Z",
            "d1/20261125T010000Z",
            "d1/20261127T010000Z",
            "d1/20261129T010000Z"
        ]
    );
}

#[test]
fn a_fortnightly_rrule_skips_every_other_week_and_daily_byday_filters_days() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:f1\r\n{ORG}DTSTART:20261125T010000Z\r\nDTEND:20261125T020000Z\r\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20261210\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:w1\r\n{ORG}DTSTART:20261127T010000Z\r\nDTEND:20261127T020000Z\r\nRRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=3\r\nEND:VEVENT\r\n"
    ));
    let ids: Vec<String> = p
        .into_result()
        .unwrap()
        .into_iter()
        .map(|b| b.booking_id)
        .collect();
    assert_eq!(
        ids,
        [
            // Wed 25th (Monday 23rd is before DTSTART), then the week of 7 December.
            "f1/20261125T010000Z",
            "f1/20261207T010000Z",
            "f1/20261209T010000Z",
            // Friday, then Monday and Tuesday: the weekend is skipped.
            "w1/20261127T010000Z",
            "w1/20261130T010000Z",
            "w1/20261201T010000Z",
        ]
    );
}

#[test]
fn weekly_occurrences_keep_the_local_time_across_a_dst_change() {
    let ctx = ParseContext::new(TimeZone::UTC);
    let text = ics(&format!(
        "BEGIN:VEVENT\r\nUID:w1\r\n{ORG}DTSTART;TZID=Europe/Berlin:20261019T090000\r\nDTEND;TZID=Europe/Berlin:20261019T100000\r\nRRULE:FREQ=WEEKLY;COUNT=2\r\nEND:VEVENT\r\n"
    ));
    let b = parse(Format::Ics, &text, &ctx).into_result().unwrap();
    assert_eq!(b[0].start, ts("2026-10-19T07:00:00Z"));
    assert_eq!(b[1].start, ts("2026-10-26T08:00:00Z"));
}

#[test]
fn a_recurrence_id_override_replaces_its_occurrence() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:r1\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nRRULE:FREQ=DAILY;COUNT=2\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:r1\r\n{ORG}RECURRENCE-ID:20261124T010000Z\r\nDTSTART:20261124T050000Z\r\nDTEND:20261124T060000Z\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[1].booking_id, "r1/20261124T010000Z");
    assert_eq!(b[1].start, ts("2026-11-24T05:00:00Z"));
}

#[test]
fn unsupported_recurrence_is_an_error_naming_the_event() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:m1\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nRRULE:FREQ=HOURLY;COUNT=3\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:m2\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nRRULE:FREQ=YEARLY;BYWEEKNO=20\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
    assert!(p.errors[0].message.contains("\"m1\"") && p.errors[0].message.contains("FREQ=HOURLY"));
    assert!(p.errors[1].message.contains("\"m2\"") && p.errors[1].message.contains("BYWEEKNO"));
    assert!(p.bookings.is_empty());
}

fn starts(p: &Parsed) -> Vec<String> {
    p.bookings
        .iter()
        .map(|(_, b)| b.start.to_string())
        .collect()
}

fn hours(p: &Parsed) -> Vec<i64> {
    let length = |b: &Booking| b.end.duration_since(b.start).as_secs() / 3600;
    p.bookings.iter().map(|(_, b)| length(b)).collect()
}

#[test]
fn an_occurrence_in_a_spring_forward_gap_takes_the_offset_before_the_gap() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:g1\r\n{ORG}DTSTART;TZID=America/New_York:20260306T023000\r\nDTEND;TZID=America/New_York:20260306T033000\r\nRRULE:FREQ=DAILY;COUNT=4\r\nEND:VEVENT\r\n"
    ));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // 02:30 on 8 March does not exist: -05:00 gives 07:30Z (03:30 EDT).
    assert_eq!(
        starts(&p),
        [
            "2026-03-06T07:30:00Z",
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-09T06:30:00Z"
        ]
    );
}

#[test]
fn a_floating_time_in_a_gap_of_the_site_zone_takes_the_offset_before_it() {
    let ctx = ParseContext::new(TimeZone::get("Europe/Berlin").unwrap());
    let text = ics(&format!(
        "BEGIN:VEVENT\r\nUID:g1\r\n{ORG}DTSTART:20260329T023000\r\nDTEND:20260329T040000\r\nEND:VEVENT\r\n"
    ));
    let b = parse(Format::Ics, &text, &ctx).into_result().unwrap();
    assert_eq!(b[0].start, ts("2026-03-29T01:30:00Z"));
}

#[test]
fn a_duration_in_days_is_nominal_in_the_events_zone_for_each_occurrence() {
    // Site Shanghai; the event in New York, across the 1 November change.
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:d1\r\n{ORG}DTSTART;TZID=America/New_York:20261030T100000\r\nDURATION:P1DT1H\r\nRRULE:FREQ=DAILY;COUNT=3\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(hours(&p), [25, 26, 25]);
}

#[test]
fn dtend_keeps_the_same_exact_length_across_a_dst_change() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:d1\r\n{ORG}DTSTART;TZID=America/New_York:20261031T100000\r\nDTEND;TZID=America/New_York:20261101T100000\r\nRRULE:FREQ=DAILY;COUNT=2\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(hours(&p), [25, 25]);
}

#[test]
fn recurrence_id_thisandfuture_changes_that_occurrence_and_every_later_one() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:r1\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nRRULE:FREQ=DAILY;COUNT=4\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:r1\r\nORGANIZER:mailto:bob@x.org\r\nCATEGORIES:teaching\r\nLOCATION:nmr-600\r\nRECURRENCE-ID;RANGE=THISANDFUTURE:20261125T010000Z\r\nDTSTART:20261125T030000Z\r\nDTEND:20261125T060000Z\r\nEND:VEVENT\r\n"
    ));
    let b = p.into_result().unwrap();
    let ids: Vec<&str> = b.iter().map(|b| b.booking_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "r1/20261123T010000Z",
            "r1/20261124T010000Z",
            "r1/20261125T010000Z",
            "r1/20261126T010000Z"
        ]
    );
    assert_eq!(
        (b[1].start, b[1].user.as_str()),
        (ts("2026-11-24T01:00:00Z"), "Alice Li")
    );
    for (b, day) in b[2..].iter().zip(["25", "26"]) {
        assert_eq!(b.start, ts(&format!("2026-11-{day}T03:00:00Z")));
        assert_eq!(b.end, ts(&format!("2026-11-{day}T06:00:00Z")));
        assert_eq!(
            (b.user.as_str(), b.usage_type),
            ("bob@x.org", UsageType::Teaching)
        );
    }
}

#[test]
fn a_fold_that_splits_a_multibyte_character_imports() {
    // "科研" with the fold between the first two bytes of 研 (E7 A0 94).
    let mut bytes = ics(
        "BEGIN:VEVENT\r\nUID:e1\r\nLOCATION:nmr\r\nDTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nCATEGORIES:科SPLIT\r\nEND:VEVENT\r\n",
    )
    .into_bytes();
    let at = bytes.windows(5).position(|w| w == b"SPLIT").unwrap();
    bytes.splice(at..at + 5, [0xE7, b'\r', b'\n', b' ', 0xA0, 0x94]);
    let text = decode("feed.ics", bytes, Format::Ics).unwrap();
    let p = parse(Format::Ics, &text, &shanghai());
    assert_eq!(p.into_result().unwrap()[0].usage_type, UsageType::Research);
}

#[test]
fn an_ics_file_that_is_not_utf8_names_its_line() {
    let mut bytes = ics("BEGIN:VEVENT\r\nUID:e1\r\nSUMMARY:BAD\r\nEND:VEVENT\r\n").into_bytes();
    let at = bytes.windows(3).position(|w| w == b"BAD").unwrap();
    bytes[at] = 0xD5;
    let e = decode("feed.ics", bytes, Format::Ics).unwrap_err();
    assert!(e.starts_with("feed.ics line 6, column 9"), "{e}");
    assert!(e.contains("UTF-8") && !e.contains("CSV"), "{e}");
}

#[test]
fn a_dtstart_off_the_rule_is_kept_as_the_first_occurrence_with_a_warning() {
    // Tuesday 24 November; the rule says Mondays and Wednesdays.
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:o1\r\n{ORG}DTSTART:20261124T010000Z\r\nDTEND:20261124T020000Z\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(
        starts(&p),
        [
            "2026-11-24T01:00:00Z",
            "2026-11-25T01:00:00Z",
            "2026-11-30T01:00:00Z",
            "2026-12-02T01:00:00Z",
            "2026-12-07T01:00:00Z"
        ]
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.warnings[0].line, 4);
    assert!(
        p.warnings[0].message.contains("off-rule"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_floating_until_and_exdate_in_a_tzid_series_are_read_in_its_zone_with_a_warning() {
    // Berlin 09:00 = 08:00Z; read in Shanghai (the site) they would miss.
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:u1\r\n{ORG}DTSTART;TZID=Europe/Berlin:20261123T090000\r\nDTEND;TZID=Europe/Berlin:20261123T100000\r\nRRULE:FREQ=DAILY;UNTIL=20261126T090000\r\nEXDATE:20261124T090000\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(
        starts(&p),
        [
            "2026-11-23T08:00:00Z",
            "2026-11-25T08:00:00Z",
            "2026-11-26T08:00:00Z"
        ]
    );
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(
        p.warnings
            .iter()
            .all(|w| w.line == 4 && w.message.contains("Europe/Berlin"))
    );
}

#[test]
fn monthly_and_yearly_rules_with_ordinals_setpos_and_rdate_expand() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:m1\r\n{ORG}DTSTART:20260105T010000Z\r\nDTEND:20260105T020000Z\r\nRRULE:FREQ=MONTHLY;BYDAY=1MO;COUNT=3\r\nRDATE:20260110T010000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:y1\r\n{ORG}DTSTART:20261231T010000Z\r\nDTEND:20261231T020000Z\r\nRRULE:FREQ=YEARLY;BYMONTH=11,12;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=2\r\nEND:VEVENT\r\n"
    ));
    assert_eq!(
        starts(&p),
        [
            "2026-01-05T01:00:00Z",
            "2026-01-10T01:00:00Z",
            "2026-02-02T01:00:00Z",
            "2026-03-02T01:00:00Z",
            "2026-12-31T01:00:00Z",
            "2027-12-31T01:00:00Z"
        ]
    );
}

#[test]
fn an_open_ended_rule_is_expanded_up_to_the_horizon_from_now() {
    let mut ctx = shanghai().at(ts("2026-11-23T00:00:00Z"));
    ctx.ical_horizon_days = 10;
    let text = ics(&format!(
        "BEGIN:VEVENT\r\nUID:w1\r\n{ORG}DTSTART:20261120T010000Z\r\nDTEND:20261120T020000Z\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\n"
    ));
    let p = parse(Format::Ics, &text, &ctx);
    assert_eq!(starts(&p), ["2026-11-20T01:00:00Z", "2026-11-27T01:00:00Z"]);
    let later = parse(Format::Ics, &text, &ctx.at(ts("2026-12-01T00:00:00Z")));
    assert_eq!(later.bookings.len(), 3);
}

#[test]
fn an_event_without_a_usage_category_or_uid_is_reported_with_its_line() {
    let p = ical(
        "BEGIN:VEVENT\r\nLOCATION:nmr\r\nCATEGORIES:Meeting\r\nDTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nEND:VEVENT\r\n",
    );
    let e = only_error(&p);
    assert_eq!(e.line, 4);
    assert!(
        e.message.contains("no UID") && e.message.contains("\"Meeting\" name no usage type"),
        "{e}"
    );
}

#[test]
fn alarms_and_timezone_components_are_skipped() {
    let p = ical(&format!(
        "BEGIN:VEVENT\r\nUID:e1\r\n{ORG}DTSTART:20261123T010000Z\r\nDTEND:20261123T020000Z\r\nBEGIN:VALARM\r\nDESCRIPTION:x\r\nEND:VALARM\r\nEND:VEVENT\r\nBEGIN:VTIMEZONE\r\nTZID:Asia/Shanghai\r\nEND:VTIMEZONE\r\n"
    ));
    assert_eq!(p.into_result().unwrap().len(), 1);
}

// ---- Store ----

fn db() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::store::migrations::apply(&mut conn, std::path::Path::new(":memory:")).unwrap();
    conn
}

const ROWS: &str = "B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\nB2,nmr,b,g,teaching,2026-11-23 10:00,2026-11-23 11:00,confirmed\n";

fn now() -> Timestamp {
    ts("2026-11-22T00:00:00Z")
}

/// Imports CSV `rows` (after the header) as `b.csv`, applied.
fn apply(conn: &mut Connection, rows: &str) -> store::ImportReport {
    import(conn, csv_of(rows), "b.csv", ImportOptions::default(), now()).unwrap()
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM bookings", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn an_import_inserts_then_reimporting_the_same_file_changes_nothing() {
    let mut conn = db();
    let r = import(
        &mut conn,
        csv_of(ROWS),
        "b.csv",
        ImportOptions::default(),
        now(),
    )
    .unwrap();
    assert_eq!(r.summary(), "2 inserted, 0 updated, 0 unchanged");
    assert!(r.applied);
    let r = import(
        &mut conn,
        csv_of(ROWS),
        "b.csv",
        ImportOptions::default(),
        ts("2026-11-23T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(r.summary(), "0 inserted, 0 updated, 2 unchanged");
    let at: i64 = conn
        .query_row(
            "SELECT imported_at_ms FROM bookings WHERE booking_id='B1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(at, now().as_millisecond());
    assert_eq!(store::get(&conn, "B1").unwrap().unwrap().user, "a");
}

#[test]
fn an_upsert_updates_changed_fields_and_leaves_other_bookings_alone() {
    let mut conn = db();
    apply(&mut conn, ROWS);
    let r = import(&mut conn, csv_of("B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 12:00,cancelled\nB3,nmr,c,g,training,2026-11-24 09:00,2026-11-24 10:00,confirmed\n"), "c.csv", ImportOptions::default(), now()).unwrap();
    assert_eq!(r.inserted, ["B3"]);
    assert_eq!(r.updated[0].booking_id, "B1");
    assert_eq!(r.updated[0].fields, ["end", "status"]);
    assert_eq!(count(&conn), 3);
    let b1 = store::get(&conn, "B1").unwrap().unwrap();
    assert_eq!(b1.status, BookingStatus::Cancelled);
    assert_eq!(store::all(&conn).unwrap().len(), 3);
}

#[test]
fn nothing_is_applied_from_a_file_with_errors() {
    let mut conn = db();
    let parsed = csv_of(&format!(
        "{ROWS}B9,nmr,a,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\n"
    ));
    let r = import(&mut conn, parsed, "b.csv", ImportOptions::default(), now()).unwrap();
    assert!(!r.applied);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.inserted.len(), 2);
    assert_eq!(count(&conn), 0);
}

#[test]
fn skip_invalid_applies_the_good_rows_and_still_lists_the_bad() {
    let mut conn = db();
    let parsed = csv_of(&format!(
        "{ROWS}B9,nmr,a,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\n"
    ));
    let opts = ImportOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let r = import(&mut conn, parsed, "b.csv", opts, now()).unwrap();
    assert!(r.applied);
    assert_eq!(r.errors[0].line, 4);
    assert_eq!(count(&conn), 2);
}

#[test]
fn a_dry_run_reports_the_same_and_writes_nothing() {
    let mut conn = db();
    let opts = ImportOptions {
        dry_run: true,
        ..Default::default()
    };
    let r = import(&mut conn, csv_of(ROWS), "b.csv", opts, now()).unwrap();
    assert!(!r.applied);
    assert_eq!(r.summary(), "2 inserted, 0 updated, 0 unchanged");
    assert_eq!(count(&conn), 0);
}

#[test]
fn an_ical_feed_reimported_is_all_unchanged() {
    let mut conn = db();
    let feed = format!(
        "BEGIN:VEVENT\r\nUID:r1\r\n{ORG}DTSTART;TZID=Asia/Shanghai:20261123T090000\r\nDTEND;TZID=Asia/Shanghai:20261123T110000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4\r\nEND:VEVENT\r\n"
    );
    let r = import(
        &mut conn,
        ical(&feed),
        "f.ics",
        ImportOptions::default(),
        now(),
    )
    .unwrap();
    assert_eq!(r.inserted.len(), 4);
    let r = import(
        &mut conn,
        ical(&feed),
        "f.ics",
        ImportOptions::default(),
        now(),
    )
    .unwrap();
    assert_eq!(r.summary(), "0 inserted, 0 updated, 4 unchanged");
}

#[test]
fn the_report_lists_instruments_not_monitored_and_they_are_stored() {
    let mut conn = db();
    let mut ctx = shanghai();
    ctx.instruments = Some(["nmr".to_owned()].into());
    let text = format!(
        "{HEADER}{ROWS}B3,xrd-9,c,g,research,2026-11-23 12:00,2026-11-23 13:00,confirmed\n"
    );
    let r = import(
        &mut conn,
        parse(Format::Csv, &text, &ctx),
        "b.csv",
        ImportOptions::default(),
        now(),
    )
    .unwrap();
    assert!(r.applied);
    assert_eq!(r.summary(), "3 inserted, 0 updated, 0 unchanged");
    assert_eq!(
        r.not_monitored,
        [store::NotMonitored {
            instrument_id: "xrd-9".into(),
            bookings: 1
        }]
    );
    assert!(r.not_monitored_summary().unwrap().contains("xrd-9 (1)"));
    assert_eq!(
        store::get(&conn, "B3").unwrap().unwrap().instrument_id,
        "xrd-9"
    );
}

#[test]
fn an_import_marks_each_instrument_dirty_once_from_its_earliest_changed_start() {
    let mut conn = db();
    apply(&mut conn, ROWS);
    conn.execute("DELETE FROM dirty", []).unwrap();
    // B2 moves to xrd and earlier; B1 is unchanged.
    let moved = "B1,nmr,a,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\nB2,xrd,b,g,teaching,2026-11-20 10:00,2026-11-20 11:00,confirmed\n";
    import(
        &mut conn,
        csv_of(moved),
        "b.csv",
        ImportOptions::default(),
        now(),
    )
    .unwrap();
    let mut marks: Vec<(String, i64)> = conn
        .prepare("SELECT instrument_id, from_ms FROM dirty ORDER BY instrument_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    marks.sort();
    assert_eq!(
        marks,
        [
            (
                "nmr".to_owned(),
                ts("2026-11-23T02:00:00Z").as_millisecond()
            ),
            (
                "xrd".to_owned(),
                ts("2026-11-20T02:00:00Z").as_millisecond()
            ),
        ]
    );
}
