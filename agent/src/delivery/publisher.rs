//! The publisher: the [`Tracker`] driven over a real MQTT connection
//! (rumqttc 0.25), plus presence, heartbeats and reconnect backoff.
//!
//! Two tasks: the *driver* owns the rumqttc `EventLoop` and only polls it
//! (its `poll()` is not documented cancel-safe, so it is never raced against
//! other work; on a poll error it waits the backoff and polls again, which
//! reconnects), forwarding ConnAcks, lost connections and incoming publishes
//! over a channel. The *publisher* (the `run` future) owns the tracker, reads
//! the outbox, publishes through the `AsyncClient` and applies acks.

use std::future::Future;
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::bail;
use labhours_shared::config::ConfigErrors;
use labhours_shared::config::file::read_secret;
use labhours_shared::state::StateRules;
use labhours_shared::trust::Signer;
use labhours_shared::wire::{
    Ack, AgentStatus, ChainedEnvelope, EventKind, Heartbeat, Presence, RawRecord, SCHEMA_VERSION,
    TopicKind, Topics, check_id,
};
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::tracker::{AckOutcome, Rewind, Tracker, TrackerSettings};
use crate::clock::Clock;
use crate::config::MqttConfig;
use crate::outbox::Outbox;

/// The agent's version, as carried by heartbeats and presence messages.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Requests the client may queue for the event loop (batches, acks, status).
const REQUEST_CAPACITY: usize = 1024;
/// Incoming packets are acks and nothing else.
const MAX_INCOMING_PACKET: usize = 64 * 1024;
/// How long a clean disconnect may take at shutdown.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// Pause after the client refused a request or the outbox could not be read.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Timing and size limits of delivery; [`DeliveryTuning::from_config`]
/// takes what the config file sets and the defaults for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryTuning {
    pub tracker: TrackerSettings,
    /// A heartbeat event is appended to the outbox this often.
    pub heartbeat_interval: Duration,
    /// First reconnect delay; it doubles on every failed attempt...
    pub reconnect_min: Duration,
    /// ...up to this.
    pub reconnect_max: Duration,
    /// Each delay is spread by ± this fraction.
    pub reconnect_jitter: f64,
    /// The outbox is looked at this often even when no notifier woke the publisher.
    pub outbox_poll: Duration,
}

impl DeliveryTuning {
    pub fn from_config(config: &MqttConfig) -> Self {
        Self {
            tracker: TrackerSettings {
                ack_timeout: Duration::from_secs(config.ack_timeout_s.max(1)),
                ..TrackerSettings::default()
            },
            heartbeat_interval: Duration::from_secs(config.heartbeat_interval_s.max(1)),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            reconnect_jitter: 0.2,
            outbox_poll: Duration::from_secs(1),
        }
    }
}

/// What the publisher knows about its link, for health checks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub connected: bool,
    /// ConnAcks received so far.
    pub connects: u64,
    /// `session_present` of the last ConnAck.
    pub session_present: Option<bool>,
    /// The collector's ack as last applied.
    pub acked_through: u64,
    /// The highest seq ever published.
    pub sent_through: u64,
    /// Times everything unacknowledged was sent again (reconnects included).
    pub rewinds: u64,
    /// Of those, the ones caused by the ack timeout.
    pub ack_timeouts: u64,
    /// Acks above anything sent, ignored.
    pub acks_beyond: u64,
    /// Why the last connection attempt failed or the last connection broke.
    pub last_error: Option<String>,
}

/// Wakes the publisher when events were appended, so that it does not wait
/// for its outbox poll. Cheap to clone; a wake-up before the publisher waits is kept.
#[derive(Debug, Clone, Default)]
pub struct Notifier(Arc<Notify>);

