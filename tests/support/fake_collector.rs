//! A tiny test collector: subscribes to `<prefix>/+/events` (and `/status`),
//! commits events idempotently on `(agent_id, seq)` into a [`Store`] that
//! outlives it (its "database"), and acks "committed through N": the highest
//! N with every seq ≤ N committed or closed by a `dropped` range, counting
//! from the envelope's `acked_through` for an agent it has not seen before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use labhours_shared::wire::{
    Ack, AgentStatus, Envelope, Event, EventKind, SCHEMA_VERSION, TopicKind, Topics,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What a collector has committed, per agent.
#[derive(Debug, Default)]
pub struct Store {
    /// Committed events by (agent_id, seq): each at most once.
    pub committed: BTreeMap<(String, u64), Event>,
    /// Seqs closed by `dropped` events, per agent.
    pub closed: HashMap<String, BTreeSet<u64>>,
    /// The ack last computed per agent.
    pub through: HashMap<String, u64>,
    /// Events received, duplicates included.
    pub received: u64,
    /// Events received that were already committed.
    pub duplicates: u64,
    /// The last presence message per agent.
    pub presence: HashMap<String, AgentStatus>,
}

impl Store {
    /// The seqs committed for one agent.
    pub fn seqs(&self, agent_id: &str) -> BTreeSet<u64> {
        self.events(agent_id).keys().copied().collect()
    }

    /// The events committed for one agent, by seq.
    pub fn events(&self, agent_id: &str) -> BTreeMap<u64, Event> {
        self.committed
            .iter()
            .filter(|((agent, _), _)| agent == agent_id)
            .map(|((_, seq), event)| (*seq, event.clone()))
            .collect()
    }

    /// Commits an envelope and returns the new `committed_through`.
    fn commit(&mut self, envelope: &Envelope) -> u64 {
        let agent = envelope.agent_id.clone();
        for event in &envelope.events {
            self.received += 1;
            if let EventKind::Dropped { ranges, .. } = &event.kind {
                let closed = self.closed.entry(agent.clone()).or_default();
                for r in ranges {
                    closed.extend(r.first..=r.last);
                }
            }
            match self.committed.entry((agent.clone(), event.seq)) {
                std::collections::btree_map::Entry::Occupied(_) => self.duplicates += 1,
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(event.clone());
                }
            }
        }
        let closed = self.closed.get(&agent).cloned().unwrap_or_default();
        let mut through = self
            .through
            .get(&agent)
            .copied()
            .unwrap_or(0)
            .max(envelope.acked_through);
        while self.committed.contains_key(&(agent.clone(), through + 1))
            || closed.contains(&(through + 1))
        {
            through += 1;
        }
        self.through.insert(agent, through);
        through
    }
}

/// A store shared by successive collector instances (a database survives restarts).
pub type SharedStore = Arc<Mutex<Store>>;

pub fn lock(store: &SharedStore) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the test collector connects, and how it misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Username and password for brokers that require them.
    pub credentials: Option<(String, String)>,
    /// The first this many acks are computed but never published.
    pub swallow_acks: u64,
}

/// A running test collector.
#[derive(Debug)]
pub struct FakeCollector {
    client: AsyncClient,
    tasks: Vec<JoinHandle<()>>,
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

impl FakeCollector {
    /// Connects, subscribes, and returns once the subscriptions are in place.
    pub async fn start(port: u16, prefix: &str, store: SharedStore, setup: Setup) -> Self {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let mut options = MqttOptions::new(
            format!("fake-collector-{}-{n}", std::process::id()),
            "127.0.0.1",
            port,
        );
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_max_packet_size(8 * 1024 * 1024, 64 * 1024);
        if let Some((user, password)) = &setup.credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let topics = Topics::new(prefix);
        let (msg_tx, mut msg_rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let (ready_tx, mut ready_rx) = watch::channel(false);

        let sub_client = client.clone();
        let sub_topics = topics.clone();
        let poller = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        // Clean session: subscribe on every connect.
                        for kind in [TopicKind::Events, TopicKind::Status] {
                            let _ = sub_client
                                .try_subscribe(sub_topics.all_agents(kind), QoS::AtLeastOnce);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(true);
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if msg_tx.send((p.topic, p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker may be restarting: try again shortly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });

        let ack_client = client.clone();
        let processor = tokio::spawn(async move {
            let mut swallow = setup.swallow_acks;
            while let Some((topic, payload)) = msg_rx.recv().await {
                match topics.parse(&topic) {
                    Some((_, TopicKind::Events)) => {
                        let Ok(incoming) = labhours_shared::wire::decode_envelope(&payload) else {
                            continue;
                        };
                        let envelope = incoming.envelope;
                        let through = lock(&store).commit(&envelope);
                        if swallow > 0 {
                            swallow -= 1;
                            continue;
                        }
                        let ack = Ack {
                            v: SCHEMA_VERSION,
                            agent_id: envelope.agent_id.clone(),
                            committed_through: through,
                        };
                        let ack_topic = topics.topic(&envelope.agent_id, TopicKind::Ack);
                        if ack_client
                            .publish(ack_topic, QoS::AtLeastOnce, false, ack.encode())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some((agent, TopicKind::Status)) => {
                        if let Ok(status) = AgentStatus::decode(&payload) {
                            lock(&store).presence.insert(agent.to_owned(), status);
                        }
                    }
                    _ => {}
                }
            }
        });

        tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r))
            .await
            .expect("the test collector subscribed within 10 s")
            .expect("the test collector's event loop is running");
        Self {
            client,
            tasks: vec![poller, processor],
        }
    }

    /// Disconnects and stops; what it committed stays in the store.
    pub async fn stop(self) {
        let _ = self.client.try_disconnect();
        // Give the disconnect a moment to leave, then end the tasks.
        tokio::task::yield_now().await;
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
