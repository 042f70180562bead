//! Confidence intervals: Wilson score intervals for proportions and a percentile bootstrap with a
//! fixed seed for everything else, so two runs on the same predictions print the same intervals.

use serde::Serialize;

/// z for a two-sided 95 % interval (scipy's `norm.ppf(0.975)`).
const Z95: f64 = 1.959963984540054;

/// How an interval was made; named in the JSON beside every figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Wilson,
    Bootstrap,
}

/// One figure with its 95 % interval; `value` is `None` when the figure is undefined (e.g. the
/// precision of a class never predicted), never a made-up 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub method: Method,
}

impl Estimate {
    pub fn undefined(method: Method) -> Estimate {
        Estimate { value: None, ci95: None, method }
    }
}

/// `successes / trials` with its Wilson score interval (statsmodels' `proportion_confint(..., method="wilson")`).
pub fn wilson(successes: u64, trials: u64) -> Estimate {
    if trials == 0 {
        return Estimate::undefined(Method::Wilson);
    }
    let (k, n) = (successes as f64, trials as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Estimate { value: Some(p), ci95: Some([center - half, center + half]), method: Method::Wilson }
}

/// A small deterministic generator (splitmix64): resampling needs reproducibility, not crypto.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for any data set here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Resampling settings; the defaults are what `sonoedge eval` uses and prints.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Bootstrap {
        Bootstrap { resamples: 1000, seed: 20_260_101 }
    }
}

impl Bootstrap {
    /// Index sets of `resamples` draws with replacement from `0..n`.
    pub fn index_sets(&self, n: usize) -> Vec<Vec<usize>> {
        let mut rng = SplitMix64::new(self.seed);
        (0..self.resamples).map(|_| (0..n).map(|_| rng.below(n)).collect()).collect()
    }
}

/// The 2.5 % and 97.5 % percentiles (numpy's linear interpolation) of the defined values;
/// `None` when no resample defined the figure.
pub fn percentile_interval(values: &mut Vec<f64>) -> Option<[f64; 2]> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some([quantile(values, 0.025), quantile(values, 0.975)])
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn wilson_matches_statsmodels_for_81_of_263() {
        // statsmodels.stats.proportion.proportion_confint(81, 263, method="wilson")
        let e = wilson(81, 263);
        let [lo, hi] = e.ci95.unwrap();
        assert!(close(e.value.unwrap(), 81.0 / 263.0));
        assert!(close(lo, 0.2552885198782742) && close(hi, 0.36620957698280004), "{lo} {hi}");
    }

    #[test]
    fn wilson_stays_inside_zero_and_one_at_the_extremes() {
        // statsmodels: (0.0, 0.27753279986288926) and (0.7224672001371106, 1.0)
        let [lo, hi] = wilson(0, 10).ci95.unwrap();
        assert!(close(lo, 0.0) && close(hi, 0.27753279986288926));
        let [lo, hi] = wilson(10, 10).ci95.unwrap();
        assert!(close(lo, 0.7224672001371106) && close(hi, 1.0));
    }

    #[test]
    fn wilson_of_no_trials_is_undefined_not_zero() {
        assert_eq!(wilson(0, 0), Estimate::undefined(Method::Wilson));
    }

    #[test]
    fn same_seed_gives_same_resamples_and_indices_stay_in_range() {
        let b = Bootstrap { resamples: 5, seed: 7 };
        let sets = b.index_sets(13);
        assert_eq!(sets, b.index_sets(13));
        assert!(sets.iter().flatten().all(|&i| i < 13));
        assert_ne!(sets[0], sets[1]);
    }

    #[test]
    fn percentiles_interpolate_like_numpy_and_skip_undefined_values() {
        // numpy.percentile(range(0, 101), [2.5, 97.5]) == [2.5, 97.5]
        let mut v: Vec<f64> = (0..=100).map(f64::from).chain([f64::NAN]).collect();
        assert_eq!(percentile_interval(&mut v), Some([2.5, 97.5]));
        assert_eq!(percentile_interval(&mut vec![f64::NAN]), None);
    }
}
