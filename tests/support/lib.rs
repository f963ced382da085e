//! Helpers for the integration tests.

pub mod modbus_sim;
