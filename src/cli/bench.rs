//! `sonoedge bench`: load + optimize time, preprocessing and inference percentiles, memory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::ModelArgs;
use sonoedge::capture::still::{load_still, Still};
use sonoedge::infer::{Model, Profile};
use sonoedge::preprocess::{Layout, Preprocessor};
use sonoedge::sysinfo::proc_status_kb;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed runs (after warm-up).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Image to preprocess and classify; default: a 1280x720 RGB noise frame.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Also time every node of the plan; adds a per-operator breakdown (`profile`) to the JSON
    /// and prints it as a table on stderr. Timed runs are then slightly slower.
    #[arg(long)]
    pub profile: bool,
    /// Measure every model given (--model and --also) with 1..=N threads, each in its own process,
    /// and print the fastest with the config lines that select it. Run it on the target board.
    #[arg(long)]
    pub sweep: bool,
    /// More model files or folders for --sweep (e.g. the fp32 export beside the int8 one).
    #[arg(long, num_args = 1.., value_name = "PATH", requires = "sweep")]
    pub also: Vec<PathBuf>,
    /// Highest thread count for --sweep (default: the number of cores).
    #[arg(long, requires = "sweep", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_threads: Option<u16>,
}

/// Runs the benchmark on an already loaded model and prints one JSON object.
pub fn run(args: &BenchArgs, model: &Model) -> anyhow::Result<()> {
    let rss_after_load_kb = proc_status_kb("VmRSS");
    let frame = match &args.image {
        Some(p) => load_still(p)?,
        None => noise_frame(1280, 720),
    };
    let mut pre = Preprocessor::new(model.preprocess());
    let mut session = model.session()?;
    let (mut pre_ms, mut infer_ms) = (Vec::new(), Vec::new());
    let mut profile = Profile::default();
    for i in 0..args.warmup + args.runs {
        let t0 = Instant::now();
        pre.run(frame.view(), session.input_mut())?;
        let t1 = Instant::now();
        if args.profile && i >= args.warmup {
            session.run_profiled(&mut profile)?;
        } else {
            session.run()?;
        }
        if i >= args.warmup {
            pre_ms.push((t1 - t0).as_secs_f64() * 1e3);
            infer_ms.push(t1.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mb = |kb: Option<u64>| kb.map(|k| k as f64 / 1024.0);
    let mut report = json!({
        "model": model.contract.onnx.display().to_string(),
        "model_format": model.info.format.as_str(),
        "model_sha256": model.sha256,
        "model_file_mb": std::fs::metadata(&model.contract.onnx).map(|m| m.len() as f64 / 1048576.0).ok(),
        "threads": model.threads,
        "runs": args.runs,
        "input": format!("{}x{} {:?}", frame.width, frame.height, frame.layout),
        "load_optimize_ms": model.load_ms,
        "preprocess_ms_p50": percentile(&mut pre_ms, 50.0),
        "preprocess_ms_p95": percentile(&mut pre_ms, 95.0),
        "infer_ms_p50": percentile(&mut infer_ms, 50.0),
        "infer_ms_p95": percentile(&mut infer_ms, 95.0),
        "rss_after_load_mb": mb(rss_after_load_kb),
        "rss_mb": mb(proc_status_kb("VmRSS")),
        "peak_rss_mb": mb(proc_status_kb("VmHWM")),
    });
    if args.profile {
        print_profile(&profile);
        report["profile"] = json!({ "node_ms_per_run": profile.total_ms(), "by_op": profile.by_op() });
    }
    println!("{report}");
    Ok(())
}

/// The per-operator breakdown as a table on stderr.
fn print_profile(profile: &Profile) {
    eprintln!("{:>9} {:>6} {:>5}  {:<40} detail", "ms/run", "share", "nodes", "op");
    for row in profile.by_op() {
        eprintln!("{:>9.2} {:>5.1}% {:>5}  {:<40} {}", row.ms_per_run, row.share * 100.0, row.nodes, row.op, row.detail);
    }
    eprintln!("{:>9.2} total of node times per run", profile.total_ms());
}

/// Nearest-rank percentile (sorts in place).
pub fn percentile(values: &mut [f64], pct: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((pct / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// A deterministic noise frame (xorshift), so runs are comparable without an input file.
fn noise_frame(width: u32, height: u32) -> Still {
    let mut x: u32 = 0x9E37_79B9;
    let data = (0..width * height * 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    Still { width, height, layout: Layout::Rgb8, data }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentile_uses_nearest_rank() {
        let mut v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(super::percentile(&mut v, 50.0), 10.0);
        assert_eq!(super::percentile(&mut v, 95.0), 19.0);
        assert_eq!(super::percentile(&mut v, 100.0), 20.0);
    }
}
