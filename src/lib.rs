//! sonoedge: ultrasound frames -> ViT classifier (tract) -> class probabilities over MQTT.
//!
//! Crate map (an arrow is "depends on"; dependencies point down only):
//!
//! ```text
//! daemon ──> pipeline ──> classify ──> capture ──> preprocess ──> infer
//!    │           │                        │
//!    │           ├──> clinical ──> publish ──> state
//!    │           └──> publish             └──> config (source settings)
//!    └──> config, sysinfo
//! ```
//!
//! - [`config`]: the TOML file, checked once at load.
//! - [`capture`]: frame sources (V4L2, replayed images, the synthetic phantom) and ROI conversion.
//! - [`preprocess`]: the model's resize and normalisation, into caller-owned buffers.
//! - [`infer`]: the model contract, loaded and optimized once; per-thread sessions.
//! - [`classify`]: the one per-image path (region, preprocessing, inference) every command shares.
//! - [`eval`]: local validation on labelled images (data sets, metrics with intervals, reports), through [`classify`].
//! - [`publish`]: the publisher seam, message payloads and the MQTT client.
//! - [`clinical`]: input states, the freeze moment, abstention and the stable finding (pure).
//! - [`pipeline`]: the daemon's threads, hand-offs, counters and shared status.
//! - [`daemon`]: assembles the parts from a config, supervises the threads, stops cleanly.
//! - [`state`]: the state vocabulary (daemon, source, gate, input) every topic shares.
//! - [`sysinfo`]: systemd notification, SoC facts, the allocator's housekeeping.
//! - `fuzzing` (hidden): the fuzz targets' harnesses, shared with the corpus replay in tests/it.
//!
//! The command line (`src/cli/`) is the binary's own and is not part of this library.

pub mod capture;
pub mod classify;
pub mod clinical;
pub mod config;
pub mod daemon;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod infer;
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod state;
pub mod sysinfo;
