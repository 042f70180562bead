//! The figures of an evaluation, from per-image (true label, probabilities) pairs: the confusion
//! matrix, accuracy, balanced accuracy, per-class precision / recall / specificity / F1, their
//! macro and weighted averages, one-vs-rest ROC AUC and the expected calibration error, each with
//! a 95 % interval (see [`super::ci`]). Undefined figures stay undefined (`None`), as scikit-learn's
//! `zero_division=np.nan` leaves them, so a class never predicted cannot pass for a precision of 0.

use super::ci::{percentile_interval, wilson, Bootstrap, Estimate, Method};
use crate::infer::argmax;

/// Bins of top-1 confidence for the expected calibration error.
pub const ECE_BINS: usize = 15;

/// One scored image: its true label's index and the model's probabilities in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub truth: usize,
    pub probs: Vec<f64>,
}

impl Sample {
    /// The top-1 label; ties go to the lower index, as the daemon and numpy decide them.
    pub fn predicted(&self) -> usize {
        argmax(&self.probs)
    }

    pub fn confidence(&self) -> f64 {
        self.probs[self.predicted()]
    }
}

/// Counts of (true, predicted) label pairs; row = true label, column = predicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    k: usize,
    counts: Vec<u64>,
}

impl Confusion {
    pub fn new<'a>(k: usize, samples: impl IntoIterator<Item = &'a Sample>) -> Confusion {
        let mut c = Confusion { k, counts: vec![0; k * k] };
        for s in samples {
            c.counts[s.truth * k + s.predicted()] += 1;
        }
        c
    }

    /// From explicit rows, for tests and for checking a published matrix.
    pub fn from_rows(rows: &[Vec<u64>]) -> Confusion {
        Confusion { k: rows.len(), counts: rows.iter().flatten().copied().collect() }
    }

    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.k + predicted]
    }

    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.k.max(1)).map(<[u64]>::to_vec).collect()
    }

    pub fn classes(&self) -> usize {
        self.k
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn correct(&self) -> u64 {
        (0..self.k).map(|c| self.get(c, c)).sum()
    }

    pub fn support(&self, c: usize) -> u64 {
        (0..self.k).map(|p| self.get(c, p)).sum()
    }

    pub fn predicted(&self, c: usize) -> u64 {
        (0..self.k).map(|t| self.get(t, c)).sum()
    }

    pub fn tp(&self, c: usize) -> u64 {
        self.get(c, c)
    }

    pub fn fp(&self, c: usize) -> u64 {
        self.predicted(c) - self.tp(c)
    }

    pub fn fn_(&self, c: usize) -> u64 {
        self.support(c) - self.tp(c)
    }

    pub fn tn(&self, c: usize) -> u64 {
        self.total() - self.support(c) - self.fp(c)
    }
}

/// The figures of one class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMetrics {
    pub precision: Estimate,
    pub recall: Estimate,
    pub specificity: Estimate,
    pub f1: Estimate,
    pub roc_auc: Estimate,
    pub support: u64,
}

/// Precision, recall and F1 averaged over classes (macro: plain mean; weighted: by support).
#[derive(Debug, Clone, PartialEq)]
pub struct Averages {
    pub precision: Estimate,
    pub recall: Estimate,
    pub f1: Estimate,
}

/// Every figure of one evaluated set.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub n: u64,
    pub accuracy: Estimate,
    pub balanced_accuracy: Estimate,
    pub per_class: Vec<ClassMetrics>,
    pub macro_avg: Averages,
    pub weighted_avg: Averages,
    pub macro_roc_auc: Estimate,
    pub ece: Estimate,
    pub confusion: Confusion,
}

/// Computes every figure of `samples` (labels `0..k`), bootstrapping with `boot`.
pub fn evaluate(k: usize, samples: &[Sample], boot: &Bootstrap) -> Metrics {
    let confusion = Confusion::new(k, samples);
    let point = Point::of(k, &samples.iter().collect::<Vec<_>>());
    let cis = bootstrap_cis(k, samples, boot);
    let est = |j: usize| Estimate { value: defined(point.0[j]), ci95: cis[j], method: Method::Bootstrap };
    let per_class = (0..k).map(|c| class_metrics(&confusion, c, est(Point::F1 + c), est(Point::F1 + k + c))).collect();
    Metrics {
        n: confusion.total(),
        accuracy: wilson(confusion.correct(), confusion.total()),
        balanced_accuracy: est(Point::BALANCED),
        per_class,
        macro_avg: Averages { precision: est(Point::MACRO), recall: est(Point::MACRO + 1), f1: est(Point::MACRO + 2) },
        weighted_avg: Averages { precision: est(Point::WEIGHTED), recall: est(Point::WEIGHTED + 1), f1: est(Point::WEIGHTED + 2) },
        macro_roc_auc: est(Point::MACRO_AUC),
        ece: est(Point::ECE),
        confusion,
    }
}

fn class_metrics(m: &Confusion, c: usize, f1: Estimate, roc_auc: Estimate) -> ClassMetrics {
    ClassMetrics {
        precision: wilson(m.tp(c), m.predicted(c)),
        recall: wilson(m.tp(c), m.support(c)),
        specificity: wilson(m.tn(c), m.tn(c) + m.fp(c)),
        f1,
        roc_auc,
        support: m.support(c),
    }
}

