//! `sonoedge classify`: image files in, one JSON line each out, in input order.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::ModelArgs;
use sonoedge::capture::region::Region;
use sonoedge::classify::Classifier;
use sonoedge::config::Config;
use sonoedge::infer::{argmax, Model};

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// A daemon config: its model, ROI and fan mask are used, so saved frames are cropped and
    /// masked exactly as the daemon does (instead of --model).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "labels", "preprocessor"])]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files (PNG, JPEG, BMP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// The model settings and the region (ROI and fan) to classify with.
pub fn setup(args: &ClassifyArgs) -> anyhow::Result<(ModelArgs, Region)> {
    let Some(path) = &args.config else { return Ok((args.model.clone(), Region::default())) };
    let cfg = Config::load(path)?;
    Ok((ModelArgs::from_config(&cfg.model), Region::new(cfg.source.roi(), cfg.source.fan())))
}

/// Classifies every image; returns how many could not be classified.
pub fn run(args: &ClassifyArgs, model: &Model, mut region: Region) -> anyhow::Result<usize> {
    let mut classifier = Classifier::new(model)?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for path in &args.images {
        let line = match classifier.run_file(path, &mut region) {
            Ok((logits, probs)) => result_json(path, model, logits, probs),
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
