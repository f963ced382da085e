//! Starting and stopping the collector: broker (if embedded), store, ingest
//! and the HTTP API.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use labhours_shared::config::file::read_secret;
use labhours_shared::config::{ConfigErrors, LogArgs};
use labhours_shared::service::{self, notify};
use labhours_shared::wire::{TopicKind, Topics};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{ApiState, app};
use crate::broker;
use crate::config::CollectorConfig;
use crate::ingest::mqtt::{ClientSettings, run_client};
use crate::ingest::{Inbound, IngestCounts, IngestOptions, IngestStats, classify, ingest_loop};
use crate::store::Store;

pub use labhours_shared::process::shutdown_signal;

/// How long a graceful stop may take (drain, commit, publish acks) before
/// the remaining tasks are abandoned. What was not acked is resent by agents.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest MQTT packet the ingest client accepts (16 MiB).
pub const MAX_INCOMING_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// Runs the collector until `shutdown` completes, then drains: what was
/// received is committed and acked, and the function returns.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config, IngestOptions::default()).await?;
    tokio::pin!(shutdown);
    if labhours_shared::process::stop_requested(shutdown.as_mut()).await {
        return running.shutdown().await;
    }
    // Under systemd: ready once started, watchdog pings, stopping.
    notify::ready("running");
    let _watchdog = notify::start_watchdog();
    running
        .run_until(async {
            shutdown.await;
            notify::stopping();
        })
        .await
}

/// `run` as the binary does it: the logger (`--log-format`; on Windows as
/// a service, files under %ProgramData%\labhours\logs by default), the
/// runtime, and a stop on Ctrl-C, SIGTERM or the Windows service manager.
pub fn serve(config: CollectorConfig, log: LogArgs, windows_service: bool) -> anyhow::Result<()> {
    let log = config
        .log
        .overridden(log, service::default_log_dir(windows_service));
    service::serve(
        &service::COLLECTOR,
        windows_service,
        Box::new(move |shutdown| {
            log.init_with(Some(Box::new(crate::broker::OversizedWatch::layer())));
            for warning in config.warnings() {
                tracing::warn!("{warning}");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run(config, shutdown))
        }),
    )
}

/// A started collector.
#[derive(Debug)]
pub struct Running {
    broker_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    http: JoinHandle<std::io::Result<()>>,
    stats: Arc<IngestStats>,
    subscribed: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    client: JoinHandle<()>,
    ingest: JoinHandle<Store>,
}

