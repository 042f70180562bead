//! `sonoedge eval`: scores a labelled data set through the daemon's own per-image path and prints
//! every figure with its 95 % interval (table on stdout, everything with `--json FILE`).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::ModelArgs;
use sonoedge::capture::region::Region;
use sonoedge::clinical::abstain::Abstention;
use sonoedge::config::{Config, PipelineConfig};
use sonoedge::eval::abstention::Selective;
use sonoedge::eval::card::card_form;
use sonoedge::eval::ci::Bootstrap;
use sonoedge::eval::dataset::{self, Dataset};
use sonoedge::eval::dedup::{duplicate_groups, extra_copies, hash_file, read_training_list, seen_in_training, NEAR_HAMMING};
use sonoedge::eval::metrics::{evaluate, Sample};
use sonoedge::eval::report::{Duplicates, Run, Subset};
use sonoedge::eval::score::score;
use sonoedge::infer::Model;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A daemon config: its model (with its threads), ROI and fan mask are used, so images are
    /// cropped and masked exactly as the daemon does (instead of --model).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "labels", "preprocessor", "threads", "plain_tract"])]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// An ImageFolder (one subfolder per label) or a CSV manifest of `path,label` lines.
    #[arg(long, value_name = "DIR|CSV")]
    pub data: PathBuf,
    /// Rename a folder or manifest label to one of the model's labels, e.g. benign_breast_cancer=benign.
    #[arg(long, value_name = "FROM=TO", num_args = 1..)]
    pub map: Vec<String>,
    /// Write every figure, the per-image predictions and the failures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write confusion.png, reliability.png, roc.png (no text; report.md says how to read them) and report.md into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// sha256 per line (of training files or their decoded pixels; see models/training_list.py):
    /// reports evaluated images the model was trained on, and the figures without them.
    #[arg(long, value_name = "FILE")]
    pub training_list: Option<PathBuf>,
    /// Bootstrap resamples for the intervals that are not Wilson's.
    #[arg(long, default_value_t = Bootstrap::default().resamples as u32, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub resamples: u32,
    /// Bootstrap seed (fixed, so a run can be repeated exactly).
    #[arg(long, default_value_t = Bootstrap::default().seed)]
    pub seed: u64,
}

/// The model settings and the region (ROI and fan) to score with.
pub fn setup(args: &EvalArgs) -> anyhow::Result<(ModelArgs, Region)> {
    let Some(path) = &args.config else { return Ok((args.model.clone(), Region::default())) };
    let cfg = Config::load(path)?;
    Ok((ModelArgs::from_config(&cfg.model), Region::new(cfg.source.roi(), cfg.source.fan())))
}

