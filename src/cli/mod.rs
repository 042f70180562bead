//! Command-line surface: argument definitions and one module per subcommand.

pub mod bench;
pub mod check;
pub mod classify;
#[cfg(feature = "demo")]
pub mod demo;
pub mod phantom;
pub mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::infer::{LoadOptions, Model, Overrides};

/// Exit code for a bad configuration or unusable model (EX_CONFIG): systemd does not restart on it.
pub const EXIT_CONFIG: i32 = 78;

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
    /// Time loading, preprocessing and inference; one JSON object on stdout.
    Bench(bench::BenchArgs),
    /// Run the daemon: frames in, predictions out over MQTT, until SIGTERM.
    Run(run::RunArgs),
    /// Validate config and model, try the source and the broker once, print a verdict.
    Check(run::RunArgs),
    /// Write synthetic ultrasound phantom frames and their ground truth.
    Phantom(phantom::PhantomArgs),
    /// Everything on this machine: phantom frames, the demo model, an embedded broker; prints the messages.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
}

/// How to find and run the model; shared by every command that loads one.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// An `.onnx` file, or an optimum export folder holding exactly one.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Labels in output order, comma-separated, instead of config.json's id2label.
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub labels: Option<Vec<String>>,
    /// A preprocessor_config.json to use instead of the one beside the model.
    #[arg(long, value_name = "FILE")]
    pub preprocessor: Option<PathBuf>,
    /// Threads for tract's matrix products.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model, crate::infer::ModelError> {
        let overrides = Overrides { labels: self.labels.clone(), preprocessor: self.preprocessor.clone() };
        Model::load(&self.model, &overrides, &LoadOptions { threads: self.threads as usize })
    }
}
