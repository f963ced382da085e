//! Modbus power meters: register decoding, built-in register maps and bus polling.
//!
//! docs/meters.md documents the presets, custom maps and word orders.

pub mod bus;
pub mod decode;
pub mod poll;
pub mod presets;

pub use bus::{Bus, MeterValues, ReadError, describe, open_serial};
