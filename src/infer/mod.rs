//! Inference: the model is resolved, checked, hashed, optimized and probed once ([`Model`]); each worker
//! spawns a [`Session`] that owns tract's run state and the input tensor, reused for every frame.

mod contract;
mod error;
mod graph;
mod heads;
mod pack;
mod profile;
mod qlinear;
mod responsive;
mod rewrite;
#[cfg(test)]
mod test_noise;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

pub use contract::{read_labels, read_preprocessor, Contract, Labels, Overrides, PreprocessSpec, Resample};
pub use error::ModelError;
pub use graph::{GraphInfo, ModelFormat};
pub use profile::{OpShare, Profile};
pub use rewrite::Rewrites;

/// How to prepare the plan.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads tract's matrix products may use (1 = tract's single-threaded default).
    pub threads: usize,
    /// Apply sonoedge's exact rewrites of the int8 plan (off only to measure what they bring).
    pub rewrite: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { threads: 1, rewrite: true }
    }
}

/// A model ready to run: its contract, identity (hashes) and the optimized plan.
pub struct Model {
    pub contract: Contract,
    pub info: GraphInfo,
    /// SHA-256 of the `.onnx` file, hex.
    pub sha256: String,
    /// SHA-256 over the effective labels and preprocessing, hex.
    pub preprocess_digest: String,
    pub threads: usize,
    /// Wall time of read + checks + optimize + the two probe runs of the responsiveness check.
    pub load_ms: f64,
    plan: Arc<TypedRunnableModel>,
}

impl Model {
    /// Resolves, checks and optimizes the model at `path`.
    pub fn load(path: &Path, overrides: &Overrides, options: &LoadOptions) -> Result<Model, ModelError> {
        let started = Instant::now();
        let contract = Contract::resolve(path, overrides)?;
        let sha256 = sha256_file(&contract.onnx)?;
        log::info!("model {} sha256 {sha256}", contract.onnx.display());
        let (info, plan) = prepare(&contract, options)?;
        let preprocess_digest = digest_of(&contract);
        // The protobuf and tract's intermediate graphs (tens of MB for a ViT-B) are free now.
        crate::sysinfo::release_freed_memory();
        let threads = options.threads;
        let mut model = Model { contract, info, sha256, preprocess_digest, threads, load_ms: 0.0, plan };
        let checked = Instant::now();
        responsive::check(&model)?;
        let check_ms = checked.elapsed().as_secs_f64() * 1e3;
        model.load_ms = started.elapsed().as_secs_f64() * 1e3;
        log::info!(
            "model loaded as {} in {:.0} ms, of which {check_ms:.0} ms checking that its output depends on its input ({} labels, {threads} thread(s))",
            model.info.format.as_str(),
            model.load_ms,
            model.contract.labels.len(),
        );
        Ok(model)
    }

    pub fn labels(&self) -> &[String] {
        &self.contract.labels
    }

    pub fn preprocess(&self) -> &PreprocessSpec {
        &self.contract.preprocess
    }

    /// A run state with its own input tensor; one per inference thread.
    pub fn session(&self) -> Result<Session, InferError> {
        let p = &self.contract.preprocess;
        let input = Tensor::zero::<f32>(&[1, 3, p.height as usize, p.width as usize]).map_err(InferError::Tract)?;
        let state = self.plan.spawn().map_err(InferError::Tract)?;
        let n = self.contract.labels.len();
        Ok(Session { state, input: Arc::new(input), logits: vec![0.0; n], probs: vec![0.0; n], fresh_inputs: 0 })
    }
}

fn prepare(contract: &Contract, options: &LoadOptions) -> Result<(GraphInfo, Arc<TypedRunnableModel>), ModelError> {
    let path = &contract.onnx;
    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let proto = onnx.proto_model_for_path(path).map_err(|e| ModelError::Parse(path.clone(), e))?;
    let info = graph::inspect(path, &proto)?;
    let p = &contract.preprocess;
    info.check_input_size(p.width, p.height).map_err(|why| ModelError::Unsupported(path.clone(), why))?;
    let dir = path.parent().and_then(|d| d.to_str());
    let parsed = onnx.parse(&proto, dir).map_err(|e| ModelError::Parse(path.clone(), e))?;
    drop(proto);
    let optimize_err = |e| ModelError::Optimize(path.clone(), e, p.width, p.height);
    let mut typed = parsed
        .model
        .with_input_fact(0, f32::fact([1, 3, p.height as usize, p.width as usize]).into())
        .and_then(|m| m.into_optimized())
        .map_err(optimize_err)?;
    if options.rewrite {
        let done = rewrite::rewrite(&mut typed).map_err(optimize_err)?;
        log::debug!("plan rewrites: {done:?}");
    }
    check_output(path, &typed, &contract.labels)?;
    let mut run_options = RunOptions::default();
    if options.threads > 1 {
        run_options.executor = Some(tract_linalg::multithread::Executor::multithread(options.threads));
    }
    let plan = typed.into_runnable_with_options(&run_options).map_err(optimize_err)?;
    Ok((info, plan))
}