fn defined(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Percentile intervals of every bootstrapped figure, in [`Point`]'s layout.
fn bootstrap_cis(k: usize, samples: &[Sample], boot: &Bootstrap) -> Vec<Option<[f64; 2]>> {
    let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(boot.resamples); Point::len(k)];
    if samples.is_empty() {
        return vec![None; Point::len(k)];
    }
    for set in boot.index_sets(samples.len()) {
        let drawn: Vec<&Sample> = set.iter().map(|&i| &samples[i]).collect();
        for (col, v) in columns.iter_mut().zip(Point::of(k, &drawn).0) {
            col.push(v);
        }
    }
    columns.iter_mut().map(percentile_interval).collect()
}

/// The bootstrapped figures of one sample set, flat (NaN = undefined):
/// balanced accuracy, macro P/R/F1, weighted P/R/F1, macro AUC, ECE, then F1 and AUC per class.
struct Point(Vec<f64>);

impl Point {
    const BALANCED: usize = 0;
    const MACRO: usize = 1;
    const WEIGHTED: usize = 4;
    const MACRO_AUC: usize = 7;
    const ECE: usize = 8;
    const F1: usize = 9;

    fn len(k: usize) -> usize {
        Point::F1 + 2 * k
    }

    fn of(k: usize, samples: &[&Sample]) -> Point {
        let m = Confusion::new(k, samples.iter().copied());
        let precision: Vec<f64> = (0..k).map(|c| ratio(m.tp(c), m.predicted(c))).collect();
        let recall: Vec<f64> = (0..k).map(|c| ratio(m.tp(c), m.support(c))).collect();
        let f1: Vec<f64> = (0..k).map(|c| ratio(2 * m.tp(c), 2 * m.tp(c) + m.fp(c) + m.fn_(c))).collect();
        let support: Vec<f64> = (0..k).map(|c| m.support(c) as f64).collect();
        let auc: Vec<f64> = (0..k).map(|c| roc_auc_ovr(samples, c)).collect();
        let mut v = vec![nan_mean(&recall, None)];
        for values in [&precision, &recall, &f1] {
            v.push(nan_mean(values, None));
        }
        for values in [&precision, &recall, &f1] {
            v.push(nan_mean(values, Some(&support)));
        }
        v.extend([nan_mean(&auc, None), ece(samples)]);
        v.extend(f1.iter().chain(&auc));
        Point(v)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// Mean (optionally weighted) of the defined values, as scikit-learn's `_nanaverage`.
fn nan_mean(values: &[f64], weights: Option<&[f64]>) -> f64 {
    let (mut sum, mut total) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        let w = weights.map_or(1.0, |w| w[i]);
        sum += w * v;
        total += w;
    }
    if total == 0.0 {
        f64::NAN
    } else {
        sum / total
    }
}

/// One-vs-rest ROC AUC of class `c` (Mann-Whitney U with tied scores counted half), NaN when the
/// class has no positive or no negative image.
pub fn roc_auc_ovr(samples: &[&Sample], c: usize) -> f64 {
    let mut scored: Vec<(f64, bool)> = samples.iter().map(|s| (s.probs[c], s.truth == c)).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = scored.iter().filter(|s| s.1).count() as f64;
    let negatives = scored.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    (positive_rank_sum(&scored) - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Sum of the positives' ranks (1-based, ties given their average rank) in score order.
fn positive_rank_sum(sorted: &[(f64, bool)]) -> f64 {
    let (mut sum, mut start) = (0.0, 0);
    while start < sorted.len() {
        let end = start + sorted[start..].iter().take_while(|s| s.0 == sorted[start].0).count();
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        sum += mean_rank * sorted[start..end].iter().filter(|s| s.1).count() as f64;
        start = end;
    }
    sum
}

/// Expected calibration error over [`ECE_BINS`] equal-width bins `((i-1)/15, i/15]` of top-1
/// confidence: the bin-size-weighted mean of |accuracy - mean confidence|.
pub fn ece(samples: &[&Sample]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut bins = [(0.0f64, 0.0f64); ECE_BINS];
    for s in samples {
        let conf = s.confidence();
        let bin = &mut bins[ece_bin(conf)];
        bin.0 += f64::from(u8::from(s.predicted() == s.truth));
        bin.1 += conf;
    }
    let n = samples.len() as f64;
    // |B|/n * |hits/|B| - conf/|B|| == |hits - conf| / n; empty bins add nothing.
    bins.iter().map(|(hits, conf)| (hits - conf).abs() / n).sum()
}

/// The bin of a confidence: `ceil(conf * 15) - 1`, clamped (a confidence of exactly 0 goes to the first).
pub fn ece_bin(conf: f64) -> usize {
    ((conf * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples that fill `rows` (row = truth, column = prediction), each predicted with confidence 0.8.
    fn samples_of(rows: &[Vec<u64>]) -> Vec<Sample> {
        let k = rows.len();
        let mut out = Vec::new();
        for (t, row) in rows.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                let probs: Vec<f64> = (0..k).map(|c| if c == p { 0.8 } else { 0.2 / (k - 1) as f64 }).collect();
                out.extend((0..count).map(|_| Sample { truth: t, probs: probs.clone() }));
            }
        }
        out
    }

    fn value(e: &Estimate) -> f64 {
        e.value.expect("figure should be defined")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn quick() -> Bootstrap {
        Bootstrap { resamples: 200, seed: 1 }
    }

    #[test]
    fn three_class_matrix_gives_the_figures_worked_out_by_hand() {
        let rows = vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 4]];
        let m = evaluate(3, &samples_of(&rows), &quick());
        assert_eq!(m.confusion.rows(), rows);
        assert!(close(value(&m.accuracy), 0.75));
        let c0 = &m.per_class[0];
        assert!(close(value(&c0.precision), 5.0 / 7.0) && close(value(&c0.recall), 5.0 / 6.0));
        assert!(close(value(&c0.specificity), 0.8) && close(value(&c0.f1), 10.0 / 13.0));
        assert!(close(value(&m.per_class[1].f1), 0.6) && close(value(&m.per_class[2].f1), 8.0 / 9.0));
        assert_eq!([c0.support, m.per_class[1].support, m.per_class[2].support], [6, 6, 4]);
        assert!(close(value(&m.balanced_accuracy), (5.0 / 6.0 + 0.5 + 1.0) / 3.0));
        assert!(close(value(&m.macro_avg.precision), (5.0 / 7.0 + 0.75 + 0.8) / 3.0));
        // Support-weighted recall is the accuracy, whatever the matrix.
        assert!(close(value(&m.weighted_avg.recall), 0.75));
    }

    #[test]
    fn a_class_never_predicted_has_undefined_precision_and_is_left_out_of_the_macro_mean() {
        let m = evaluate(2, &samples_of(&[vec![3, 0], vec![2, 0]]), &quick());
        assert_eq!(m.per_class[1].precision.value, None);
        assert!(close(value(&m.per_class[1].recall), 0.0) && close(value(&m.per_class[1].f1), 0.0));
        assert!(close(value(&m.macro_avg.precision), 0.6));
        assert!(close(value(&m.per_class[1].specificity), 1.0));
    }

    #[test]
    fn an_empty_class_is_undefined_everywhere_and_ignored_by_balanced_accuracy() {
        let m = evaluate(3, &samples_of(&[vec![2, 1, 0], vec![1, 2, 0], vec![0, 0, 0]]), &quick());
        let c2 = &m.per_class[2];
        assert_eq!((c2.support, c2.precision.value, c2.recall.value, c2.f1.value, c2.roc_auc.value), (0, None, None, None, None));
        assert!(close(value(&m.balanced_accuracy), 2.0 / 3.0));
        assert!(close(value(&m.macro_avg.recall), 2.0 / 3.0));
    }

    #[test]
    fn roc_auc_counts_tied_scores_as_half_a_win() {
        let s = |truth, p1: f64| Sample { truth, probs: vec![1.0 - p1, p1] };
        let samples = [s(1, 0.9), s(1, 0.4), s(0, 0.5), s(0, 0.1), s(0, 0.4)];
        let refs: Vec<&Sample> = samples.iter().collect();
        // Wins of the positives over the negatives: 3 + (1 + 0.5) of 6 pairs.
        assert!(close(roc_auc_ovr(&refs, 1), 0.75));
        assert!(roc_auc_ovr(&refs[..2], 1).is_nan(), "no negatives: undefined");
    }

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy_and_large_when_confidently_wrong() {
        let calibrated: Vec<Sample> = (0..10).map(|i| Sample { truth: usize::from(i >= 7), probs: vec![0.7, 0.3] }).collect();
        assert!(close(ece(&calibrated.iter().collect::<Vec<_>>()), 0.0));
        let wrong: Vec<Sample> = (0..4).map(|_| Sample { truth: 1, probs: vec![0.9, 0.1] }).collect();
        assert!(close(ece(&wrong.iter().collect::<Vec<_>>()), 0.9));
    }

    #[test]
    fn ece_bins_are_closed_on_the_right() {
        assert_eq!([ece_bin(0.0), ece_bin(1.0 / 15.0), ece_bin(0.5), ece_bin(1.0)], [0, 0, 7, 14]);
    }

    #[test]
    fn intervals_are_named_hold_the_point_value_and_repeat_exactly() {
        let samples = samples_of(&[vec![20, 5, 2], vec![4, 15, 3], vec![1, 2, 12]]);
        let m = evaluate(3, &samples, &quick());
        assert_eq!((m.accuracy.method, m.per_class[0].f1.method), (Method::Wilson, Method::Bootstrap));
        for e in [&m.balanced_accuracy, &m.macro_avg.f1, &m.per_class[1].f1, &m.ece] {
            let [lo, hi] = e.ci95.unwrap();
            assert!(lo <= value(e) && value(e) <= hi && lo < hi, "{e:?}");
        }
        assert_eq!(m, evaluate(3, &samples, &quick()));
    }
}
