//! Fuzz target `still`: arbitrary bytes into `sonoedge::fuzzing::still` (the harness lives there, shared
//! with the corpus replay in tests/it/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sonoedge::fuzzing::still(data));
