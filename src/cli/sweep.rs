//! `sonoedge bench --sweep`: every model format given x every thread count, each in a fresh
//! process (clean load time and memory), then the fastest and the config lines that choose it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::bench::BenchArgs;

/// One measured configuration.
struct Row {
    model: PathBuf,
    threads: usize,
    report: Value,
}

impl Row {
    fn p50(&self) -> f64 {
        self.report["infer_ms_p50"].as_f64().unwrap_or(f64::INFINITY)
    }
}

/// Runs the sweep and prints one JSON object (all rows, the fastest) on stdout, a table on stderr.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let models: Vec<PathBuf> = args.model.model.iter().chain(&args.also).cloned().collect();
    anyhow::ensure!(!models.is_empty(), "--model PATH is required");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let max_threads = args.max_threads.map(usize::from).unwrap_or(cores).max(1);
    let mut rows = Vec::new();
    for model in &models {
        for threads in 1..=max_threads {
            eprintln!("sweep: {} with {threads} thread(s)...", model.display());
            rows.push(Row { model: model.clone(), threads, report: bench_once(args, model, threads)? });
        }
    }
    print_table(&rows, cores);
    let best = rows.iter().min_by(|a, b| a.p50().total_cmp(&b.p50())).expect("at least one row");
    println!(
        "{}",
        json!({
            "cores": cores,
            "configs": rows.iter().map(|r| &r.report).collect::<Vec<_>>(),
            "fastest": { "model": best.model, "threads": best.threads, "infer_ms_p50": best.p50(),
                "format": best.report["model_format"] },
        })
    );
    Ok(())
}

/// The command that runs a child: this executable, or SONOEDGE_SWEEP_CHILD (words: an emulator and
/// the binary, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu target/.../sonoedge`), since a binary
/// under qemu-user cannot exec itself: its own path there is the emulator's.
fn child_command() -> anyhow::Result<Command> {
    match std::env::var("SONOEDGE_SWEEP_CHILD").ok().filter(|c| !c.trim().is_empty()) {
        Some(words) => {
            let mut words = words.split_whitespace();
            let mut cmd = Command::new(words.next().expect("not empty"));
            cmd.args(words);
            Ok(cmd)
        }
        None => Ok(Command::new(std::env::current_exe()?)),
    }
}

/// `sonoedge bench` for one model and thread count in a child process.
fn bench_once(args: &BenchArgs, model: &Path, threads: usize) -> anyhow::Result<Value> {
    let mut cmd = child_command()?;
    cmd.arg("bench").arg("--model").arg(model).args(["--threads", &threads.to_string()]).args([
        "--runs",
        &args.runs.to_string(),
        "--warmup",
        &args.warmup.to_string(),
    ]);
    if let Some(image) = &args.image {
        cmd.arg("--image").arg(image);
    }
    if args.model.plain_tract {
        cmd.arg("--plain-tract");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!(
            "bench of {} with {threads} thread(s) failed ({}): {}",
            model.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn print_table(rows: &[Row], cores: usize) {
    eprintln!("\n{:<14} {:>7} {:>9} {:>9} {:>9} {:>9}  model", "format", "threads", "p50 ms", "p95 ms", "load ms", "RSS MB");
    for r in rows {
        let f = |k: &str| r.report[k].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "{:<14} {:>7} {:>9.1} {:>9.1} {:>9.0} {:>9.0}  {}",
            r.report["model_format"].as_str().unwrap_or("?"),
            r.threads,
            f("infer_ms_p50"),
            f("infer_ms_p95"),
            f("load_optimize_ms"),
            f("rss_mb"),
            r.model.display()
        );
    }
    if let Some(best) = rows.iter().min_by(|a, b| a.p50().total_cmp(&b.p50())) {
        eprintln!(
            "\nfastest: {} with {} thread(s), {:.1} ms per frame ({cores} cores). In sonoedge.toml:",
            best.model.display(),
            best.threads,
            best.p50()
        );
        eprintln!("  [model]\n  path = {:?}\n  threads = {}", best.model.display().to_string(), best.threads);
        eprintln!("A thread count equal to the cores leaves none for capture and publishing; on a busy board prefer one less.");
        eprintln!("int8 and fp32 give different probabilities: check the format you choose with models/parity.py on your own images.");
    }
}
