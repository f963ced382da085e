//! The embedded MQTT broker (rumqttd 0.20), used when no external broker is
//! configured.
//!
//! Built in code: one MQTT 3.1.1 listener on `mqtt.embedded_listen` (agents
//! and the collector's own ingest client, which connects over loopback like
//! any other client, so the embedded and external cases run the same code).
//! rumqttd keeps nothing on disk: messages in flight are lost when the
//! collector stops, which the end-to-end ack makes harmless (agents delete
//! events only once the collector has committed them, and resend the rest).
//!
//! rumqttd has no way to stop: its threads live until the process exits.
//! `labhours-collector run` exits after shutdown, so that only matters to
//! tests that start several collectors in one process.

mod oversized;

pub use oversized::{OversizedWatch, refused_payloads};

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

/// The largest payload the broker accepts; larger ones disconnect the
/// publisher. Above the ingest's own limit (1 MiB) so that an oversized
/// batch reaches the ingest and is quarantined with its reason.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the embedded MQTT broker cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded MQTT broker failed to start: {0}")]
    Start(String),
}

/// The broker's settings for one listen address and the events filter.
pub fn config(listen: SocketAddr, events_filter: &str) -> Config {
    let connections = ConnectionSettings {
        // Time a new TCP connection has to send its CONNECT.
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "labhours-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    // rumqttd keeps one in-memory log per subscription filter, trimmed to
    // max_segment_size × max_segment_count. The events filter carries the
    // whole fleet (64 MiB: tens of seconds of backlog at full load); every
    // other filter (one ack filter per agent, statuses) stays small.
    let custom_segment = HashMap::from([(
        events_filter.to_owned(),
        SegmentConfig {
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
        },
    )]);
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 64 * 1024,
            max_segment_count: 2,
            custom_segment: Some(custom_segment),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

/// Starts the broker on its own threads; returns the address it listens on.
///
/// rumqttd cannot report the port it bound, so a port of 0 is resolved here
/// first (bind, read the port, release it). Binding once here also turns
/// "address in use" into an error instead of a log line from rumqttd's thread.
pub fn start(listen: SocketAddr, events_filter: &str) -> Result<SocketAddr, BrokerError> {
    let probe = TcpListener::bind(listen).map_err(|source| BrokerError::Listen {
        addr: listen,
        source,
    })?;
    let addr = probe.local_addr().map_err(|source| BrokerError::Listen {
        addr: listen,
        source,
    })?;
    drop(probe);
    let mut broker = rumqttd::Broker::new(config(addr, events_filter));
    std::thread::Builder::new()
        .name("labhours-broker".into())
        .spawn(move || {
            if let Err(err) = broker.start() {
                tracing::error!(error = %err, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    tracing::info!(%addr, "embedded MQTT broker listening (rumqttd, no persistence)");
    Ok(addr)
}
