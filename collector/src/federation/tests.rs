use rusqlite::Connection;

use super::apply::apply;
use super::*;
use crate::store::{Durability, Store};
use crate::verified::store_reports::open_writer;

fn db(dir: &std::path::Path) -> Connection {
    drop(Store::open(dir, Durability::Normal).expect("store"));
    open_writer(dir).expect("writer")
}

const COLS: &str = "used_ms, booked_ms, booked_used_ms, unbooked_ms, teaching_ms, research_ms,
    external_ms, training_ms, maintenance_ms, unassigned_ms, assigned_ms, c_teaching_ms,
    c_research_ms, c_external_ms, c_training_ms, c_maintenance_ms, c_unassigned_ms,
    no_show_count, fault_ms, unknown_ms, result_files";

fn put_day(conn: &Connection, inst: &str, day: i64, used_ms: i64) {
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO day_totals (instrument_id, start_ms, end_ms, month, {COLS}, energy_wh)
             VALUES (?1, ?2, ?2 + 86400000, '2026-03', ?3, 0,0,?3, 0,0,0,0,0,?3, 0, 0,0,0,0,0,?3, 0,0,0,0, 1.5)"
        ),
        rusqlite::params![inst, day * 86_400_000, used_ms],
    )
    .expect("day");
}

fn used(conn: &Connection, inst: &str, day: i64) -> Option<i64> {
    conn.query_row(
        "SELECT used_ms FROM day_totals WHERE instrument_id = ?1 AND start_ms = ?2",
        rusqlite::params![inst, day * 86_400_000],
        |r| r.get(0),
    )
    .ok()
}

fn batch(site: &Connection, limit: usize) -> Batch {
    let (rows, columns) = outbox::next_changes(site, limit).expect("changes");
    Batch {
        site: "a".into(),
        rows,
        columns,
        ..Batch::default()
    }
}

#[test]
fn history_changes_resends_and_deletes_reach_the_hub_once() {
    let (s, h) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (site, mut hub) = (db(s.path()), db(h.path()));
    // Rows stored before forwarding was switched on are sent too.
    put_day(&site, "nmr", 1, 1000);
    outbox::prepare(&site).unwrap();
    outbox::prepare(&site).unwrap(); // idempotent
    put_day(&site, "nmr", 2, 2000);
    let first = batch(&site, 100);
    assert_eq!(first.rows.len(), 2);
    let got = apply(&mut hub, "a", None, &first, 5).unwrap();
    assert_eq!((got.applied, got.ignored), (2, 0));
    assert_eq!(used(&hub, "a/nmr", 1), Some(1000));
    assert_eq!(used(&hub, "a/nmr", 2), Some(2000));
    assert_eq!(used(&hub, "nmr", 1), None, "ids are namespaced");

    // The ack was lost: the same batch again changes nothing.
    let again = apply(&mut hub, "a", None, &first, 6).unwrap();
    assert_eq!((again.applied, again.ignored), (0, 2));

    // Re-derived while the batch was in flight: the ack keeps the newer change.
    put_day(&site, "nmr", 2, 2500);
    outbox::ack(&site, &first.rows).unwrap();
    let second = batch(&site, 100);
    assert_eq!(second.rows.len(), 1);
    apply(&mut hub, "a", None, &second, 7).unwrap();
    assert_eq!(used(&hub, "a/nmr", 2), Some(2500));
    // An older change arriving late does not win.
    let stale = apply(&mut hub, "a", None, &first, 8).unwrap();
    assert_eq!(stale.applied, 0);
    assert_eq!(used(&hub, "a/nmr", 2), Some(2500));
    outbox::ack(&site, &second.rows).unwrap();
    assert_eq!(outbox::pending(&site).unwrap(), 0);

    // A deleted row is deleted at the hub.
    site.execute("DELETE FROM day_totals WHERE start_ms = 86400000", [])
        .unwrap();
    let third = batch(&site, 100);
    assert_eq!(third.rows.len(), 1);
    assert!(third.rows[0].row.is_none());
    apply(&mut hub, "a", None, &third, 9).unwrap();
    assert_eq!(used(&hub, "a/nmr", 1), None);
    assert_eq!(used(&hub, "a/nmr", 2), Some(2500));
}

#[test]
fn batches_come_in_version_order_and_limit_holds() {
    let s = tempfile::tempdir().unwrap();
    let site = db(s.path());
    outbox::prepare(&site).unwrap();
    for day in 0..10 {
        put_day(&site, "x", day, day);
    }
    let b = batch(&site, 4);
    assert_eq!(b.rows.len(), 4);
    assert!(b.rows.windows(2).all(|w| w[0].version < w[1].version));
    outbox::ack(&site, &b.rows).unwrap();
    assert_eq!(outbox::pending(&site).unwrap(), 6);
}

#[test]
fn a_bad_row_refuses_the_whole_batch_naming_it() {
    let h = tempfile::tempdir().unwrap();
    let mut hub = db(h.path());
    let row = vec!["nmr".into(), 0.into()];
    let b = Batch {
        site: "a".into(),
        columns: [(
            "day_totals".to_owned(),
            vec!["instrument_id".to_owned(), "start_ms".to_owned()],
        )]
        .into(),
        rows: vec![RowChange {
            tbl: "day_totals".into(),
            instrument_id: "nmr".into(),
            key_int: 0,
            key_text: String::new(),
            version: 1,
            row: Some(row),
        }],
        ..Batch::default()
    };
    let err = apply(&mut hub, "a", None, &b, 1).unwrap_err().to_string();
    assert!(err.contains("rows[0]") && err.contains("end_ms"), "{err}");
    // Nothing half-applied: not even the site's freshness.
    let sites: i64 = hub
        .query_row("SELECT COUNT(*) FROM fed_sites", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sites, 0);
    let bad_table = Batch {
        rows: vec![RowChange {
            tbl: "events".into(),
            ..b.rows[0].clone()
        }],
        ..b
    };
    let err = apply(&mut hub, "a", None, &bad_table, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows[0].tbl"), "{err}");
}

#[test]
fn switching_forwarding_off_removes_the_triggers_and_the_outbox() {
    let s = tempfile::tempdir().unwrap();
    let site = db(s.path());
    outbox::prepare(&site).unwrap();
    put_day(&site, "x", 0, 1);
    outbox::unprepare(&site).unwrap();
    put_day(&site, "x", 1, 1);
    assert_eq!(outbox::pending(&site).unwrap(), 0);
    // On again: everything is sent again, with versions above the old ones.
    outbox::prepare(&site).unwrap();
    assert_eq!(outbox::pending(&site).unwrap(), 2);
}
