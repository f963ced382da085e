//! The InfluxDB sink: the collector's time series (power summaries, states,
//! result files, faults, verified days) copied to InfluxDB, or anything that
//! speaks its write API (VictoriaMetrics), for Grafana (docs/influxdb.md).
//!
//! It never slows ingest or loses a point: it reads from the collector's
//! own store ([`export`]) on its own connection, after ingest committed, and
//! moves its durable cursors only once the server took a batch. An outage
//! of any length is caught up oldest first, in batches; a restart resumes
//! from the cursors. [`client`] says what each HTTP answer means.

pub mod client;
pub mod export;
pub mod line;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use self::client::{Reply, Target};
use self::export::Batch;
use crate::config::InfluxConfig;
use crate::registry::Registry;

/// Points per request at most (InfluxData recommends 5,000).
pub const MAX_POINTS: usize = 5_000;
/// Pause when there is nothing to send.
const IDLE: Duration = Duration::from_secs(1);
/// Waits after a failed write: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// What the sink has done, for `healthz` and the log.
#[derive(Debug, Default)]
pub struct SinkStats {
    points_written: AtomicU64,
    batches_written: AtomicU64,
    retries: AtomicU64,
    rejected_batches: AtomicU64,
    pending_events: AtomicU64,
    /// The instant of the oldest event not yet written (0: none).
    oldest_pending_ms: AtomicU64,
    state: Mutex<(SinkState, Option<String>)>,
}

/// Where the sink is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    #[default]
    Starting,
    /// Writing, or caught up and waiting for new data.
    Running,
    /// The server is busy or away; sending again after a pause.
    Retrying,
    /// The server refused the token or bucket; a restart resumes.
    Stopped,
}

/// `healthz`'s view of the sink.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SinkHealth {
    pub state: SinkState,
    /// The last failure, when there was one since the last write.
    pub last_error: Option<String>,
    /// Events committed but not yet written, over all agents.
    pub pending_events: u64,
    /// How far behind the oldest unwritten event is, in seconds.
    pub lag_s: f64,
    pub points_written: u64,
    pub batches_written: u64,
    /// Requests that failed and were sent again.
    pub retries: u64,
    /// Batches the server refused as malformed, kept in `influx_rejected`.
    pub rejected_batches: u64,
}

impl SinkStats {
    fn set(&self, state: SinkState, error: Option<String>) {
        *self.state.lock().expect("sink state lock") = (state, error);
    }

    /// The figures at `now_ms`.
    pub fn health(&self, now_ms: i64) -> SinkHealth {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (state, last_error) = self.state.lock().expect("sink state lock").clone();
        let oldest = get(&self.oldest_pending_ms) as i64;
        SinkHealth {
            state,
            last_error,
            pending_events: get(&self.pending_events),
            lag_s: if oldest > 0 {
                ((now_ms - oldest).max(0)) as f64 / 1000.0
            } else {
                0.0
            },
            points_written: get(&self.points_written),
            batches_written: get(&self.batches_written),
            retries: get(&self.retries),
            rejected_batches: get(&self.rejected_batches),
        }
    }
}

