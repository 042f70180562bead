//! The load-time check that a model's output depends on its input: a black image and a
//! high-contrast pattern, preprocessed as every frame is, must give finite outputs whose
//! probabilities differ. A model that fails it (zeroed classifier weights, a saturating
//! graph) would publish the same "prediction" for every frame; it is refused at load instead.
//! The two runs also warm the plan up, so the first real frame is not the slow one.

use super::{InferError, Model, ModelError, PreprocessSpec, Session};

/// The smallest largest per-class probability difference accepted between the two images.
pub const MIN_PROBABILITY_DIFFERENCE: f64 = 1e-3;

/// Runs the two probe images through `model`; the error names the check that failed.
pub fn check(model: &Model) -> Result<(), ModelError> {
    let fail = |why: String| ModelError::Unresponsive(model.contract.onnx.clone(), why);
    let mut session = model.session().map_err(|e| fail(format!("no run state: {e}")))?;
    let spec = model.preprocess();
    let dark = probe(&mut session, spec, |_, _, _| 0).map_err(|e| fail(format!("the black image: {e}")))?;
    let pattern = probe(&mut session, spec, checkerboard).map_err(|e| fail(format!("the checkerboard image: {e}")))?;
    let diff = compare(&dark, &pattern).map_err(fail)?;
    log::debug!("model responds to its input: probabilities differ by up to {diff:.4}");
    Ok(())
}

/// 16-pixel squares of 0 and 255, a different pattern per channel (R, G inverted, B in stripes).
fn checkerboard(c: usize, x: usize, y: usize) -> u8 {
    let (bx, by) = (x / 16, y / 16);
    let on = match c {
        0 => (bx + by) % 2 == 0,
        1 => (bx + by) % 2 == 1,
        _ => by % 2 == 0,
    };
    if on {
        255
    } else {
        0
    }
}

/// The probabilities for the image whose 8-bit value at (channel, x, y) is `pixel`.
fn probe(session: &mut Session, spec: &PreprocessSpec, pixel: impl Fn(usize, usize, usize) -> u8) -> Result<Vec<f64>, InferError> {
    let (scale, offset) = spec.affine();
    let (w, h) = (spec.width as usize, spec.height as usize);
    let input = session.input_mut();
    for (i, v) in input.iter_mut().enumerate() {
        let (c, y, x) = (i / (w * h), i / w % h, i % w);
        *v = pixel(c, x, y) as f32 * scale[c] + offset[c];
    }
    let (_, probs) = session.run()?;
    Ok(probs.to_vec())
}

/// The largest per-class probability difference, or why it is not enough.
pub fn compare(a: &[f64], b: &[f64]) -> Result<f64, String> {
    if a.iter().chain(b).any(|p| !p.is_finite()) {
        return Err("its probabilities are not finite".into());
    }
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    if diff < MIN_PROBABILITY_DIFFERENCE {
        return Err(format!(
            "a black image and a checkerboard give probabilities that differ by at most {diff:.1e} (< {MIN_PROBABILITY_DIFFERENCE:e}): its output does not depend on its input"
        ));
    }
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::{LoadOptions, Overrides};
    use std::path::{Path, PathBuf};
    use tract_onnx::prelude::Framework;

    fn tiny(format: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-random").join(format)
    }

    /// A copy of the tiny fp32 model with `classifier.weight` zeroed in place (same bytes length,
    /// so the protobuf stays valid): its logits are the bias alone, whatever the image.
    fn constant_model() -> PathBuf {
        let src = tiny("fp32");
        let dir = std::env::temp_dir().join(format!("sonoedge-constant-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "preprocessor_config.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let proto = tract_onnx::onnx().proto_model_for_path(src.join("model.onnx")).unwrap();
        let graph = proto.graph.unwrap();
        let weight = &graph.initializer.iter().find(|t| t.name == "classifier.weight").unwrap().raw_data;
        assert!(weight.len() >= 64 && weight.iter().any(|b| *b != 0), "classifier.weight is stored as raw nonzero data");
        let mut bytes = std::fs::read(src.join("model.onnx")).unwrap();
        let at = bytes.windows(weight.len()).position(|w| w == &weight[..]).unwrap();
        bytes[at..at + weight.len()].fill(0);
        std::fs::write(dir.join("model.onnx"), bytes).unwrap();
        dir
    }

    #[test]
    fn a_model_whose_output_ignores_its_input_is_refused_at_load() {
        let err = Model::load(&constant_model(), &Overrides::default(), &LoadOptions::default()).err().expect("refused");
        assert!(matches!(err, ModelError::Unresponsive(..)), "{err}");
        assert!(err.to_string().contains("does not depend on its input"), "{err}");
    }

    #[test]
    fn the_committed_tiny_models_pass_the_check() {
        for format in ["fp32", "int8"] {
            let model = Model::load(&tiny(format), &Overrides::default(), &LoadOptions::default()).unwrap();
            check(&model).unwrap();
        }
    }

    #[test]
    fn outputs_that_differ_enough_pass_with_their_difference() {
        assert_eq!(compare(&[0.5, 0.5], &[0.4, 0.6]), Ok(0.09999999999999998));
    }

    #[test]
    fn identical_or_nearly_identical_outputs_are_refused() {
        assert!(compare(&[0.2, 0.8], &[0.2, 0.8]).unwrap_err().contains("does not depend on its input"));
        assert!(compare(&[0.2, 0.8], &[0.2009, 0.7991]).is_err());
        assert!(compare(&[0.2, 0.8], &[0.2011, 0.7989]).is_ok());
    }

    #[test]
    fn non_finite_probabilities_are_refused() {
        assert!(compare(&[f64::NAN, 0.5], &[0.1, 0.9]).unwrap_err().contains("not finite"));
    }

    #[test]
    fn the_pattern_has_both_extremes_in_every_channel() {
        for c in 0..3 {
            let values: Vec<u8> = (0..32).flat_map(|y| (0..32).map(move |x| checkerboard(c, x, y))).collect();
            assert!(values.contains(&0) && values.contains(&255), "channel {c}");
        }
    }
}
