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
//! Access (docs/design/trust.md#transport): with `[mqtt] require_credentials`
//! every CONNECT must carry username = client id = an agent id with a
//! password issued by `agents credential` (the hook reads the database at
//! each CONNECT, so a credential issued or removed applies at once), or the
//! collector's own in-memory login. rumqttd 0.20 has no per-client publish
//! ACL, so which topic a client publishes to is checked at ingest (topic =
//! payload agent = signing key's owner). With `[mqtt.embedded_tls]` the
//! listen address speaks TLS only ([`tls`]) and rumqttd listens on loopback.
//!
//! rumqttd has no way to stop: its threads live until the process exits.
//! `labhours-collector run` exits after shutdown, so that only matters to
//! tests that start several collectors in one process.

pub mod credentials;
mod oversized;
mod tls;

pub use oversized::{OversizedWatch, refused_payloads};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use credentials::{INTERNAL_USERNAME, SecretHash};

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
    #[error("the embedded MQTT broker cannot read its credentials: {0}")]
    Credentials(String),
}

/// Who may connect to the embedded broker.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone (the migration period: `require_credentials = false`).
    Open,
    /// Agents with an issued credential, and the collector's ingest client.
    /// `data_dir` holds the database the credentials are read from.
    Credentials { data_dir: PathBuf },
}

/// Where the broker listens, and how the collector's ingest client reaches it.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where agents connect (TLS when `embedded_tls` is set).
    pub addr: SocketAddr,
    /// rumqttd's plaintext listener (the same as `addr` without TLS).
    pub ingest_addr: SocketAddr,
    /// The ingest client's username and password, when credentials are on.
    pub ingest_login: Option<(String, String)>,
}

/// The CONNECT check: credentials from the database, the ingest's in memory.
struct Gate {
    db: Mutex<rusqlite::Connection>,
    internal: SecretHash,
}

impl Gate {
    fn allows(&self, client_id: &str, username: &str, password: &str) -> bool {
        let verdict = credentials::decide(client_id, username, password, &self.internal, |user| {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            credentials::stored(&db, user).unwrap_or_else(|err| {
                tracing::error!(error = %err, "cannot read broker credentials; refusing the connection");
                None
            })
        });
        match verdict {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(client_id, username, reason = %why, "embedded broker refused a connection");
                false
            }
        }
    }
}

/// The broker's settings for one listen address and the events filter.
pub fn config(listen: SocketAddr, events_filter: &str) -> Config {
    config_with_auth(listen, events_filter, None)
}

fn config_with_auth(listen: SocketAddr, events_filter: &str, gate: Option<Arc<Gate>>) -> Config {
    let mut connections = ConnectionSettings {
        // Time a new TCP connection has to send its CONNECT.
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let Some(gate) = gate {
        connections.set_auth_handler(move |client_id, username, password| {
            std::future::ready(gate.allows(&client_id, &username, &password))
        });
    }
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

/// Starts the broker on its own threads (and, with `tls`, the TLS front on
/// the caller's runtime); returns where it listens.
///
/// rumqttd cannot report the port it bound, so a port of 0 is resolved here
/// first (bind, read the port, release it). Binding once here also turns
/// "address in use" into an error instead of a log line from rumqttd's thread.
pub fn start(
    listen: SocketAddr,
    events_filter: &str,
    access: Access,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Started, BrokerError> {
    let bind = |addr: SocketAddr| {
        let listener =
            TcpListener::bind(addr).map_err(|source| BrokerError::Listen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| BrokerError::Listen { addr, source })?;
        Ok::<_, BrokerError>((listener, bound))
    };
    let (public, addr) = bind(listen)?;
    // With TLS, rumqttd's plaintext listener moves to a loopback port.
    let (front, broker_addr) = match tls {
        Some(tls) => {
            let (probe, backend) = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            drop(probe);
            (Some((public, tls)), backend)
        }
        None => {
            drop(public);
            (None, addr)
        }
    };
    let (gate, ingest_login) = match access {
        Access::Open => (None, None),
        Access::Credentials { data_dir } => {
            let db = crate::store::open_read_only(&data_dir)
                .map_err(|e| BrokerError::Credentials(e.to_string()))?;
            db.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| BrokerError::Credentials(e.to_string()))?;
            let secret =
                credentials::new_secret().map_err(|e| BrokerError::Credentials(e.to_string()))?;
            let gate = Gate {
                db: Mutex::new(db),
                internal: credentials::hash(&secret),
            };
            (
                Some(Arc::new(gate)),
                Some((INTERNAL_USERNAME.to_owned(), secret)),
            )
        }
    };
    let checked = gate.is_some();
    let mut broker = rumqttd::Broker::new(config_with_auth(broker_addr, events_filter, gate));
    std::thread::Builder::new()
        .name("labhours-broker".into())
        .spawn(move || {
            if let Err(err) = broker.start() {
                tracing::error!(error = %err, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let with_tls = front.is_some();
    if let Some((public, tls)) = front {
        public
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(public))
            .map(|listener| tls::spawn(listener, broker_addr, tls))
            .map_err(|source| BrokerError::Listen { addr, source })?;
    }
    tracing::info!(
        %addr,
        tls = with_tls,
        credentials = checked,
        "embedded MQTT broker listening (rumqttd, no persistence)"
    );
    if !checked {
        tracing::warn!(
            "the embedded broker accepts any client: issue credentials (labhours-collector agents credential) and set [mqtt] require_credentials = true"
        );
    }
    Ok(Started {
        addr,
        ingest_addr: broker_addr,
        ingest_login,
    })
}
