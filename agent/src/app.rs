//! `labhours-agent run`: wires the sources, the state engine, the outbox and
//! delivery together, and shuts them down in order.
//!
//! Shutdown: the signal cancels the sources; the pipeline drains what they
//! sent and finishes the engine (the state becomes `unknown` at the stop
//! instant); delivery stops (what is unacknowledged stays in the outbox);
//! the outbox is flushed last.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use labhours_shared::config::LogArgs;
use labhours_shared::service::{self, notify};
use labhours_shared::state::{EngineSettings, Reading};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::AgentConfig;
use crate::delivery::{Delivery, LinkStatus};
use crate::events::Events;
use crate::meter::{self, Bus};
use crate::outbox::Outbox;
use crate::pipeline::Pipeline;
use crate::results::ResultWatcher;
use crate::status;

pub use labhours_shared::process::shutdown_signal;

/// How often the engine is told that time has passed without a reading.
const TICK: Duration = Duration::from_secs(1);

/// How often a start that found the outbox's disk full tries again.
const DISK_FULL_RETRY: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` resolves. A full disk at start is waited
/// out here (a service manager would otherwise restart the agent in a loop).
/// Under systemd it reports ready once started (or waiting for disk), pings
/// the watchdog and reports stopping.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let _watchdog = notify::start_watchdog();
    let agent = loop {
        match Agent::start(config.clone(), Arc::new(SystemClock)) {
            Ok(agent) => break agent,
            Err(e) if disk_full(&e) => {
                if labhours_shared::process::stop_requested(shutdown.as_mut()).await {
                    return Ok(());
                }
                // Up, and waiting: a start timeout would restart it in a loop.
                notify::ready("waiting for space on the outbox's disk");
                tracing::error!(error = %format!("{e:#}"), retry_in_s = DISK_FULL_RETRY.as_secs(), "cannot start: the outbox's disk is full; waiting for space");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(DISK_FULL_RETRY) => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    if labhours_shared::process::stop_requested(shutdown.as_mut()).await {
        notify::stopping();
        return agent.stop().await;
    }
    notify::ready("running");
    shutdown.await;
    notify::stopping();
    agent.stop().await
}

/// `run` as the binary does it: the logger (`--log-format`; on Windows as
/// a service, files under %ProgramData%\labhours\logs by default), the
/// runtime, and a stop on Ctrl-C, SIGTERM or the Windows service manager.
pub fn serve(config: AgentConfig, log: LogArgs, windows_service: bool) -> anyhow::Result<()> {
    let log = config
        .log
        .overridden(log, service::default_log_dir(windows_service));
    service::serve(
        &service::AGENT,
        windows_service,
        Box::new(move |shutdown| {
            log.init();
            crate::cli::runtime()?.block_on(run(config, shutdown))
        }),
    )
}

fn disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::outbox::OutboxError>(),
            Some(crate::outbox::OutboxError::DiskFull { .. })
        )
    })
}

/// A running agent: its sources, engine and delivery as tasks.
#[derive(Debug)]
pub struct Agent {
    outbox: Outbox,
    stop: CancellationToken,
    sources: JoinSet<()>,
    engine: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop_delivery: CancellationToken,
    delivery: tokio::task::JoinHandle<()>,
    link: tokio::sync::watch::Receiver<LinkStatus>,
}

impl Agent {
    /// Opens the outbox and starts every configured source (inside a Tokio runtime).
    pub fn start(config: AgentConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let (outbox, recovery) =
            Outbox::open(&config.data_dir, (&config.outbox).into(), clock.now())
                .with_context(|| format!("opening the outbox in {}", config.data_dir.display()))?;
        if let Some(r) = recovery {
            tracing::error!(
                ?r,
                "outbox recovered; a fault and a dropped notice were recorded"
            );
        }
        tracing::info!(
            agent_id = %config.agent_id,
            instrument_id = %config.instrument_id,
            backlog = outbox.backlog(),
            next_seq = outbox.next_seq(),
            "agent starting"
        );
        let events = Events::new(outbox.clone(), clock.clone());
        let signer = config
            .signing
            .signer(&config.agent_id)?
            .map(std::sync::Arc::new);
        if let Some(s) = &signer {
            tracing::info!(key_id = %s.key_id(), "envelopes are signed");
            if let Some(r) = s.rotation() {
                tracing::info!(
                    from = %r.from,
                    to = %s.key_id(),
                    "rotating: envelopes carry the previous key's endorsement of the new one; \
                     remove previous_key_file once the collector lists the new key"
                );
            }
        } else {
            tracing::warn!(
                "no [signing] key_file: envelopes are unsigned (accepted only where the collector allows it)"
            );
        }
        let delivery = Delivery::new(
            &config.mqtt,
            &config.agent_id,
            &config.instrument_id,
            outbox.clone(),
            clock.clone(),
        )?
        .with_signer(signer);
        // Only an agent that measures power applies thresholds.
        let delivery = if config.meters.is_empty() && config.status.is_none() {
            delivery
        } else {
            delivery.with_state_rules(config.state.effective(config.poll_interval_ms))
        };
        let notifier = delivery.notifier();
        let link = delivery.status();
        let stop_delivery = CancellationToken::new();
        let delivery = tokio::spawn(delivery.run(stop_delivery.clone().cancelled_owned()));
        let stop = CancellationToken::new();
        let (readings, readings_rx) = unbounded_channel::<Reading>();
        let mut sources = JoinSet::new();

        if !config.meters.is_empty() {
            sources.spawn(meter::poll::run(
                Bus::plan(&config.meters),
                Duration::from_millis(config.poll_interval_ms),
                readings.clone(),
                events.clone(),
                clock.clone(),
                stop.clone().cancelled_owned(),
            ));
        }
        if let Some(status_cfg) = config.status.clone() {
            sources.spawn(status::run(
                status_cfg,
                status::serial_opener(),
                readings.clone(),
                events.clone(),
                clock.clone(),
                stop.clone().cancelled_owned(),
            ));
        }
        if !config.results.is_empty() {
            let watcher =
                ResultWatcher::new(&config.results, Arc::new(events.clone()), clock.clone())?;
            sources.spawn(watcher.run(stop.clone().cancelled_owned()));
        }
        // Only the sources hold senders now: the channel closes when they end.
        drop(readings);

        let settings = EngineSettings::new(&config.state, config.poll_interval_ms);
        let pipeline = Pipeline::new(settings, outbox.clone(), clock.now()).with_notifier(notifier);
        let engine = tokio::spawn(drive(pipeline, readings_rx, clock));
        Ok(Self {
            outbox,
            stop,
            sources,
            engine,
            stop_delivery,
            delivery,
            link,
        })
    }

    /// The agent's outbox (what it has accepted and not yet had acknowledged).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The state of the link to the broker and collector.
    pub fn link(&self) -> tokio::sync::watch::Receiver<LinkStatus> {
        self.link.clone()
    }

    /// Stops the sources, lets the engine drain and finish, stops delivery,
    /// and flushes the outbox last.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        self.stop.cancel();
        while self.sources.join_next().await.is_some() {}
        self.engine.await.context("the engine task failed")??;
        self.stop_delivery.cancel();
        self.delivery.await.context("the delivery task failed")?;
        self.outbox.flush()?;
        tracing::info!(
            backlog = self.outbox.backlog(),
            "stopped; unacknowledged events stay in the outbox"
        );
        Ok(())
    }
}

/// Feeds readings to the pipeline, ticking the engine every second, until
/// every source has ended; then finishes the engine.
async fn drive(
    mut pipeline: Pipeline,
    mut readings: UnboundedReceiver<Reading>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let appended = tokio::select! {
            reading = readings.recv() => match reading {
                Some(r) => pipeline.push(r),
                None => break,
            },
            _ = tick.tick() => pipeline.advance(clock.now()),
        };
        // The agent keeps measuring whatever the outbox says: a refusal is
        // logged by the outbox when it starts, and refused events are held.
        if let Err(e) = appended
            && !e.nothing_written()
        {
            tracing::error!(error = %e, held = pipeline.held(), "cannot append to the outbox");
        }
    }
    if let Err(e) = pipeline.finish(clock.now()) {
        tracing::error!(error = %e, held = pipeline.held(), "cannot record the final events at shutdown");
    }
    Ok(())
}
