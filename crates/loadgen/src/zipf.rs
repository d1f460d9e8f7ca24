//! Zipf-distributed key ranks for skewed cache workloads, and the small seedable RNG that drives them.
//!
//! The sampler is rejection-inversion (Hörmann & Derflinger, 1996), the method Apache Commons RNG and
//! `rand_distr` use: O(1) memory and O(1) expected time whatever the number of keys, so a
//! 1,000,000-key space needs no table and no setup. The RNG is wyrand: one multiply per output,
//! good statistical quality, and a run is reproducible from its seed, which is what makes two servers
//! see the exact same request sequence.

/// wyrand (Wang Yi): a 64-bit counter mixed by one 128-bit multiply.
#[derive(Clone, Debug)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state).wrapping_mul(u128::from(self.state ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in [0, 1), from the top 53 bits (the f64 mantissa).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipf distribution over ranks 1..=n with P(k) proportional to k^-s. Rank 1 is the most frequent.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    /// Ranks whose inverted point lands this close to the rank's centre are accepted without the
    /// exact test; a precomputed shortcut from the paper that makes most samples cost one `exp`.
    shortcut: f64,
}

/// Acceptance is above 90% per attempt for any n and s, so 64 failures in a row does not happen in
/// practice; the cap only keeps the loop bounded.
const MAX_ATTEMPTS: u32 = 64;

impl Zipf {
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1, "Zipf needs at least one rank");
        assert!(
            s > 0.0 && s.is_finite(),
            "Zipf exponent must be positive and finite, got {s}"
        );
        let h_integral_x1 = h_integral(1.5, s) - 1.0;
        let h_integral_n = h_integral(n as f64 + 0.5, s);
        let shortcut = 2.0 - h_integral_inverse(h_integral(2.5, s) - h(2.0, s), s);
        Self {
            n: n as f64,
            s,
            h_integral_x1,
            h_integral_n,
            shortcut,
        }
    }

    /// A rank in 1..=n.
    pub fn sample(&self, rng: &mut WyRand) -> u64 {
        let mut k = 1.0;
        for _ in 0..MAX_ATTEMPTS {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = h_integral_inverse(u, self.s);
            k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.shortcut || u >= h_integral(k + 0.5, self.s) - h(k, self.s) {
                break;
            }
        }
        k as u64
    }
}

/// The (unnormalised) density x^-s.
fn h(x: f64, s: f64) -> f64 {
    (-s * x.ln()).exp()
}

/// An antiderivative of `h`: (x^(1-s) - 1) / (1-s), written so that s = 1 (where it becomes ln x)
/// needs no special case.
fn h_integral(x: f64, s: f64) -> f64 {
    let log_x = x.ln();
    expm1_over_x((1.0 - s) * log_x) * log_x
}

fn h_integral_inverse(x: f64, s: f64) -> f64 {
    // Clamping at -1 keeps ln_1p defined when rounding pushes `t` just past the domain edge.
    let t = (x * (1.0 - s)).max(-1.0);
    (ln1p_over_x(t) * x).exp()
}

/// ln(1+x)/x, continuous at 0 (Taylor series there, where the quotient loses all precision).
fn ln1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1)/x, continuous at 0.
fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harmonic(n: u64, s: f64) -> f64 {
        (1..=n).map(|k| (k as f64).powf(-s)).sum()
    }

    /// Observed frequencies of the first ranks against k^-s / H(n, s).
    fn check_head(n: u64, s: f64, samples: u32) {
        let zipf = Zipf::new(n, s);
        let mut rng = WyRand::new(42);
        let mut counts = [0u32; 4];
        for _ in 0..samples {
            let k = zipf.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
            if k <= 4 {
                counts[k as usize - 1] += 1;
            }
        }
        let norm = harmonic(n, s);
        for (i, &count) in counts.iter().enumerate() {
            let expected = ((i + 1) as f64).powf(-s) / norm;
            let observed = f64::from(count) / f64::from(samples);
            let relative = (observed - expected).abs() / expected;
            assert!(
                relative < 0.03,
                "n={n} s={s} rank {}: observed {observed:.5}, expected {expected:.5}",
                i + 1
            );
        }
    }

    #[test]
    fn rank_frequencies_match_theory_at_skew_0_99() {
        check_head(1_000, 0.99, 1_000_000);
    }

    #[test]
    fn rank_frequencies_match_theory_at_skew_0_8() {
        check_head(100_000, 0.8, 1_000_000);
    }

    #[test]
    fn skew_of_exactly_one_needs_no_special_case() {
        check_head(1_000, 1.0, 1_000_000);
    }

    #[test]
    fn tail_is_reached_and_never_exceeded() {
        let zipf = Zipf::new(10, 0.5);
        let mut rng = WyRand::new(7);
        let mut seen = [false; 10];
        for _ in 0..100_000 {
            seen[zipf.sample(&mut rng) as usize - 1] = true;
        }
        assert!(
            seen.iter().all(|&s| s),
            "every rank of a small space shows up: {seen:?}"
        );
    }

    #[test]
    fn same_seed_gives_same_sequence() {
        let zipf = Zipf::new(1_000_000, 0.99);
        let (mut a, mut b) = (WyRand::new(9), WyRand::new(9));
        for _ in 0..1_000 {
            assert_eq!(zipf.sample(&mut a), zipf.sample(&mut b));
        }
    }

    #[test]
    fn uniform_floats_stay_in_unit_interval_and_spread() {
        let mut rng = WyRand::new(1);
        let mut sum = 0.0;
        for _ in 0..100_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        assert!((sum / 100_000.0 - 0.5).abs() < 0.01);
    }
}
