//! The ingest's MQTT client: one rumqttc (MQTT 3.1.1) connection that
//! subscribes to events and statuses, forwards every publish to the ingest
//! thread and publishes the acks it is handed.
//!
//! The same client serves the embedded broker (over loopback) and an
//! external one, so both paths run the same code. The event loop runs in its
//! own task; acks are published from a second task so that a full request
//! queue never stalls the loop. On a connection error the loop waits (100 ms
//! doubling to 10 s) and reconnects, and subscribes again after every
//! CONNACK. `clean_session = false`: a persistent broker (Mosquitto with
//! `persistence true`) keeps queueing for the collector while it is away.
//!
//! Incoming QoS 1 publishes are PUBACKed by rumqttc as they arrive, before
//! the commit: the end-to-end ack is what the agent waits for, and an agent
//! resends whatever no collector acknowledged.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};

use super::{AckOut, Inbound};

/// How the ingest connects and what it subscribes to.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// Topic filters, all QoS 1 (e.g. `$share/g/labhours/v1/+/events`, `labhours/v1/+/status`).
    pub filters: Vec<String>,
    /// Largest packet accepted or sent.
    pub max_packet_bytes: usize,
    pub keep_alive: Duration,
    /// TLS settings; plain TCP when absent.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Runs the client until `stop` turns true and every ack handed over is
/// published; then disconnects. Each publish goes through `prepare` (the
/// ingest decodes here, so decoding overlaps the previous commit) and then
/// to `inbound`, which is dropped when the client stops forwarding, so the
/// ingest thread drains and finishes. `subscribed` turns true on every
/// SUBACK and false on every connection loss.
pub async fn run_client<T: Send + 'static>(
    settings: ClientSettings,
    prepare: impl Fn(Inbound) -> T + Send + 'static,
    inbound: mpsc::Sender<T>,
    mut acks: mpsc::UnboundedReceiver<AckOut>,
    mut stop: watch::Receiver<bool>,
    subscribed: watch::Sender<bool>,
) {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_inflight(200);
    if let Some((user, password)) = &settings.credentials {
        options.set_credentials(user, password);
    }
    if let Some(tls) = &settings.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // Acks are small and latency matters more than packet count: no Nagle.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);

    let publisher = client.clone();
    let mut acker = tokio::spawn(async move {
        while let Some(ack) = acks.recv().await {
            if let Err(err) = publisher
                .publish(ack.topic, QoS::AtLeastOnce, false, ack.payload)
                .await
            {
                tracing::error!(error = %err, "cannot hand an ack to the MQTT client");
                break;
            }
        }
        // Every ack is queued ahead of the DISCONNECT, so they are written first.
        let _ = publisher.disconnect().await;
    });

    let filters: Vec<SubscribeFilter> = settings
        .filters
        .iter()
        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
        .collect();
    let mut inbound = Some(inbound);
    let mut stopping = *stop.borrow();
    if stopping {
        inbound = None;
    }
    let mut acker_done = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    inbound = None;
                }
            }
            _ = &mut acker, if !acker_done => {
                acker_done = true;
            }
            polled = eventloop.poll() => match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        host = %settings.host,
                        port = settings.port,
                        session_present = ack.session_present,
                        "ingest connected to the MQTT broker"
                    );
                    if let Err(err) = client.try_subscribe_many(filters.clone()) {
                        tracing::error!(error = %err, "cannot queue the subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if refused {
                        tracing::error!(filters = ?settings.filters, "the broker refused a subscription");
                    } else {
                        subscribed.send_replace(true);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(tx) = &inbound {
                        let msg = Inbound {
                            topic: p.topic,
                            payload: p.payload,
                            received_at: Timestamp::now(),
                        };
                        if tx.send(prepare(msg)).await.is_err() {
                            inbound = None;
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(err) => {
                    subscribed.send_replace(false);
                    if stopping && acker_done {
                        break;
                    }
                    tracing::warn!(
                        error = %err,
                        host = %settings.host,
                        port = settings.port,
                        retry_in_ms = backoff.as_millis() as u64,
                        "MQTT connection failed"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    subscribed.send_replace(false);
}