/// Starts broker (unless external), store, ingest and the HTTP API, and
/// returns at once; the ingest client connects (and reconnects) in the
/// background.
pub async fn start(config: CollectorConfig, options: IngestOptions) -> anyhow::Result<Running> {
    let topics = Topics::new(&config.mqtt.topic_prefix);
    let data_dir = config.data_dir.clone();
    let durability = options.durability;
    let mut store = tokio::task::spawn_blocking(move || Store::open(&data_dir, durability))
        .await
        .context("the store task panicked")??;
    store.set_trust_policy(config.trust.policy());
    enrol_configured_keys(&store, &config)?;
    tracing::info!(path = %store.path().display(), "store open");

    let events = topics.all_agents(TopicKind::Events);
    let status = topics.all_agents(TopicKind::Status);
    // Far above the ingest's own limit, so that an oversized payload arrives
    // and is quarantined. A packet above this breaks the connection, and a
    // persistent broker would redeliver it forever: cap the external broker's
    // packet size below it (Mosquitto: `max_packet_size`).
    let max_packet_bytes = MAX_INCOMING_PACKET_BYTES;
    let (settings, broker_addr) = match &config.mqtt.external {
        None => {
            let access = if config.mqtt.require_credentials {
                broker::Access::Credentials {
                    data_dir: config.data_dir.clone(),
                }
            } else {
                broker::Access::Open
            };
            let tls = config
                .mqtt
                .embedded_tls
                .as_ref()
                .map(|tls| tls.server_config("mqtt.embedded_tls"))
                .transpose()
                .map_err(ConfigErrors)?;
            let started = broker::start(config.mqtt.embedded_listen, &events, access, tls)?;
            let addr = started.addr;
            let settings = ClientSettings {
                host: loopback_for(started.ingest_addr.ip()).to_string(),
                port: started.ingest_addr.port(),
                client_id: broker::credentials::INTERNAL_CLIENT_ID.into(),
                credentials: started.ingest_login,
                filters: vec![events, status],
                max_packet_bytes,
                keep_alive: Duration::from_secs(30),
                tls: None,
            };
            (settings, Some(addr))
        }
        Some(ext) => {
            let tls = ext
                .tls
                .as_ref()
                .map(|tls| tls.client_config("mqtt.external.tls"))
                .transpose()
                .map_err(ConfigErrors)?;
            let credentials = match (&ext.username, &ext.password_file) {
                (Some(user), Some(file)) => Some((
                    user.clone(),
                    read_secret("mqtt.external.password_file", file)?,
                )),
                (Some(user), None) => Some((user.clone(), String::new())),
                _ => None,
            };
            let events = match &ext.shared_group {
                Some(group) => format!("$share/{group}/{events}"),
                None => events,
            };
            let settings = ClientSettings {
                host: ext.host.clone(),
                port: ext.port,
                client_id: ext.client_id.clone(),
                credentials,
                filters: vec![events, status],
                max_packet_bytes,
                keep_alive: Duration::from_secs(30),
                tls,
            };
            (settings, None)
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (http_addr, http) = serve_http(&config, stop_rx.clone()).await?;

    let stats = Arc::new(IngestStats::default());
    let (inbound_tx, inbound_rx) = mpsc::channel(options.queue_capacity.max(1));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = watch::channel(false);

    let ingest_topics = topics.clone();
    let max_payload_bytes = options.max_payload_bytes;
    let ingest = {
        let stats = stats.clone();
        tokio::task::spawn_blocking(move || {
            ingest_loop(store, &ingest_topics, &options, inbound_rx, ack_tx, &stats)
        })
    };
    let prepare = {
        let topics = topics.clone();
        move |msg: Inbound| classify(&topics, max_payload_bytes, &msg)
    };
    let client = tokio::spawn(run_client(
        settings,
        prepare,
        inbound_tx,
        ack_rx,
        stop_rx,
        subscribed_tx,
    ));
    Ok(Running {
        broker_addr,
        http_addr,
        http,
        stats,
        subscribed: subscribed_rx,
        stop: stop_tx,
        client,
        ingest,
    })
}

/// Enrols `[[trust.keys]]` (validated with the config) as `agents enrol`
/// would; a key the database holds for another agent stops the start,
/// named by its entry. A key revoked in the database stays revoked.
fn enrol_configured_keys(store: &Store, config: &CollectorConfig) -> anyhow::Result<()> {
    let keys = config.trust.parsed_keys().map_err(ConfigErrors)?;
    let now = jiff::Timestamp::now();
    for (i, (agent_id, key)) in keys.iter().enumerate() {
        let row = crate::trust::enrol(store.connection(), agent_id, key, now)
            .with_context(|| format!("trust.keys[{i}] (agent {agent_id}) cannot be enrolled"))?;
        if let Some(revoked) = row.revoked_at {
            tracing::warn!(
                agent_id,
                key_id = %row.key_id,
                %revoked,
                "a key in [[trust.keys]] was revoked; it stays revoked (remove it from the config)"
            );
        }
    }
    Ok(())
}

/// Binds `http.listen` and serves the API, and runs the background
/// reconciler, until `stop` turns true.
async fn serve_http(
    config: &CollectorConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listen = config.http.listen;
    if config.http.tokens.is_empty() && !listen.ip().is_loopback() {
        // `validate` refuses this already; a config built in code must not slip past.
        bail!(
            "http.tokens: no token is configured, so the API may only listen on a loopback address, not {listen}"
        );
    }
    let reports = crate::verified::store_reports(config)?;
    let reconciler = tokio::spawn(crate::verified::reconciler::run(
        reports.clone(),
        stop.clone(),
    ));
    let (sink_stats, sink) = match crate::influx::start(config, reports.registry(), stop.clone())? {
        Some((stats, task)) => (Some(stats), Some(task)),
        None => (None, None),
    };
    // The collector's own key: checkpoints a day, served with them.
    let signer = std::sync::Arc::new(crate::evidence::checkpoint::load_key(config)?);
    let collector_key =
        crate::evidence::checkpoint::CollectorKey::new(&config.site.name, &signer.public_key());
    let checkpoints = tokio::spawn(crate::evidence::task::run(
        config.data_dir.clone(),
        signer,
        config.site.name.clone(),
        Arc::new(jiff::Timestamp::now),
        stop.clone(),
    ));
    let forwarder = crate::federation::forwarder::start(config, reports.registry(), stop.clone())?;
    let hub_sites = crate::api::federation::HubSites::new(
        config.hub.as_ref().map_or(&[][..], |h| h.sites.as_slice()),
    )?;
    let state = ApiState::new(reports.clone(), &config.http.tokens)?
        .with_sink(sink_stats)
        .with_collector_key(collector_key)
        .with_organisation(reports.registry().organisation().clone())
        .with_hub(hub_sites);
    let site_zone = jiff::tz::TimeZone::get(config.site.time_zone())
        .with_context(|| format!("site.time_zone {:?}", config.site.time_zone()))?;
    let dashboard =
        crate::dashboard::routes(crate::dashboard::DashState::new(state.clone(), site_zone));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tokens = config.http.tokens.len(), "HTTP API listening");
    let server =
        axum::serve(listener, dashboard.merge(app(state))).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    Ok((
        addr,
        tokio::spawn(async move {
            let served = server.await;
            let _ = reconciler.await;
            let _ = checkpoints.await;
            if let Some(sink) = sink {
                let _ = sink.await;
            }
            if let Some(forwarder) = forwarder {
                let _ = forwarder.await;
            }
            served
        }),
    ))
}

/// The address a local client uses to reach a listener bound to `ip`.
fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

impl Running {
    /// Where the embedded broker listens (`None` with an external broker).
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// Where the HTTP API listens (the bound port when `http.listen` had port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The ingest counters so far.
    pub fn stats(&self) -> IngestCounts {
        self.stats.snapshot()
    }

    /// Waits until the ingest client's subscriptions are acknowledged.
    pub async fn subscribed(&self) {
        let mut rx = self.subscribed.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Runs until `shutdown` completes, then stops gracefully.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down: draining and committing what was received");
                self.shutdown().await
            }
            ended = &mut self.client => {
                ended.context("the MQTT client task panicked")?;
                bail!("the MQTT client task ended unexpectedly")
            }
            ended = &mut self.ingest => {
                ended.context("the ingest thread panicked")?;
                bail!("the ingest thread ended unexpectedly")
            }
            ended = &mut self.http => {
                ended.context("the HTTP server task panicked")??;
                bail!("the HTTP server ended unexpectedly")
            }
        }
    }

    /// Stops receiving, commits what was received, publishes its acks and
    /// disconnects; the HTTP server stops accepting and finishes the
    /// requests under way (all bounded by [`SHUTDOWN_TIMEOUT`]).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        let Running {
            client,
            ingest,
            http,
            ..
        } = self;
        let client_abort = client.abort_handle();
        let http_abort = http.abort_handle();
        let drained = async {
            let store = ingest.await.context("the ingest thread panicked")?;
            drop(store);
            client.await.context("the MQTT client task panicked")?;
            http.await.context("the HTTP server task panicked")??;
            anyhow::Ok(())
        };
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, drained).await {
            Ok(result) => result,
            Err(_) => {
                // Dropping the client also closes the ingest queue, so the
                // ingest thread commits what it holds and ends.
                client_abort.abort();
                http_abort.abort();
                tracing::warn!(
                    "shutdown took longer than {SHUTDOWN_TIMEOUT:?}; unacked events will be resent by agents"
                );
                Ok(())
            }
        }
    }
}
