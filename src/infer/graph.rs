//! Reads the ONNX graph before tract sees it: what format it is (fp32, dynamic int8), whether it is a
//! static-quantized graph tract computes wrongly, and whether its input is the image tensor we feed.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use serde::Serialize;
use tract_onnx::pb::{self, tensor_shape_proto::dimension, type_proto};

use super::ModelError;

/// The numeric format of a model, as reported in results and `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    Fp32,
    /// onnxruntime `quantize_dynamic`: int8 weights, activations quantized at run time.
    Int8Dynamic,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Fp32 => "fp32",
            ModelFormat::Int8Dynamic => "int8-dynamic",
        }
    }
}

const ONNX_FLOAT: i32 = 1;
const ONNX_FLOAT16: i32 = 10;
const DYNAMIC_INT8_OPS: &[&str] = &["DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"];

/// What the checks learned about the graph.
#[derive(Debug, Clone)]
pub struct GraphInfo {
    pub format: ModelFormat,
    pub input_name: String,
    /// The input's height and width where the graph fixes them.
    pub input_hw: (Option<i64>, Option<i64>),
}

/// Checks the graph is one sonoedge computes correctly and takes `[N, 3, H, W]` float.
pub fn inspect(path: &Path, model: &pb::ModelProto) -> Result<GraphInfo, ModelError> {
    let unsupported = |why: String| ModelError::Unsupported(path.to_path_buf(), why);
    let graph = model.graph.as_ref().ok_or_else(|| unsupported("the file holds no graph".into()))?;
    refuse_static_quantization(path, graph)?;
    if graph.initializer.iter().any(|t| t.data_type == ONNX_FLOAT16) {
        return Err(unsupported("it has float16 weights; sonoedge supports fp32 and dynamic int8 (QInt8) exports only".into()));
    }
    let input = image_input(graph).map_err(unsupported)?;
    let ops: HashSet<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    let format = if DYNAMIC_INT8_OPS.iter().any(|op| ops.contains(op)) { ModelFormat::Int8Dynamic } else { ModelFormat::Fp32 };
    Ok(GraphInfo { format, input_hw: (input.dims[2], input.dims[3]), input_name: input.name })
}

/// Static quantization (QDQ or QOperator) quantizes activations with fixed scales; refuse it.
fn refuse_static_quantization(path: &Path, graph: &pb::GraphProto) -> Result<(), ModelError> {
    let constants: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut found = BTreeSet::new();
    for node in &graph.node {
        let op = node.op_type.as_str();
        let on_activation = op == "DequantizeLinear" && node.input.first().is_some_and(|i| !constants.contains(i.as_str()));
        if op == "QuantizeLinear" || op.starts_with("QLinear") || op.starts_with("QGemm") || on_activation {
            found.insert(op.to_string());
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let list = found.into_iter().collect::<Vec<_>>().join(", ");
    Err(ModelError::StaticQuantization(path.to_path_buf(), format!("it has {list} nodes on activations")))
}

/// The image input as the graph declares it: name and dims (`None` where symbolic).
struct ImageInput {
    name: String,
    dims: Vec<Option<i64>>,
}

/// The one graph input that is not an initializer, checked to be float `[N, 3, H, W]`.
fn image_input(graph: &pb::GraphProto) -> Result<ImageInput, String> {
    let constants: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !constants.contains(i.name.as_str())).collect();
    let [input] = inputs[..] else {
        return Err(format!("it takes {} inputs; an image classifier takes exactly one (pixel_values)", inputs.len()));
    };
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("input `{}` is not a tensor", input.name));
    };
    if t.elem_type != ONNX_FLOAT {
        return Err(format!("input `{}` has ONNX element type {}; sonoedge feeds float32 pixel values", input.name, t.elem_type));
    }
    let dims: Vec<Option<i64>> = t
        .shape
        .iter()
        .flat_map(|s| s.dim.iter())
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    if dims.len() != 4 || dims[1].is_some_and(|c| c != 3) {
        return Err(format!("input `{}` has shape {dims:?}; expected [batch, 3, height, width]", input.name));
    }
    Ok(ImageInput { name: input.name.clone(), dims })
}

impl GraphInfo {
    /// Checks the graph's fixed height and width, where it fixes them, against the preprocessing.
    pub fn check_input_size(&self, width: u32, height: u32) -> Result<(), String> {
        match self.input_hw {
            (Some(h), _) if h != height as i64 => Err(format!("the graph's input height is {h} but preprocessing resizes to {height}")),
            (_, Some(w)) if w != width as i64 => Err(format!("the graph's input width is {w} but preprocessing resizes to {width}")),
            _ => Ok(()),
        }
    }
}
