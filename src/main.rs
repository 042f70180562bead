//! The `sonoedge` binary: parse arguments, start logging, run the command, map errors to exit codes.

use clap::Parser;
use sonoedge::cli::{self, Cli, Command, EXIT_CONFIG};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    std::process::exit(run(cli));
}

fn run(cli: Cli) -> i32 {
    let model_args = match &cli.command {
        Command::Classify(a) => &a.model,
        Command::Bench(a) => &a.model,
    };
    let model = match model_args.load() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sonoedge: error: {e}");
            return EXIT_CONFIG;
        }
    };
    let result = match &cli.command {
        Command::Classify(a) => cli::classify::run(a, &model).map(|failed| if failed > 0 { 1 } else { 0 }),
        Command::Bench(a) => cli::bench::run(a, &model).map(|()| 0),
    };
    result.unwrap_or_else(|e| {
        eprintln!("sonoedge: error: {e:#}");
        1
    })
}
