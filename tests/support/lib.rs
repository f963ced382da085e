//! Helpers for the integration tests.

pub mod agent;
pub mod brokers;
pub mod delivery_scenarios;
pub mod fake_collector;
pub mod http;
pub mod live_agent;
pub mod modbus_sim;
pub mod proxy;
pub mod tls;
