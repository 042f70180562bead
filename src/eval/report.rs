//! What an evaluation prints: the JSON with every figure (each as `{"value", "ci95", "method"}`)
//! and the per-image predictions, and the table on stdout. Only file names, labels and numbers
//! leave the evaluated images; never pixels.

use std::fmt::Write;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::abstention::Selective;
use super::card::CardForm;
use super::ci::{Bootstrap, Estimate};
use super::metrics::{Averages, Metrics, Sample, ECE_BINS};

/// Files left out that the table names one per line; the JSON has them all.
const LEFT_OUT_LINES: usize = 20;

/// One evaluation: what was scored, what failed, and the figures.
pub struct Run {
    pub labels: Vec<String>,
    pub model: Value,
    pub source: PathBuf,
    pub masks_skipped: usize,
    pub non_images_skipped: Vec<PathBuf>,
    pub scored: Vec<(PathBuf, Sample)>,
    pub failed: Vec<(PathBuf, String)>,
    pub metrics: Metrics,
    pub card: Option<CardForm>,
    pub bootstrap: Bootstrap,
    pub seconds: f64,
    pub duplicates: Option<Duplicates>,
    pub training: Option<Subset>,
    /// Coverage and accuracy with the daemon's abstention thresholds.
    pub abstention: Selective,
}

/// The figures again after removing some images (seen in training, or extra copies).
pub struct Subset {
    pub removed: Vec<PathBuf>,
    pub metrics: Metrics,
}

/// Duplicate groups among the evaluated images, and the figures keeping the first of each group.
pub struct Duplicates {
    pub exact: Vec<Vec<PathBuf>>,
    pub near: Vec<Vec<PathBuf>>,
    pub near_hamming_max: u32,
    /// The groups (of `near`, which holds the exact ones) whose copies carry different true
    /// labels: the same image labelled twice, a fault in the data set, not in the model.
    pub mixed_labels: Vec<Vec<PathBuf>>,
    pub deduplicated: Subset,
}

impl Run {
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "model": self.model,
            "labels": self.labels,
            "data": self.data_json(),
            "intervals": {"proportions": "wilson", "others": "bootstrap percentile", "resamples": self.bootstrap.resamples, "seed": self.bootstrap.seed},
        });
        let Value::Object(map) = &mut out else { unreachable!("built as an object above") };
        let Value::Object(figures) = metrics_json(&self.labels, &self.metrics) else { unreachable!("metrics_json makes an object") };
        map.extend(figures);
        map.insert("card_form".into(), json!(self.card.as_ref().map(card_json)));
        map.insert("duplicates".into(), json!(self.duplicates.as_ref().map(|d| duplicates_json(&self.labels, d))));
        map.insert("training_overlap".into(), json!(self.training.as_ref().map(|t| subset_json(&self.labels, t))));
        map.insert("abstention".into(), self.abstention.to_json());
        map.insert("predictions".into(), self.predictions_json());
        map.insert("seconds".into(), json!(self.seconds));
        out
    }

    fn data_json(&self) -> Value {
        let failed: Vec<Value> = self.failed.iter().map(|(p, e)| json!({"file": p, "error": e})).collect();
        json!({
            "source": self.source,
            "scored": self.scored.len(),
            "failed": failed,
            "masks_skipped": self.masks_skipped,
            "non_images_skipped": self.non_images_skipped,
        })
    }
}

/// Every figure of `m`, keyed as the top level of the JSON.
pub fn metrics_json(labels: &[String], m: &Metrics) -> Value {
    json!({
        "n": m.n,
        "accuracy": m.accuracy,
        "balanced_accuracy": m.balanced_accuracy,
        "per_class": per_class_json(labels, m),
        "macro_avg": averages_json(&m.macro_avg),
        "weighted_avg": averages_json(&m.weighted_avg),
        "macro_roc_auc": m.macro_roc_auc,
        "ece": m.ece,
        "ece_bins": ECE_BINS,
        "confusion_matrix": m.confusion.rows(),
    })
}

fn subset_json(labels: &[String], s: &Subset) -> Value {
    json!({"removed": s.removed.len(), "removed_files": s.removed, "metrics": metrics_json(labels, &s.metrics)})
}

