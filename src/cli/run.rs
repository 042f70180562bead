//! `sonoedge run --config FILE`: the long-running service (assembled in the library's `daemon`).

use std::path::PathBuf;

use clap::Args;
use sonoedge::config::Config;
use sonoedge::daemon::{self, StartError};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration (see deploy/sonoedge.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the daemon until a stop signal.
pub fn run(args: &RunArgs) -> Result<(), StartError> {
    let cfg = Config::load(&args.config).map_err(StartError::config)?;
    let stop = daemon::stop_on_signals()?;
    daemon::serve(&cfg, stop, None)
}
