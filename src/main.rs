//! The `sonoedge` binary: parse arguments, start logging, run the command, map errors to exit codes.

use clap::Parser;
mod cli;

use cli::{Cli, Command, ModelArgs, EXIT_CONFIG};

fn main() {
    // The demo's embedded broker (rumqttd) logs every connection; only sonoedge's own lines matter here.
    // rumqttc's v5 state warns once per refused PUBACK, whatever RUST_LOG says: the publisher logs
    // refusals itself, counted and rate-limited (src/publish/mqtt/events.rs).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,rumqttd=off,tracing=off"))
        .filter_module("rumqttc::v5::state", log::LevelFilter::Error)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_) | Command::Check(_)) {
        sonoedge::sysinfo::single_malloc_arena();
    }
    std::process::exit(run(cli));
}

fn run(cli: Cli) -> i32 {
    let result = match &cli.command {
        Command::Classify(a) => match cli::classify::setup(a) {
            Ok((model, region)) => with_model(&model, |m| cli::classify::run(a, m, region).map(|failed| i32::from(failed > 0))),
            Err(e) => return report(&format!("{e:#}"), EXIT_CONFIG),
        },
        Command::Eval(a) => match cli::eval::setup(a) {
            Ok((model, region)) => with_model(&model, |m| cli::eval::run(a, m, region).map(|()| 0)),
            Err(e) => return report(&format!("{e:#}"), EXIT_CONFIG),
        },
        Command::Bench(a) if a.sweep => cli::sweep::run(a).map(|()| 0),
        Command::Bench(a) => with_model(&a.model, |m| cli::bench::run(a, m).map(|()| 0)),
        Command::Phantom(a) => cli::phantom::run(a).map(|()| 0),
        Command::Snapshot(a) => cli::snapshot::run(a).map(|()| 0),
        Command::Devices(a) => cli::devices::run(a).map(|()| 0),
        Command::Run(a) => return cli::run::run(a).map(|()| 0).unwrap_or_else(|e| report(&e.to_string(), e.exit_code())),
        Command::Check(a) => return cli::check::run(a).unwrap_or_else(|e| report(&e.to_string(), e.exit_code())),
        #[cfg(feature = "demo")]
        Command::Demo(a) => return cli::demo::run(a).map(|()| 0).unwrap_or_else(|e| report(&e.to_string(), e.exit_code())),
    };
    result.unwrap_or_else(|e| report(&format!("{e:#}"), 1))
}

/// Loads the model first: an unusable model exits 78 before any input is touched.
fn with_model(args: &ModelArgs, f: impl FnOnce(&sonoedge::infer::Model) -> anyhow::Result<i32>) -> anyhow::Result<i32> {
    if args.model.is_none() {
        return Ok(report("--model PATH is required", 2));
    }
    match args.load() {
        Ok(model) => f(&model),
        Err(e) => Ok(report(&format!("{e:#}"), EXIT_CONFIG)),
    }
}

fn report(message: &str, code: i32) -> i32 {
    eprintln!("sonoedge: error: {message}");
    code
}
