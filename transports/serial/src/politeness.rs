//! Politeness on a shared channel: a send-rate cap and a duty-cycle limit over a sliding
//! hour. Both take the time as an argument.

use crate::store::AirtimeLog;
use std::io;
use std::time::{Duration, Instant, SystemTime};

const HOUR: Duration = Duration::from_secs(3600);

/// Spaces frames so the average send rate stays at `rate` bytes per second.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    free_at: Instant,
}

impl Pacer {
    pub(crate) fn new(rate: u32, now: Instant) -> Pacer {
        Pacer {
            rate: f64::from(rate),
            free_at: now,
        }
    }

    /// When the next frame may start.
    pub(crate) fn ready_at(&self) -> Instant {
        self.free_at
    }

    /// Time `bytes` take on the link.
    pub(crate) fn airtime(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.rate)
    }

    /// A frame of `bytes` starts now.
    pub(crate) fn consume(&mut self, now: Instant, bytes: usize) {
        // A few milliseconds of scheduling delay are not lost to the rate.
        let start = self
            .free_at
            .max(now.checked_sub(Duration::from_millis(10)).unwrap_or(now));
        self.free_at = start + self.airtime(bytes);
    }
}

/// Keeps airtime within `percent` of any hour.
#[derive(Debug)]
pub(crate) struct DutyCycle {
    budget: Option<Duration>,
    log: AirtimeLog,
    used: Duration,
}

impl DutyCycle {
    pub(crate) fn new(percent: Option<f64>, log: AirtimeLog, now: SystemTime) -> DutyCycle {
        let budget = percent
            .filter(|p| *p < 100.0)
            .map(|p| HOUR.mul_f64(p / 100.0));
        let mut d = DutyCycle {
            budget,
            log,
            used: Duration::ZERO,
        };
        d.used = d.log.entries.iter().map(|e| e.1).sum();
        d.prune(now);
        d
    }

    fn prune(&mut self, now: SystemTime) {
        while let Some(&(t, a)) = self.log.entries.front() {
            if now.duration_since(t).is_ok_and(|age| age >= HOUR) {
                self.used = self.used.saturating_sub(a);
                self.log.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// How long to wait before `airtime` more may be spent (zero: now).
    pub(crate) fn wait(&mut self, now: SystemTime, airtime: Duration) -> Duration {
        self.prune(now);
        let Some(budget) = self.budget else {
            return Duration::ZERO;
        };
        if self.used + airtime <= budget {
            return Duration::ZERO;
        }
        let mut used = self.used;
        for &(t, a) in &self.log.entries {
            used = used.saturating_sub(a);
            if used + airtime <= budget {
                return (t + HOUR).duration_since(now).unwrap_or(Duration::ZERO);
            }
        }
        // A single frame longer than the whole budget: wait a full hour, then send it.
        HOUR
    }

    /// Records airtime spent now.
    pub(crate) fn record(&mut self, now: SystemTime, airtime: Duration) -> io::Result<()> {
        self.used += airtime;
        if self.budget.is_some() {
            self.log.record(now, airtime)?;
        }
        Ok(())
    }

    pub(crate) fn log_path(&self) -> Option<&std::path::Path> {
        self.log.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_frames_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100, t0);
        p.consume(t0, 50);
        assert_eq!(p.ready_at(), t0 + Duration::from_millis(500));
        p.consume(t0 + Duration::from_millis(500), 100);
        assert_eq!(p.ready_at(), t0 + Duration::from_millis(1500));
    }

    #[test]
    fn duty_cycle_waits_for_old_airtime_to_leave_the_hour() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // 1 % of an hour = 36 s.
        let mut d = DutyCycle::new(Some(1.0), AirtimeLog::memory(), t0);
        assert_eq!(d.wait(t0, Duration::from_secs(20)), Duration::ZERO);
        d.record(t0, Duration::from_secs(20)).unwrap();
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(d.wait(t1, Duration::from_secs(10)), Duration::ZERO);
        d.record(t1, Duration::from_secs(10)).unwrap();
        // 30 s used; 10 s more must wait until the first 20 s leave the hour, at t0 + 1 h.
        assert_eq!(
            d.wait(t1, Duration::from_secs(10)),
            Duration::from_secs(3000)
        );
        assert_eq!(d.wait(t0 + HOUR, Duration::from_secs(10)), Duration::ZERO);
        let mut free = DutyCycle::new(None, AirtimeLog::memory(), t0);
        assert_eq!(free.wait(t0, HOUR), Duration::ZERO);
    }
}