fn duplicates_json(labels: &[String], d: &Duplicates) -> Value {
    json!({
        "exact_groups": d.exact, "near_groups": d.near, "near_hamming_max": d.near_hamming_max,
        "mixed_label_groups": d.mixed_labels, "deduplicated": subset_json(labels, &d.deduplicated),
    })
}

fn per_class_json(labels: &[String], m: &Metrics) -> Value {
    let per_class = labels.iter().zip(&m.per_class).map(|(label, c)| {
        let v = json!({"precision": c.precision, "recall": c.recall, "specificity": c.specificity, "f1": c.f1, "roc_auc": c.roc_auc, "support": c.support});
        (label.clone(), v)
    });
    Value::Object(per_class.collect::<Map<_, _>>())
}

impl Run {
    fn predictions_json(&self) -> Value {
        let rows = self.scored.iter().map(|(path, s)| {
            let probs: Map<String, Value> = self.labels.iter().cloned().zip(s.probs.iter().map(|p| json!(p))).collect();
            json!({"file": path, "true_label": self.labels[s.truth], "predicted": self.labels[s.predicted()], "probs": probs})
        });
        Value::Array(rows.collect())
    }

    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let m = &self.metrics;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "scored {} images ({} failed, {} masks skipped, {} non-image files skipped) in {:.1} s",
            m.n,
            self.failed.len(),
            self.masks_skipped,
            self.non_images_skipped.len(),
            self.seconds
        );
        let _ = writeln!(
            t,
            "intervals: 95 %, Wilson for proportions, bootstrap ({} resamples, seed {}) otherwise\n",
            self.bootstrap.resamples, self.bootstrap.seed
        );
        for (name, e) in [
            ("accuracy", &m.accuracy),
            ("balanced accuracy", &m.balanced_accuracy),
            ("macro ROC AUC", &m.macro_roc_auc),
            ("ECE (15 bins)", &m.ece),
        ] {
            let _ = writeln!(t, "{name:<20} {}", fmt(e));
        }
        let a = &self.abstention;
        let _ = writeln!(
            t,
            "{:<20} {} ({} of {} labelled; uncertain under top {} or margin {})",
            "coverage",
            fmt(&a.coverage),
            a.labelled,
            a.n,
            a.thresholds.min_top,
            a.thresholds.min_margin
        );
        let _ = writeln!(t, "{:<20} {}", "accuracy, labelled", fmt(&a.accuracy));
        self.class_table(&mut t);
        self.confusion_table(&mut t);
        if let Some(c) = &self.card {
            card_table(&mut t, c);
        }
        self.leakage_table(&mut t);
        self.left_out_table(&mut t);
        t
    }

    /// The files that were not scored, each with its reason (at most [`LEFT_OUT_LINES`]; all are in the JSON).
    fn left_out_table(&self, t: &mut String) {
        let reasons = self.failed.iter().map(|(p, e)| (p, e.as_str()));
        let not_images = self.non_images_skipped.iter().map(|p| (p, "not a .png, .jpg, .jpeg or .bmp file"));
        let all: Vec<(&PathBuf, &str)> = reasons.chain(not_images).collect();
        if all.is_empty() {
            return;
        }
        let _ = writeln!(t, "\nnot scored ({}):", all.len());
        for (path, why) in all.iter().take(LEFT_OUT_LINES) {
            let _ = writeln!(t, "  {}: {why}", path.display());
        }
        if all.len() > LEFT_OUT_LINES {
            let _ = writeln!(t, "  ... and {} more (all under \"data\" in the --json output)", all.len() - LEFT_OUT_LINES);
        }
    }

    fn class_table(&self, t: &mut String) {
        let m = &self.metrics;
        let _ = writeln!(t, "\n{:<12} {:<22} {:<22} {:<22} {:<22} {:>7}", "class", "precision", "recall", "specificity", "f1", "support");
        for (label, c) in self.labels.iter().zip(&m.per_class) {
            let _ = writeln!(
                t,
                "{label:<12} {:<22} {:<22} {:<22} {:<22} {:>7}",
                fmt(&c.precision),
                fmt(&c.recall),
                fmt(&c.specificity),
                fmt(&c.f1),
                c.support
            );
        }
        for (name, a) in [("macro", &m.macro_avg), ("weighted", &m.weighted_avg)] {
            let _ = writeln!(t, "{name:<12} {:<22} {:<22} {:<22} {:<22} {:>7}", fmt(&a.precision), fmt(&a.recall), "", fmt(&a.f1), m.n);
        }
    }

    fn confusion_table(&self, t: &mut String) {
        let _ = writeln!(t, "\nconfusion (rows = true, columns = predicted)");
        let _ = writeln!(t, "{:<12} {}", "", self.labels.iter().map(|l| format!("{l:>10}")).collect::<String>());
        for (label, row) in self.labels.iter().zip(self.metrics.confusion.rows()) {
            let _ = writeln!(t, "{label:<12} {}", row.iter().map(|c| format!("{c:>10}")).collect::<String>());
        }
    }
}