impl Notifier {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Delivers the outbox to the collector over MQTT (see the module docs of
/// [`crate::delivery`]).
pub struct Delivery {
    agent_id: String,
    instrument_id: String,
    topics: Topics,
    options: MqttOptions,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    notifier: Notifier,
    tuning: DeliveryTuning,
    status: watch::Sender<LinkStatus>,
    /// Reported in the online status.
    state_rules: Option<StateRules>,
    /// Signs every envelope when set (`[signing] key_file`).
    signer: Option<Arc<Signer>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("agent_id", &self.agent_id)
            .field("instrument_id", &self.instrument_id)
            .field("broker", &self.options.broker_address())
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Prepares delivery: reads the password and TLS files now, so that a
    /// missing or bad file is an error here rather than a reconnect loop.
    pub fn new(
        config: &MqttConfig,
        agent_id: &str,
        instrument_id: &str,
        outbox: Outbox,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        check_id("agent_id", agent_id)?;
        check_id("instrument_id", instrument_id)?;
        let topics = Topics::new(&config.topic_prefix);
        let tuning = DeliveryTuning::from_config(config);

        let mut options = MqttOptions::new(agent_id, &config.host, config.port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(config.keep_alive_s.max(1)))
            .set_request_channel_capacity(REQUEST_CAPACITY)
            .set_max_packet_size(MAX_INCOMING_PACKET, max_outgoing_packet(&tuning.tracker))
            .set_last_will(LastWill::new(
                topics.topic(agent_id, TopicKind::Status),
                presence(agent_id, instrument_id, Presence::Offline, None).encode(),
                QoS::AtLeastOnce,
                true,
            ));
        match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                options.set_credentials(user, read_secret("mqtt.password_file", file)?);
            }
            (Some(user), None) => {
                options.set_credentials(user, "");
            }
            (None, Some(_)) => bail!("mqtt.password_file is set without mqtt.username"),
            (None, None) => {}
        }
        if let Some(tls) = &config.tls {
            install_crypto_provider();
            let config = tls.client_config("mqtt.tls").map_err(ConfigErrors)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        let (status, _) = watch::channel(LinkStatus {
            acked_through: outbox.acked_through(),
            ..LinkStatus::default()
        });
        Ok(Self {
            agent_id: agent_id.to_owned(),
            instrument_id: instrument_id.to_owned(),
            topics,
            options,
            outbox,
            clock,
            notifier: Notifier::default(),
            tuning,
            status,
            state_rules: None,
            signer: None,
        })
    }

    /// Reports `rules` (the effective state rules) in every online status.
    /// Signs every envelope with `signer` (docs/design/trust.md).
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        self.signer = signer;
        self
    }

    pub fn with_state_rules(mut self, rules: StateRules) -> Self {
        self.state_rules = Some(rules);
        self
    }

    /// Replaces the limits (tests use short ones).
    pub fn with_tuning(mut self, tuning: DeliveryTuning) -> Self {
        self.options
            .set_max_packet_size(MAX_INCOMING_PACKET, max_outgoing_packet(&tuning.tracker));
        self.tuning = tuning;
        self
    }

    pub fn tuning(&self) -> &DeliveryTuning {
        &self.tuning
    }

    /// A handle to wake the publisher when new events were appended.
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// Follows the link's state.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` resolves; then publishes no more events, marks
    /// the agent offline (a clean disconnect suppresses the last will), and
    /// disconnects. The outbox keeps whatever is unacknowledged.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), REQUEST_CAPACITY);
        let (net_tx, mut net_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let backoff = Backoff::new(
            self.tuning.reconnect_min,
            self.tuning.reconnect_max,
            self.tuning.reconnect_jitter,
        );
        let mut driver = tokio::spawn(drive(eventloop, net_tx, stop_rx, backoff));

        let started = Instant::now();
        let mut heartbeat = tokio::time::interval_at(
            started + self.tuning.heartbeat_interval,
            self.tuning.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outbox_poll = tokio::time::interval(self.tuning.outbox_poll);
        outbox_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let notify = self.notifier.0.clone();
        let mut publisher = Publisher::new(self, client, started);
        tokio::pin!(shutdown);

        loop {
            publisher.refresh_head();
            publisher.pump();
            let deadline = publisher.next_deadline();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                net = net_rx.recv() => match net {
                    Some(net) => publisher.on_net(net),
                    None => {
                        tracing::error!("the MQTT event loop ended unexpectedly; delivery stops");
                        break;
                    }
                },
                () = notify.notified() => {}
                _ = heartbeat.tick() => publisher.heartbeat(),
                _ = outbox_poll.tick() => {}
                () = sleep_until(deadline) => {}
            }
        }

        let connected = publisher.tracker.is_connected();
        if connected {
            let offline = presence(
                &publisher.agent_id,
                &publisher.instrument_id,
                Presence::Offline,
                Some(publisher.clock.now()),
            );
            let _ = publisher.client.try_publish(
                &publisher.status_topic,
                QoS::AtLeastOnce,
                true,
                offline.encode(),
            );
            let _ = publisher.client.try_disconnect();
        }
        if !connected
            || tokio::time::timeout(DISCONNECT_GRACE, &mut driver)
                .await
                .is_err()
        {
            let _ = stop_tx.send(true);
            let _ = driver.await;
        }
        if let Err(e) = publisher.outbox.flush() {
            tracing::error!(error = %e, "cannot flush the outbox at shutdown");
        }
        publisher.set_status(|s| s.connected = false);
        tracing::info!(
            acked_through = publisher.tracker.acked_through(),
            backlog = publisher.outbox.backlog(),
            "delivery stopped"
        );
    }
}

