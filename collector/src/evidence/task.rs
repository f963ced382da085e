//! The running collector's daily checkpoint: every [`CHECK_EVERY`] it asks
//! [`tick`] whether one is due (none signed yet this UTC day) and signs it.
//! `tick` takes the time from the caller, so tests drive it with any clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use labhours_shared::trust::Signer;
use rusqlite::Connection;
use tokio::sync::watch;

use super::checkpoint::{self, Checkpoint};

/// How often the task looks at the clock.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Signs a checkpoint when one is due at `now`.
pub fn tick(
    conn: &Connection,
    signer: &Signer,
    site_name: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<Checkpoint>> {
    if !checkpoint::due(checkpoint::newest_at(conn)?, now) {
        return Ok(None);
    }
    checkpoint::sign(conn, signer, site_name, now).map(Some)
}

/// Runs until `stop` turns true: a checkpoint at start when due, then one
/// a day.
pub async fn run(
    data_dir: PathBuf,
    signer: Arc<Signer>,
    site_name: String,
    clock: crate::api::Clock,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (dir, signer, site, now) =
            (data_dir.clone(), signer.clone(), site_name.clone(), clock());
        let signed = tokio::task::spawn_blocking(move || {
            let conn = crate::verified::store_reports::open_writer(&dir)?;
            tick(&conn, &signer, &site, now)
        })
        .await;
        match signed {
            Ok(Ok(Some(c))) => tracing::info!(id = c.id, at = %c.signed_at, "signed a checkpoint"),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "signing the daily checkpoint failed; retrying")
            }
            Err(error) => tracing::error!(%error, "the checkpoint task panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_signs_once_per_utc_day_on_the_clock_it_is_given() {
        let dir = tempfile::tempdir().expect("dir");
        let store =
            crate::store::Store::open(dir.path(), crate::store::Durability::Normal).expect("store");
        let conn = store.connection();
        let signer = Signer::from_pkcs8(&Signer::generate_pkcs8().expect("k")).expect("k");
        let t = |s: &str| s.parse::<Timestamp>().expect("ts");
        let first = tick(conn, &signer, "Lab", t("2026-03-04T10:00:00Z")).expect("tick");
        assert!(first.is_some());
        assert_eq!(
            tick(conn, &signer, "Lab", t("2026-03-04T23:59:59Z")).expect("tick"),
            None
        );
        let next = tick(conn, &signer, "Lab", t("2026-03-05T00:00:30Z"))
            .expect("tick")
            .expect("a new day: signed");
        assert_eq!(next.signed_at, t("2026-03-05T00:00:30Z"));
        let key = checkpoint::CollectorKey::new("Lab", &signer.public_key());
        let text = super::super::note::open(&next.note, &key.key_name, &signer.public_key())
            .expect("verifies");
        assert!(
            text.starts_with("labhours/Lab\ntime 2026-03-05T00:00:30Z\n"),
            "{text}"
        );
        assert_eq!(checkpoint::list(conn, false).expect("list").len(), 2);
        assert_eq!(checkpoint::list(conn, true).expect("list"), vec![next]);
    }
}