pub fn run(args: &EvalArgs, model: &Model, mut region: Region) -> anyhow::Result<()> {
    let map = dataset::parse_map(&args.map)?;
    let training = args.training_list.as_deref().map(read_training_list).transpose()?;
    let set = dataset::load(&args.data, model.labels(), &map)?;
    log::info!("{}: {} images to score, {} masks skipped", args.data.display(), set.items.len(), set.masks_skipped);
    for path in &set.non_images_skipped {
        log::warn!("not scored: {}: not a .png, .jpg, .jpeg or .bmp file", path.display());
    }
    let started = Instant::now();
    let mut bar = Progress::new(started);
    let scores = score(model, &mut region, &set.items, |done, total| bar.update(done, total))?;
    for (path, error) in &scores.failed {
        log::warn!("not scored: {}: {error}", path.display());
    }
    if let (true, Some((path, error))) = (scores.scored.is_empty(), scores.failed.first()) {
        anyhow::bail!(
            "none of the {} images of {} could be scored (the first: {}: {error}); check the files, and with --config its source.roi and source.fan",
            scores.failed.len(),
            args.data.display(),
            path.display()
        );
    }
    let mut run = assemble(args, model, set, scores, started.elapsed().as_secs_f64(), abstention(args)?);
    leakage(&mut run, training.as_ref())?;
    print!("{}", run.table());
    if let Some(dir) = &args.out {
        let samples: Vec<Sample> = run.scored.iter().map(|(_, s)| s.clone()).collect();
        sonoedge::eval::plots::write_all(dir, &run.labels, &run.metrics, &samples)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&run.to_json())? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write --json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The daemon's abstention thresholds: those of `--config`, else the defaults.
fn abstention(args: &EvalArgs) -> anyhow::Result<Abstention> {
    let pipeline = match &args.config {
        Some(path) => Config::load(path)?.pipeline,
        None => PipelineConfig::default(),
    };
    Ok(sonoedge::pipeline::abstention(&pipeline))
}

fn assemble(
    args: &EvalArgs,
    model: &Model,
    set: Dataset,
    scores: sonoedge::eval::score::Scores,
    seconds: f64,
    thresholds: Abstention,
) -> Run {
    let bootstrap = Bootstrap { resamples: args.resamples as usize, seed: args.seed };
    let samples: Vec<Sample> = scores.scored.iter().map(|(_, s)| s.clone()).collect();
    let labels = model.labels().to_vec();
    Run {
        metrics: evaluate(labels.len(), &samples, &bootstrap),
        card: card_form(&labels, &samples),
        model: json!({"sha256": model.sha256, "preprocess_digest": model.preprocess_digest}),
        labels,
        source: args.data.clone(),
        masks_skipped: set.masks_skipped,
        non_images_skipped: set.non_images_skipped,
        scored: scores.scored,
        failed: scores.failed,
        bootstrap,
        seconds,
        duplicates: None,
        training: None,
        abstention: Selective::of(&samples, thresholds),
    }
}

/// Hashes the scored images (a second decode: the scoring path stays the daemon's own), then
/// fills in the duplicate groups and the training overlap, each with the figures without them.
fn leakage(run: &mut Run, training: Option<&HashSet<String>>) -> anyhow::Result<()> {
    let hashes = run.scored.iter().map(|(p, _)| hash_file(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let files = |g: &Vec<usize>| g.iter().map(|&i| run.scored[i].0.clone()).collect::<Vec<_>>();
    let near = duplicate_groups(&hashes, true);
    let deduplicated = subset(run, &extra_copies(&near));
    let mixed = near.iter().filter(|g| g.iter().any(|&i| run.scored[i].1.truth != run.scored[g[0]].1.truth)).map(files).collect();
    run.duplicates = Some(Duplicates {
        exact: duplicate_groups(&hashes, false).iter().map(files).collect(),
        near: near.iter().map(files).collect(),
        near_hamming_max: NEAR_HAMMING,
        mixed_labels: mixed,
        deduplicated,
    });
    if let Some(training) = training {
        let seen: HashSet<usize> = (0..hashes.len()).filter(|&i| seen_in_training(&hashes[i], training)).collect();
        run.training = Some(subset(run, &seen));
    }
    Ok(())
}

fn subset(run: &Run, drop: &HashSet<usize>) -> Subset {
    let mut order: Vec<usize> = drop.iter().copied().collect();
    order.sort();
    let kept: Vec<Sample> = run.scored.iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, (_, s))| s.clone()).collect();
    Subset { removed: order.iter().map(|&i| run.scored[i].0.clone()).collect(), metrics: evaluate(run.labels.len(), &kept, &run.bootstrap) }
}

/// Progress on stderr: a line redrawn in place with rate and ETA on a terminal, otherwise a plain
/// line every tenth of the set (logs and CI keep a readable record).
struct Progress {
    started: Instant,
    terminal: bool,
    last_tenth: usize,
}

impl Progress {
    fn new(started: Instant) -> Progress {
        Progress { started, terminal: std::io::stderr().is_terminal(), last_tenth: 0 }
    }

    fn update(&mut self, done: usize, total: usize) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let eta = (total - done) as f64 / rate.max(1e-9);
        let line = format!("{done}/{total} images, {rate:.1} img/s, ETA {eta:.0} s");
        if self.terminal {
            eprint!("\r{line}   {}", if done == total { "\n" } else { "" });
        } else if done * 10 / total > self.last_tenth || done == total {
            self.last_tenth = done * 10 / total;
            eprintln!("{line}");
        }
    }
}
