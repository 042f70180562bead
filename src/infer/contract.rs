//! The model contract: which `.onnx` file, its labels (`config.json`) and its preprocessing
//! (`preprocessor_config.json`), read exactly as an `optimum-cli export onnx` folder lays them out.
//!
//! Nothing here guesses: a missing file must be replaced by an explicit value, and a key the
//! reference `ViTImageProcessor` would read differently from us is refused by name.
//!
//! Numbers must also lie in sane domains, since out-of-domain ones give a model that answers
//! the same for every image (e.g. `image_std` 1e-42 saturates, `image_mean` 1e39 drowns the
//! pixels). With `R = 255 * rescale_factor` (255 without rescaling) the rescaled pixels span
//! `[0, R]`, and:
//! - `rescale_factor` is in `[1e-6, 1]`: 1/255 is the usual, 1 feeds raw 0..255 values; above 1
//!   amplifies u8 input for no reason, below 1e-6 squeezes 256 levels into less than 2.6e-4.
//! - `image_mean` is in `[-R, 2R]`: a mean of values in `[0, R]` lies in `[0, R]`; a margin of
//!   one range on each side admits unusual centrings (0, or 1 with 1/255) but not nonsense.
//! - `image_std` is in `[1e-3 R, 10 R]`: a spread of values in `[0, R]` is at most `R / 2`; below
//!   1e-3 R one grey level becomes a jump of more than 3.9 (saturation), above 10 R the whole
//!   input range shrinks below 0.1 (flat input).
//! - every element is a finite JSON number (a string or null element is an error, not skipped);
//!   sizes are 1..=2048 pixels (ViT processors use 224 to 518; a 2048x2048 float input is 48 MiB).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ModelError;

/// How the image is resampled to the model size, as PIL does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    Bilinear,
    Bicubic,
}

/// The effective preprocessing: resize, then `x * rescale`, then `(x - mean) / std` per channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreprocessSpec {
    pub width: u32,
    pub height: u32,
    pub resample: Resample,
    /// `None` when `do_rescale` is false.
    pub rescale: Option<f32>,
    /// `(mean, std)` per channel R, G, B; `None` when `do_normalize` is false.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl PreprocessSpec {
    /// The affine map `value = u8 * scale[c] + offset[c]` that rescale + normalise amount to.
    pub fn affine(&self) -> ([f32; 3], [f32; 3]) {
        let r = self.rescale.unwrap_or(1.0);
        let (mean, std) = self.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        let scale = [0, 1, 2].map(|c| r / std[c]);
        let offset = [0, 1, 2].map(|c| -mean[c] / std[c]);
        (scale, offset)
    }
}

/// Labels in output order (index i is the model's output i).
pub type Labels = Vec<String>;

/// Values given by the operator (config or CLI) in place of, or over, the files beside the model.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub labels: Option<Labels>,
    /// A `preprocessor_config.json`-shaped file to use instead of the one beside the model.
    pub preprocessor: Option<PathBuf>,
}

/// The resolved model folder: the one `.onnx` file and what describes it.
#[derive(Debug, Clone)]
pub struct Contract {
    pub onnx: PathBuf,
    pub labels: Labels,
    pub preprocess: PreprocessSpec,
}

impl Contract {
    /// Resolves `--model PATH` (a file, or a folder holding exactly one `.onnx`) and its description.
    pub fn resolve(path: &Path, overrides: &Overrides) -> Result<Contract, ModelError> {
        let onnx = find_onnx(path)?;
        let dir = onnx.parent().unwrap_or(Path::new(".")).to_path_buf();
        let labels = match &overrides.labels {
            Some(l) => validate_labels(l.clone(), "the labels given in config/CLI")?,
            None => read_labels(&dir.join("config.json"))?,
        };
        let pre_path = overrides.preprocessor.clone().unwrap_or_else(|| dir.join("preprocessor_config.json"));
        let preprocess = read_preprocessor(&pre_path)?;
        Ok(Contract { onnx, labels, preprocess })
    }
}

fn find_onnx(path: &Path) -> Result<PathBuf, ModelError> {
    if !path.exists() {
        return Err(ModelError::NotFound(path.to_path_buf()));
    }
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| ModelError::Io(path.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ModelError::NoOnnx(path.to_path_buf())),
        _ => Err(ModelError::SeveralOnnx(path.to_path_buf(), found)),
    }
}

fn read_json(path: &Path, what: &'static str) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingDescription(path.to_path_buf(), what),
        _ => ModelError::Io(path.to_path_buf(), e),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadJson(path.to_path_buf(), e.to_string()))
}

