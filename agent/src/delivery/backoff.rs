//! Reconnect delays: exponential with jitter (rumqttc has none built in).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Doubles from `min` to `max`, each delay spread by ±`jitter` (a fraction),
/// so that a fleet of agents does not reconnect in lockstep after a broker restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, with `unit` in `[0, 1)` choosing
    /// where in the jitter band it falls (pure, for tests).
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        if base < self.max {
            self.attempt += 1;
        }
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(spread)
    }

    /// The delay before the next attempt, jittered at random.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(random_unit())
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A number in `[0, 1)` from the standard library's per-process random hasher keys.
fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_from_the_minimum_up_to_the_maximum() {
        let mut b = Backoff::new(ms(500), ms(30_000), 0.0);
        let delays: Vec<u128> = (0..9).map(|_| b.next_with(0.5).as_millis()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn jitter_spreads_each_delay_by_at_most_the_fraction() {
        let mut low = Backoff::new(ms(1000), ms(30_000), 0.2);
        let mut high = low.clone();
        assert_eq!(low.next_with(0.0), ms(800));
        assert_eq!(high.next_with(1.0), ms(1200));
        for _ in 0..100 {
            let d = Backoff::new(ms(1000), ms(30_000), 0.2).next_delay();
            assert!(d >= ms(800) && d <= ms(1200), "{d:?}");
        }
    }

    #[test]
    fn a_successful_connection_starts_again_from_the_minimum() {
        let mut b = Backoff::new(ms(500), ms(30_000), 0.0);
        b.next_with(0.5);
        b.next_with(0.5);
        b.reset();
        assert_eq!(b.next_with(0.5), ms(500));
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let units: Vec<f64> = (0..50).map(|_| random_unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(units.iter().any(|&u| u != units[0]));
    }
}
