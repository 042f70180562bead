//! sonoedge: ultrasound frames -> ViT classifier (tract) -> class probabilities over MQTT.
//!
//! Crate map (dependencies point down only):
//! `cli` -> `capture` -> `preprocess` -> `infer`; `publish` and `pipeline` join them in the daemon.

pub mod capture;
pub mod cli;
pub mod config;
pub mod infer;
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod sysinfo;
