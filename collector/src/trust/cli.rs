//! `labhours-collector agents enrol|revoke|keys`: the agents' signing keys
//! (docs/design/trust.md); `agents credential|credentials`: their passwords
//! for the embedded broker. Safe beside a running collector: ingest looks
//! keys up in the database for every signed envelope.

use std::io::Write as _;

use anyhow::Context as _;
use labhours_shared::trust::{KeyId, PublicKey};
use labhours_shared::wire::check_id;

use crate::broker::credentials;
use crate::cli::ConfigArg;

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Enrol an agent's public key (printed by `labhours-agent keygen`):
    /// from now on its envelopes must be signed with it.
    Enrol {
        #[command(flatten)]
        config: ConfigArg,
        agent_id: String,
        /// `ed25519:<64 hex digits>`.
        public_key: String,
    },
    /// Revoke a key: envelopes signed with it are quarantined from now on.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        agent_id: String,
        /// The key id (16 hex digits, as `agents keys` lists it).
        key_id: String,
    },
    /// Make (or replace) an agent's password for the embedded broker,
    /// printed once; only its SHA-256 is kept. Give it to the agent as
    /// `[mqtt] username = "<agent_id>"` and `password_file`.
    Credential {
        #[command(flatten)]
        config: ConfigArg,
        agent_id: String,
        /// Remove the agent's credential instead: its next CONNECT is refused.
        #[arg(long)]
        remove: bool,
    },
    /// List the agents that have a broker credential.
    Credentials {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the enrolled keys.
    Keys {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

impl AgentsCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let now = jiff::Timestamp::now();
        let mut out = std::io::stdout().lock();
        let open = |config: &ConfigArg| -> anyhow::Result<crate::store::Store> {
            let config = config.load()?;
            Ok(crate::store::Store::open(
                &config.data_dir,
                crate::store::Durability::Full,
            )?)
        };
        match self {
            Self::Enrol {
                config,
                agent_id,
                public_key,
            } => {
                check_id("agent_id", &agent_id)?;
                let key: PublicKey = public_key.parse()?;
                let store = open(&config)?;
                let row = super::enrol(store.connection(), &agent_id, &key, now)?;
                writeln!(
                    out,
                    "enrolled key {} for agent {} (since {}); its envelopes must now be signed with it",
                    row.key_id, row.agent_id, row.enrolled_at
                )?;
            }
            Self::Revoke {
                config,
                agent_id,
                key_id,
            } => {
                let key_id: KeyId = key_id.parse()?;
                let store = open(&config)?;
                let row = super::revoke(store.connection(), &agent_id, &key_id, now)
                    .with_context(|| format!("cannot revoke {key_id}"))?;
                writeln!(
                    out,
                    "revoked key {} of agent {} at {}; envelopes signed with it are quarantined",
                    row.key_id,
                    row.agent_id,
                    row.revoked_at.unwrap_or(now)
                )?;
            }
            Self::Credential {
                config,
                agent_id,
                remove,
            } => {
                let store = open(&config)?;
                if remove {
                    let removed = credentials::remove(store.connection(), &agent_id)?;
                    if removed {
                        writeln!(out, "removed the broker credential of agent {agent_id}")?;
                    } else {
                        anyhow::bail!("agent {agent_id} has no broker credential");
                    }
                } else {
                    let secret = credentials::issue(store.connection(), &agent_id, now)?;
                    // The secret alone on stdout, so that it can be redirected
                    // into the agent's password_file; the rest on stderr.
                    writeln!(out, "{secret}")?;
                    eprintln!(
                        "broker password for agent {agent_id} (shown once; any earlier one no longer works). \
                         On the agent: [mqtt] username = \"{agent_id}\", password_file = a file holding this line."
                    );
                }
            }
            Self::Credentials { config } => {
                let store = open(&config)?;
                let rows = credentials::list(store.connection())?;
                if rows.is_empty() {
                    writeln!(out, "no broker credentials issued")?;
                }
                for r in &rows {
                    writeln!(
                        out,
                        "{:<24}  issued {}",
                        r.agent_id,
                        r.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                    )?;
                }
            }
            Self::Keys { config, json } => {
                let store = open(&config)?;
                let rows = super::keys(store.connection())?;
                if json {
                    for row in &rows {
                        writeln!(out, "{}", serde_json::to_string(row)?)?;
                    }
                } else if rows.is_empty() {
                    writeln!(out, "no keys enrolled: every agent is unsigned")?;
                } else {
                    writeln!(
                        out,
                        "{:<24}  {:<16}  {:<20}  {:<20}  public key",
                        "agent", "key id", "enrolled (UTC)", "revoked (UTC)"
                    )?;
                    let ts = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                    for r in &rows {
                        writeln!(
                            out,
                            "{:<24}  {:<16}  {:<20}  {:<20}  {}",
                            r.agent_id,
                            r.key_id,
                            ts(r.enrolled_at),
                            r.revoked_at.map_or_else(|| "-".to_owned(), ts),
                            r.public_key
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
