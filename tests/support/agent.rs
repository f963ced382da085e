//! A real agent's delivery (outbox on disk + `Delivery` on a real broker) for tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use labhours_agent::clock::SystemClock;
use labhours_agent::config::MqttConfig;
use labhours_agent::delivery::{Delivery, DeliveryTuning, LinkStatus, Notifier};
use labhours_agent::outbox::{Outbox, OutboxSettings};
use labhours_shared::wire::EventKind;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const PREFIX: &str = "labhours-test/v1";

/// The agent's MQTT settings for tests: a 1 s ack timeout, no heartbeats
/// unless a test asks for them.
pub fn mqtt_config(port: u16) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        topic_prefix: PREFIX.into(),
        keep_alive_s: 5,
        heartbeat_interval_s: 3600,
        ack_timeout_s: 1,
        ..MqttConfig::default()
    }
}

/// Short batches and reconnect delays, so a few hundred events make many
/// batches and a lost broker is found again quickly.
pub fn tuning(config: &MqttConfig) -> DeliveryTuning {
    let mut t = DeliveryTuning::from_config(config);
    t.tracker.max_batch_events = 40;
    t.tracker.linger = Duration::from_millis(50);
    t.tracker.live_per_batch = 5;
    t.reconnect_min = Duration::from_millis(200);
    t.reconnect_max = Duration::from_secs(2);
    t.outbox_poll = Duration::from_millis(200);
    t
}

pub fn open_outbox(dir: &Path) -> Outbox {
    let settings = OutboxSettings {
        max_bytes: 64 * 1024 * 1024,
        summary_flush_ms: 100,
        cache_bytes: 1024 * 1024,
        min_free_bytes: 0,
    };
    Outbox::open(dir, settings, Timestamp::now())
        .expect("outbox opens")
        .0
}

/// A running delivery over an outbox in `dir`.
#[derive(Debug)]
pub struct TestAgent {
    pub agent_id: String,
    pub dir: PathBuf,
    pub outbox: Outbox,
    pub status: watch::Receiver<LinkStatus>,
    notifier: Notifier,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// What this test appended, by seq.
    pub appended: BTreeMap<u64, EventKind>,
}

impl TestAgent {
    pub fn start(dir: &Path, agent_id: &str, config: &MqttConfig) -> Self {
        Self::start_with(dir, agent_id, config, tuning(config))
    }

    pub fn start_with(
        dir: &Path,
        agent_id: &str,
        config: &MqttConfig,
        tuning: DeliveryTuning,
    ) -> Self {
        Self::start_full(dir, agent_id, config, tuning, None)
    }

    /// An agent that signs every envelope with `signer`.
    pub fn start_signed(
        dir: &Path,
        agent_id: &str,
        config: &MqttConfig,
        signer: Arc<labhours_shared::trust::Signer>,
    ) -> Self {
        Self::start_full(dir, agent_id, config, tuning(config), Some(signer))
    }

    /// An agent reporting for `instrument` (the others use "instrument-1").
    pub fn start_for(dir: &Path, agent_id: &str, instrument: &str, config: &MqttConfig) -> Self {
        Self::start_instrument(dir, agent_id, instrument, config, tuning(config), None)
    }

    /// An agent reporting for `instrument`, signing with `signer`.
    pub fn start_signed_for(
        dir: &Path,
        agent_id: &str,
        instrument: &str,
        config: &MqttConfig,
        signer: Arc<labhours_shared::trust::Signer>,
    ) -> Self {
        Self::start_instrument(
            dir,
            agent_id,
            instrument,
            config,
            tuning(config),
            Some(signer),
        )
    }

    fn start_full(
        dir: &Path,
        agent_id: &str,
        config: &MqttConfig,
        tuning: DeliveryTuning,
        signer: Option<Arc<labhours_shared::trust::Signer>>,
    ) -> Self {
        Self::start_instrument(dir, agent_id, "instrument-1", config, tuning, signer)
    }

    fn start_instrument(
        dir: &Path,
        agent_id: &str,
        instrument: &str,
        config: &MqttConfig,
        tuning: DeliveryTuning,
        signer: Option<Arc<labhours_shared::trust::Signer>>,
    ) -> Self {
        let outbox = open_outbox(dir);
        let delivery = Delivery::new(
            config,
            agent_id,
            instrument,
            outbox.clone(),
            Arc::new(SystemClock),
        )
        .expect("delivery starts")
        .with_tuning(tuning)
        .with_signer(signer);
        let notifier = delivery.notifier();
        let status = delivery.status();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(delivery.run(async move {
            let _ = rx.await;
        }));
        Self {
            agent_id: agent_id.to_owned(),
            dir: dir.to_owned(),
            outbox,
            status,
            notifier,
            shutdown: Some(tx),
            task,
            appended: BTreeMap::new(),
        }
    }

    /// Appends `n` fault events (high priority: durable at once) and wakes the publisher.
    pub fn append(&mut self, n: usize) -> Vec<u64> {
        let kinds: Vec<EventKind> = (0..n)
            .map(|i| EventKind::Fault {
                source: "test".into(),
                message: format!("event {i} of a batch of {n}"),
            })
            .collect();
        let seqs = self
            .outbox
            .append(Timestamp::now(), kinds.clone())
            .expect("append");
        self.appended.extend(seqs.iter().copied().zip(kinds));
        self.notifier.notify();
        seqs
    }

    /// Appends events dated `at` (the test controls the instrument's time)
    /// and wakes the publisher.
    pub fn append_at(&mut self, at: Timestamp, kinds: Vec<EventKind>) -> Vec<u64> {
        let seqs = self.outbox.append(at, kinds.clone()).expect("append");
        self.appended.extend(seqs.iter().copied().zip(kinds));
        self.notifier.notify();
        seqs
    }

    /// Waits until the link status satisfies `what`.
    pub async fn wait_status(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl FnMut(&LinkStatus) -> bool,
    ) -> LinkStatus {
        let waited = tokio::time::timeout(within, async {
            self.status.wait_for(pred).await.map(|s| s.clone())
        })
        .await;
        match waited {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => panic!("delivery ended while waiting for: {what}"),
            Err(_) => panic!(
                "not within {within:?}: {what}; status {:?}",
                *self.status.borrow()
            ),
        }
    }

    /// Waits until the outbox holds nothing unacknowledged.
    pub async fn wait_drained(&self, within: Duration) {
        let drained = tokio::time::timeout(
            within,
            labhours_agent::delivery::wait_until_drained(&self.outbox, Duration::from_millis(20)),
        )
        .await;
        assert!(
            drained.is_ok(),
            "the outbox still holds {} events after {within:?}; status {:?}",
            self.outbox.backlog(),
            *self.status.borrow()
        );
    }

    /// Every seq the outbox ever assigned (heartbeats included).
    pub fn produced(&self) -> std::collections::BTreeSet<u64> {
        (1..self.outbox.next_seq()).collect()
    }

    /// Stops delivery cleanly and returns what the test appended.
    pub async fn stop(mut self) -> BTreeMap<u64, EventKind> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("delivery stops within 10 s")
            .expect("delivery did not panic");
        self.appended
    }

    /// Drops delivery without a clean disconnect (as a crash would).
    pub async fn abort(self) -> BTreeMap<u64, EventKind> {
        self.task.abort();
        let _ = self.task.await;
        self.appended
    }
}
