//! `sonoedge classify`: image files in, one JSON line each out, in input order.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::ModelArgs;
use crate::capture::still::load_still;
use crate::infer::{Model, Session};
use crate::preprocess::Preprocessor;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files (PNG, JPEG, BMP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Classifies every image; returns how many could not be classified.
pub fn run(args: &ClassifyArgs, model: &Model) -> anyhow::Result<usize> {
    let mut session = model.session()?;
    let mut pre = Preprocessor::new(model.preprocess());
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for path in &args.images {
        let line = match classify_one(path, model, &mut pre, &mut session) {
            Ok(v) => v,
            Err(e) => {
                failed += 1;
                log::warn!("{}: {e:#}", path.display());
                json!({ "image": path.display().to_string(), "error": format!("{e:#}") })
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(failed)
}

fn classify_one(path: &Path, model: &Model, pre: &mut Preprocessor, session: &mut Session) -> anyhow::Result<Value> {
    let still = load_still(path)?;
    pre.run(still.view(), session.input_mut())?;
    let (logits, probs) = session.run()?;
    Ok(result_json(path, model, logits, probs))
}

/// The result of one image: top label, probabilities by label, raw logits and the model's identity.
pub fn result_json(path: &Path, model: &Model, logits: &[f32], probs: &[f64]) -> Value {
    let top = argmax(probs);
    let by_label: Map<String, Value> = model.labels().iter().cloned().zip(probs.iter().map(|p| json!(p))).collect();
    json!({
        "image": path.display().to_string(),
        "label": model.labels()[top],
        "probs": by_label,
        "logits": logits,
        "model_sha256": model.sha256,
        "preprocess_digest": model.preprocess_digest,
    })
}

/// Index of the largest value; ties go to the lower index, as numpy's argmax does.
pub fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    #[test]
    fn argmax_prefers_the_first_of_equal_values() {
        assert_eq!(super::argmax(&[0.2, 0.4, 0.4]), 1);
        assert_eq!(super::argmax(&[0.9, 0.05, 0.05]), 0);
    }
}
