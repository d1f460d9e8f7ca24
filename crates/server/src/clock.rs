//! The node's clocks, handed to the command layer as a `shoal_commands::state::Clock` (the command
//! layer reads no clock itself, so the simulator can give it a simulated one): the wall clock in
//! microseconds (TIME), and a cheap monotonic clock for timing every command (slow log, latency
//! monitor). On x86-64 the latter reads
//! the time-stamp counter (a few nanoseconds; constant-rate on every CPU of the last decade) and
//! converts with a rate calibrated once against `Instant`; elsewhere it falls back to `Instant`.
//! Timing each command with `Instant::now()` cost about 7% of CPU at pipeline 16 on a VM whose
//! clock source is not the TSC.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
fn raw() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn raw() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Tries at reading `Instant` and the counter at the same moment ([`paired`]).
const PAIR_TRIES: usize = 16;

/// `Instant::now()` with the counter read just before and after it, from the try whose two reads
/// were closest: the counter's value for that instant is their midpoint. A thread preempted
/// between the two clocks' reads (a loaded machine, while the process starts) would otherwise
/// skew the rate by the time it was away: 0.5 ms off a 5 ms calibration is 10%, and every
/// timeout measured on this clock (WAITAOF's, the leases') would be 10% short.
fn paired() -> (Instant, u64) {
    let mut best = (Instant::now(), raw(), u64::MAX);
    for _ in 0..PAIR_TRIES {
        let before = raw();
        let now = Instant::now();
        let after = raw();
        let width = after.wrapping_sub(before);
        if width < best.2 {
            best = (now, before.wrapping_add(width / 2), width);
        }
    }
    (best.0, best.1)
}

/// Ticks per microsecond, measured once (over 5 ms) at first use.
fn ticks_per_us() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        if cfg!(not(target_arch = "x86_64")) {
            return 1000.0;
        }
        let (t0, r0) = paired();
        std::thread::sleep(Duration::from_millis(5));
        let (t1, r1) = paired();
        let us = t1.duration_since(t0).as_secs_f64() * 1e6;
        (r1.wrapping_sub(r0) as f64 / us).max(1.0)
    })
}

/// An opaque timestamp for [`elapsed_us`].
pub fn stamp() -> u64 {
    raw()
}

/// Microseconds per tick: [`ticks_per_us`] inverted once, so timing a command multiplies
/// instead of dividing.
fn us_per_tick() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| 1.0 / ticks_per_us())
}

/// Microseconds since `start` (a [`stamp`]).
pub fn elapsed_us(start: u64) -> u64 {
    (raw().wrapping_sub(start) as f64 * us_per_tick()) as u64
}

/// Wall-clock microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Monotonic milliseconds since this process first asked (starting at 1, so 0 can mean
/// "never"), from the same cheap counter as [`stamp`]: every request routed to a primary's slot
/// reads it (write leases, `crate::lease`). The counter keeps running while the process is
/// stopped, and its calibrated rate is within a fraction of a percent of real time, well inside
/// the leases' margin.
pub fn mono_ms() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    let base = *BASE.get_or_init(raw);
    (raw().wrapping_sub(base) as f64 / ticks_per_us() / 1000.0) as u64 + 1
}

/// The clocks the command layer uses.
pub fn system() -> shoal_commands::state::Clock {
    shoal_commands::state::Clock {
        unix_us,
        stamp,
        elapsed_us,
        mono_ms,
    }
}

/// Calibrates up front so the first timed command does not pay for it.
pub fn calibrate() {
    let _ = ticks_per_us();
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_milliseconds_follow_a_sleep() {
        super::calibrate();
        let a = super::mono_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = super::mono_ms();
        assert!(a >= 1 && (25..300).contains(&(b - a)), "{a} {b}");
    }

    #[test]
    fn measures_a_sleep_roughly() {
        super::calibrate();
        let s = super::stamp();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let us = super::elapsed_us(s);
        assert!((15_000..200_000).contains(&us), "{us}");
    }
}
