//! `sonoedge classify`: image files in, one JSON line each out, in input order.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::ModelArgs;
use std::time::{Duration, SystemTime};

use crate::capture::convert::{roi_to_rgb, Roi};
use crate::capture::region::Region;
use crate::capture::still::{load_still, Still};
use crate::capture::{ColorSpace, FieldOrder, Frame, FrameMeta, PixelFormat, Range};
use crate::config::Config;
use crate::infer::{Model, Session};
use crate::preprocess::{ImageView, Layout, Preprocessor};

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
    let mut session = model.session()?;
    let mut pre = Preprocessor::new(model.preprocess());
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for path in &args.images {
        let line = match classify_one(path, model, &mut region, &mut pre, &mut session) {
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

fn classify_one(path: &Path, model: &Model, region: &mut Region, pre: &mut Preprocessor, session: &mut Session) -> anyhow::Result<Value> {
    let still = load_still(path)?;
    if region.configured_roi().is_none() && region.fan().is_none() {
        pre.run(still.view(), session.input_mut())?;
    } else {
        let (rgb, roi) = crop_and_mask(&still, region)?;
        pre.run(ImageView { width: roi.width, height: roi.height, layout: Layout::Rgb8, data: &rgb }, session.input_mut())?;
    }
    let (logits, probs) = session.run()?;
    Ok(result_json(path, model, logits, probs))
}

/// The ROI of a saved frame as RGB with the fan masked, as the daemon's capture stage makes it.
fn crop_and_mask(still: &Still, region: &mut Region) -> anyhow::Result<(Vec<u8>, Roi)> {
    let roi = region.roi(still.width, still.height);
    let format = if still.layout == Layout::Grey8 { PixelFormat::Grey } else { PixelFormat::Rgb24 };
    let meta = FrameMeta {
        width: still.width,
        height: still.height,
        format,
        stride: still.width as usize * still.layout.bytes_per_pixel(),
        color_space: ColorSpace::Bt601,
        range: Range::Full,
        field: FieldOrder::Progressive,
        sequence: 0,
        monotonic: Duration::ZERO,
        wall: SystemTime::UNIX_EPOCH,
    };
    let mut rgb = Vec::new();
    roi_to_rgb(&Frame { meta, data: &still.data }, roi, &mut rgb)?;
    region.mask(&mut rgb, roi);
    Ok((rgb, roi))
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
