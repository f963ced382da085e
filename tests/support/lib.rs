//! Helpers for the integration tests.

pub mod agent;
pub mod brokers;
pub mod delivery_scenarios;
pub mod fake_collector;
pub mod http;
pub mod live_agent;
pub mod proxy;
pub mod tls;

/// The Modbus power-meter simulator, from the agent crate (feature `sim`).
pub use labhours_agent::modbus_sim;
