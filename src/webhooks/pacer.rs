//! An endpoint's rate cap (`rate_limit`, events a second), kept exactly: never more than the
//! cap in any second, and a backlog sent at the cap, not below it.
//!
//! Requests are spaced by `1/rate` on a schedule of slots, and a request that starts late (the
//! timer wakes a millisecond or so after its slot) does not move the slots after it: spacing
//! each request from the one before instead lost that lateness every time, 12 % of a cap of
//! 100 a second (`bench/throughput.sh webhooks-backlog`, "capped/s"). A lane idle for longer
//! than the tolerance starts a new schedule at its next request, so an idle spell earns no
//! burst. A log of the last starts keeps the other half of the promise: no more than the cap
//! start within any second, however late or early the slots were taken.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The most starts the log keeps: above 1,000 a second the window it checks is shorter than
/// a second (1,000 starts per `1000 / rate` seconds), which keeps the same rate.
const MAX_LOG: usize = 1000;

/// Lateness a slot keeps its schedule through, at least (the timer's resolution is 1 ms).
const MIN_TOLERANCE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    interval: Duration,
    /// The slot of the next request.
    next: Option<Instant>,
    /// The last `log` starts, oldest first.
    recent: VecDeque<Instant>,
    log: usize,
    /// At most `log` starts within this long.
    window: Duration,
}

impl Pacer {
    /// A pacer for `rate` requests a second (above 0).
    pub fn new(rate: f64) -> Self {
        let per_second = rate.max(0.001);
        let log = (per_second.ceil() as usize).clamp(1, MAX_LOG);
        Self {
            rate,
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: None,
            recent: VecDeque::with_capacity(log),
            log,
            window: Duration::from_secs_f64(log as f64 / per_second),
        }
    }

    /// The rate it was made for (the lane makes a new pacer when the cap changes).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Starts a request at `now` if the cap allows it; otherwise when it will.
    pub fn try_start(&mut self, now: Instant) -> Result<(), Instant> {
        match self.wait(now) {
            Some(at) => Err(at),
            None => {
                self.start(now);
                Ok(())
            }
        }
    }

    /// When the next request may start, if not now.
    fn wait(&self, now: Instant) -> Option<Instant> {
        let slot = self.next.filter(|at| *at > now);
        let window = match self.recent.front() {
            Some(oldest) if self.recent.len() >= self.log => {
                Some(*oldest + self.window).filter(|at| *at > now)
            }
            _ => None,
        };
        slot.max(window)
    }

    /// Notes a request started at `now` (when [`Pacer::wait`] said it may).
    fn start(&mut self, now: Instant) {
        let tolerance = self.interval.max(MIN_TOLERANCE);
        let slot = match self.next {
            Some(at) if now.saturating_duration_since(at) < tolerance => at,
            _ => now,
        };
        self.next = Some(slot + self.interval);
        if self.recent.len() >= self.log {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends a backlog for `seconds` through a pacer whose timer wakes `late` after each
    /// moment it asked for; the start times.
    fn backlog(rate: f64, late: Duration, seconds: u64) -> Vec<Instant> {
        let mut pacer = Pacer::new(rate);
        let begin = Instant::now();
        let end = begin + Duration::from_secs(seconds);
        let mut now = begin;
        let mut starts = Vec::new();
        while now < end {
            match pacer.try_start(now) {
                Err(at) => now = at + late,
                Ok(()) => starts.push(now),
            }
        }
        starts
    }

    fn most_in_a_second(starts: &[Instant]) -> usize {
        starts
            .iter()
            .enumerate()
            .map(|(i, first)| {
                starts
                    .iter()
                    .skip(i)
                    .take_while(|t| t.duration_since(*first) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_backlog_is_sent_at_the_cap_however_late_the_timer() {
        for (rate, late) in [
            (100.0, Duration::from_micros(1300)),
            (100.0, Duration::ZERO),
            (5.0, Duration::from_millis(3)),
            (1000.0, Duration::from_micros(900)),
            (2500.0, Duration::from_micros(1100)),
        ] {
            let starts = backlog(rate, late, 10);
            // Within one percent below (the log's own check waits out the timer's lateness
            // once a second), never above.
            let expected = (rate * 10.0) as usize;
            assert!(
                starts.len() * 100 >= expected * 99 && starts.len() <= expected + 1,
                "{rate}/s, {late:?} late: {} in 10 s",
                starts.len()
            );
            assert!(
                most_in_a_second(&starts) <= rate.ceil() as usize,
                "{rate}/s, {late:?} late: {} in a second",
                most_in_a_second(&starts)
            );
        }
    }

    #[test]
    fn an_idle_spell_earns_no_burst() {
        let mut pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        assert_eq!(pacer.try_start(t0), Ok(()));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(pacer.try_start(later), Ok(()));
        assert_eq!(
            pacer.try_start(later),
            Err(later + Duration::from_millis(100))
        );
    }
}
