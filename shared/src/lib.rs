//! Wire types and pure logic shared by `labhours-agent` and `labhours-collector`.
//!
//! Apart from [`process`], [`service`], the logger set-up in [`config`] and
//! key files in [`trust::key_file`], nothing in this crate does I/O or reads
//! a clock: callers pass instants in.
//!
//! - [`wire`]: the MQTT message contract (see `docs/protocol.md`).
//! - [`state`]: the state engine that turns readings into state transitions
//!   and interval summaries (reconciliation rules §1).
//! - [`trust`]: agents' keys, signatures and the per-event hash chain.
//! - [`config`]: loading a config file and reporting every problem in it,
//!   the files it names, and the logger.
//! - [`service`]: both programs as systemd or Windows services.

pub mod config;
pub mod process;
pub mod service;
pub mod state;
pub mod trust;
pub mod wire;
