//! The model card's own two-class form (benign vs malignant), so a site can set its figure beside
//! the card's: images whose true label is neither are left out, and images predicted as a third
//! label (e.g. `normal`) are left out too, each counted, never folded into either class.

use super::ci::{wilson, Estimate};
use super::metrics::Sample;

/// Benign vs malignant, malignant being the positive class.
#[derive(Debug, Clone, PartialEq)]
pub struct CardForm {
    pub n: u64,
    pub excluded_true_other: u64,
    pub excluded_predicted_other: u64,
    pub accuracy: Estimate,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
}

/// `None` when the labels lack `benign` or `malignant`.
pub fn card_form(labels: &[String], samples: &[Sample]) -> Option<CardForm> {
    let find = |name: &str| labels.iter().position(|l| l.eq_ignore_ascii_case(name));
    let (benign, malignant) = (find("benign")?, find("malignant")?);
    let mut form = empty();
    let [mut tp, mut fn_, mut tn, mut fp] = [0u64; 4];
    for s in samples {
        let (truth, pred) = (s.truth, s.predicted());
        if truth != benign && truth != malignant {
            form.excluded_true_other += 1;
        } else if pred != benign && pred != malignant {
            form.excluded_predicted_other += 1;
        } else {
            let cell = match (truth == malignant, pred == malignant) {
                (true, true) => &mut tp,
                (true, false) => &mut fn_,
                (false, false) => &mut tn,
                (false, true) => &mut fp,
            };
            *cell += 1;
        }
    }
    form.n = tp + fn_ + tn + fp;
    form.accuracy = wilson(tp + tn, form.n);
    form.sensitivity = wilson(tp, tp + fn_);
    form.specificity = wilson(tn, tn + fp);
    Some(form)
}

fn empty() -> CardForm {
    let undefined = Estimate::undefined(super::ci::Method::Wilson);
    CardForm {
        n: 0,
        excluded_true_other: 0,
        excluded_predicted_other: 0,
        accuracy: undefined,
        sensitivity: undefined,
        specificity: undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(truth: usize, pred: usize) -> Sample {
        let mut probs = vec![0.1; 3];
        probs[pred] = 0.8;
        Sample { truth, probs }
    }

    #[test]
    fn normal_truths_and_normal_predictions_are_counted_apart_not_scored() {
        let labels = ["benign", "malignant", "normal"].map(String::from);
        // benign 0, malignant 1, normal 2: 2 TP, 1 FN, 3 TN, 1 FP, one malignant called normal, two normals.
        let samples = [s(1, 1), s(1, 1), s(1, 0), s(0, 0), s(0, 0), s(0, 0), s(0, 1), s(1, 2), s(2, 2), s(2, 0)];
        let f = card_form(&labels, &samples).unwrap();
        assert_eq!((f.n, f.excluded_true_other, f.excluded_predicted_other), (7, 2, 1));
        assert_eq!(f.accuracy.value, Some(5.0 / 7.0));
        assert_eq!((f.sensitivity.value, f.specificity.value), (Some(2.0 / 3.0), Some(0.75)));
    }

    #[test]
    fn labels_without_benign_and_malignant_have_no_card_form() {
        assert_eq!(card_form(&["cat".into(), "dog".into()], &[]), None);
    }
}