/// Reads `id2label` from a transformers `config.json`; ids must be exactly 0..n.
pub fn read_labels(path: &Path) -> Result<Labels, ModelError> {
    let json = read_json(path, "labels (id2label)")?;
    let bad = |why: String| ModelError::BadKey(path.to_path_buf(), "id2label".into(), why);
    let map = json.get("id2label").and_then(Value::as_object).ok_or_else(|| bad("missing or not an object".into()))?;
    let mut by_id = BTreeMap::new();
    for (k, v) in map {
        let id: usize = k.parse().map_err(|_| bad(format!("key {k:?} is not an integer id")))?;
        let name = v.as_str().ok_or_else(|| bad(format!("label for id {k} is not a string")))?;
        by_id.insert(id, name.to_string());
    }
    if by_id.keys().copied().ne(0..by_id.len()) {
        return Err(bad(format!("ids must be 0..{} without gaps, found {:?}", by_id.len(), by_id.keys().collect::<Vec<_>>())));
    }
    validate_labels(by_id.into_values().collect(), "id2label").map_err(|e| if let ModelError::BadLabels(_, why) = e { bad(why) } else { e })
}

fn validate_labels(labels: Labels, origin: &str) -> Result<Labels, ModelError> {
    if labels.len() < 2 {
        return Err(ModelError::BadLabels(origin.into(), "a classifier needs at least two labels".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for l in &labels {
        if l.trim().is_empty() || !seen.insert(l) {
            return Err(ModelError::BadLabels(origin.into(), format!("label {l:?} is empty or repeated")));
        }
    }
    Ok(labels)
}

/// Keys `ViTImageProcessor` writes that do not change the computation.
const INERT_KEYS: &[&str] = &["image_processor_type", "feature_extractor_type", "processor_class", "_processor_class"];
const ACCEPTED_PROCESSORS: &[&str] = &["ViTImageProcessor", "ViTImageProcessorFast", "ViTFeatureExtractor"];

/// Reads a `preprocessor_config.json` as `ViTImageProcessor` would, refusing what we would not match.
pub fn read_preprocessor(path: &Path) -> Result<PreprocessSpec, ModelError> {
    let json = read_json(path, "preprocessing (preprocessor_config.json)")?;
    let obj = json.as_object().ok_or_else(|| ModelError::BadJson(path.to_path_buf(), "not a JSON object".into()))?;
    let p = Keys { path, obj };
    p.check_known()?;
    p.check_processor_type()?;
    if !p.flag("do_resize", true)? {
        return Err(p.bad("do_resize", "false is not supported: sonoedge always resizes the frame to the model size"));
    }
    if let Some(v) = obj.get("do_convert_rgb") {
        if !(v.is_null() || v == &Value::Bool(true)) {
            return Err(p.bad("do_convert_rgb", "only true or null (convert to RGB) is supported"));
        }
    }
    let (width, height) = p.size()?;
    let resample = p.resample()?;
    let rescale = if p.flag("do_rescale", true)? { Some(p.rescale_factor()?) } else { None };
    let range = 255.0 * rescale.map_or(1.0, f64::from);
    let normalize = if p.flag("do_normalize", true)? { Some(p.normalize(range)?) } else { None };
    Ok(PreprocessSpec { width, height, resample, rescale, normalize })
}

/// The domains of the preprocessing numbers (see the module documentation for why).
const RESCALE_DOMAIN: (f64, f64) = (1e-6, 1.0);
const MEAN_DOMAIN: (f64, f64) = (-1.0, 2.0);
const STD_DOMAIN: (f64, f64) = (1e-3, 10.0);
const MAX_SIDE: u64 = 2048;

/// Typed access to one preprocessor JSON object; every error names the file and key.
struct Keys<'a> {
    path: &'a Path,
    obj: &'a serde_json::Map<String, Value>,
}

impl Keys<'_> {
    const KNOWN: &'static [&'static str] =
        &["do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb"];

    fn bad(&self, key: &str, why: &str) -> ModelError {
        ModelError::BadKey(self.path.to_path_buf(), key.into(), why.into())
    }

    fn check_known(&self) -> Result<(), ModelError> {
        match self.obj.keys().find(|k| !Self::KNOWN.contains(&k.as_str()) && !INERT_KEYS.contains(&k.as_str())) {
            Some(k) => Err(self.bad(k, "unknown to sonoedge; only ViTImageProcessor settings are supported")),
            None => Ok(()),
        }
    }

    fn check_processor_type(&self) -> Result<(), ModelError> {
        for key in ["image_processor_type", "feature_extractor_type"] {
            if let Some(t) = self.obj.get(key).and_then(Value::as_str) {
                if !ACCEPTED_PROCESSORS.contains(&t) {
                    return Err(self.bad(key, &format!("{t:?} is not supported; expected one of {ACCEPTED_PROCESSORS:?}")));
                }
            }
        }
        Ok(())
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.bad(key, "must be true or false")),
        }
    }

    fn rescale_factor(&self) -> Result<f32, ModelError> {
        let (lo, hi) = RESCALE_DOMAIN;
        let r = match self.obj.get("rescale_factor") {
            None | Some(Value::Null) => return Ok(1.0 / 255.0),
            Some(v) => v.as_f64().ok_or_else(|| self.bad("rescale_factor", "must be a number (1/255 is usual)"))?,
        };
        if !(lo..=hi).contains(&r) {
            return Err(
                self.bad("rescale_factor", &format!("{r:?} is outside [{lo:e}, {hi}]; 1/255 maps pixels to [0, 1], 1 keeps 0..255"))
            );
        }
        Ok(r as f32)
    }

    /// `(image_mean, image_std)`, each within its domain scaled to the rescaled range `range`.
    fn normalize(&self, range: f64) -> Result<([f32; 3], [f32; 3]), ModelError> {
        let mean = self.within("image_mean", self.triple("image_mean")?, MEAN_DOMAIN, range)?;
        let std = self.within("image_std", self.triple("image_std")?, STD_DOMAIN, range)?;
        Ok((mean, std))
    }

    fn within(&self, key: &str, values: [f64; 3], (lo, hi): (f64, f64), range: f64) -> Result<[f32; 3], ModelError> {
        let (lo, hi) = (lo * range, hi * range);
        match values.iter().find(|v| !(lo..=hi).contains(*v)) {
            Some(v) => {
                Err(self
                    .bad(key, &format!("{v:?} is outside [{lo:.3e}, {hi:.3e}], the sane domain for pixels rescaled to [0, {range:.4}]")))
            }
            None => Ok(values.map(|v| v as f32)),
        }
    }

    /// A number or a list of three numbers; every element must be a number (none is skipped).
    fn triple(&self, key: &str) -> Result<[f64; 3], ModelError> {
        let shape = "must be a number or a list of three numbers (R, G, B)";
        let v = match self.obj.get(key) {
            None | Some(Value::Null) => return Ok([0.5; 3]), // ViTImageProcessor's IMAGENET_STANDARD default
            Some(v) => v,
        };
        if let Some(x) = v.as_f64() {
            return Ok([x; 3]);
        }
        let items = v.as_array().filter(|a| a.len() == 3).ok_or_else(|| self.bad(key, shape))?;
        let mut out = [0.0; 3];
        for (i, (o, item)) in out.iter_mut().zip(items).enumerate() {
            *o = item.as_f64().ok_or_else(|| self.bad(key, &format!("element {i} is {item}, not a number; {shape}")))?;
        }
        Ok(out)
    }

    fn size(&self) -> Result<(u32, u32), ModelError> {
        let dim = |v: &Value, k: &str| {
            v.as_u64()
                .filter(|x| (1..=MAX_SIDE).contains(x))
                .map(|x| x as u32)
                .ok_or_else(|| self.bad(k, &format!("must be a whole number of pixels between 1 and {MAX_SIDE}")))
        };
        match self.obj.get("size") {
            None | Some(Value::Null) => Ok((224, 224)),
            Some(v) if v.is_number() => dim(v, "size").map(|s| (s, s)),
            Some(Value::Object(m)) if m.len() == 2 && m.contains_key("height") && m.contains_key("width") => {
                Ok((dim(&m["width"], "size.width")?, dim(&m["height"], "size.height")?))
            }
            Some(_) => Err(self.bad("size", "only {\"height\": H, \"width\": W} or a single integer is supported (shortest_edge/longest_edge resizing is not ViTImageProcessor's)")),
        }
    }

    fn resample(&self) -> Result<Resample, ModelError> {
        match self.obj.get("resample") {
            None | Some(Value::Null) => Ok(Resample::Bilinear),
            Some(v) => match v.as_u64() {
                Some(2) => Ok(Resample::Bilinear),
                Some(3) => Ok(Resample::Bicubic),
                _ => Err(self.bad("resample", "only 2 (PIL BILINEAR) and 3 (PIL BICUBIC) are supported")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sonoedge-contract-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn vit_processor_json_is_read_with_its_values() {
        let d = tmp("vit");
        let p = write(
            &d,
            "p.json",
            r#"{"do_normalize":true,"do_rescale":true,"do_resize":true,
            "image_mean":[0.5,0.5,0.5],"image_processor_type":"ViTImageProcessor","image_std":[0.5,0.5,0.5],
            "resample":3,"rescale_factor":0.00392156862745098,"size":{"height":224,"width":200}}"#,
        );
        let s = read_preprocessor(&p).unwrap();
        assert_eq!((s.width, s.height, s.resample), (200, 224, Resample::Bicubic));
        let (scale, offset) = s.affine();
        assert!((scale[0] - 2.0 / 255.0).abs() < 1e-9 && (offset[2] + 1.0).abs() < 1e-9);
    }

    #[test]
    fn unknown_or_unsupported_preprocessor_keys_are_refused_by_name() {
        let d = tmp("bad");
        for (text, key) in [
            (r#"{"crop_size": 224}"#, "crop_size"),
            (r#"{"resample": 0}"#, "resample"),
            (r#"{"size": {"shortest_edge": 224}}"#, "size"),
            (r#"{"image_processor_type": "CLIPImageProcessor"}"#, "image_processor_type"),
            (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "image_std"),
        ] {
            let p = write(&d, "p.json", text);
            let err = read_preprocessor(&p).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn labels_must_be_contiguous_ids() {
        let d = tmp("labels");
        let p = write(&d, "config.json", r#"{"id2label":{"1":"malignant","0":"benign","2":"normal"}}"#);
        assert_eq!(read_labels(&p).unwrap(), ["benign", "malignant", "normal"]);
        let p = write(&d, "config.json", r#"{"id2label":{"0":"benign","2":"normal"}}"#);
        assert!(read_labels(&p).unwrap_err().to_string().contains("id2label"));
    }

    #[test]
    fn a_folder_with_two_onnx_files_lists_them() {
        let d = tmp("two");
        write(&d, "model.onnx", "");
        write(&d, "model_quantized.onnx", "");
        let err = find_onnx(&d).unwrap_err().to_string();
        assert!(err.contains("model.onnx") && err.contains("model_quantized.onnx"), "{err}");
    }

    #[test]
    fn missing_description_files_are_an_error_not_a_default() {
        let d = tmp("bare");
        write(&d, "model.onnx", "");
        let err = Contract::resolve(&d, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn out_of_domain_preprocessing_numbers_are_refused_naming_key_and_domain() {
        let d = tmp("domain");
        for (text, key, says) in [
            (r#"{"image_mean": 1e39}"#, "image_mean", "1e39 is outside [-1.000e0, 2.000e0]"),
            (r#"{"image_mean": [0.5, 0.5, -3]}"#, "image_mean", "outside"),
            (r#"{"image_std": 1e-42}"#, "image_std", "1e-42 is outside [1.000e-3, 1.000e1]"),
            (r#"{"image_std": [0.5, 0.5, 1e5]}"#, "image_std", "outside"),
            (r#"{"rescale_factor": 1e300}"#, "rescale_factor", "1e300 is outside [1e-6, 1]"),
            (r#"{"rescale_factor": 0}"#, "rescale_factor", "outside"),
            (r#"{"rescale_factor": -0.5}"#, "rescale_factor", "outside"),
            (r#"{"rescale_factor": "1/255"}"#, "rescale_factor", "must be a number"),
            (r#"{"do_rescale": false, "image_std": 0.1}"#, "image_std", "[0, 255"),
            (r#"{"size": {"height": 4096, "width": 224}}"#, "size.height", "2048"),
            (r#"{"size": 0}"#, "size", "between 1 and"),
        ] {
            let p = write(&d, "p.json", text);
            let err = read_preprocessor(&p).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_non_number_element_is_an_error_not_skipped() {
        let d = tmp("elements");
        for text in [
            r#"{"image_mean": ["0.5", 0.5, 0.5, 0.5]}"#,
            r#"{"image_mean": ["0.5", 0.5, 0.5]}"#,
            r#"{"image_mean": [0.5, null, 0.5]}"#,
            r#"{"image_std": [0.5, 0.5]}"#,
            r#"{"image_std": "0.5"}"#,
        ] {
            let p = write(&d, "p.json", text);
            let err = read_preprocessor(&p).unwrap_err().to_string();
            assert!(err.contains("three numbers"), "{text}: {err}");
        }
        let p = write(&d, "p.json", r#"{"image_mean": [0.5, "x", 0.5]}"#);
        let err = read_preprocessor(&p).unwrap_err().to_string();
        assert!(err.contains("image_mean") && err.contains("element 1 is \"x\""), "{err}");
    }

    #[test]
    fn usual_hf_and_optimum_preprocessing_is_accepted() {
        let d = tmp("usual");
        for text in [
            "{}",
            r#"{"image_mean":[0.485,0.456,0.406],"image_std":[0.229,0.224,0.225],"rescale_factor":0.00392156862745098,"size":{"height":384,"width":384}}"#,
            r#"{"do_rescale":false,"image_mean":[127.5,127.5,127.5],"image_std":[127.5,127.5,127.5]}"#,
            r#"{"rescale_factor":1.0,"image_mean":0.0,"image_std":255.0}"#,
            r#"{"image_mean":[0.0,0.0,0.0],"image_std":[1.0,1.0,1.0],"do_normalize":true}"#,
            r#"{"do_normalize":false,"rescale_factor":0.5}"#,
        ] {
            let p = write(&d, "p.json", text);
            assert!(read_preprocessor(&p).is_ok(), "{text}: {:?}", read_preprocessor(&p));
        }
    }
}
