//! The model contract end to end through the real binary: what loads, what is refused and how,
//! on the committed tiny fixtures exported with optimum (fp32, dynamic int8, static QDQ).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn sonoedge(args: &[&str]) -> Output {
    common::sonoedge().args(args).output().expect("run sonoedge")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonoedge-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the fp32 fixture folder, to break in one way.
fn fixture_copy(name: &str) -> PathBuf {
    let d = scratch(name);
    for f in ["model.onnx", "config.json", "preprocessor_config.json"] {
        std::fs::copy(repo("models/tiny-random/fp32").join(f), d.join(f)).unwrap();
    }
    d
}

const IMAGE: &str = "tests/fixtures/images/wide_fan.png";

#[test]
fn static_qdq_models_are_refused_with_exit_78_and_how_to_quantize() {
    let o = sonoedge(&["classify", "--model", repo("models/tiny-random/qdq").to_str().unwrap(), repo(IMAGE).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("statically quantized") && e.contains("quantize_dynamic"), "{e}");
    assert!(o.stdout.is_empty(), "nothing may be classified with a refused model");
}

#[test]
fn bench_refuses_static_qdq_too() {
    let o = sonoedge(&["bench", "--model", repo("models/tiny-random/qdq").to_str().unwrap(), "--runs", "1"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
}

#[test]
fn a_folder_with_two_onnx_files_is_an_error_listing_both() {
    let d = fixture_copy("two-onnx");
    std::fs::copy(repo("models/tiny-random/int8/model.onnx"), d.join("model_quantized.onnx")).unwrap();
    let o = sonoedge(&["classify", "--model", d.to_str().unwrap(), repo(IMAGE).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    let e = stderr(&o);
    assert!(e.contains("model.onnx") && e.contains("model_quantized.onnx") && e.contains("--model"), "{e}");
}

#[test]
fn labels_that_do_not_match_the_outputs_are_refused() {
    let o = sonoedge(&[
        "classify",
        "--model",
        repo("models/tiny-random/fp32").to_str().unwrap(),
        "--labels",
        "a,b",
        repo(IMAGE).to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("outputs 3 values per image but 2 labels"), "{}", stderr(&o));
}

#[test]
fn without_config_json_labels_must_be_given_explicitly() {
    let d = fixture_copy("no-config");
    std::fs::remove_file(d.join("config.json")).unwrap();
    let o = sonoedge(&["classify", "--model", d.to_str().unwrap(), repo(IMAGE).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("config.json") && stderr(&o).contains("--labels"), "{}", stderr(&o));
    let o = sonoedge(&["classify", "--model", d.to_str().unwrap(), "--labels", "benign,malignant,normal", repo(IMAGE).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_corrupt_onnx_file_is_a_clear_error_not_a_panic() {
    let d = fixture_copy("corrupt");
    let bytes = std::fs::read(d.join("model.onnx")).unwrap();
    std::fs::write(d.join("model.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    let o = sonoedge(&["classify", "--model", d.to_str().unwrap(), repo(IMAGE).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.onnx") && !stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn an_unsupported_preprocessor_key_is_named() {
    let d = fixture_copy("bad-pre");
    std::fs::write(d.join("preprocessor_config.json"), r#"{"image_processor_type":"ViTImageProcessor","resample":1}"#).unwrap();
    let o = sonoedge(&["classify", "--model", d.to_str().unwrap(), repo(IMAGE).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("`resample`"), "{}", stderr(&o));
}

#[test]
fn classify_prints_one_line_per_image_in_order_and_fails_at_the_end_on_a_bad_one() {
    let d = scratch("classify");
    let bad = d.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let images = ["tests/fixtures/images/wide_fan.png", "tests/fixtures/images/grey.png"].map(repo);
    let o = sonoedge(&[
        "classify",
        "--model",
        repo("models/tiny-random/int8").to_str().unwrap(),
        images[0].to_str().unwrap(),
        bad.to_str().unwrap(),
        images[1].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["image"], images[0].to_str().unwrap());
    assert!(lines[1]["error"].is_string() && lines[1]["image"] == bad.to_str().unwrap());
    lines.iter().for_each(|l| common::assert_schema("classify.v1.schema.json", l));
    for l in [&lines[0], &lines[2]] {
        let probs = l["probs"].as_object().unwrap();
        assert_eq!(probs.keys().collect::<Vec<_>>(), ["benign", "malignant", "normal"]);
        let sum: f64 = probs.values().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{l}");
        assert_eq!(l["logits"].as_array().unwrap().len(), 3);
        assert_eq!(l["model_sha256"].as_str().unwrap().len(), 64);
    }
}

#[test]
fn model_sha256_is_the_file_digest() {
    let out = Command::new("sha256sum").arg(repo("models/tiny-random/fp32/model.onnx")).output().unwrap();
    let want = String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string();
    let o = sonoedge(&["classify", "--model", repo("models/tiny-random/fp32/model.onnx").to_str().unwrap(), repo(IMAGE).to_str().unwrap()]);
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["model_sha256"], want);
}

#[test]
fn bench_reports_units_in_key_names() {
    let o = sonoedge(&["bench", "--model", repo("models/tiny-random/int8").to_str().unwrap(), "--runs", "3", "--warmup", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["load_optimize_ms", "preprocess_ms_p50", "preprocess_ms_p95", "infer_ms_p50", "infer_ms_p95", "peak_rss_mb"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["model_format"], "int8-dynamic");
    assert_eq!(v["threads"], 1);
}

#[test]
fn schema_examples_validate_against_their_schemas() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("src/publish/schemas")).unwrap() {
        let path = entry.unwrap().path();
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let examples = schema["examples"].as_array().unwrap_or_else(|| panic!("{} has examples", path.display()));
        for ex in examples {
            let errors: Vec<String> = v.iter_errors(ex).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{} example invalid: {errors:?}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 6, "every schema of src/publish/schemas was read ({checked})");
}

#[test]
fn the_commented_deploy_config_is_valid() {
    sonoedge::config::Config::load(&repo("deploy/sonoedge.toml")).expect("deploy/sonoedge.toml parses and checks");
}

/// `classify --config` crops and masks a saved frame as the daemon's config says: the same as
/// classifying the ROI cut out by hand (with the fan blanking its corners), unlike the whole frame.
#[test]
fn classify_with_a_config_applies_its_roi_and_fan() {
    let dir = scratch("classify-config");
    let config = |extra: &str| {
        let p = dir.join(format!("c{}.toml", extra.len()));
        std::fs::write(
            &p,
            format!(
                "[model]\npath = \"{}\"\n[source]\nkind = \"images\"\npath = \"{}\"\nroi = [320, 160, 640, 400]\n{extra}",
                repo("models/tiny-random/fp32").display(),
                repo(IMAGE).display()
            ),
        )
        .unwrap();
        p
    };
    let probs = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["probs"].clone()
    };
    let whole = probs(&sonoedge(&["classify", "--model", "models/tiny-random/fp32", IMAGE]));
    let roi = probs(&sonoedge(&["classify", "--config", config("").to_str().unwrap(), IMAGE]));
    let fan = "[source.fan]\norigin_px = [640, 100]\nangles_deg = [-25, 25]\nradius_start_px = 80\nradius_stop_px = 420\n";
    let masked = probs(&sonoedge(&["classify", "--config", config(fan).to_str().unwrap(), IMAGE]));
    // The ROI cut by hand and classified as a file of its own.
    let img = image::open(repo(IMAGE)).unwrap().to_rgb8();
    let cut = image::imageops::crop_imm(&img, 320, 160, 640, 400).to_image();
    let cut_path = dir.join("cut.png");
    cut.save(&cut_path).unwrap();
    let by_hand = probs(&sonoedge(&["classify", "--model", "models/tiny-random/fp32", cut_path.to_str().unwrap()]));
    assert_eq!(roi, by_hand, "the config's ROI is the same crop");
    assert_ne!(roi, whole, "the ROI changed what the model saw");
    assert_ne!(masked, roi, "the fan mask changed what the model saw");
}

#[test]
fn bench_profile_breaks_inference_down_by_operator() {
    let o = sonoedge(&["bench", "--model", repo("models/tiny-random/int8").to_str().unwrap(), "--runs", "2", "--warmup", "1", "--profile"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["profile"]["by_op"].as_array().expect("profile.by_op");
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert!(ops.iter().any(|op| op.starts_with("OptMatMul ")), "matrix products named with their kernel: {ops:?}");
    assert!(ops.contains(&"DynQuantU8"), "the int8 plan runs sonoedge's quantizer: {ops:?}");
    let share: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "shares sum to 1: {share}");
    let node_ms = v["profile"]["node_ms_per_run"].as_f64().unwrap();
    assert!(node_ms > 0.0 && node_ms <= v["infer_ms_p95"].as_f64().unwrap() * 1.05, "{v}");
    assert!(stderr(&o).contains("total of node times per run"), "table on stderr");
}

#[test]
fn plain_tract_and_rewritten_int8_plans_give_identical_logits() {
    let images: Vec<String> =
        std::fs::read_dir(repo("tests/fixtures/images")).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    let run = |extra: &[&str]| {
        let mut args = vec!["classify", "--model", repo("models/tiny-random/int8").to_str().unwrap().to_owned().leak()];
        args.extend_from_slice(extra);
        args.extend(images.iter().map(|s| s.as_str()));
        let o = sonoedge(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["logits"].clone())
            .collect::<Vec<_>>()
    };
    let (fast, plain) = (run(&[]), run(&["--plain-tract"]));
    assert_eq!(fast.len(), images.len());
    assert_eq!(fast, plain, "the rewrites must not change a single bit of the logits");
    let (fast2, plain2) = (run(&["--threads", "2"]), run(&["--plain-tract", "--threads", "2"]));
    assert_eq!(fast2, plain2, "nor with the work split across two threads");
}

#[test]
fn bench_sweep_measures_each_model_and_thread_count_and_names_the_fastest() {
    let int8 = repo("models/tiny-random/int8");
    let fp32 = repo("models/tiny-random/fp32");
    let o = sonoedge(&[
        "bench",
        "--sweep",
        "--model",
        int8.to_str().unwrap(),
        "--also",
        fp32.to_str().unwrap(),
        "--max-threads",
        "2",
        "--runs",
        "2",
        "--warmup",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let configs = v["configs"].as_array().unwrap();
    let seen: Vec<(String, u64)> =
        configs.iter().map(|c| (c["model_format"].as_str().unwrap().to_owned(), c["threads"].as_u64().unwrap())).collect();
    assert_eq!(seen, [("int8-dynamic".into(), 1), ("int8-dynamic".into(), 2), ("fp32".into(), 1), ("fp32".into(), 2)]);
    let best = configs.iter().map(|c| c["infer_ms_p50"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert_eq!(v["fastest"]["infer_ms_p50"].as_f64(), Some(best));
    assert!(stderr(&o).contains("threads = "), "config lines on stderr: {}", stderr(&o));
}

#[test]
fn bench_sweep_reports_a_failing_configuration() {
    let o =
        sonoedge(&["bench", "--sweep", "--model", repo("models/tiny-random/qdq").to_str().unwrap(), "--max-threads", "1", "--runs", "1"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("statically quantized"), "the child's reason is passed on: {}", stderr(&o));
}
