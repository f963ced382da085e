//! `labhours-collector checkpoint sign|key|list` and `evidence export`
//! (docs/evidence.md). Both are safe beside a running collector.

use std::io::Write as _;
use std::path::PathBuf;

use crate::cli::ConfigArg;

#[derive(Debug, clap::Subcommand)]
pub enum CheckpointCommand {
    /// Sign a checkpoint now (the running collector signs one a day).
    Sign(ConfigArg),
    /// Print the collector's public key (creating the key on first use).
    Key {
        #[command(flatten)]
        config: ConfigArg,
        /// As JSON: key name, public key and signed-note verifier key.
        #[arg(long)]
        json: bool,
    },
    /// Print stored checkpoints, oldest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only the newest.
        #[arg(long)]
        latest: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum EvidenceCommand {
    /// Write an instrument's evidence for a range to a new directory, for
    /// `labhours-verify`.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        instrument: String,
        /// Start: a local date YYYY-MM-DD or an RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// End (exclusive), same forms.
        #[arg(long)]
        to: String,
        /// The directory to create.
        #[arg(long, short)]
        output: PathBuf,
    },
}

impl CheckpointCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Self::Sign(config) => {
                let config = config.load()?;
                let key = super::checkpoint::load_key(&config)?;
                let store =
                    crate::store::Store::open(&config.data_dir, crate::store::Durability::Full)?;
                let c = super::checkpoint::sign(
                    store.connection(),
                    &key,
                    &config.site.name,
                    jiff::Timestamp::now(),
                )?;
                write!(out, "{}", c.note)?;
            }
            Self::Key { config, json } => {
                let config = config.load()?;
                let key = super::checkpoint::load_key(&config)?;
                let k = super::checkpoint::CollectorKey::new(&config.site.name, &key.public_key());
                if json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&k)?)?;
                } else {
                    writeln!(out, "{}\n{}", k.public_key, k.verifier_key)?;
                }
            }
            Self::List { config, latest } => {
                let config = config.load()?;
                let store =
                    crate::store::Store::open(&config.data_dir, crate::store::Durability::Full)?;
                let list = super::checkpoint::list(store.connection(), latest)?;
                if list.is_empty() {
                    writeln!(
                        out,
                        "no checkpoint signed yet (labhours-collector checkpoint sign)"
                    )?;
                }
                for c in list {
                    writeln!(out, "{}", c.note)?;
                }
            }
        }
        Ok(())
    }
}

impl EvidenceCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            Self::Export {
                config,
                instrument,
                from,
                to,
                output,
            } => {
                let config = config.load()?;
                let e = super::export::export(
                    &config,
                    &instrument,
                    &from,
                    &to,
                    &output,
                    jiff::Timestamp::now(),
                )?;
                println!(
                    "wrote {}: {} events, {} signed envelopes, {} bookings, {} checkpoints; \
                     check it with `labhours-verify {}`",
                    e.dir.display(),
                    e.events,
                    e.envelopes,
                    e.bookings,
                    e.checkpoints,
                    e.dir.display()
                );
            }
        }
        Ok(())
    }
}
