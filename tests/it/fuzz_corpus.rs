//! The fuzz targets' saved corpora (fuzz/corpus/<target>/, the inputs that reached new code and
//! every crash found, kept as regression inputs) replayed on stable through the same harnesses
//! (`sonoedge::fuzzing`), so CI re-checks what fuzzing found without nightly or time to fuzz.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use sonoedge::fuzzing::TARGETS;

use crate::common::repo;

/// Fewer files than this means the corpus went missing, not that fuzzing found little.
const MIN_FILES: usize = 10;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = repo(&format!("fuzz/corpus/{target}"));
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}; every fuzz target keeps a corpus", dir.display()));
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_saved_fuzz_input_of_every_target_runs_through_its_harness_without_a_panic() {
    let mut failed = Vec::new();
    for (target, harness) in TARGETS {
        let files = corpus(target);
        assert!(files.len() >= MIN_FILES, "fuzz/corpus/{target} holds {} files, expected at least {MIN_FILES}", files.len());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "these inputs panic (see the messages above):\n{}", failed.join("\n"));
}

#[test]
fn every_regression_input_fuzz_readme_names_is_in_its_corpus() {
    // A regression input that is deleted would let its bug come back unnoticed.
    let readme = std::fs::read_to_string(repo("fuzz/README.md")).unwrap();
    let named: Vec<&str> = readme.split('`').filter(|p| p.starts_with("fuzz/corpus/") && !p.ends_with('/')).collect();
    assert!(!named.is_empty(), "fuzz/README.md names no regression input");
    for path in named {
        assert!(repo(path).is_file(), "{path}, named in fuzz/README.md, is missing");
    }
}
