//! Evidence a third party can check without trusting the collector
//! (issue 14, docs/evidence.md): the collector's signed checkpoints over
//! every agent's chain head and every instrument's bookings, the evidence
//! bundle `evidence export` writes, and `labhours-verify`, which checks a
//! bundle and recomputes its figures with the collector's own code.

pub mod bundle;
pub mod checkpoint;
pub mod cli;
pub mod export;
pub mod note;
pub mod task;
pub mod verify;
