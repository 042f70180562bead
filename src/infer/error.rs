//! Everything that can make a model unusable, each variant naming the file and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model path {0} does not exist; consider pointing --model (or [model] path) at an optimum export folder or its .onnx file")]
    NotFound(PathBuf),
    #[error("no .onnx file in {0}; consider pointing --model at the folder `optimum-cli export onnx` wrote")]
    NoOnnx(PathBuf),
    #[error("{0} holds several .onnx files ({list}); name the one to run, e.g. --model {first}",
        list = .1.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy()).collect::<Vec<_>>().join(", "),
        first = .1[0].display())]
    SeveralOnnx(PathBuf, Vec<PathBuf>),
    // The cause is in the message, so not also a `source` (`{:#}` would print it twice).
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} is missing, so the model's {1} is unknown; copy it from the export folder, or give it explicitly (--labels / --preprocessor, or [model] labels / preprocessor in the config)")]
    MissingDescription(PathBuf, &'static str),
    #[error("{0} is not valid JSON: {1}")]
    BadJson(PathBuf, String),
    #[error("{0}: key `{1}`: {2}")]
    BadKey(PathBuf, String, String),
    #[error("{0}: {1}")]
    BadLabels(String, String),
    #[error("{0} is not a readable ONNX model: {1:#}; consider re-copying the file (its SHA-256 is in the logs) or re-exporting with optimum-cli")]
    Parse(PathBuf, anyhow::Error),
    #[error("{0} has a graph sonoedge will not run: {1}")]
    Unsupported(PathBuf, String),
    #[error("{0} is statically quantized ({1}); tract computes such graphs wrongly (e.g. Dequantize->Softmax->Quantize gives 1.0 everywhere), so sonoedge refuses it. Quantize the fp32 export dynamically instead: python models/quantize.py model.onnx model_int8.onnx (onnxruntime quantize_dynamic, weight_type=QInt8)")]
    StaticQuantization(PathBuf, String),
    #[error("{0} does not match its labels: the model outputs {1} values per image but {2} labels are configured ({3}); check config.json's id2label or the labels given")]
    LabelMismatch(PathBuf, usize, usize, String),
    #[error("{0}: tract could not prepare the model for input [1,3,{h},{w}]: {1:#}", h = .2, w = .3)]
    Optimize(PathBuf, anyhow::Error, u32, u32),
    #[error("{0} fails the load-time check that its output depends on its input: {1}; it would report the same probabilities for every frame, so check the export (classifier weights) and preprocessor_config.json")]
    Unresponsive(PathBuf, String),
}
