//! Command-line surface, the binary's own: argument definitions and one module per subcommand,
//! each parsing its arguments, calling the library and printing the result.

pub mod bench;
pub mod check;
pub mod classify;
#[cfg(feature = "demo")]
pub mod demo;
pub mod devices;
pub mod eval;
pub mod phantom;
pub mod run;
pub mod snapshot;
pub mod sweep;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use sonoedge::infer::{LoadOptions, Model, Overrides};

pub use sonoedge::daemon::EXIT_CONFIG;

#[derive(Debug, Parser)]
#[command(name = "sonoedge", version, about = "Ultrasound frames -> ViT classifier -> MQTT. Assistive only, never a diagnosis.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify image files: one JSON line per image on stdout, in input order.
    Classify(classify::ClassifyArgs),
    /// Measure a model on labelled images (an ImageFolder or a CSV): every figure with a 95 % interval.
    Eval(eval::EvalArgs),
    /// Time loading, preprocessing and inference; one JSON object on stdout.
    Bench(bench::BenchArgs),
    /// Run the daemon: frames in, predictions out over MQTT, until SIGTERM.
    Run(run::RunArgs),
    /// Validate config and model, try the source and the broker once, print a verdict.
    Check(run::RunArgs),
    /// Grab one frame: write it with the ROI and fan drawn on it, and the model's input, as PNGs.
    Snapshot(snapshot::SnapshotArgs),
    /// List V4L2 capture devices with their formats, sizes and frame rates.
    Devices(devices::DevicesArgs),
    /// Write synthetic ultrasound phantom frames and their ground truth.
    Phantom(phantom::PhantomArgs),
    /// Everything on this machine: phantom frames, the demo model, an embedded broker; prints the messages.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
}

/// How to find and run the model; shared by every command that loads one.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// An `.onnx` file, or an optimum export folder holding exactly one (required unless
    /// `classify --config` names a daemon config).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Labels in output order, comma-separated, instead of config.json's id2label.
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub labels: Option<Vec<String>>,
    /// A preprocessor_config.json to use instead of the one beside the model.
    #[arg(long, value_name = "FILE")]
    pub preprocessor: Option<PathBuf>,
    /// Threads for tract's matrix products.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Run tract's plan as tract optimizes it, without sonoedge's int8 rewrites (for comparison).
    #[arg(long)]
    pub plain_tract: bool,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Model> {
        let Some(path) = &self.model else { anyhow::bail!("--model PATH is required") };
        let overrides = Overrides { labels: self.labels.clone(), preprocessor: self.preprocessor.clone() };
        Ok(Model::load(path, &overrides, &LoadOptions { threads: self.threads as usize, rewrite: !self.plain_tract })?)
    }

    /// The model settings of a daemon config, for `classify --config`.
    pub fn from_config(cfg: &sonoedge::config::ModelConfig) -> ModelArgs {
        ModelArgs {
            model: Some(cfg.path.clone()),
            labels: cfg.labels.clone(),
            preprocessor: cfg.preprocessor.clone(),
            threads: cfg.threads.min(64) as u16,
            plain_tract: false,
        }
    }
}
