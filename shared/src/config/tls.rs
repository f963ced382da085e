//! TLS to an MQTT broker, the same for the agent and the collector's
//! external broker: rustls with the ring provider (no aws-lc, so no
//! cmake/NASM on Windows), trusting only the configured CA, with an optional
//! client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

/// TLS to an MQTT broker: the CA to trust, and optionally a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// What can be checked without reading the files.
    pub fn validate(&self) -> Vec<ConfigError> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            vec![ConfigError::new(
                "client_key_file",
                "a client certificate needs its key and the key needs its certificate",
                "set both client_cert_file and client_key_file, or neither",
            )]
        } else {
            Vec::new()
        }
    }

    /// The rustls client configuration, from the files read now. `at` is the
    /// table's key (e.g. `mqtt.tls`); every file's problem is reported.
    /// `check-config` calls this too, so it refuses what a start would.
    pub fn client_config(&self, at: &str) -> Result<Arc<rustls::ClientConfig>, Vec<ConfigError>> {
        let mut errors = self
            .validate()
            .into_iter()
            .map(|e| e.under(at))
            .collect::<Vec<_>>();
        let field = |key: &str| format!("{at}.{key}");
        let roots = certificates(&field("ca_file"), &self.ca_file).and_then(|certs| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    ConfigError::new(
                        field("ca_file"),
                        format!(
                            "{} holds a certificate rustls refuses: {e}",
                            self.ca_file.display()
                        ),
                        "give the PEM file of the CA that signed the broker's certificate",
                    )
                })?;
            }
            Ok(roots)
        });
        let client = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let certs = certificates(&field("client_cert_file"), cert);
                let key = read(&field("client_key_file"), key).and_then(|pem| {
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                        ConfigError::new(
                            field("client_key_file"),
                            format!("{} holds no PEM private key: {e}", key.display()),
                            "give the PEM file of the client certificate's private key",
                        )
                    })
                });
                match (certs, key) {
                    (Ok(certs), Ok(key)) => Some((certs, key)),
                    (certs, key) => {
                        errors.extend(certs.err());
                        errors.extend(key.err());
                        None
                    }
                }
            }
            _ => None,
        };
        let roots = match roots {
            Ok(roots) if errors.is_empty() => roots,
            roots => {
                errors.extend(roots.err());
                return Err(errors);
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            vec![ConfigError::new(
                at,
                format!("rustls: {e}"),
                "report this as a bug",
            )]
        })?
        .with_root_certificates(roots);
        let config = match client {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
                vec![ConfigError::new(
                    field("client_key_file"),
                    format!("the client certificate and key do not fit together: {e}"),
                    "give the key that belongs to client_cert_file",
                )]
            })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// TLS on a listener the collector runs (the embedded broker): its
/// certificate chain and private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ServerTlsConfig {
    /// The rustls server configuration (ring), from the files read now; `at`
    /// is the table's key (e.g. `mqtt.embedded_tls`).
    pub fn server_config(&self, at: &str) -> Result<Arc<rustls::ServerConfig>, Vec<ConfigError>> {
        let field = |key: &str| format!("{at}.{key}");
        let certs = certificates(&field("cert_file"), &self.cert_file);
        let key = read(&field("key_file"), &self.key_file).and_then(|pem| {
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                ConfigError::new(
                    field("key_file"),
                    format!("{} holds no PEM private key: {e}", self.key_file.display()),
                    "give the PEM file of the certificate's private key",
                )
            })
        });
        let (certs, key) = match (certs, key) {
            (Ok(certs), Ok(key)) => (certs, key),
            (certs, key) => return Err(certs.err().into_iter().chain(key.err()).collect()),
        };
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            vec![ConfigError::new(
                at,
                format!("rustls: {e}"),
                "report this as a bug",
            )]
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            vec![ConfigError::new(
                field("key_file"),
                format!("the certificate and key do not fit together: {e}"),
                "give the key that belongs to cert_file",
            )]
        })?;
        Ok(Arc::new(config))
    }
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| super::file::unreadable(field, path, &e))
}

fn certificates(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                field,
                format!("{} is not PEM: {e}", path.display()),
                "give a PEM file (-----BEGIN CERTIFICATE-----)",
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            field,
            format!("{} holds no PEM certificate", path.display()),
            "give a PEM file (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(tls: &TlsConfig) -> Vec<String> {
        tls.client_config("mqtt.tls")
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn every_missing_file_is_named() {
        let dir = std::env::temp_dir().join("labhours-no-such-dir");
        let tls = TlsConfig {
            ca_file: dir.join("ca.pem"),
            client_cert_file: Some(dir.join("c.pem")),
            client_key_file: Some(dir.join("k.pem")),
        };
        assert_eq!(
            fields(&tls),
            [
                "mqtt.tls.client_cert_file",
                "mqtt.tls.client_key_file",
                "mqtt.tls.ca_file"
            ]
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let file = std::env::temp_dir().join(format!("labhours-empty-{}.pem", std::process::id()));
        std::fs::write(&file, "not a certificate\n").unwrap();
        let tls = TlsConfig {
            ca_file: file.clone(),
            client_cert_file: None,
            client_key_file: None,
        };
        let errors = tls.client_config("mqtt.tls").unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(errors[0].field, "mqtt.tls.ca_file");
        assert!(
            errors[0].problem.contains("no PEM certificate"),
            "{}",
            errors[0]
        );
    }
}