/// Resolves once the outbox holds nothing unacknowledged, looking every `poll`.
pub async fn wait_until_drained(outbox: &Outbox, poll: Duration) {
    while outbox.backlog() > 0 {
        tokio::time::sleep(poll).await;
    }
}

/// What the driver reports from the event loop.
#[derive(Debug)]
enum NetEvent {
    Connected { session_present: bool },
    Lost { error: String, retry_in: Duration },
    Message { topic: String, payload: Vec<u8> },
}

/// Polls the event loop until told to stop or until a clean disconnect was sent.
async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<NetEvent>,
    mut stop: watch::Receiver<bool>,
    mut backoff: Backoff,
) {
    loop {
        let polled = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            // The publisher is gone (its future was dropped): drop the
            // connection, so that the broker publishes the last will.
            () = tx.closed() => return,
            polled = eventloop.poll() => polled,
        };
        let event = match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                NetEvent::Connected {
                    session_present: ack.session_present,
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => NetEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
            },
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                let retry_in = backoff.next_delay();
                if tx
                    .send(NetEvent::Lost {
                        error: e.to_string(),
                        retry_in,
                    })
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(retry_in) => continue,
                }
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// The publisher's state inside `run`.
struct Publisher {
    agent_id: String,
    instrument_id: String,
    events_topic: String,
    ack_topic: String,
    status_topic: String,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    client: AsyncClient,
    tracker: Tracker,
    status: watch::Sender<LinkStatus>,
    started: Instant,
    /// No publishing before this (after the client refused a request).
    paused_until: Option<Instant>,
    /// The outbox's [`Outbox::generation`] the tracker was built for.
    outbox_generation: u64,
    state_rules: Option<StateRules>,
    signer: Option<Arc<Signer>>,
}

impl Publisher {
    fn new(delivery: Delivery, client: AsyncClient, started: Instant) -> Self {
        let Delivery {
            agent_id,
            instrument_id,
            topics,
            outbox,
            clock,
            tuning,
            status,
            state_rules,
            signer,
            ..
        } = delivery;
        let head = outbox.next_seq().saturating_sub(1);
        let tracker = Tracker::new(tuning.tracker, outbox.acked_through(), head);
        let outbox_generation = outbox.generation();
        Self {
            events_topic: topics.topic(&agent_id, TopicKind::Events),
            ack_topic: topics.topic(&agent_id, TopicKind::Ack),
            status_topic: topics.topic(&agent_id, TopicKind::Status),
            agent_id,
            instrument_id,
            outbox,
            clock,
            client,
            tracker,
            status,
            started,
            paused_until: None,
            outbox_generation,
            state_rules,
            signer,
        }
    }