/// The model must give exactly one value per label for one image.
fn check_output(path: &Path, model: &TypedModel, labels: &[String]) -> Result<(), ModelError> {
    let shape = model.output_fact(0).ok().and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()));
    let per_image = match shape.as_deref() {
        Some([1, n]) => *n,
        other => {
            return Err(ModelError::Unsupported(
                path.to_path_buf(),
                format!("its first output has shape {other:?}; expected [1, number of labels]"),
            ))
        }
    };
    if per_image != labels.len() {
        return Err(ModelError::LabelMismatch(path.to_path_buf(), per_image, labels.len(), labels.join(", ")));
    }
    Ok(())
}

/// SHA-256 of a file, read in fixed chunks (a ViT-B is hundreds of MB).
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |e| ModelError::Io(path.to_path_buf(), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The digest that identifies what the numbers mean: labels in order plus the exact preprocessing.
fn digest_of(contract: &Contract) -> String {
    let canonical = serde_json::json!({ "labels": contract.labels, "preprocess": contract.preprocess });
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("tract failed: {0:#}")]
    Tract(anyhow::Error),
    #[error("the model produced a non-finite logit ({0:?}); the result is discarded")]
    NonFinite(Vec<f32>),
}

/// Per-thread run state: tract's state, the input tensor and the output buffers, all reused.
pub struct Session {
    state: TypedSimpleState,
    input: Arc<Tensor>,
    logits: Vec<f32>,
    probs: Vec<f64>,
    fresh_inputs: u64,
}

impl Session {
    /// The input tensor to write the preprocessed frame into (`[1, 3, H, W]`, planar RGB).
    pub fn input_mut(&mut self) -> &mut [f32] {
        if Arc::get_mut(&mut self.input).is_none() {
            // tract kept a reference to the last input; take a new buffer rather than share it.
            self.fresh_inputs += 1;
            self.input = Arc::new(self.input.as_ref().clone());
        }
        let tensor = Arc::get_mut(&mut self.input).expect("just made unique");
        tensor.to_plain_array_view_mut::<f32>().ok().and_then(|v| v.into_slice()).expect("the input is a contiguous f32 tensor")
    }

    /// How often the input buffer had to be reallocated (should stay 0).
    pub fn fresh_inputs(&self) -> u64 {
        self.fresh_inputs
    }

    /// Runs the model on the current input; returns (logits, probabilities).
    pub fn run(&mut self) -> Result<(&[f32], &[f64]), InferError> {
        let input = TValue::from_const(self.input.clone());
        let outputs = self.state.run(tvec![input]).map_err(InferError::Tract)?;
        self.finish(outputs)
    }

    /// [`Session::run`], timing every node of the plan into `profile`.
    pub fn run_profiled(&mut self, profile: &mut Profile) -> Result<(&[f32], &[f64]), InferError> {
        let input = TValue::from_const(self.input.clone());
        let outputs = profile.record(&mut self.state, input).map_err(InferError::Tract)?;
        self.finish(outputs)
    }

    fn finish(&mut self, outputs: TVec<TValue>) -> Result<(&[f32], &[f64]), InferError> {
        let view = outputs[0].try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).map_err(InferError::Tract)?;
        if view.len() != self.logits.len() || view.iter().any(|v| !v.is_finite()) {
            return Err(InferError::NonFinite(view.to_vec()));
        }
        self.logits.copy_from_slice(view);
        softmax(&self.logits, &mut self.probs);
        Ok((&self.logits, &self.probs))
    }
}

/// Index of the largest value; ties go to the lower index, as numpy's argmax does.
pub fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

/// Softmax in f64, so a probability is 1.0 only when the model's own logits say so to f64 precision.
pub fn softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut sum = 0.0;
    for (o, l) in out.iter_mut().zip(logits) {
        *o = (*l as f64 - max).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut p = [0.0; 3];
        softmax(&[1.0, 3.0, -2.0], &mut p);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[1] > p[0] && p[0] > p[2]);
    }

    #[test]
    fn argmax_prefers_the_first_of_equal_values() {
        assert_eq!(argmax(&[0.2, 0.4, 0.4]), 1);
        assert_eq!(argmax(&[0.9, 0.05, 0.05]), 0);
    }

    #[test]
    fn softmax_of_large_logits_does_not_overflow() {
        let mut p = [0.0; 2];
        softmax(&[1000.0, 999.0], &mut p);
        assert!((p[0] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
    }
}
