//! `sonoedge eval` as a user runs it: a small generated ImageFolder (images, a segmentation mask,
//! a corrupt file) scored by the committed tiny model; the JSON's shape and every count are checked.

use std::path::Path;

use serde_json::Value;
use sha2::Digest;

use crate::common::*;

/// A 64x48 PNG with a gradient that differs per `seed`, so predictions are not all identical.
fn write_png(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x as u8).wrapping_mul(seed), (y as u8).wrapping_add(seed), seed]));
    img.save(path).unwrap();
}

fn image_folder(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    for (i, f) in ["benign/a.png", "benign/b.png", "benign/c.png", "malignant/d.png", "malignant/e.png", "normal/f.png", "normal/g.png"]
        .iter()
        .enumerate()
    {
        write_png(&dir.join(f), 17 * i as u8 + 3);
    }
    // A valid image, but a mask: skipped and counted, never scored.
    write_png(&dir.join("benign/a_mask.png"), 1);
    std::fs::write(dir.join("malignant/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    // Not an image the loader reads: listed as skipped, never dropped silently.
    std::fs::write(dir.join("normal/notes.txt"), b"scanned on cart 3").unwrap();
    // The same file under another label: an exact duplicate, as BUSI has one.
    std::fs::copy(dir.join("benign/a.png"), dir.join("normal/h.png")).unwrap();
    dir
}

fn assert_estimate(e: &Value, what: &str) {
    let obj = e.as_object().unwrap_or_else(|| panic!("{what} is not an object: {e}"));
    assert!(obj.contains_key("value") && obj.contains_key("ci95"), "{what}: {e}");
    assert!(["wilson", "bootstrap"].contains(&obj["method"].as_str().unwrap()), "{what}: {e}");
}

#[test]
fn eval_scores_an_image_folder_skips_the_mask_and_lists_the_corrupt_file() {
    let dir = image_folder("eval-folder");
    let json_path = dir.join("eval.json");
    // The training list names b.png by the sha256 of its bytes (models/training_list.py --file-hash).
    let training_list = dir.join("training.sha256");
    let b_sha = sha2::Sha256::digest(std::fs::read(dir.join("benign/b.png")).unwrap());
    std::fs::write(&training_list, format!("{}  b.png\n", b_sha.iter().map(|x| format!("{x:02x}")).collect::<String>())).unwrap();
    let out = sonoedge()
        .args(["eval", "--model"])
        .arg(repo("models/tiny-random/fp32"))
        .arg("--data")
        .arg(&dir)
        .arg("--json")
        .arg(&json_path)
        .arg("--out")
        .arg(dir.join("report"))
        .arg("--training-list")
        .arg(&training_list)
        .args(["--resamples", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("scored 8 images (1 failed, 1 masks skipped, 1 non-image files skipped)"), "{stdout}");
    assert!(
        stdout.contains("not scored (2):") && stdout.contains("malignant/broken.png: ") && stdout.contains("normal/notes.txt: not a"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of these groups hold copies with different true labels"), "{stdout}");
    let r: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(r["n"], 8);
    assert_eq!(r["data"]["masks_skipped"], 1);
    let failed = r["data"]["failed"].as_array().unwrap();
    assert!(failed.len() == 1 && failed[0]["file"].as_str().unwrap().ends_with("malignant/broken.png"), "{failed:?}");
    let rows: Vec<u64> = r["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum())
        .collect();
    assert_eq!(rows, [3, 2, 3], "rows are true labels in the model's order");
    assert!(r["data"]["non_images_skipped"][0].as_str().unwrap().ends_with("normal/notes.txt"));
    assert_eq!(r["duplicates"]["mixed_label_groups"].as_array().unwrap().len(), 1, "a.png is also normal/h.png");
    let exact = &r["duplicates"]["exact_groups"];
    assert!(exact.as_array().unwrap().len() == 1 && exact[0][1].as_str().unwrap().ends_with("normal/h.png"), "{exact}");
    assert_eq!(
        r["duplicates"]["deduplicated"]["metrics"]["n"].as_u64().unwrap(),
        8 - r["duplicates"]["deduplicated"]["removed"].as_u64().unwrap()
    );
    assert_eq!(r["training_overlap"]["removed"], 1);
    assert_eq!(r["training_overlap"]["metrics"]["per_class"]["benign"]["support"], 2);
    let per_class = r["per_class"].as_object().unwrap();
    assert_eq!(per_class.keys().collect::<Vec<_>>(), ["benign", "malignant", "normal"]);
    assert_eq!(per_class["malignant"]["support"], 2);
    for (label, c) in per_class {
        for m in ["precision", "recall", "specificity", "f1"] {
            assert_estimate(&c[m], &format!("{label}.{m}"));
        }
    }
    for m in ["accuracy", "balanced_accuracy", "ece", "macro_roc_auc"] {
        assert_estimate(&r[m], m);
    }
    let preds = r["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 8);
    // Coverage with the default abstention thresholds (top >= 0.6, margin >= 0.2), from the probabilities.
    let clear = |p: &Value| {
        let mut v: Vec<f64> = p["probs"].as_object().unwrap().values().map(|x| x.as_f64().unwrap()).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v[0] >= 0.6 && v[0] - v[1] >= 0.2
    };
    let labelled = preds.iter().filter(|p| clear(p)).count();
    assert_eq!((r["abstention"]["labelled"].as_u64(), r["abstention"]["n"].as_u64()), (Some(labelled as u64), Some(8)));
    assert_estimate(&r["abstention"]["coverage"], "abstention.coverage");
    assert!(preds.iter().all(|p| !p["file"].as_str().unwrap().contains("_mask") && p["probs"].as_object().unwrap().len() == 3));
    for f in ["confusion.png", "reliability.png", "roc.png", "report.md"] {
        assert!(dir.join("report").join(f).is_file(), "--out lacks {f}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_refuses_a_label_the_model_lacks_until_it_is_mapped() {
    let dir = image_folder("eval-map");
    std::fs::rename(dir.join("benign"), dir.join("benign_breast_cancer")).unwrap();
    let run = |extra: &[&str]| {
        sonoedge()
            .args(["eval", "--model"])
            .arg(repo("models/tiny-random/fp32"))
            .arg("--data")
            .arg(&dir)
            .args(["--resamples", "100"])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("--map benign_breast_cancer=LABEL"), "{stderr}");
    let mapped = run(&["--map", "benign_breast_cancer=benign"]);
    assert!(mapped.status.success(), "{}", String::from_utf8_lossy(&mapped.stderr));
    assert!(String::from_utf8_lossy(&mapped.stdout).contains("scored 8 images"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_fails_when_no_image_could_be_scored_instead_of_reporting_undefined_figures() {
    let dir = scratch("eval-all-broken");
    for f in ["benign/x.png", "malignant/y.png"] {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::write(dir.join(f), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    }
    let json_path = dir.join("eval.json");
    let out = sonoedge()
        .args(["eval", "--model"])
        .arg(repo("models/tiny-random/fp32"))
        .arg("--data")
        .arg(&dir)
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("none of the 2 images of") && stderr.contains("benign/x.png"), "{stderr}");
    assert!(!json_path.exists(), "no report of zero images");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_refuses_threads_beside_config_rather_than_ignoring_them() {
    let out = sonoedge().args(["eval", "--config", "/nonexistent.toml", "--threads", "4", "--data", "/nonexistent"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--config <FILE>") && stderr.contains("--threads"), "{stderr}");
}
