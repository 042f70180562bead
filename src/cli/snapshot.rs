//! `sonoedge snapshot --config FILE --out DIR`: grabs one frame from the configured source and
//! writes, locally only, `frame.png` (the full frame with the ROI and fan drawn on it) and
//! `input.png` (the model's input before normalisation), so the ROI can be set by looking.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use sonoedge::capture::convert::{Converter, Roi};
use sonoedge::capture::fan::Fan;
use sonoedge::capture::region::Region;
use sonoedge::capture::{Frame, FrameSource};
use sonoedge::config::Config;
use sonoedge::daemon::build_source;
use sonoedge::infer::Contract;
use sonoedge::infer::Overrides;
use sonoedge::preprocess::{ImageView, Layout, Preprocessor};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The daemon's config file (source, ROI, fan and the model's preprocessing are taken from it).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Folder for frame.png and input.png (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

const ROI_COLOUR: [u8; 3] = [0, 255, 0];
const FAN_COLOUR: [u8; 3] = [255, 200, 0];

pub fn run(args: &SnapshotArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let overrides = Overrides { labels: cfg.model.labels.clone(), preprocessor: cfg.model.preprocessor.clone() };
    let contract = Contract::resolve(&cfg.model.path, &overrides)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut source = build_source(&cfg.source)?;
    let mut region = Region::new(cfg.source.roi(), cfg.source.fan());
    let shot = grab(source.as_mut(), &mut Converter::new(cfg.source.deinterlace()), &region)?;
    let (frame_png, input_png) = (args.out.join("frame.png"), args.out.join("input.png"));
    let Some(mut rgb) = shot.roi_rgb else {
        save(&frame_png, &shot.full, shot.width, shot.height)?;
        bail!(
            "source.roi {:?} does not fit the {}x{} frame (frame.png written without it); the daemon would publish nothing",
            shot.roi,
            shot.width,
            shot.height
        );
    };
    let mut full = shot.full;
    draw_overlay(&mut full, shot.width, shot.height, shot.roi, region.fan());
    save(&frame_png, &full, shot.width, shot.height)?;
    region.mask(&mut rgb, shot.roi);
    let input = model_input(&contract, &rgb, shot.roi)?;
    save(&input_png, &input, contract.preprocess.width, contract.preprocess.height)?;
    println!(
        "{}: {}x{} {}: wrote {} and {}",
        source.describe(),
        shot.width,
        shot.height,
        shot.format,
        frame_png.display(),
        input_png.display()
    );
    Ok(())
}

/// One frame, converted whole and as its ROI (`None` when the ROI does not fit).
struct Shot {
    width: u32,
    height: u32,
    format: String,
    roi: Roi,
    full: Vec<u8>,
    roi_rgb: Option<Vec<u8>>,
}

/// The first frame within 10 s (a grabber may need a moment after opening), converted.
fn grab(source: &mut dyn FrameSource, converter: &mut Converter, region: &Region) -> anyhow::Result<Shot> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_error = String::from("no frame");
    while Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(frame)) => return convert(&frame, converter, region),
            Ok(None) => {}
            Err(e) => {
                last_error = e.to_string();
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    bail!("no frame from {} within 10 s: {last_error}", source.describe())
}

fn convert(frame: &Frame<'_>, converter: &mut Converter, region: &Region) -> anyhow::Result<Shot> {
    let (width, height) = (frame.meta.width, frame.meta.height);
    let mut full = Vec::new();
    converter.convert(frame, Roi::full(width, height), &mut full).context("converting the frame")?;
    let roi = region.roi(width, height);
    let roi_rgb = if roi.fits(width, height) {
        let mut rgb = Vec::new();
        converter.convert(frame, roi, &mut rgb)?;
        Some(rgb)
    } else {
        None
    };
    Ok(Shot { width, height, format: format!("{:?}", frame.meta.format), roi, full, roi_rgb })
}

/// The resized RGB the model sees, before scaling and normalisation.
fn model_input(contract: &Contract, rgb: &[u8], roi: Roi) -> anyhow::Result<Vec<u8>> {
    let mut pre = Preprocessor::new(&contract.preprocess);
    let mut tensor = vec![0f32; pre.output_len()];
    pre.run(ImageView { width: roi.width, height: roi.height, layout: Layout::Rgb8, data: rgb }, &mut tensor)?;
    Ok(pre.resized_rgb().to_vec())
}

/// Draws the ROI rectangle (green) and the fan outline (amber) onto the full frame.
pub fn draw_overlay(rgb: &mut [u8], w: u32, h: u32, roi: Roi, fan: Option<&Fan>) {
    let mut put = |x: u32, y: u32, c: [u8; 3]| {
        if x < w && y < h {
            let i = (y as usize * w as usize + x as usize) * 3;
            rgb[i..i + 3].copy_from_slice(&c);
        }
    };
    for t in 0..2 {
        for x in roi.x..roi.x + roi.width {
            put(x, roi.y + t, ROI_COLOUR);
            put(x, (roi.y + roi.height).saturating_sub(1 + t), ROI_COLOUR);
        }
        for y in roi.y..roi.y + roi.height {
            put(roi.x + t, y, ROI_COLOUR);
            put((roi.x + roi.width).saturating_sub(1 + t), y, ROI_COLOUR);
        }
    }
    let Some(fan) = fan else { return };
    for y in 0..h.saturating_sub(1) {
        for x in 0..w.saturating_sub(1) {
            let inside = fan.contains(x, y);
            if inside != fan.contains(x + 1, y) || inside != fan.contains(x, y + 1) {
                put(x, y, FAN_COLOUR);
            }
        }
    }
}

fn save(path: &Path, rgb: &[u8], w: u32, h: u32) -> anyhow::Result<()> {
    image::save_buffer(path, rgb, w, h, image::ExtendedColorType::Rgb8).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_marks_the_roi_border_and_the_fan_edge() {
        let (w, h) = (64u32, 48u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        let fan = Fan { origin_px: [32.0, 0.0], angles_deg: [-30.0, 30.0], radius_start_px: 5.0, radius_stop_px: 40.0 };
        draw_overlay(&mut rgb, w, h, Roi { x: 4, y: 4, width: 56, height: 40 }, Some(&fan));
        let px = |x: u32, y: u32| &rgb[((y * w + x) * 3) as usize..((y * w + x) * 3 + 3) as usize];
        assert_eq!(px(10, 4), ROI_COLOUR);
        assert_eq!(px(0, 0), [0, 0, 0]);
        assert_eq!(px(32, 20), [0, 0, 0], "the fan's inside is not drawn over");
        let edge = (0..h).filter(|&y| px(32, y) == FAN_COLOUR).count();
        assert!(edge >= 2, "the start and stop arcs cross the centre line");
    }
}