    fn set_status(&self, change: impl FnOnce(&mut LinkStatus)) {
        self.status.send_modify(|s| {
            change(s);
            s.acked_through = self.tracker.acked_through();
            s.sent_through = self.tracker.sent_through();
            s.rewinds = self.tracker.rewinds();
        });
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    fn refresh_head(&mut self) {
        let generation = self.outbox.generation();
        if generation != self.outbox_generation {
            // The outbox's database was opened again after a failed write:
            // numbering may resume below what was counted (seqs that never
            // reached the disk and were never sent). Start tracking afresh
            // from the last ack, as after a restart.
            self.outbox_generation = generation;
            let connected = self.tracker.is_connected();
            let head = self.outbox.next_seq().saturating_sub(1);
            self.tracker = Tracker::new(
                self.tracker.settings().clone(),
                self.outbox.acked_through(),
                head,
            );
            if connected {
                self.tracker.connected(Self::now());
            }
            tracing::info!(head, "outbox reopened: delivery resumes from the last ack");
        }
        let head = self.outbox.next_seq().saturating_sub(1);
        self.tracker.note_head(head, Self::now());
    }

    /// Publishes every batch that is due.
    fn pump(&mut self) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.paused_until = None;
        let oldest = self.tracker.oldest_in_flight_sent_at();
        if self.tracker.check_ack_timeout(now.into_std()) {
            tracing::warn!(
                acked_through = self.tracker.acked_through(),
                oldest_batch_age_ms =
                    oldest.map(|t| now.into_std().saturating_duration_since(t).as_millis() as u64),
                timeout_s = self.tracker.settings().ack_timeout.as_secs(),
                "no ack progress from the collector: sending everything unacknowledged again"
            );
            self.set_status(|s| s.ack_timeouts += 1);
        }
        let mut published = false;
        loop {
            let events = match self.tracker.next_batch(now.into_std(), &self.outbox) {
                Ok(Some(events)) => events,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox; retrying shortly");
                    self.tracker.rewind(Rewind::PublishFailed, now.into_std());
                    self.paused_until = Some(now + RETRY_PAUSE);
                    break;
                }
            };
            let (first, last, count) = (
                events.first().map_or(0, |e| e.seq),
                events.last().map_or(0, |e| e.seq),
                events.len(),
            );
            let payload = match self.envelope(&events) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::error!(error = %e, first, last, "an outbox record is not JSON; retrying shortly");
                    self.tracker.rewind(Rewind::PublishFailed, now.into_std());
                    self.paused_until = Some(now + RETRY_PAUSE);
                    break;
                }
            };
            match self
                .client
                .try_publish(&self.events_topic, QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => {
                    published = true;
                    tracing::debug!(first, last, count, "batch published");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the MQTT client refused a batch; resending later");
                    self.tracker.rewind(Rewind::PublishFailed, now.into_std());
                    self.paused_until = Some(now + RETRY_PAUSE);
                    break;
                }
            }
        }
        if published {
            self.set_status(|_| {});
        }
    }

    /// A version 2 envelope of `records` (verbatim, chained), signed when
    /// the agent has a key.
    fn envelope(&self, records: &[RawRecord]) -> Result<Vec<u8>, serde_json::Error> {
        let message = ChainedEnvelope {
            agent_id: &self.agent_id,
            instrument_id: &self.instrument_id,
            sent_at: self.clock.now(),
            acked_through: self.outbox.acked_through(),
            key_id: self.signer.as_ref().map(|s| s.key_id()),
            rotation: self.signer.as_ref().and_then(|s| s.rotation()),
        }
        .encode(records)?;
        Ok(match &self.signer {
            Some(signer) => signer.sign_payload(&message),
            None => message,
        })
    }

    fn next_deadline(&self) -> Option<Instant> {
        let tracker = self
            .tracker
            .next_deadline(Self::now())
            .map(Instant::from_std);
        match (tracker, self.paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_net(&mut self, event: NetEvent) {
        match event {
            NetEvent::Connected { session_present } => self.on_connected(session_present),
            NetEvent::Lost { error, retry_in } => {
                if self.tracker.is_connected() {
                    tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64, "connection to the broker lost");
                } else {
                    tracing::debug!(%error, retry_in_ms = retry_in.as_millis() as u64, "cannot reach the broker");
                }
                self.tracker.disconnected();
                self.set_status(|s| {
                    s.connected = false;
                    s.last_error = Some(error);
                });
            }
            NetEvent::Message { topic, payload } => self.on_message(&topic, &payload),
        }
    }

    fn on_connected(&mut self, session_present: bool) {
        if session_present {
            tracing::info!("connected to the broker (session kept)");
        } else {
            tracing::info!(
                acked_through = self.tracker.acked_through(),
                "connected to the broker without a session: subscribing again and resending from the last ack"
            );
        }
        // The session may be gone: subscribe every time. Requests leave in
        // order, so the subscription is in place before any batch arrives.
        if let Err(e) = self.client.try_subscribe(&self.ack_topic, QoS::AtLeastOnce) {
            tracing::warn!(error = %e, "cannot subscribe to acks");
        }
        let online = AgentStatus {
            state_rules: self.state_rules.clone(),
            ..presence(
                &self.agent_id,
                &self.instrument_id,
                Presence::Online,
                Some(self.clock.now()),
            )
        };
        if let Err(e) =
            self.client
                .try_publish(&self.status_topic, QoS::AtLeastOnce, true, online.encode())
        {
            tracing::warn!(error = %e, "cannot publish the online status");
        }
        self.tracker.connected(Self::now());
        self.paused_until = None;
        self.set_status(|s| {
            s.connected = true;
            s.connects += 1;
            s.session_present = Some(session_present);
        });
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        if topic != self.ack_topic {
            tracing::debug!(
                topic,
                "ignoring a message on a topic that is not our ack topic"
            );
            return;
        }
        let ack = match Ack::decode(payload) {
            Ok(ack) => ack,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an undecodable ack");
                return;
            }
        };
        if ack.agent_id != self.agent_id {
            tracing::warn!(agent_id = %ack.agent_id, "ignoring an ack for another agent");
            return;
        }
        match self.tracker.on_ack(ack.committed_through, Self::now()) {
            AckOutcome::Advanced { from, to } => {
                match self.outbox.ack_through(to) {
                    Ok(removed) => tracing::debug!(from, to, removed, "ack applied"),
                    Err(e) => {
                        tracing::error!(error = %e, through = to, "cannot delete acknowledged events from the outbox")
                    }
                }
                self.set_status(|_| {});
            }
            AckOutcome::Stale { current } => {
                tracing::debug!(
                    through = ack.committed_through,
                    current,
                    "stale ack ignored"
                );
            }
            AckOutcome::Beyond { sent_through } => {
                tracing::warn!(
                    through = ack.committed_through,
                    sent_through,
                    "ignoring an ack above anything this agent sent (it cannot be for these events)"
                );
                self.set_status(|s| s.acks_beyond += 1);
            }
        }
    }

    /// Appends a heartbeat event (it travels like any other event).
    fn heartbeat(&mut self) {
        let now = self.clock.now();
        let oldest = match self.outbox.oldest_pending_at() {
            Ok(at) => at.map(|at| now.duration_since(at).as_secs().max(0) as u64),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the oldest pending event");
                None
            }
        };
        let beat = Heartbeat {
            uptime_s: self.started.elapsed().as_secs(),
            backlog: self.outbox.backlog(),
            oldest_unacked_age_s: oldest,
            clock: now,
            version: VERSION.into(),
        };
        if let Err(e) = self.outbox.append(now, vec![EventKind::Heartbeat(beat)]) {
            tracing::error!(error = %e, "cannot append a heartbeat to the outbox");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn presence(
    agent_id: &str,
    instrument_id: &str,
    status: Presence,
    at: Option<jiff::Timestamp>,
) -> AgentStatus {
    AgentStatus {
        v: SCHEMA_VERSION,
        agent_id: agent_id.to_owned(),
        instrument_id: instrument_id.to_owned(),
        status,
        at,
        version: VERSION.into(),
        state_rules: None,
    }
}

fn max_outgoing_packet(settings: &TrackerSettings) -> usize {
    // Records are counted without the envelope; one oversized event may
    // exceed the byte bound on its own. Leave generous room.
    settings.max_batch_bytes.saturating_mul(2) + 4 * 1024 * 1024
}

/// Installs ring as the process's rustls provider, once.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use labhours_shared::config::TlsConfig;

    use super::*;
    use crate::clock::SystemClock;
    use crate::outbox::OutboxSettings;

    fn outbox(dir: &Path) -> Outbox {
        let settings = OutboxSettings {
            max_bytes: 1 << 20,
            summary_flush_ms: 100,
            cache_bytes: 1 << 20,
            min_free_bytes: 0,
        };
        Outbox::open(dir, settings, jiff::Timestamp::now())
            .unwrap()
            .0
    }

    fn new(config: &MqttConfig, dir: &Path) -> anyhow::Result<Delivery> {
        Delivery::new(
            config,
            "agent-1",
            "instrument-1",
            outbox(dir),
            Arc::new(SystemClock),
        )
    }

    #[test]
    fn an_unreadable_password_file_is_an_error_when_delivery_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let config = MqttConfig {
            username: Some("agent".into()),
            password_file: Some(dir.path().join("missing")),
            ..MqttConfig::default()
        };
        let err = new(&config, dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("mqtt.password_file"), "{err:#}");
    }

    #[test]
    fn a_password_without_a_username_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "x\n").unwrap();
        let config = MqttConfig {
            password_file: Some(file),
            ..MqttConfig::default()
        };
        assert!(new(&config, dir.path()).is_err());
    }

    #[test]
    fn tls_files_are_checked_when_delivery_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let tls = |ca_file: PathBuf, cert: Option<PathBuf>, key: Option<PathBuf>| MqttConfig {
            tls: Some(TlsConfig {
                ca_file,
                client_cert_file: cert,
                client_key_file: key,
            }),
            ..MqttConfig::default()
        };
        let cases = [
            (tls(dir.path().join("missing.pem"), None, None), "ca_file"),
            (tls(not_pem, None, None), "no PEM certificate"),
        ];
        for (i, (config, expected)) in cases.into_iter().enumerate() {
            let sub = dir.path().join(format!("outbox-{i}"));
            let err = new(&config, &sub).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Delivery::new(
            &MqttConfig::default(),
            "lab/+",
            "instrument-1",
            outbox(dir.path()),
            Arc::new(SystemClock),
        )
        .unwrap_err();
        assert!(err.to_string().contains("agent_id"), "{err}");
    }
}
