//! When to try a recipient again after a temporary failure.
//!
//! The delay starts at `initial`, doubles with each attempt up to `max_interval`, and each
//! delay is spread by ±`jitter` so that a relay outage does not end in a thundering herd.
//! A recipient whose next attempt would fall after its deadline (accept time + `max_age`,
//! or the email's own `expires_at`) gets a final verdict instead.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_age: Duration,
    /// Fraction of each delay by which it is randomly moved, 0.0 to 1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5 * 60),
            max_interval: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(3 * 24 * 3600),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempt`-th failed attempt (1-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.initial.saturating_mul(factor).min(self.max_interval)
    }

    /// The delay with jitter applied; `unit` is a random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = base * self.jitter.clamp(0.0, 1.0) * (unit.clamp(0.0, 1.0) * 2.0 - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }

    /// The next attempt time in epoch milliseconds, or `None` when it would pass `deadline_ms`.
    pub fn next_attempt_at(
        &self,
        now_ms: i64,
        attempt: u32,
        unit: f64,
        deadline_ms: i64,
    ) -> Option<i64> {
        let delay_ms = i64::try_from(self.delay(attempt, unit).as_millis()).unwrap_or(i64::MAX);
        let next = now_ms.saturating_add(delay_ms);
        (next <= deadline_ms).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let p = RetryPolicy::default();
        let mins = |a| p.base_delay(a).as_secs() / 60;
        assert_eq!([mins(1), mins(2), mins(3), mins(4)], [5, 10, 20, 40]);
        assert_eq!(mins(7), 240);
        assert_eq!(mins(100), 240);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default();
        let lo = p.delay(1, 0.0).as_secs_f64();
        let hi = p.delay(1, 0.999_999).as_secs_f64();
        assert!((lo - 270.0).abs() < 0.01, "{lo}");
        assert!((hi - 330.0).abs() < 0.01, "{hi}");
        assert_eq!(p.delay(1, 0.5).as_secs(), 300);
    }

    #[test]
    fn no_attempt_after_the_deadline() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_attempt_at(0, 1, 0.5, 300_000), Some(300_000));
        assert_eq!(p.next_attempt_at(0, 1, 0.5, 299_999), None);
    }
}
