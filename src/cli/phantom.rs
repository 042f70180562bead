//! `sonoedge phantom`: writes synthetic ultrasound screens and a ground-truth file (for training the
//! demo model and for looking at what the synthetic source delivers).

use std::path::PathBuf;

use clap::Args;

use sonoedge::capture::synthetic::write_phantom;

#[derive(Debug, Args)]
pub struct PhantomArgs {
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of frames.
    #[arg(long, default_value_t = 100)]
    pub count: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Frames per segment (the daemon's synthetic source uses 40).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub segment_frames: u32,
    /// Write only the fan's ROI instead of the full 1280x720 screen.
    #[arg(long)]
    pub roi_only: bool,
}

pub fn run(args: &PhantomArgs) -> anyhow::Result<()> {
    write_phantom(&args.out, args.seed, args.count, args.segment_frames, args.roi_only)?;
    eprintln!("wrote {} frames and truth.jsonl to {}", args.count, args.out.display());
    Ok(())
}
