//! The site's forwarder: posts the outbox to the hub in batches and
//! forgets what the hub acknowledged (end-to-end, like agents and the
//! collector). Every failure — no answer, 5xx, even a refusal — keeps the
//! batch and tries again after a wait doubling from 1 s to `retry_max_s`:
//! nothing is ever skipped, so an outage of any length loses nothing and a
//! restart resumes from the outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{Batch, RegistryEntry, outbox};
use crate::config::{CollectorConfig, UpstreamConfig};
use crate::influx::client::{Reply, Target};
use crate::registry::Registry;
use crate::verified::{hours, settled};

/// How long one request may take in all.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How often an idle forwarder looks at the outbox.
const IDLE: Duration = Duration::from_millis(500);
/// Checkpoints per batch (one a day is signed; a backlog goes in steps).
const CHECKPOINTS_PER_BATCH: usize = 32;
/// How often a batch without rows is sent anyway, when only the settled
/// instants moved (freshness at the hub).
const FRESHNESS_EVERY: Duration = Duration::from_secs(10);

/// The forwarder of one site.
pub struct Forwarder {
    conn: Connection,
    registry: Arc<Registry>,
    upstream: UpstreamConfig,
    /// The hub's batch route, with this site's credential.
    hub: Target,
    limit: usize,
    /// What the last acknowledged batch said was settled, and when.
    last_settled: Option<(String, Instant)>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to send.
    Idle,
    /// A batch was acknowledged; `more`: the outbox holds more.
    Sent { rows: usize, more: bool },
}

impl Forwarder {
    /// Opens the store's writer, creates the outbox triggers and reads the
    /// credential. Without `[upstream]` the triggers are removed and `None`
    /// comes back.
    pub fn open(config: &CollectorConfig, registry: Arc<Registry>) -> anyhow::Result<Option<Self>> {
        let conn = crate::verified::store_reports::open_writer(&config.data_dir)?;
        let Some(upstream) = config.upstream.clone() else {
            outbox::unprepare(&conn)?;
            return Ok(None);
        };
        outbox::prepare(&conn)?;
        let token = labhours_shared::config::file::read_secret(
            "upstream.token_file",
            &upstream.token_file,
        )?;
        Ok(Some(Self {
            conn,
            registry,
            hub: Target::post_to(
                format!(
                    "{}/api/v1/federation/batch",
                    upstream.url.trim_end_matches('/')
                ),
                "application/json",
                Some(format!("Bearer {}", token.trim())),
                TIMEOUT,
            ),
            limit: upstream.batch_rows,
            upstream,
            last_settled: None,
        }))
    }