/// Reads the token file (trailing line breaks dropped), as `check-config` does.
pub fn read_token(config: &InfluxConfig) -> anyhow::Result<Option<String>> {
    config
        .token_file
        .as_ref()
        .map(|path| labhours_shared::config::file::read_secret("influxdb.token_file", path))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The sink over the store in `data_dir`.
#[derive(Debug)]
pub struct Sink {
    conn: Connection,
    registry: Arc<Registry>,
    target: Target,
    stats: Arc<SinkStats>,
    /// Points per request now (halved on 413, grown back after successes).
    budget: usize,
    backoff: Duration,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing was waiting.
    Idle,
    /// A batch was written (or set aside); more may wait.
    Sent,
    /// Wait this long, then try again.
    Wait(Duration),
    /// Stop for good (until a restart).
    Stop,
}

impl Sink {
    /// Opens its own connection and arms the day marks.
    pub fn open(
        data_dir: &Path,
        registry: Arc<Registry>,
        target: Target,
        stats: Arc<SinkStats>,
    ) -> rusqlite::Result<Self> {
        let conn = crate::verified::store_reports::open_writer(data_dir)?;
        export::prepare(&conn)?;
        Ok(Self {
            conn,
            registry,
            target,
            stats,
            budget: MAX_POINTS,
            backoff: BACKOFF.0,
        })
    }

    /// Reads one batch, writes it, and records what the answer means.
    pub fn step(&mut self, now_ms: i64) -> rusqlite::Result<Step> {
        let batch = export::next_batch(&self.conn, &self.registry, self.budget)?;
        let pending = export::pending_events(&self.conn)?;
        self.stats.pending_events.store(pending, Ordering::Relaxed);
        self.stats.oldest_pending_ms.store(
            batch.oldest_ms.map_or(0, |t| t.max(1) as u64),
            Ordering::Relaxed,
        );
        if batch.is_empty() {
            self.stats.set(SinkState::Running, None);
            return Ok(Step::Idle);
        }
        let reply = if batch.points == 0 {
            Reply::Written // only heartbeats and the like: nothing to send
        } else {
            self.target.post(&batch.body)
        };
        self.settle(&batch, reply, now_ms)
    }

    fn settle(&mut self, batch: &Batch, reply: Reply, now_ms: i64) -> rusqlite::Result<Step> {
        let add = |a: &AtomicU64, n: usize| a.fetch_add(n as u64, Ordering::Relaxed);
        match reply {
            Reply::Written => {
                export::commit(&mut self.conn, batch)?;
                add(&self.stats.points_written, batch.points);
                if batch.points > 0 {
                    add(&self.stats.batches_written, 1);
                }
                self.backoff = BACKOFF.0;
                self.budget = (self.budget * 2).min(MAX_POINTS);
                self.stats.set(SinkState::Running, None);
                Ok(Step::Sent)
            }
            Reply::TooLarge if batch.points > 1 => {
                self.budget = (batch.points / 2).max(1);
                tracing::warn!(
                    points = batch.points,
                    next = self.budget,
                    "influxdb: the server found the batch too large (413); sending less"
                );
                Ok(Step::Sent)
            }
            Reply::TooLarge => self.reject(batch, 413, "one point is too large (413)", now_ms),
            Reply::Rejected { status, message } => self.reject(batch, status, &message, now_ms),
            Reply::Retry { after, message } => {
                add(&self.stats.retries, 1);
                let wait = after.unwrap_or(self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF.1);
                tracing::warn!(
                    error = %message,
                    wait_s = wait.as_secs_f64(),
                    points = batch.points,
                    "influxdb: write failed; sending again after a pause"
                );
                self.stats.set(SinkState::Retrying, Some(message));
                Ok(Step::Wait(wait))
            }
            Reply::Stop { status, message } => {
                let error = format!(
                    "{status}: {message} (check influxdb.token_file, org and bucket, then restart; \
                     nothing is lost, the sink resumes where it stopped)"
                );
                tracing::error!(%error, url = %self.target.url, "influxdb: the server refused the sink; it stops");
                self.stats.set(SinkState::Stopped, Some(error));
                Ok(Step::Stop)
            }
        }
    }

    /// Sets a malformed batch aside with the server's message and moves on.
    fn reject(
        &mut self,
        batch: &Batch,
        status: u16,
        message: &str,
        now_ms: i64,
    ) -> rusqlite::Result<Step> {
        tracing::error!(
            status,
            message,
            points = batch.points,
            "influxdb: the server refused a batch as malformed; kept in influx_rejected"
        );
        export::set_aside(&self.conn, now_ms, status, message, batch)?;
        export::commit(&mut self.conn, batch)?;
        self.stats.rejected_batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .set(SinkState::Running, Some(format!("{status}: {message}")));
        Ok(Step::Sent)
    }
}

/// Runs the sink until `stop` turns true (or the server refuses it for good).
pub async fn run(sink: Sink, mut stop: watch::Receiver<bool>) {
    tracing::info!(url = %sink.target.url, "influxdb sink started");
    let mut shared = Some(sink);
    loop {
        let mut s = shared.take().expect("the sink is back after each step");
        let now = jiff::Timestamp::now().as_millisecond();
        let (s, step) = match tokio::task::spawn_blocking(move || {
            let step = s.step(now);
            (s, step)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "influxdb: the sink task panicked; it stops");
                return;
            }
        };
        shared = Some(s);
        let pause = match step {
            Ok(Step::Sent) => Duration::ZERO,
            Ok(Step::Idle) => IDLE,
            Ok(Step::Wait(d)) => d,
            Ok(Step::Stop) => return,
            Err(e) => {
                tracing::error!(error = %e, "influxdb: cannot read the store; trying again");
                IDLE
            }
        };
        if pause.is_zero() {
            if *stop.borrow() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Starts the sink of `config` (when `[influxdb]` is set; otherwise disarms
/// the day marks). Returns its stats for `healthz`.
pub fn start(
    config: &crate::config::CollectorConfig,
    registry: Arc<Registry>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<(Arc<SinkStats>, tokio::task::JoinHandle<()>)>> {
    let Some(influx) = &config.influxdb else {
        export::unprepare(&crate::verified::store_reports::open_writer(
            &config.data_dir,
        )?)?;
        return Ok(None);
    };
    let target = Target::new(influx, read_token(influx)?);
    let stats = Arc::new(SinkStats::default());
    let sink = Sink::open(&config.data_dir, registry, target, stats.clone())?;
    Ok(Some((stats, tokio::spawn(run(sink, stop)))))
}
