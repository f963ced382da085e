//! labhours-collector: receives agent events, stores them, imports bookings,
//! reconciles actual machine hours with bookings and serves verified usage
//! hours over HTTP.
//!
//! Entry points: [`cli::Cli`] (what `main.rs` parses) and [`config::CollectorConfig`].

pub mod cli;
pub mod config;
