//! An exponentially weighted moving average over samples that come at irregular
//! times. The time is an argument, never read from a clock, so tests step it with
//! explicit instants (the linkerd2-proxy way).

use std::time::{Duration, Instant};

/// A smoothed value. Each sample pulls the average towards itself by
/// `alpha = 1 - exp(-dt / tau)`, with `dt` the time since the previous sample and
/// `tau = half_life / ln 2`: a step change is half felt one half-life later, however
/// often or seldom samples come, and a burst of reports at one instant moves it no
/// more than one report would.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ewma {
    value: Option<f64>,
    at: Option<Instant>,
}

impl Ewma {
    /// An average with no sample yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a sample seen at `now` and returns the new average. The half-life is
    /// passed rather than kept because it is a setting a reload may change. The
    /// first sample is taken as is; a zero half-life means no smoothing; a `now`
    /// before the previous sample counts as no time passed.
    pub fn update(&mut self, sample: f64, now: Instant, half_life: Duration) -> f64 {
        let value = match (self.value, self.at) {
            (Some(value), Some(at)) if !half_life.is_zero() => {
                let tau = half_life.as_secs_f64() / std::f64::consts::LN_2;
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let alpha = 1.0 - (-dt / tau).exp();
                value + alpha * (sample - value)
            }
            _ => sample,
        };
        self.value = Some(value);
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
        value
    }

    /// The average, if any sample was taken since the last reset.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// Forgets every sample (the reports it came from are stale).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_LIFE: Duration = Duration::from_secs(10);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn first_sample_is_taken_as_is() {
        let mut ewma = Ewma::new();
        assert_eq!(ewma.value(), None);
        assert_eq!(ewma.update(0.4, Instant::now(), HALF_LIFE), 0.4);
        assert_eq!(ewma.value(), Some(0.4));
    }

    #[test]
    fn a_step_is_half_felt_after_one_half_life() {
        // Paused time: every instant is the start plus an explicit offset.
        let t0 = Instant::now();
        let mut ewma = Ewma::new();
        ewma.update(0.0, t0, HALF_LIFE);
        assert!(close(ewma.update(1.0, t0 + HALF_LIFE, HALF_LIFE), 0.5));
        // And three quarters after two, whether in one step or in many.
        assert!(close(ewma.update(1.0, t0 + 2 * HALF_LIFE, HALF_LIFE), 0.75));
        let mut fine = Ewma::new();
        fine.update(0.0, t0, HALF_LIFE);
        for tenth in 1..=200 {
            fine.update(1.0, t0 + HALF_LIFE * tenth / 100, HALF_LIFE);
        }
        assert!(close(fine.value().unwrap_or_default(), 0.75));
    }

    #[test]
    fn samples_at_the_same_instant_do_not_move_it() {
        let t0 = Instant::now();
        let mut ewma = Ewma::new();
        ewma.update(0.2, t0, HALF_LIFE);
        for _ in 0..100 {
            ewma.update(1.0, t0, HALF_LIFE);
        }
        assert_eq!(ewma.value(), Some(0.2));
        // Time running backwards is no time at all, and does not rewind the clock.
        let t1 = t0 + Duration::from_secs(5);
        ewma.update(0.2, t1, HALF_LIFE);
        assert_eq!(ewma.update(1.0, t0, HALF_LIFE), 0.2);
    }

    #[test]
    fn zero_half_life_follows_every_sample() {
        let t0 = Instant::now();
        let mut ewma = Ewma::new();
        ewma.update(0.1, t0, Duration::ZERO);
        assert_eq!(ewma.update(0.9, t0, Duration::ZERO), 0.9);
        assert_eq!(ewma.update(0.3, t0, Duration::ZERO), 0.3);
    }

    #[test]
    fn reset_forgets() {
        let t0 = Instant::now();
        let mut ewma = Ewma::new();
        ewma.update(0.9, t0, HALF_LIFE);
        ewma.reset();
        assert_eq!(ewma.value(), None);
        assert_eq!(ewma.update(0.1, t0 + HALF_LIFE, HALF_LIFE), 0.1);
    }
}
