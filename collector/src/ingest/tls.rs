//! TLS to an external broker: rustls with the ring provider (no aws-lc, so
//! no cmake/NASM on Windows), trusting only the configured CA, with an
//! optional client certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use labhours_shared::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const FIELD: &str = "mqtt.external.tls";

fn read(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{FIELD}.{what}: cannot read {}", path.display()))
}

fn certificates(what: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{FIELD}.{what}: {} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{FIELD}.{what}: {} holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

/// The rustls client configuration for `[mqtt.external.tls]`.
pub fn client_config(tls: &TlsConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("ca_file", &tls.ca_file)? {
        roots
            .add(cert)
            .with_context(|| format!("{FIELD}.ca_file: {}", tls.ca_file.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("rustls has no protocol version in common with ring")?
    .with_root_certificates(roots);
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let certs = certificates("client_cert_file", cert)?;
            let key = PrivateKeyDer::from_pem_slice(&read("client_key_file", key)?)
                .with_context(|| format!("{FIELD}.client_key_file: {}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .with_context(|| format!("{FIELD}: the client certificate and key do not match"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("{FIELD}: set both client_cert_file and client_key_file, or neither"),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let tls = TlsConfig {
            ca_file: "/nonexistent/ca.pem".into(),
            client_cert_file: None,
            client_key_file: None,
        };
        let err = client_config(&tls).unwrap_err().to_string();
        assert!(err.contains("mqtt.external.tls.ca_file"), "{err}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let tls = TlsConfig {
            ca_file: ca,
            client_cert_file: None,
            client_key_file: None,
        };
        let err = client_config(&tls).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
