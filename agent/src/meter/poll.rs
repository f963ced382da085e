//! The polling loop: every `poll_interval_ms`, read every bus (concurrently,
//! each reading its meters in turn) and turn the cycle into one power reading
//! for the instrument: the sum of its meters. If any meter failed, the cycle
//! is a failed read (unknown), never a partial sum or a zero.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use labhours_shared::state::Reading;
use tokio::sync::mpsc::UnboundedSender;

use super::{Bus, MeterValues, ReadError};
use crate::clock::Clock;
use crate::events::Events;

pub async fn run(
    mut buses: Vec<Bus>,
    poll_interval: Duration,
    readings: UnboundedSender<Reading>,
    events: Events,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let at = clock.now();
        let cycle = futures_util::future::join_all(buses.iter_mut().map(Bus::read_all)).await;
        let results: Vec<(String, Result<MeterValues, ReadError>)> =
            cycle.into_iter().flatten().collect();
        for (name, result) in &results {
            let source = format!("meter:{name}");
            match result {
                Ok(_) => events.clear(&source),
                Err(e) => events.fault_once(&source, &e.to_string()),
            }
        }
        if readings.send(combine(at, &results)).is_err() {
            return;
        }
    }
}

/// One instrument reading from one cycle of meter reads.
pub fn combine(at: Timestamp, results: &[(String, Result<MeterValues, ReadError>)]) -> Reading {
    let values: Option<Vec<&MeterValues>> = results.iter().map(|(_, r)| r.as_ref().ok()).collect();
    let Some(values) = values.filter(|v| !v.is_empty()) else {
        return Reading::power(at, None);
    };
    let volts: Vec<f64> = values.iter().filter_map(|v| v.volts).collect();
    Reading::Power {
        at,
        watts: Some(values.iter().map(|v| v.watts).sum()),
        volts: (!volts.is_empty()).then(|| volts.iter().sum::<f64>() / volts.len() as f64),
        amps: values.iter().map(|v| v.amps).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(watts: f64, volts: Option<f64>, amps: Option<f64>) -> Result<MeterValues, ReadError> {
        Ok(MeterValues {
            watts,
            volts,
            amps,
            energy_kwh: None,
        })
    }

    #[test]
    fn the_instrument_draws_the_sum_of_its_meters() {
        let at = Timestamp::UNIX_EPOCH;
        let r = combine(
            at,
            &[
                ("a".into(), ok(100.0, Some(230.0), Some(0.5))),
                ("b".into(), ok(50.0, Some(220.0), Some(0.25))),
            ],
        );
        assert_eq!(
            r,
            Reading::Power {
                at,
                watts: Some(150.0),
                volts: Some(225.0),
                amps: Some(0.75)
            }
        );
    }

    #[test]
    fn one_failed_meter_makes_the_cycle_a_failed_read_not_a_partial_sum() {
        let r = combine(
            Timestamp::UNIX_EPOCH,
            &[
                ("a".into(), ok(100.0, None, None)),
                ("b".into(), Err(ReadError::Timeout { after_ms: 300 })),
            ],
        );
        assert_eq!(r, Reading::power(Timestamp::UNIX_EPOCH, None));
    }

    #[test]
    fn amps_are_summed_only_when_every_meter_has_them() {
        let r = combine(
            Timestamp::UNIX_EPOCH,
            &[
                ("a".into(), ok(1.0, None, Some(1.0))),
                ("b".into(), ok(1.0, None, None)),
            ],
        );
        assert!(matches!(r, Reading::Power { amps: None, .. }));
    }
}
