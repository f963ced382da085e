//! TLS in front of the embedded broker: rumqttd 0.20's own TLS would bring
//! rustls 0.22 (a second rustls, with x509-parser) into the tree, so the
//! collector terminates TLS itself with the rustls 0.23 + ring it already
//! has and passes the bytes to rumqttd's plaintext listener on loopback.
//! The broker's CONNECT check runs on the decrypted stream, the same for
//! both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Time a new connection has to finish its TLS handshake (as rumqttd's
/// own CONNECT timeout).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS on `listener` and relays each connection to `backend`.
pub fn spawn(listener: TcpListener, backend: SocketAddr, config: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %err, "embedded broker TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(err) = relay(acceptor, tcp, backend).await {
                    tracing::info!(%peer, error = %err, "embedded broker TLS connection refused or closed");
                }
            });
        }
    });
}

async fn relay(acceptor: TlsAcceptor, tcp: TcpStream, backend: SocketAddr) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    let mut plain = TcpStream::connect(backend).await?;
    plain.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut tls, &mut plain).await?;
    Ok(())
}
