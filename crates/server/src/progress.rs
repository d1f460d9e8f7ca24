//! Progress of long work, for people watching: counts, rate and the estimated time left.
//!
//! [`Pace`] decides when a line is due (at most every [`LINE_EVERY`], and at every tenth of a
//! known total, so short work still shows its pace) and computes the rate and the estimate; the
//! command-line tools draw it (`shoal` binary's console), and the server, a daemon without a
//! terminal, writes it as log lines through [`Meter`] (loading a snapshot at start-up, sending
//! and receiving a full resync).

use std::time::{Duration, Instant};

/// The longest time between two progress lines.
pub const LINE_EVERY: Duration = Duration::from_secs(1);

/// When the next line is due, and the pace so far.
#[derive(Debug, Clone)]
pub struct Pace {
    total: Option<u64>,
    started: Instant,
    last_line: Instant,
    /// Tenths of the total already reported.
    tenths: u64,
}

/// Rate and estimate at some point of the work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Units per second since the start.
    pub rate: f64,
    /// Seconds left at that rate, when the total is known and the rate is not zero.
    pub eta_s: Option<f64>,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

impl Pace {
    pub fn new(total: Option<u64>) -> Pace {
        let now = Instant::now();
        Pace {
            total,
            started: now,
            last_line: now,
            tenths: 0,
        }
    }

    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Whether a line is due now that `done` units are done; if so the next one counts from now.
    pub fn due(&mut self, done: u64) -> bool {
        let now = Instant::now();
        let tenths = match self.total {
            Some(t) if t > 0 => (done.min(t) * 10 / t).min(9),
            _ => 0,
        };
        if tenths > self.tenths || now.duration_since(self.last_line) >= LINE_EVERY {
            self.tenths = self.tenths.max(tenths);
            self.last_line = now;
            return true;
        }
        false
    }

    /// The pace with `done` units done.
    pub fn estimate(&self, done: u64) -> Estimate {
        estimate(done, self.total, self.started.elapsed())
    }
}

/// Rate and time left for `done` of `total` units in `elapsed`.
pub fn estimate(done: u64, total: Option<u64>, elapsed: Duration) -> Estimate {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta_s = match total {
        Some(t) if rate > 0.0 => Some(t.saturating_sub(done) as f64 / rate),
        _ => None,
    };
    Estimate {
        rate,
        eta_s,
        elapsed_s: secs,
    }
}

/// A long piece of server work, reported as log lines: one when it starts, one when a line is
/// due (see [`Pace`]) with the keys and bytes done, the total, the rate and the time left, and
/// one when it ends.
pub struct Meter {
    what: &'static str,
    pace: Pace,
    /// The unit of the total: `keys` or `bytes`.
    unit: &'static str,
}

impl Meter {
    /// Starts the work: `total` units of `unit` (`keys` or `bytes`), if known.
    pub fn start(what: &'static str, unit: &'static str, total: Option<u64>) -> Meter {
        tracing::info!(total, unit, "{what}: started");
        Meter {
            what,
            pace: Pace::new(total),
            unit,
        }
    }

    /// `done` units of the total are done (and `keys`, `bytes` in all); logs a line if due.
    pub fn update(&mut self, done: u64, keys: u64, bytes: u64) {
        if !self.pace.due(done) {
            return;
        }
        let e = self.pace.estimate(done);
        let what = self.what;
        let percent = self
            .pace
            .total()
            .filter(|&t| t > 0)
            .map(|t| done.min(t) * 100 / t);
        tracing::info!(
            done,
            total = self.pace.total(),
            unit = self.unit,
            percent,
            keys,
            bytes,
            rate_per_s = e.rate.round() as u64,
            eta_s = e.eta_s.map(|s| s.ceil() as u64),
            "{what}: progress"
        );
    }

    /// The work ended; logs the totals and the average rate.
    pub fn finish(self, keys: u64, bytes: u64) {
        let e = self.pace.estimate(keys);
        let what = self.what;
        tracing::info!(
            keys,
            bytes,
            secs = format!("{:.3}", e.elapsed_s),
            keys_per_s = e.rate.round() as u64,
            "{what}: done"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_rate_and_time_left() {
        let e = estimate(250, Some(1000), Duration::from_secs(5));
        assert_eq!(e.rate, 50.0);
        assert_eq!(e.eta_s, Some(15.0));
        assert_eq!(estimate(0, Some(10), Duration::from_secs(1)).eta_s, None);
        assert_eq!(estimate(5, None, Duration::from_secs(1)).eta_s, None);
    }

    #[test]
    fn a_line_is_due_at_each_tenth_of_a_known_total() {
        let mut p = Pace::new(Some(100));
        assert!(!p.due(5));
        assert!(p.due(10));
        assert!(!p.due(15));
        assert!(p.due(35));
        assert!(!p.due(39));
        // The end itself is left to the final line.
        assert!(p.due(99));
        assert!(!p.due(100));
        let mut unknown = Pace::new(None);
        assert!(!unknown.due(1_000_000));
    }
}
