//! Throwaway certificates made with the `openssl` command line: a CA, a
//! server certificate for 127.0.0.1 and a client certificate. Test keys
//! only: the files are made world-readable for the broker.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command runs (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    pub fn generate(dir: &Path) -> Self {
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let key = ["-newkey", "rsa:2048", "-nodes"];
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                &key,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=labhours test CA",
                ],
            ]
            .concat(),
        );
        for (name, cn) in [("server", "127.0.0.1"), ("client", "tls-agent")] {
            let subj = format!("/CN={cn}");
            openssl(
                dir,
                &[
                    &["req"][..],
                    &key,
                    &[
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        &format!("{name}.csr"),
                        "-subj",
                        &subj,
                    ],
                ]
                .concat(),
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        // Mosquitto started as root reads its files as the `mosquitto` user.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let readable = |path: &Path, mode| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
            };
            readable(dir, 0o755);
            for file in [
                "ca.crt",
                "server.crt",
                "server.key",
                "client.crt",
                "client.key",
            ] {
                readable(&dir.join(file), 0o644);
            }
        }
        Self {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}
