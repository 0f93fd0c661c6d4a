//! The statistics behind `report` and `compare`: Wilson intervals for a success rate, the exact
//! McNemar test for paired outcomes, and a seeded percentile bootstrap over matched pairs.

/// Resamples of every bootstrap interval cbench reports.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// Fixed seed: the same runs give the same interval.
pub const BOOTSTRAP_SEED: u64 = 0x0c00_7e4b_e4c4;
/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score 95% interval of `successes` out of `n` (None when `n` is 0).
pub fn wilson95(successes: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Exact two-sided McNemar p-value from the discordant counts `only_a` and `only_b`: the
/// binomial test of `min(b, c)` in `b + c` trials at ½ (1 when there is no discordant pair).
pub fn mcnemar_exact(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    // P(X <= k) for X ~ Bin(n, 1/2), summed in log space so large n neither overflows nor underflows.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// A small, seedable generator; the bootstrap needs repeatability, not cryptography.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Percentile bootstrap 95% interval of `statistic` over `items` resampled with replacement
/// ([`BOOTSTRAP_RESAMPLES`] times, [`BOOTSTRAP_SEED`]). Resamples where the statistic is
/// undefined (None) are left out; None when no resample defines it.
pub fn bootstrap95<T: Copy>(
    items: &[T],
    statistic: impl Fn(&[T]) -> Option<f64>,
) -> Option<(f64, f64)> {
    if items.is_empty() {
        return None;
    }
    let mut rng = SplitMix64(BOOTSTRAP_SEED);
    let mut stats = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut sample = Vec::with_capacity(items.len());
    for _ in 0..BOOTSTRAP_RESAMPLES {
        sample.clear();
        for _ in 0..items.len() {
            sample.push(items[(rng.next_u64() % items.len() as u64) as usize]);
        }
        if let Some(s) = statistic(&sample) {
            stats.push(s);
        }
    }
    if stats.is_empty() {
        return None;
    }
    stats.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| stats[((stats.len() - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    // Reference values from SciPy 1.17.1:
    //   python3 -c "from scipy.stats import binomtest as b; r=b(7,10); print(r.proportion_ci(method='wilson'))"
    //   → low=0.39677814746114526, high=0.892208732593699 (and 0/20 → 0.0, 0.16112515805281935)
    #[test]
    fn wilson_matches_scipy() {
        let (lo, hi) = wilson95(7, 10).unwrap();
        assert!(close(lo, 0.396_778_147_461_145_26), "{lo}");
        assert!(close(hi, 0.892_208_732_593_699), "{hi}");
        let (lo, hi) = wilson95(0, 20).unwrap();
        assert!(
            close(lo, 0.0) && close(hi, 0.161_125_158_052_819_35),
            "{lo} {hi}"
        );
        assert_eq!(wilson95(0, 0), None);
    }

    // python3 -c "from scipy.stats import binomtest as b; print(b(2,2).pvalue, b(1,9).pvalue, b(3,40).pvalue)"
    //   → 0.5 0.0390625 1.946500560734421e-08
    #[test]
    fn mcnemar_matches_scipy_binomtest() {
        assert!(close(mcnemar_exact(0, 0), 1.0));
        assert!(close(mcnemar_exact(2, 0), 0.5));
        assert!(close(mcnemar_exact(1, 8), 0.039_062_5));
        assert!((mcnemar_exact(3, 37) / 1.946_500_560_734_421e-8 - 1.0).abs() < 1e-9);
        assert!(close(mcnemar_exact(5, 5), 1.0));
    }

    #[test]
    fn the_bootstrap_is_seeded() {
        let items: Vec<f64> = (0..20).map(|i| f64::from(i % 3)).collect();
        let mean = |s: &[f64]| Some(s.iter().sum::<f64>() / s.len() as f64);
        assert_eq!(bootstrap95(&items, mean), bootstrap95(&items, mean));
        assert_eq!(bootstrap95(&[] as &[f64], mean), None);
    }
}
