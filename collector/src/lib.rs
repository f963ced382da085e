//! labhours-collector: receives agent events, stores them, imports bookings,
//! reconciles actual machine hours with bookings and serves verified usage
//! hours over HTTP.
//!
//! Entry points: [`run`] (what `labhours-collector run` calls, and what tests
//! start for real), [`app::start`] (the same, returning a handle that tells
//! the broker's port and the ingest counters), [`cli::Cli`] (what `main.rs`
//! parses) and [`config::CollectorConfig`]. `docs/collector-ingest.md`
//! describes the ingest path and the database; [`reconcile`] (pure, described
//! in `docs/reconciliation.md`) turns timelines, result files and bookings
//! into sessions, booking outcomes and verified hours; [`verified`] keeps
//! those results in the store as data arrives and answers queries
//! (`docs/verified.md`); [`api`] serves them over HTTP (`docs/api.md`)
//! through [`verified::Reports`]; [`dashboard`] is the admin dashboard
//! under `/` (`docs/dashboard.md`); [`registry`] holds the instruments and
//! their open hours (`docs/instruments.md`); [`demo`] runs the whole system
//! on simulated instruments (`docs/demo.md`).

pub mod api;
pub mod app;
pub mod bookings;
pub mod broker;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod evidence;
pub mod federation;
pub mod influx;
pub mod ingest;
pub mod quarantine;
pub mod reconcile;
pub mod registry;
pub mod store;
pub mod trust;
pub mod units;
pub mod verified;

pub use app::run;
