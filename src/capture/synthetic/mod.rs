//! The synthetic phantom: a seeded stand-in for an ultrasound machine's screen as a video grabber
//! delivers it (dark screen, burned-in text, depth ruler, a B-mode fan with speckle, benign and
//! malignant lesions, colour Doppler, no-signal, probe-lifted and frozen stretches), with the
//! ground truth of every frame.
//!
//! It stands apart from the real sources so the pipeline can be tested, benchmarked and shown
//! without hardware, and so the failure modes that matter (channel order, ROI, frozen or missing
//! signal) come with a known answer. It is not a medical simulation: the lesions only carry the
//! textbook cues (benign: oval, smooth, wider than tall, posterior enhancement; malignant:
//! spiculated, taller than wide, posterior shadowing).
//!
//! Frames come in segments of `segment_frames`, one [`Truth`] per segment. A frame is a pure
//! function of `(seed, index)`, except that a frozen segment repeats the last frame of the segment
//! before it. Per-segment geometry and textures are built once and cached, so a frame costs a
//! copy of the screen chrome plus one multiply per fan pixel.
//!
//! [`write_phantom`] writes a folder for offline checks:
//! - `frame_000000.png`, `frame_000001.png`, ...: RGB PNGs, full 1280x720 frames, or cropped to
//!   [`DEFAULT_ROI`] when `roi_only`;
//! - `truth.jsonl`: one JSON object per frame, in frame order, e.g.
//!   `{"file":"frame_000000.png","index":0,"truth":"benign","label":"benign","segment":0,"seed":7,"roi":[272,56,736,624]}`.
//!   `truth` is one of `normal`, `benign`, `malignant`, `frozen`, `nosignal`, `no_contact` (the
//!   probe is lifted: the screen is there, the sector holds no tissue); `label` is the model label
//!   the frame should get (`null` for frozen, nosignal and no_contact); `segment` is `index /
//!   segment_frames`; `roi` is the fan's box `[x, y, width, height]` in full-frame pixels, also when
//!   the PNG is already cropped to it.

use std::f32::consts::PI;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::capture::{CaptureError, ColorSpace, FieldOrder, Frame, FrameMeta, FrameSource, PixelFormat, Range};

/// The fan's box `(x, y, width, height)` on a 1280x720 frame: what a user configures as ROI.
pub const DEFAULT_ROI: (u32, u32, u32, u32) = (272, 56, 736, 624);

const REFERENCE_SIZE: (f32, f32) = (1280.0, 720.0);
const HALF_ANGLE_DEG: f32 = 35.0;
const BACKGROUND: [u8; 3] = [10, 10, 12];
const TEXT: [u8; 3] = [235, 235, 235];
const RULER: [u8; 3] = [200, 200, 200];
const DOPPLER_BOX: [u8; 3] = [170, 170, 170];
/// The longest `next_frame` sleeps before returning `Ok(None)`, so the caller sees its stop flag.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// What the phantom renders and how fast [`SyntheticSource`] delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomConfig {
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Frames per segment (one truth per segment).
    pub segment_frames: u32,
    /// Delivery rate of [`SyntheticSource`]; 0 = as fast as frames are asked for.
    pub fps: f64,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig { width: 1280, height: 720, seed: 0, segment_frames: 40, fps: 15.0 }
    }
}

/// What a frame shows: the answer a test compares the pipeline's output to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Truth {
    Normal,
    Benign,
    Malignant,
    /// The same bytes as the last frame of the previous segment (a frozen machine or grabber).
    Frozen,
    /// A black screen (the machine is off or the cable is out).
    NoSignal,
    /// The probe is lifted off the skin: screen chrome as usual, but the sector shows only a noise
    /// floor, near-field reverberation arcs, or a uniform grey (no tissue).
    #[serde(rename = "no_contact")]
    NoContact,
}

impl Truth {
    /// The model label this frame should get; `None` when nothing should be inferred.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Truth::Normal => Some("normal"),
            Truth::Benign => Some("benign"),
            Truth::Malignant => Some("malignant"),
            Truth::Frozen | Truth::NoSignal | Truth::NoContact => None,
        }
    }
}

/// The fan's box `(x, y, width, height)` on a `width` x `height` frame (the layout scales with size).
pub fn roi_for(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let r = Fan::new(width, height).bounds();
    (r.x as u32, r.y as u32, r.w as u32, r.h as u32)
}

mod chrome;
mod geometry;
mod lifted;
mod plan;
mod render;
mod texture;

use chrome::*;
use geometry::*;
use lifted::*;
use plan::*;
pub use render::Phantom;
use render::*;
use texture::*;