    /// Builds the next batch, posts it and, once the hub took it, forgets
    /// its changes. `Err`: try again later (the message says why).
    pub fn step(&mut self) -> Result<Step, String> {
        let (batch, registry_sha, last_checkpoint) = self
            .next_batch()
            .map_err(|e| format!("reading the outbox: {e}"))?;
        let settled_key =
            serde_json::to_string(&(&batch.settled, batch.settled_through_ms)).unwrap_or_default();
        let fresh_enough = self
            .last_settled
            .as_ref()
            .is_some_and(|(key, at)| *key == settled_key || at.elapsed() < FRESHNESS_EVERY);
        if batch.rows.is_empty()
            && batch.registry.is_none()
            && batch.checkpoints.is_empty()
            && fresh_enough
        {
            return Ok(Step::Idle);
        }
        let body = serde_json::to_string(&batch).map_err(|e| e.to_string())?;
        match self.hub.post(&body) {
            Reply::Written => {}
            Reply::TooLarge => {
                self.limit = (self.limit / 2).max(1);
                return Err(format!(
                    "the hub refused a batch as too large; sending {} rows at a time",
                    self.limit
                ));
            }
            Reply::Retry { message, .. } => return Err(format!("hub away or busy: {message}")),
            Reply::Rejected { status, message } | Reply::Stop { status, message } => {
                return Err(format!(
                    "the hub refused the batch ({status}): {message}; it is kept and sent again"
                ));
            }
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        outbox::ack(&tx, &batch.rows).map_err(|e| e.to_string())?;
        if let Some(sha) = registry_sha {
            outbox::set_acked_registry(&tx, &sha).map_err(|e| e.to_string())?;
        }
        if let Some(id) = last_checkpoint {
            outbox::set_acked_checkpoint(&tx, id).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        self.last_settled = Some((settled_key, Instant::now()));
        let rows = batch.rows.len();
        Ok(Step::Sent {
            rows,
            more: rows >= self.limit,
        })
    }

    /// The next batch, read in one snapshot; with the registry's hash when
    /// the registry goes with it, and the id of its last checkpoint.
    fn next_batch(&mut self) -> rusqlite::Result<(Batch, Option<String>, Option<i64>)> {
        let tx = self.conn.transaction()?;
        let (rows, columns) = outbox::next_changes(&tx, self.limit)?;
        let checkpoints = outbox::next_checkpoints(&tx, CHECKPOINTS_PER_BATCH)?;
        let last_checkpoint = checkpoints.last().map(|(id, _)| *id);
        let instruments = hours::select(&tx, &self.registry, None, None).map_err(|e| match e {
            crate::verified::QueryError::Db(e) => e,
            other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
        })?;
        let org = self.registry.organisation();
        let entries: Vec<RegistryEntry> = instruments
            .iter()
            .map(|i| RegistryEntry {
                id: i.id.clone(),
                name: i.name.clone(),
                // The path from the top unit, so the hub keeps the tree.
                unit: org.path_of(&i.id).or_else(|| i.unit.clone()),
                time_zone: i.time_zone.clone(),
                open_hours: i.open_hours.as_ref().map(|o| o.config().clone()),
            })
            .collect();
        let sha = labhours_shared::trust::hex(&Sha256::digest(
            serde_json::to_string(&entries)
                .unwrap_or_default()
                .as_bytes(),
        ));
        let changed = outbox::acked_registry(&tx)? != sha;
        let per = settled::per_instrument(&tx)?;
        let through = settled::overall(&per, instruments.iter().map(|i| i.id.as_str()));
        tx.commit()?;
        Ok((
            Batch {
                site: self.upstream.site_id.clone(),
                columns,
                rows,
                registry: changed.then_some(entries),
                settled: per.into_iter().collect(),
                settled_through_ms: through,
                checkpoints: checkpoints.into_iter().map(|(_, note)| note).collect(),
            },
            changed.then_some(sha),
            last_checkpoint,
        ))
    }

    /// Changes waiting for the hub.
    pub fn pending(&self) -> u64 {
        outbox::pending(&self.conn).unwrap_or(0)
    }
}

/// Steps until `stop` turns true: at once while the outbox holds more,
/// every [`IDLE`] when it is empty, with doubling waits after failures.
pub async fn run(forwarder: Forwarder, mut stop: watch::Receiver<bool>) {
    let retry_max = Duration::from_secs(forwarder.upstream.retry_max_s);
    let mut slot = Some(forwarder);
    let mut wait = Duration::ZERO;
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let Some(mut f) = slot.take() else { return };
        let done = tokio::task::spawn_blocking(move || {
            let step = f.step();
            (f, step)
        })
        .await;
        let (f, step) = match done {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the upstream forwarder panicked; forwarding stopped until a restart");
                return;
            }
        };
        slot = Some(f);
        match step {
            Ok(Step::Sent { rows, more }) => {
                tracing::debug!(rows, "forwarded a batch upstream");
                backoff = Duration::from_secs(1);
                wait = if more { Duration::ZERO } else { IDLE };
            }
            Ok(Step::Idle) => wait = IDLE,
            Err(message) => {
                tracing::warn!(retry_in_s = backoff.as_secs(), "upstream: {message}");
                wait = backoff;
                backoff = (backoff * 2).min(retry_max);
            }
        }
    }
}

/// Starts the forwarder when `[upstream]` is set (and removes the outbox
/// triggers when it is not).
pub fn start(
    config: &CollectorConfig,
    registry: Arc<Registry>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    Ok(Forwarder::open(config, registry)?.map(|f| {
        tracing::info!(url = %f.hub.url, site = %f.upstream.site_id, "forwarding results upstream");
        tokio::spawn(run(f, stop))
    }))
}
