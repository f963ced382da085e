//! labhours-agent: runs on an instrument PC, measures what the instrument does
//! (Modbus power meters, its status line, the result files it writes), turns
//! that into state transitions and summaries, buffers them durably and
//! delivers them to a collector over MQTT.
//!
//! Entry points: [`cli::Cli`] (what `main.rs` parses), [`app::run`] (the
//! service) and [`config::AgentConfig`].

pub use app::run;

pub mod app;
pub mod calibrate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod events;
#[cfg(any(test, feature = "sim"))]
pub mod instrument_sim;
pub mod meter;
#[cfg(feature = "sim")]
pub mod modbus_sim;
pub mod outbox;
pub mod pipeline;
pub mod probe;
pub mod replay;
pub mod results;
pub mod status;