// ---------------------------------------------------------------------------------------------
// The frame source

/// The phantom as a [`FrameSource`], paced like a grabber at `cfg.fps`.
pub struct SyntheticSource {
    phantom: Phantom,
    cfg: PhantomConfig,
    /// The one frame buffer, allocated here and reused for every frame.
    buffer: Vec<u8>,
    /// The next frame to deliver.
    index: u64,
    /// Epoch of the frame schedule and of `FrameMeta::monotonic`.
    started: Instant,
}

impl SyntheticSource {
    pub fn new(cfg: PhantomConfig) -> SyntheticSource {
        let phantom = Phantom::new(&cfg);
        let buffer = vec![0; phantom.frame_len()];
        SyntheticSource { phantom, cfg, buffer, index: 0, started: Instant::now() }
    }

    /// The ground truth of the frame delivered with `sequence`.
    pub fn truth_of(&self, sequence: u64) -> Truth {
        self.phantom.segment_of(sequence)
    }

    /// The phantom, for lesion positions and ROI checks in tests.
    pub fn phantom(&self) -> &Phantom {
        &self.phantom
    }

    /// Sleeps until frame `index` is due; false when it is still not due after [`MAX_WAIT`].
    /// Like a grabber, it does not wait for a slow reader: more than one frame behind, it skips to
    /// the frame due now, and the sequence gap shows what was dropped.
    fn wait_until_due(&mut self) -> bool {
        if self.cfg.fps <= 0.0 {
            return true;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let due = self.index as f64 / self.cfg.fps;
        if due > elapsed {
            let wait = Duration::from_secs_f64(due - elapsed);
            std::thread::sleep(wait.min(MAX_WAIT));
            return wait <= MAX_WAIT;
        }
        let current = (elapsed * self.cfg.fps) as u64;
        if current > self.index + 1 {
            self.index = current;
        }
        true
    }

    fn meta(&self, sequence: u64, monotonic: Duration) -> FrameMeta {
        FrameMeta {
            width: self.cfg.width,
            height: self.cfg.height,
            format: PixelFormat::Rgb24,
            stride: self.cfg.width as usize * 3,
            color_space: ColorSpace::Bt709,
            range: Range::Full,
            field: FieldOrder::Progressive,
            sequence,
            monotonic,
            wall: SystemTime::now(),
        }
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        format!("synthetic seed={}", self.cfg.seed)
    }

    /// `monotonic` is CLOCK_MONOTONIC when the frame was rendered, as V4L2 stamps buffers.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if !self.wait_until_due() {
            return Ok(None);
        }
        let sequence = self.index;
        self.index += 1;
        self.phantom.render(sequence, &mut self.buffer);
        let meta = self.meta(sequence, super::monotonic_now());
        Ok(Some(Frame { meta, data: &self.buffer }))
    }
}

// ---------------------------------------------------------------------------------------------
// Files for offline checks

/// Writes `count` frames of the phantom with `seed` at 1280x720, and `truth.jsonl` (format in
/// the module documentation), into `dir`.
pub fn write_phantom(dir: &Path, seed: u64, count: u32, segment_frames: u32, roi_only: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cfg = PhantomConfig { seed, segment_frames, ..PhantomConfig::default() };
    let mut phantom = Phantom::new(&cfg);
    let mut frame = vec![0; phantom.frame_len()];
    let roi = roi_for(cfg.width, cfg.height);
    let truth_path = dir.join("truth.jsonl");
    let file = std::fs::File::create(&truth_path).with_context(|| format!("cannot create {}", truth_path.display()))?;
    let mut truth_file = BufWriter::new(file);
    for index in 0..count as u64 {
        let truth = phantom.render(index, &mut frame);
        let name = format!("frame_{index:06}.png");
        save_png(&dir.join(&name), &frame, cfg.width, roi_only.then_some(roi))?;
        let line = serde_json::json!({"file": name, "index": index, "truth": truth, "label": truth.label(),
            "segment": index / cfg.segment_frames as u64, "seed": seed, "roi": [roi.0, roi.1, roi.2, roi.3]});
        writeln!(truth_file, "{line}").with_context(|| format!("cannot write {}", truth_path.display()))?;
    }
    truth_file.flush().with_context(|| format!("cannot write {}", truth_path.display()))
}

