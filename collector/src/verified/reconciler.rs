//! The background reconciler: every second (and at once on start) it
//! reconciles whatever ingest, imports or corrections marked dirty. Results
//! lag ingest by about a second; a stop waits for the pass under way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::StoreReports;

/// Pause between passes.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true.
pub async fn run(reports: Arc<StoreReports>, mut stop: watch::Receiver<bool>) {
    loop {
        let step = reports.clone();
        let pass = tokio::task::spawn_blocking(move || step.catch_up(jiff::Timestamp::now())).await;
        match pass {
            Ok(Ok(p)) if p.instruments > 0 => tracing::debug!(
                instruments = p.instruments,
                days = p.days,
                bookings = p.bookings,
                "reconciled"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "reconciliation failed; retrying"),
            Err(error) => tracing::error!(%error, "the reconciliation task panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