impl Run {
    fn leakage_table(&self, t: &mut String) {
        if let Some(d) = &self.duplicates {
            let copies = |g: &[Vec<PathBuf>]| g.iter().map(|g| g.len() - 1).sum::<usize>();
            let _ = writeln!(
                t,
                "\nduplicates: {} exact groups ({} extra copies); with near copies (dHash <= {} bits) {} groups ({} extra)",
                d.exact.len(),
                copies(&d.exact),
                d.near_hamming_max,
                d.near.len(),
                copies(&d.near)
            );
            if !d.mixed_labels.is_empty() {
                let _ = writeln!(
                    t,
                    "{} of these groups hold copies with different true labels (the same image labelled twice):",
                    d.mixed_labels.len()
                );
                for g in &d.mixed_labels {
                    let _ = writeln!(t, "  {}", g.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" = "));
                }
            }
            subset_table(t, "keeping one of each (the first by path)", &d.deduplicated);
        }
        if let Some(s) = &self.training {
            let _ = writeln!(t, "\ntraining list: {} of {} evaluated images were in training", s.removed.len(), self.metrics.n);
            subset_table(t, "without them", s);
        }
    }
}

fn subset_table(t: &mut String, what: &str, s: &Subset) {
    let m = &s.metrics;
    let _ = writeln!(t, "{what} (n = {}): accuracy {}, balanced accuracy {}", m.n, fmt(&m.accuracy), fmt(&m.balanced_accuracy));
}

fn card_table(t: &mut String, c: &CardForm) {
    let _ = writeln!(
        t,
        "\nbenign vs malignant, the model card's form ({} images; {} true other, {} predicted other, left out)",
        c.n, c.excluded_true_other, c.excluded_predicted_other
    );
    for (name, e) in [("accuracy", &c.accuracy), ("sensitivity", &c.sensitivity), ("specificity", &c.specificity)] {
        let _ = writeln!(t, "{name:<20} {}", fmt(e));
    }
}

fn averages_json(a: &Averages) -> Value {
    json!({"precision": a.precision, "recall": a.recall, "f1": a.f1})
}

fn card_json(c: &CardForm) -> Value {
    json!({
        "n": c.n, "excluded_true_other": c.excluded_true_other, "excluded_predicted_other": c.excluded_predicted_other,
        "accuracy": c.accuracy, "sensitivity": c.sensitivity, "specificity": c.specificity,
    })
}

/// `0.752 [0.721, 0.781]`, or `undefined`.
pub fn fmt(e: &Estimate) -> String {
    match (e.value, e.ci95) {
        (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        (Some(v), None) => format!("{v:.3}"),
        _ => "undefined".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ci::Method;

    #[test]
    fn figures_print_with_their_interval_and_undefined_ones_say_so() {
        let e = Estimate { value: Some(0.75), ci95: Some([0.7, 0.8]), method: Method::Wilson };
        assert_eq!(fmt(&e), "0.750 [0.700, 0.800]");
        assert_eq!(fmt(&Estimate::undefined(Method::Bootstrap)), "undefined");
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(json, json!({"value": 0.75, "ci95": [0.7, 0.8], "method": "wilson"}));
    }
}