fn save_png(path: &Path, frame: &[u8], width: u32, crop: Option<(u32, u32, u32, u32)>) -> anyhow::Result<()> {
    let height = (frame.len() / (width as usize * 3)) as u32;
    let (x, y, w, h) = crop.unwrap_or((0, 0, width, height));
    let row = |r: u32| {
        let start = ((y + r) as usize * width as usize + x as usize) * 3;
        &frame[start..start + w as usize * 3]
    };
    let pixels: Vec<u8> = (0..h).flat_map(row).copied().collect();
    image::save_buffer(path, &pixels, w, h, image::ExtendedColorType::Rgb8).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> Phantom {
        Phantom::new(&PhantomConfig { width: 640, height: 360, seed, ..PhantomConfig::default() })
    }

    fn frame(p: &mut Phantom, index: u64) -> Vec<u8> {
        let mut out = vec![0; p.frame_len()];
        p.render(index, &mut out);
        out
    }

    /// The first frame of the first segment of `kind`, and that segment's number.
    fn first_of(p: &Phantom, kind: Truth) -> u64 {
        let n = p.segment_frames;
        (0..500).map(|k| k * n).find(|&i| p.segment_of(i) == kind).expect("kind occurs in 500 segments")
    }

    fn box_mean(width: usize, out: &[u8], (cx, cy, half): (f32, f32, f32)) -> f64 {
        let (x0, x1, y0, y1) = ((cx - half) as usize, (cx + half) as usize, (cy - half) as usize, (cy + half) as usize);
        let sum: u64 = (y0..y1).flat_map(|y| (x0..x1).map(move |x| out[(y * width + x) * 3] as u64)).sum();
        sum as f64 / ((x1 - x0) * (y1 - y0)) as f64
    }

    #[test]
    fn the_default_roi_is_the_fan_box_at_720p() {
        assert_eq!(roi_for(1280, 720), DEFAULT_ROI);
        assert_eq!(roi_for(640, 360), (136, 28, 368, 312));
    }

    #[test]
    fn labels_are_the_models_and_truth_serialises_lowercase() {
        assert_eq!(
            [Truth::Benign.label(), Truth::Malignant.label(), Truth::Normal.label()],
            [Some("benign"), Some("malignant"), Some("normal")]
        );
        assert_eq!((Truth::Frozen.label(), Truth::NoSignal.label(), Truth::NoContact.label()), (None, None, None));
        assert_eq!(serde_json::to_string(&Truth::NoSignal).unwrap(), "\"nosignal\"");
        assert_eq!(serde_json::to_string(&Truth::NoContact).unwrap(), "\"no_contact\"");
    }

    #[test]
    fn rendering_is_a_pure_function_of_seed_and_index() {
        let mut p = small(7);
        let (a, _, b) = (frame(&mut p, 5), frame(&mut p, 500), frame(&mut p, 5));
        assert!(a == b, "same index twice");
        assert!(frame(&mut small(7), 5) == a, "a fresh phantom with the same seed");
    }

    #[test]
    fn different_seeds_give_different_frames() {
        let (mut p, mut q) = (small(1), small(2));
        let i = (0..).step_by(40).find(|&i| p.segment_of(i) != Truth::NoSignal && q.segment_of(i) != Truth::NoSignal).unwrap();
        assert!(frame(&mut p, i) != frame(&mut q, i));
    }

    #[test]
    fn segment_kinds_keep_their_rules_and_rough_shares() {
        let mut counts = std::collections::HashMap::new();
        for seed in 0..4 {
            assert_ne!(segment_kind(seed, 0), Truth::Frozen);
            for k in 1..1000 {
                let kind = segment_kind(seed, k);
                let after = segment_kind(seed, k - 1);
                assert!(!(kind == Truth::Frozen && matches!(after, Truth::NoSignal | Truth::NoContact)), "seed {seed} segment {k}");
                *counts.entry(kind).or_insert(0.0) += 1.0 / 3996.0;
            }
        }
        for (kind, lo, hi) in [
            (Truth::Normal, 0.24, 0.34),
            (Truth::Benign, 0.24, 0.34),
            (Truth::Malignant, 0.24, 0.34),
            (Truth::Frozen, 0.05, 0.11),
            (Truth::NoSignal, 0.05, 0.11),
            (Truth::NoContact, 0.04, 0.10),
        ] {
            assert!((lo..hi).contains(&counts[&kind]), "{kind:?}: {}", counts[&kind]);
        }
    }

    #[test]
    fn no_signal_frames_are_black() {
        let mut p = small(3);
        let i = first_of(&p, Truth::NoSignal) + 7;
        let out = frame(&mut p, i);
        let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
        assert!(mean < 0.5 && out.iter().all(|&v| v <= 90), "mean {mean}");
    }

    #[test]
    fn segments_keep_the_kind_they_had_before_the_lifted_probe_unless_they_became_one() {
        for seed in 0..4 {
            for k in 1..1000 {
                let (now, before) = (segment_kind(seed, k), raw_kind(seed, k));
                let lifted_or_unfrozen = now == Truth::NoContact || (before == Truth::Frozen && now != Truth::Frozen);
                assert!(now == before || lifted_or_unfrozen, "seed {seed} segment {k}: {before:?} became {now:?}");
            }
        }
    }

    #[test]
    fn a_lifted_probe_keeps_the_screen_and_changes_every_frame_without_tissue() {
        let mut p = small(3);
        let i = first_of(&p, Truth::NoContact) + 5;
        let (a, b) = (frame(&mut p, i), frame(&mut p, i + 1));
        let area = p.area;
        assert!(a[..area.y * p.fan.width * 3] == p.chrome[..area.y * p.fan.width * 3], "the text above the sector stays");
        assert!(a != b, "the noise changes from frame to frame");
        let (cx, cy) = (p.fan.apex.0, p.fan.apex.1 + 0.6 * p.fan.r_max);
        let deep = box_mean(p.fan.width, &a, (cx, cy, 20.0));
        assert!(deep < 100.0, "no tissue deep in the sector: mean {deep}");
    }

    #[test]
    fn a_frozen_segment_repeats_the_last_frame_before_it() {
        let mut p = small(3);
        let first = first_of(&p, Truth::Frozen);
        let mut out = vec![0; p.frame_len()];
        assert_eq!(p.render(first + 11, &mut out), Truth::Frozen);
        assert!(out == frame(&mut p, first - 1));
    }

    #[test]
    fn consecutive_frames_differ_enough_for_the_frozen_detector() {
        let mut p = small(4);
        let i = first_of(&p, Truth::Normal) + 3;
        let (a, b) = (frame(&mut p, i), frame(&mut p, i + 1));
        let mad = a.iter().zip(&b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.len() as f64;
        assert!(mad > 1.0, "mean absolute difference {mad}");
    }

    #[test]
    fn lesions_and_doppler_boxes_stay_in_the_fan_and_apart() {
        let fan = Fan::new(1280, 720);
        let plans: Vec<Plan> = (0..400).map(|k| Plan::draw(11, k, &fan)).collect();
        for plan in &plans {
            if let Some(l) = &plan.lesion {
                assert!(fan.holds(l.centre, l.travel_reach(&fan)), "{l:?}");
                let depth = l.centre.1 - fan.apex.1;
                assert!((150.0..=450.0).contains(&depth), "depth {depth}");
                assert_eq!(l.malignant, l.ry > l.rx, "malignant lesions are taller than wide, benign wider");
            }
            if let (Some(d), Some(l)) = (&plan.doppler, &plan.lesion) {
                let centre = ((d.rect.x + d.rect.w / 2) as f32, (d.rect.y + d.rect.h / 2) as f32);
                assert!(!overlaps(l, centre, (d.rect.w as f32, d.rect.h as f32), &fan));
            }
        }
        let with_doppler = plans.iter().filter(|p| p.doppler.is_some()).count();
        assert!((120..260).contains(&with_doppler), "{with_doppler} of 400");
    }

    #[test]
    fn the_doppler_box_shows_red_flow() {
        let mut p = small(5);
        let k = (0..500).find(|&k| Plan::draw(5, k, &p.fan).doppler.is_some()).unwrap();
        let rect = Plan::draw(5, k, &p.fan).doppler.unwrap().rect;
        let width = p.fan.width;
        let red = (0..40).map(|t| frame(&mut p, k * 40 + t)).map(|out| {
            let px = |x: usize, y: usize| &out[(y * width + x) * 3..][..3];
            (rect.y..rect.y + rect.h)
                .flat_map(|y| (rect.x..rect.x + rect.w).map(move |x| (x, y)))
                .filter(|&(x, y)| px(x, y)[0] as i32 > px(x, y)[1] as i32 + 60)
                .count()
        });
        assert!(red.max().unwrap() > 20);
    }

    #[test]
    fn lesions_are_darker_than_normal_tissue_at_the_same_place() {
        for kind in [Truth::Benign, Truth::Malignant] {
            let mut p = small(6);
            let i = first_of(&p, kind) + 20;
            let (cx, cy, r) = p.lesion_of(i).expect("a lesion");
            let lesion = box_mean(p.fan.width, &frame(&mut p, i), (cx, cy, 0.3 * r));
            let j = first_of(&p, Truth::Normal);
            let normal = box_mean(p.fan.width, &frame(&mut p, j), (cx, cy, 0.3 * r));
            assert!(lesion < 0.5 * normal, "{kind:?}: {lesion} vs {normal}");
        }
    }

    #[test]
    fn the_roi_holds_the_whole_fan_and_none_of_the_text() {
        let p = Phantom::new(&PhantomConfig::default());
        let (fan, roi) = (p.fan, p.area);
        for y in 0..fan.height {
            for x in 0..fan.width {
                let inside_roi = (roi.x..roi.x + roi.w).contains(&x) && (roi.y..roi.y + roi.h).contains(&y);
                let in_fan = fan.contains(x as f32 + 0.5, y as f32 + 0.5);
                assert!(inside_roi || !in_fan, "fan pixel ({x}, {y}) outside the ROI");
                assert!(!inside_roi || p.chrome[(y * fan.width + x) * 3..][..3] == BACKGROUND, "text or ruler at ({x}, {y})");
            }
        }
    }

    #[test]
    fn the_source_numbers_frames_and_knows_their_truth() {
        let mut src = SyntheticSource::new(PhantomConfig { width: 320, height: 180, seed: 9, fps: 0.0, ..PhantomConfig::default() });
        for expected in 0..3 {
            let f = src.next_frame().unwrap().expect("fps 0 never waits");
            assert_eq!((f.meta.sequence, f.meta.stride, f.data.len()), (expected, 960, 320 * 180 * 3));
        }
        assert_eq!(src.truth_of(45), src.phantom().segment_of(45));
        assert_eq!(src.describe(), "synthetic seed=9");
    }

    #[test]
    fn the_source_returns_none_rather_than_sleeping_long() {
        let mut src = SyntheticSource::new(PhantomConfig { width: 64, height: 36, fps: 1.0, ..PhantomConfig::default() });
        assert!(src.next_frame().unwrap().is_some(), "frame 0 is due at once");
        let t0 = Instant::now();
        assert!(src.next_frame().unwrap().is_none());
        assert!(t0.elapsed() < Duration::from_millis(400), "{:?}", t0.elapsed());
    }

    #[test]
    fn write_phantom_writes_frames_and_truth_lines() {
        let dir = std::env::temp_dir().join(format!("sonoedge-phantom-{}", std::process::id()));
        write_phantom(&dir, 7, 2, 40, true).unwrap();
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.join("truth.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((lines.len(), &lines[1]["file"], &lines[1]["seed"]), (2, &serde_json::json!("frame_000001.png"), &serde_json::json!(7)));
        let img = image::open(dir.join("frame_000000.png")).unwrap();
        assert_eq!((img.width(), img.height()), (DEFAULT_ROI.2, DEFAULT_ROI.3));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `cargo test --release --lib capture::synthetic -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn a_720p_frame_renders_well_under_20_ms() {
        let mut p = Phantom::new(&PhantomConfig { seed: 1, ..PhantomConfig::default() });
        let mut out = vec![0; p.frame_len()];
        let (mut steady, mut first) = (Vec::new(), std::collections::BTreeMap::<String, Duration>::new());
        for i in 0..2000 {
            let t0 = Instant::now();
            let truth = p.render(i, &mut out);
            let dt = t0.elapsed();
            if i % 40 == 0 {
                let worst = first.entry(format!("{truth:?}")).or_default();
                *worst = (*worst).max(dt);
            } else {
                steady.push(dt);
            }
        }
        let mean = steady.iter().sum::<Duration>() / steady.len() as u32;
        println!("720p: mean {mean:?} per frame; worst first frame of a segment (builds its textures): {first:?}");
        assert!(cfg!(debug_assertions) || first.values().all(|&d| d < Duration::from_millis(20)));
    }

    /// Writes one frame per kind to /tmp/phantom-samples for a human to look at.
    #[test]
    #[ignore]
    fn samples_of_every_kind_for_a_human_to_look_at() {
        let dir = Path::new("/tmp/phantom-samples");
        std::fs::create_dir_all(dir).unwrap();
        let mut p = Phantom::new(&PhantomConfig { seed: 7, ..PhantomConfig::default() });
        for kind in [Truth::Normal, Truth::Benign, Truth::Malignant, Truth::Frozen, Truth::NoSignal, Truth::NoContact] {
            let i = first_of(&p, kind) + 20;
            save_png(&dir.join(format!("{kind:?}.png").to_lowercase()), &frame(&mut p, i), 1280, None).unwrap();
        }
        let k = (0..500).find(|&k| Plan::draw(7, k, &p.fan).doppler.is_some_and(|_| segment_kind(7, k) != Truth::Normal)).unwrap();
        save_png(&dir.join(format!("doppler-{:?}.png", segment_kind(7, k)).to_lowercase()), &frame(&mut p, k * 40 + 5), 1280, None)
            .unwrap();
    }
}
