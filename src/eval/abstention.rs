//! Abstention in an evaluation, with the daemon's thresholds (`pipeline.abstain_min_top` and
//! `abstain_min_margin`): how many images get a label at all (coverage), and how often that label is
//! right (accuracy on the labelled ones), each with a Wilson interval. The other figures count every
//! image by its argmax, as the raw `prediction` does.

use serde_json::{json, Value};

use super::ci::{wilson, Estimate};
use super::metrics::Sample;
use crate::clinical::abstain::{Abstention, Call};

/// The figures of one evaluated set under `thresholds`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selective {
    pub thresholds: Abstention,
    pub n: u64,
    pub labelled: u64,
    pub coverage: Estimate,
    pub accuracy: Estimate,
}

impl Selective {
    pub fn of(samples: &[Sample], thresholds: Abstention) -> Selective {
        let calls: Vec<(Call, usize)> = samples.iter().map(|s| (thresholds.call(&s.probs), s.truth)).collect();
        let labelled = calls.iter().filter(|(c, _)| *c != Call::Uncertain).count() as u64;
        let right = calls.iter().filter(|(c, t)| *c == Call::Label(*t)).count() as u64;
        let n = samples.len() as u64;
        Selective { thresholds, n, labelled, coverage: wilson(labelled, n), accuracy: wilson(right, labelled) }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "min_top": self.thresholds.min_top,
            "min_margin": self.thresholds.min_margin,
            "n": self.n,
            "labelled": self.labelled,
            "coverage": self.coverage,
            "accuracy_on_labelled": self.accuracy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_labelled_images_and_accuracy_only_those() {
        let s = |truth, probs: [f64; 2]| Sample { truth, probs: probs.to_vec() };
        let samples = [s(0, [0.9, 0.1]), s(1, [0.8, 0.2]), s(1, [0.55, 0.45]), s(1, [0.1, 0.9])];
        let f = Selective::of(&samples, Abstention { min_top: 0.6, min_margin: 0.2 });
        assert_eq!((f.n, f.labelled, f.coverage.value, f.accuracy.value), (4, 3, Some(0.75), Some(2.0 / 3.0)));
    }
}
