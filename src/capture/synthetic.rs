//! The synthetic phantom: a seeded stand-in for an ultrasound machine's screen as a video grabber
//! delivers it (dark screen, burned-in text, depth ruler, a B-mode fan with speckle, benign and
//! malignant lesions, colour Doppler, no-signal and frozen stretches), with the ground truth of
//! every frame.
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
//!   `truth` is one of `normal`, `benign`, `malignant`, `frozen`, `nosignal`; `label` is the model
//!   label the frame should get (`null` for frozen and nosignal); `segment` is `index /
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
}

impl Truth {
    /// The model label this frame should get; `None` when nothing should be inferred.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Truth::Normal => Some("normal"),
            Truth::Benign => Some("benign"),
            Truth::Malignant => Some("malignant"),
            Truth::Frozen | Truth::NoSignal => None,
        }
    }
}

/// The fan's box `(x, y, width, height)` on a `width` x `height` frame (the layout scales with size).
pub fn roi_for(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let r = Fan::new(width, height).bounds();
    (r.x as u32, r.y as u32, r.w as u32, r.h as u32)
}

// ---------------------------------------------------------------------------------------------
// Geometry and randomness

/// A pixel rectangle inside the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// The B-mode sector: angles measured from straight down, pixel centres at `+0.5`.
#[derive(Debug, Clone, Copy)]
struct Fan {
    width: usize,
    height: usize,
    /// Pixels per reference (1280x720) pixel.
    scale: f32,
    apex: (f32, f32),
    r_min: f32,
    r_max: f32,
    tan_half: f32,
}

impl Fan {
    fn new(width: u32, height: u32) -> Fan {
        let scale = (width as f32 / REFERENCE_SIZE.0).min(height as f32 / REFERENCE_SIZE.1);
        Fan {
            width: width as usize,
            height: height as usize,
            scale,
            apex: (width as f32 / 2.0, 40.0 * scale),
            r_min: 20.0 * scale,
            r_max: 640.0 * scale,
            tan_half: HALF_ANGLE_DEG.to_radians().tan(),
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.apex.0, y - self.apex.1);
        let r2 = dx * dx + dy * dy;
        dy > 0.0 && dx.abs() <= dy * self.tan_half && r2 >= self.r_min * self.r_min && r2 <= self.r_max * self.r_max
    }

    fn bounds(&self) -> Rect {
        let (sin, cos) = HALF_ANGLE_DEG.to_radians().sin_cos();
        let x0 = (self.apex.0 - self.r_max * sin).floor().max(0.0) as usize;
        let x1 = ((self.apex.0 + self.r_max * sin).ceil() as usize).min(self.width);
        let y0 = (self.apex.1 + self.r_min * cos).floor().max(0.0) as usize;
        let y1 = ((self.apex.1 + self.r_max).ceil() as usize).min(self.height);
        Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }

    /// Brightness loss with depth and at the sector's edges (what TGC does not fully undo).
    fn gain(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.apex.0, y - self.apex.1);
        let r = (dx * dx + dy * dy).sqrt() / self.r_max;
        let edge = dx.abs() / (dy * self.tan_half);
        let lateral = if edge > 0.92 { 1.0 - (edge - 0.92) * 6.0 } else { 1.0 };
        (1.12 - 0.42 * r) * lateral
    }

    /// True when the box of half-size `reach` around `centre` lies inside the fan (it is convex
    /// once the box is below the apex's small inner arc).
    fn holds(&self, centre: (f32, f32), reach: (f32, f32)) -> bool {
        let (x0, x1, y0, y1) = (centre.0 - reach.0, centre.0 + reach.0, centre.1 - reach.1, centre.1 + reach.1);
        y0 > self.apex.1 + self.r_min && [(x0, y0), (x1, y0), (x0, y1), (x1, y1)].iter().all(|&(x, y)| self.contains(x, y))
    }
}

/// Angles in a spiculated lesion's outline table (a spike is at least 0.05 rad = 8 steps wide).
const BOUNDARY_STEPS: usize = 1024;

/// splitmix64: tiny, seedable, and good enough for textures; every stream is a pure function of
/// `(seed, stream, n)` so any segment can be rebuilt alone.
#[derive(Debug, Clone)]
struct SplitMix(u64);

const STREAM_KIND: u64 = 1;
const STREAM_SUBSTITUTE: u64 = 2;
const STREAM_PLAN: u64 = 3;
const STREAM_TEXTURE: u64 = 4;

impl SplitMix {
    fn stream(seed: u64, stream: u64, n: u64) -> SplitMix {
        SplitMix(mix(seed ^ mix(stream.wrapping_mul(0xA076_1D64_78BD_642F) ^ n.wrapping_mul(0xE703_7ED1_A0B4_28DB))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn smoothstep(lo: f32, hi: f32, x: f32) -> f32 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

// ---------------------------------------------------------------------------------------------
// Segment kinds and plans (cheap, pure: what `segment_of` and `lesion_of` need)

fn raw_kind(seed: u64, segment: u64) -> Truth {
    match SplitMix::stream(seed, STREAM_KIND, segment).unit() {
        u if u < 0.28 => Truth::Normal,
        u if u < 0.56 => Truth::Benign,
        u if u < 0.84 => Truth::Malignant,
        u if u < 0.92 => Truth::Frozen,
        _ => Truth::NoSignal,
    }
}

/// A segment's kind; a freeze needs a picture to freeze, so none opens the stream or follows a
/// black screen (substitutions never yield `NoSignal`, so looking one segment back is enough).
fn segment_kind(seed: u64, segment: u64) -> Truth {
    let raw = raw_kind(seed, segment);
    if raw == Truth::Frozen && (segment == 0 || raw_kind(seed, segment - 1) == Truth::NoSignal) {
        let pick = SplitMix::stream(seed, STREAM_SUBSTITUTE, segment).next_u64() % 3;
        return [Truth::Normal, Truth::Benign, Truth::Malignant][pick as usize];
    }
    raw
}

#[derive(Debug, Clone, Copy, Default)]
struct Spike {
    angle: f32,
    length: f32,
    half_width: f32,
}

/// Where a lesion is and what shape it has, in frame pixels.
#[derive(Debug, Clone, Copy)]
struct LesionShape {
    malignant: bool,
    centre: (f32, f32),
    /// Core semi-axes.
    rx: f32,
    ry: f32,
    spikes: [Spike; 14],
    spike_count: usize,
    /// Half-size of the box holding core and spikes.
    reach: (f32, f32),
    /// Probe motion over the whole segment.
    drift: (f32, f32),
}

impl LesionShape {
    fn draw(rng: &mut SplitMix, fan: &Fan, malignant: bool) -> LesionShape {
        let r = rng.range(45.0, 90.0) * fan.scale;
        let mut shape = if malignant { Self::spiculated(rng, r) } else { Self::oval(rng, r) };
        shape.drift = (rng.range(-4.0, 4.0) * fan.scale, rng.range(-3.0, 3.0) * fan.scale);
        shape.centre = shape.place(rng, fan);
        shape
    }

    /// Benign: smooth, wider than tall.
    fn oval(rng: &mut SplitMix, r: f32) -> LesionShape {
        let ry = r * rng.range(0.55, 0.75);
        let spikes = [Spike::default(); 14];
        LesionShape { malignant: false, centre: (0.0, 0.0), rx: r, ry, spikes, spike_count: 0, reach: (r, ry), drift: (0.0, 0.0) }
    }

    /// Malignant: taller than wide, 8-14 spikes reaching 40-80% beyond the core.
    fn spiculated(rng: &mut SplitMix, r: f32) -> LesionShape {
        let rx = r * rng.range(0.6, 0.8);
        let count = 8 + (rng.next_u64() % 7) as usize;
        let mut spikes = [Spike::default(); 14];
        for (i, spike) in spikes.iter_mut().take(count).enumerate() {
            let angle = 2.0 * PI * (i as f32 + rng.range(-0.3, 0.3)) / count as f32 - PI;
            *spike = Spike { angle, length: r * rng.range(0.4, 0.8), half_width: rng.range(0.05, 0.1) };
        }
        let longest = spikes.iter().map(|s| s.length).fold(0.0, f32::max);
        LesionShape { malignant: true, centre: (0.0, 0.0), rx, ry: r, spikes, spike_count: count, reach: (rx + longest, r + longest), drift: (0.0, 0.0) }
    }

    /// A centre 150-450 px below the apex with the whole lesion inside the fan all segment long.
    fn place(&self, rng: &mut SplitMix, fan: &Fan) -> (f32, f32) {
        for _ in 0..64 {
            let depth = rng.range(150.0, 450.0) * fan.scale;
            let centre = (fan.apex.0 + rng.range(-1.0, 1.0) * depth * fan.tan_half, fan.apex.1 + depth);
            if fan.holds(centre, self.travel_reach(fan)) {
                return centre;
            }
        }
        // Rarely needed: on the axis at this depth even the widest spiculated lesion fits.
        (fan.apex.0, fan.apex.1 + 430.0 * fan.scale)
    }

    fn travel_reach(&self, fan: &Fan) -> (f32, f32) {
        (self.reach.0 + self.drift.0.abs() + 2.0 * fan.scale, self.reach.1 + self.drift.1.abs() + 2.0 * fan.scale)
    }

    /// Whole-pixel shift at `progress` (0..1 through the segment), so patch and centre agree.
    fn offset(&self, progress: f32) -> (i64, i64) {
        ((self.drift.0 * progress).round() as i64, (self.drift.1 * progress).round() as i64)
    }

    /// Multiplicative echo gain at `(dx, dy)` from the centre: dark inside, and the band below.
    fn gain(&self, dx: f32, dy: f32, scale: f32, boundary: &[f32]) -> f32 {
        let inside = self.inside(dx, dy, boundary);
        let below = if dy > 0.0 && dx.abs() < self.rx { (1.0 - inside) * self.posterior(dx, dy, scale) } else { 0.0 };
        let body = 1.0 - if self.malignant { 0.78 } else { 0.75 } * inside;
        body * (1.0 + below)
    }

    /// 1 inside, 0 outside, a soft edge of a few pixels between; `boundary` is
    /// [`Self::boundary_table`] (spiculated lesions only).
    fn inside(&self, dx: f32, dy: f32, boundary: &[f32]) -> f32 {
        if !self.malignant {
            let q = ((dx / self.rx).powi(2) + (dy / self.ry).powi(2)).sqrt();
            return 1.0 - smoothstep(-2.0, 2.0, (q - 1.0) * self.ry);
        }
        let dist = (dx * dx + dy * dy).sqrt();
        if dist > self.reach.1.max(self.reach.0) + 2.0 {
            return 0.0; // beyond every spike: skip the atan2
        }
        let step = ((dy.atan2(dx) + PI) / (2.0 * PI) * BOUNDARY_STEPS as f32) as usize;
        1.0 - smoothstep(-1.5, 1.5, dist - boundary[step % BOUNDARY_STEPS])
    }

    /// The spiculated outline's radius at `BOUNDARY_STEPS` angles from -pi: the trig and the spike
    /// search are done once per angle instead of once per pixel.
    fn boundary_table(&self) -> Vec<f32> {
        let angle = |i: usize| -PI + 2.0 * PI * i as f32 / BOUNDARY_STEPS as f32;
        (0..BOUNDARY_STEPS).map(|i| self.core_radius(angle(i)) + self.spike_length(angle(i))).collect()
    }

    /// Lobulated ellipse radius at `angle`.
    fn core_radius(&self, angle: f32) -> f32 {
        let (sin, cos) = angle.sin_cos();
        let ellipse = 1.0 / ((cos / self.rx).powi(2) + (sin / self.ry).powi(2)).sqrt();
        ellipse * (1.0 + 0.08 * (3.0 * angle + self.spikes[0].angle).sin())
    }

    fn spike_length(&self, angle: f32) -> f32 {
        let reach = |s: &Spike| {
            let delta = (angle - s.angle + 3.0 * PI).rem_euclid(2.0 * PI) - PI;
            s.length * (1.0 - delta.abs() / s.half_width).max(0.0)
        };
        self.spikes[..self.spike_count].iter().map(reach).fold(0.0, f32::max)
    }

    /// Benign: enhancement (+) fading with depth; malignant: shadowing (-) that persists.
    fn posterior(&self, dx: f32, dy: f32, scale: f32) -> f32 {
        let taper = (1.0 - (dx / (0.9 * self.rx)).powi(2)).max(0.0);
        let lower_edge = self.ry * (1.0 - (dx / self.rx).powi(2)).max(0.0).sqrt();
        let below = (dy - lower_edge).max(0.0);
        if self.malignant {
            -0.65 * taper * smoothstep(0.0, 12.0 * scale, below) * (-below / (900.0 * scale)).exp()
        } else {
            0.45 * taper * smoothstep(0.0, 6.0 * scale, below) * (-below / (220.0 * scale)).exp()
        }
    }
}

/// A colour-Doppler box with vessels; `sign` +1 = towards the probe (red), -1 = away (blue).
#[derive(Debug, Clone, Copy)]
struct DopplerShape {
    rect: Rect,
    vessels: [(f32, f32, f32, f32, f32, f32); 3],
    phase: f32,
}

impl DopplerShape {
    /// A box fully inside the fan, clear of the lesion, in about half the segments.
    fn draw(rng: &mut SplitMix, fan: &Fan, lesion: Option<&LesionShape>) -> Option<DopplerShape> {
        if rng.unit() >= 0.5 {
            return None;
        }
        let (w, h) = (rng.range(150.0, 220.0) * fan.scale, rng.range(100.0, 150.0) * fan.scale);
        for _ in 0..32 {
            let depth = rng.range(110.0, 520.0) * fan.scale;
            let centre = (fan.apex.0 + rng.range(-0.8, 0.8) * depth * fan.tan_half, fan.apex.1 + depth);
            if fan.holds(centre, (w / 2.0, h / 2.0)) && !lesion.is_some_and(|l| overlaps(l, centre, (w, h), fan)) {
                let rect = Rect { x: (centre.0 - w / 2.0) as usize, y: (centre.1 - h / 2.0) as usize, w: w as usize, h: h as usize };
                return Some(DopplerShape { rect, vessels: Self::vessels(rng, rect, fan.scale), phase: rng.range(0.0, 2.0 * PI) });
            }
        }
        None // no room beside this lesion: this segment has no Doppler
    }

    /// Three vessel segments `(x0, y0, x1, y1, radius, sign)` in box coordinates.
    fn vessels(rng: &mut SplitMix, rect: Rect, scale: f32) -> [(f32, f32, f32, f32, f32, f32); 3] {
        let (w, h) = (rect.w as f32, rect.h as f32);
        std::array::from_fn(|i| {
            let (y0, slope, length) = (rng.range(0.2, 0.8) * h, rng.range(-0.4, 0.4), rng.range(0.4, 1.0) * w);
            let x0 = rng.range(0.0, w - length);
            let sign = if i == 1 { -1.0 } else { 1.0 };
            (x0, y0, x0 + length, y0 + slope * length, rng.range(5.0, 11.0) * scale, sign)
        })
    }

    /// Flow at `(x, y)` in the box: signed, 1 on a vessel's axis, 0 outside it.
    fn flow(&self, x: f32, y: f32) -> f32 {
        let mut best = 0.0f32;
        for &(x0, y0, x1, y1, radius, sign) in &self.vessels {
            let (vx, vy) = (x1 - x0, y1 - y0);
            let t = (((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
            let d2 = (x - x0 - t * vx).powi(2) + (y - y0 - t * vy).powi(2);
            let v = (1.0 - d2 / (radius * radius)).max(0.0);
            if v > best.abs() {
                best = sign * v;
            }
        }
        best
    }
}

fn overlaps(lesion: &LesionShape, centre: (f32, f32), size: (f32, f32), fan: &Fan) -> bool {
    let (rx, ry) = lesion.travel_reach(fan);
    let margin = 8.0 * fan.scale;
    (lesion.centre.0 - centre.0).abs() < rx + size.0 / 2.0 + margin && (lesion.centre.1 - centre.1).abs() < ry + size.1 / 2.0 + margin
}

/// Everything random about a segment that is cheap to draw.
#[derive(Debug, Clone, Copy)]
struct Plan {
    lesion: Option<LesionShape>,
    doppler: Option<DopplerShape>,
}

impl Plan {
    fn draw(seed: u64, segment: u64, fan: &Fan) -> Plan {
        let kind = segment_kind(seed, segment);
        let mut rng = SplitMix::stream(seed, STREAM_PLAN, segment);
        let lesion = matches!(kind, Truth::Benign | Truth::Malignant).then(|| LesionShape::draw(&mut rng, fan, kind == Truth::Malignant));
        let doppler = match kind {
            Truth::Normal | Truth::Benign | Truth::Malignant => DopplerShape::draw(&mut rng, fan, lesion.as_ref()),
            _ => None,
        };
        Plan { lesion, doppler }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-segment textures (built once per segment, reused for all its frames)

/// Horizontal tissue layers with wavy boundaries: skin, fat, gland, fascia, striated muscle.
struct Layers {
    fat_end: Vec<f32>,
    gland_end: Vec<f32>,
    stripes: Vec<f32>,
    stripe_slope: f32,
}

impl Layers {
    fn draw(rng: &mut SplitMix, area: Rect, scale: f32) -> Layers {
        let (fat_depth, gland_depth) = (rng.range(95.0, 130.0), rng.range(380.0, 450.0));
        let fat_end = Self::boundary(rng, area, scale, fat_depth, 12.0);
        let gland_end = Self::boundary(rng, area, scale, gland_depth, 25.0);
        let period = rng.range(14.0, 22.0) as usize;
        let stripes = (0..period).map(|i| (0.5 + 0.5 * (2.0 * PI * i as f32 / period as f32).cos()).powi(6)).collect();
        Layers { fat_end, gland_end, stripes, stripe_slope: rng.range(-0.08, 0.08) }
    }

    /// Depth (reference pixels) of a boundary per column: a mean plus two slow waves.
    fn boundary(rng: &mut SplitMix, area: Rect, scale: f32, mean: f32, amplitude: f32) -> Vec<f32> {
        let waves: [(f32, f32, f32); 2] = std::array::from_fn(|_| (rng.range(0.3, 1.0) * amplitude, 2.0 * PI / rng.range(150.0, 400.0), rng.range(0.0, 2.0 * PI)));
        let at = |col: usize| {
            let x = col as f32 / scale;
            mean + waves.iter().map(|&(a, f, p)| a * (x * f + p).sin()).sum::<f32>()
        };
        (0..area.w).map(at).collect()
    }

    /// Echo strength (0-255 before gain) at `depth` reference pixels below the apex.
    fn echo(&self, col: usize, depth: f32, scale: f32) -> f32 {
        match depth {
            d if d < 30.0 => 170.0,
            d if d < 38.0 => 95.0,
            d if d < self.fat_end[col] => 62.0,
            d if d < self.gland_end[col] => 118.0,
            d if d < self.gland_end[col] + 12.0 => 165.0,
            d => {
                let i = (d + self.stripe_slope * col as f32 / scale).max(0.0) as usize % self.stripes.len();
                78.0 + 45.0 * self.stripes[i]
            }
        }
    }
}

/// Slow brightness variation (about +-20%) on a coarse grid, bilinearly interpolated.
struct CoarseNoise {
    cols: usize,
    cell: f32,
    grid: Vec<f32>,
}

impl CoarseNoise {
    fn draw(rng: &mut SplitMix, area: Rect, cell: f32) -> CoarseNoise {
        let cols = (area.w as f32 / cell) as usize + 2;
        let rows = (area.h as f32 / cell) as usize + 2;
        CoarseNoise { cols, cell, grid: (0..cols * rows).map(|_| rng.range(0.8, 1.2)).collect() }
    }

    fn at(&self, col: usize, row: usize) -> f32 {
        let (fx, fy) = (col as f32 / self.cell, row as f32 / self.cell);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let g = |x: usize, y: usize| self.grid[y * self.cols + x];
        let top = g(ix, iy) + tx * (g(ix + 1, iy) - g(ix, iy));
        let bottom = g(ix, iy + 1) + tx * (g(ix + 1, iy + 1) - g(ix, iy + 1));
        top + ty * (bottom - top)
    }
}

/// Tissue brightness over the fan's box; 0 marks pixels outside the fan (left as chrome).
fn fill_tissue(fan: &Fan, area: Rect, rng: &mut SplitMix, map: &mut [f32]) {
    let layers = Layers::draw(rng, area, fan.scale);
    let texture = CoarseNoise::draw(rng, area, 40.0 * fan.scale);
    for (row, line) in map.chunks_exact_mut(area.w).enumerate() {
        let y = (area.y + row) as f32 + 0.5;
        let depth = (y - fan.apex.1) / fan.scale;
        for (col, v) in line.iter_mut().enumerate() {
            let x = (area.x + col) as f32 + 0.5;
            *v = if fan.contains(x, y) { layers.echo(col, depth, fan.scale) * texture.at(col, row) * fan.gain(x, y) } else { 0.0 };
        }
    }
}

/// Rayleigh-distributed amplitudes (mean 1) for 10 random bits: speckle without a log per pixel.
fn rayleigh_table() -> Vec<f32> {
    let norm = (PI / 2.0).sqrt();
    (0..1024).map(|i| (-2.0 * (1.0 - (i as f32 + 0.5) / 1024.0).ln()).sqrt() / norm).collect()
}

/// A speckle field stored as deviation from 1, smoothed more across than along the beam (lateral
/// resolution is the worse one).
fn fill_speckle(rng: &mut SplitMix, table: &[f32], field: &mut [f32], width: usize) {
    for chunk in field.chunks_mut(6) {
        let mut bits = rng.next_u64();
        for v in chunk {
            *v = table[(bits & 1023) as usize];
            bits >>= 10;
        }
    }
    for line in field.chunks_exact_mut(width) {
        smooth_line(line);
    }
    for i in 0..field.len().saturating_sub(width) {
        field[i] = 0.5 * (field[i] + field[i + width]); // the row below is not smoothed yet
    }
    for v in field.iter_mut() {
        *v -= 1.0;
    }
}

/// In place `[1, 2, 1] / 4`.
fn smooth_line(line: &mut [f32]) {
    let mut previous = line[0];
    for i in 1..line.len().saturating_sub(1) {
        let current = line[i];
        line[i] = 0.25 * previous + 0.5 * current + 0.25 * line[i + 1];
        previous = current;
    }
}

/// A rectangle of per-pixel values placed in the frame at `(x, y)`.
#[derive(Default)]
struct Patch {
    x: i64,
    y: i64,
    w: usize,
    h: usize,
    values: Vec<f32>,
}

/// The lesion's gain from its top down to below the fan's bottom (the posterior band), with room
/// for the drift.
fn lesion_patch(shape: &LesionShape, fan: &Fan, area: Rect, patch: &mut Patch) {
    let (rx, ry) = shape.travel_reach(fan);
    patch.x = (shape.centre.0 - rx).floor() as i64;
    patch.y = (shape.centre.1 - ry).floor() as i64;
    patch.w = (2.0 * rx).ceil() as usize + 1;
    patch.h = ((area.y + area.h) as i64 - patch.y + shape.drift.1.abs().ceil() as i64 + 1) as usize;
    patch.values.clear();
    let boundary = if shape.malignant { shape.boundary_table() } else { Vec::new() };
    for row in 0..patch.h {
        let dy = (patch.y + row as i64) as f32 + 0.5 - shape.centre.1;
        let xs = (0..patch.w).map(|col| (patch.x + col as i64) as f32 + 0.5 - shape.centre.0);
        patch.values.extend(xs.map(|dx| shape.gain(dx, dy, fan.scale, &boundary)));
    }
}

fn doppler_patch(shape: &DopplerShape, patch: &mut Patch) {
    let r = shape.rect;
    (patch.x, patch.y, patch.w, patch.h) = (r.x as i64, r.y as i64, r.w, r.h);
    patch.values.clear();
    for row in 0..r.h {
        patch.values.extend((0..r.w).map(|col| shape.flow(col as f32 + 0.5, row as f32 + 0.5)));
    }
}

/// One segment's cached plan and textures; buffers are reused from segment to segment.
struct Segment {
    number: Option<u64>,
    plan: Option<Plan>,
    tissue: Vec<f32>,
    speckle: [Vec<f32>; 2],
    lesion: Patch,
    flow: Patch,
}

// ---------------------------------------------------------------------------------------------
// The renderer

/// Deterministic renderer of phantom frames (packed RGB24).
pub struct Phantom {
    seed: u64,
    segment_frames: u64,
    fan: Fan,
    area: Rect,
    /// Background, text and ruler: copied under every frame with a picture.
    chrome: Vec<u8>,
    rayleigh: Vec<f32>,
    segment: Segment,
    line: Vec<f32>,
}

impl Phantom {
    pub fn new(cfg: &PhantomConfig) -> Phantom {
        let fan = Fan::new(cfg.width, cfg.height);
        let area = fan.bounds();
        let mut chrome = vec![0; fan.width * fan.height * 3];
        draw_chrome(&fan, cfg.seed, &mut chrome);
        let n = area.w * area.h;
        let segment = Segment { number: None, plan: None, tissue: vec![0.0; n], speckle: [vec![0.0; n], vec![0.0; n]], lesion: Patch::default(), flow: Patch::default() };
        Phantom { seed: cfg.seed, segment_frames: cfg.segment_frames.max(1) as u64, fan, area, chrome, rayleigh: rayleigh_table(), segment, line: vec![0.0; area.w] }
    }

    /// Bytes of one frame (`width * height * 3`).
    pub fn frame_len(&self) -> usize {
        self.chrome.len()
    }

    /// The truth of frame `index`.
    pub fn segment_of(&self, index: u64) -> Truth {
        segment_kind(self.seed, index / self.segment_frames)
    }

    /// The lesion visible in frame `index` as `(cx, cy, r)` in frame pixels (`r` = the core's
    /// larger semi-axis), or `None` when it shows none.
    pub fn lesion_of(&self, index: u64) -> Option<(f32, f32, f32)> {
        let source = self.source_index(index);
        let shape = Plan::draw(self.seed, source / self.segment_frames, &self.fan).lesion?;
        let (ox, oy) = shape.offset(self.progress(source));
        Some((shape.centre.0 + ox as f32, shape.centre.1 + oy as f32, shape.rx.max(shape.ry)))
    }

    /// Writes frame `index` into `out` (`width * height * 3` bytes, else it panics) and returns
    /// its truth.
    pub fn render(&mut self, index: u64, out: &mut [u8]) -> Truth {
        assert_eq!(out.len(), self.frame_len(), "render needs a {}x{} RGB24 buffer", self.fan.width, self.fan.height);
        let truth = self.segment_of(index);
        let source = self.source_index(index);
        if self.segment_of(source) == Truth::NoSignal {
            draw_no_signal(&self.fan, out);
            return truth;
        }
        self.prepare(source / self.segment_frames);
        out.copy_from_slice(&self.chrome);
        self.draw_fan(source, out);
        self.draw_doppler(source, out);
        truth
    }

    /// The frame a frozen one repeats (itself otherwise): the last frame of the nearest segment
    /// before that is not frozen.
    fn source_index(&self, index: u64) -> u64 {
        let (mut segment, mut source) = (index / self.segment_frames, index);
        while segment > 0 && segment_kind(self.seed, segment) == Truth::Frozen {
            source = segment * self.segment_frames - 1;
            segment -= 1;
        }
        source
    }

    fn frame_in_segment(&self, index: u64) -> u64 {
        index % self.segment_frames
    }

    /// 0 at a segment's first frame, 1 at its last.
    fn progress(&self, index: u64) -> f32 {
        self.frame_in_segment(index) as f32 / (self.segment_frames - 1).max(1) as f32
    }

    /// Builds segment `number`'s textures unless they are cached.
    fn prepare(&mut self, number: u64) {
        if self.segment.number == Some(number) {
            return;
        }
        let plan = Plan::draw(self.seed, number, &self.fan);
        let mut rng = SplitMix::stream(self.seed, STREAM_TEXTURE, number);
        let seg = &mut self.segment;
        fill_tissue(&self.fan, self.area, &mut rng, &mut seg.tissue);
        for field in &mut seg.speckle {
            fill_speckle(&mut rng, &self.rayleigh, field, self.area.w);
        }
        if let Some(shape) = &plan.lesion {
            lesion_patch(shape, &self.fan, self.area, &mut seg.lesion);
        }
        if let Some(shape) = &plan.doppler {
            doppler_patch(shape, &mut seg.flow);
        }
        (seg.number, seg.plan) = (Some(number), Some(plan));
    }

    /// Tissue times speckle times lesion gain, written as grey over the fan's pixels.
    fn draw_fan(&mut self, index: u64, out: &mut [u8]) {
        // Rotating between two speckle fields keeps the statistics and changes every pixel a
        // little per frame, as real speckle does (and as the frozen-frame detector needs).
        let (sin, cos) = (self.frame_in_segment(index) as f32 * 0.25).sin_cos();
        let plan = self.segment.plan.expect("prepared");
        let offset = plan.lesion.map(|l| l.offset(self.progress(index)));
        let (area, w) = (self.area, self.area.w);
        for row in 0..area.h {
            let tissue = &self.segment.tissue[row * w..][..w];
            let (a, b) = (&self.segment.speckle[0][row * w..][..w], &self.segment.speckle[1][row * w..][..w]);
            for (col, v) in self.line.iter_mut().enumerate() {
                *v = tissue[col] * (1.0 + cos * a[col] + sin * b[col]);
            }
            if let Some((ox, oy)) = offset {
                apply_patch(&self.segment.lesion, (ox, oy), area, row, &mut self.line);
            }
            let start = ((area.y + row) * self.fan.width + area.x) * 3;
            write_grey(tissue, &self.line, &mut out[start..start + w * 3]);
        }
    }

    /// Colour flow inside the Doppler box, pulsing with a heartbeat, and the box's outline.
    fn draw_doppler(&self, index: u64, out: &mut [u8]) {
        let Some(shape) = self.segment.plan.and_then(|p| p.doppler) else { return };
        let beat = 0.5 + 0.5 * (2.0 * PI * self.frame_in_segment(index) as f32 / 10.0 + shape.phase).sin();
        let threshold = 0.55 - 0.45 * beat;
        let (r, flow) = (shape.rect, &self.segment.flow.values);
        for row in 0..r.h {
            for col in 0..r.w {
                let v = flow[row * r.w + col];
                if v.abs() > threshold {
                    put(out, self.fan.width, r.x + col, r.y + row, flow_colour(v, beat));
                }
            }
        }
        outline(out, &self.fan, r, DOPPLER_BOX);
        draw_colour_bar(out, &self.fan, self.area);
    }
}

/// Multiplies the part of `line` (fan box row `row`) that the patch, shifted by `offset`, covers.
fn apply_patch(patch: &Patch, offset: (i64, i64), area: Rect, row: usize, line: &mut [f32]) {
    let patch_row = (area.y + row) as i64 - (patch.y + offset.1);
    if patch_row < 0 || patch_row >= patch.h as i64 {
        return;
    }
    let left = patch.x + offset.0 - area.x as i64; // patch column 0 in line coordinates
    let from = left.max(0);
    let to = (left + patch.w as i64).min(line.len() as i64);
    let values = &patch.values[patch_row as usize * patch.w..][..patch.w];
    for x in from..to {
        line[x as usize] *= values[(x - left) as usize];
    }
}

fn write_grey(tissue: &[f32], line: &[f32], out: &mut [u8]) {
    for ((t, v), px) in tissue.iter().zip(line).zip(out.chunks_exact_mut(3)) {
        if *t > 0.0 {
            let g = v.clamp(0.0, 255.0) as u8;
            px.copy_from_slice(&[g, g, g]);
        }
    }
}

/// Red towards the probe, blue away; brighter with speed and at systole.
fn flow_colour(v: f32, beat: f32) -> [u8; 3] {
    let m = v.abs() * (0.6 + 0.4 * beat);
    let (strong, weak) = ((110.0 + 145.0 * m) as u8, (12.0 + 30.0 * m) as u8);
    if v > 0.0 { [strong, weak, 12] } else { [12, weak + 20, strong] }
}

// ---------------------------------------------------------------------------------------------
// Screen chrome: text, ruler, colour bar, the no-signal screen

fn put(out: &mut [u8], width: usize, x: usize, y: usize, rgb: [u8; 3]) {
    let i = (y * width + x) * 3;
    if x < width && i + 3 <= out.len() {
        out[i..i + 3].copy_from_slice(&rgb);
    }
}

fn fill_rect(out: &mut [u8], width: usize, r: Rect, rgb: [u8; 3]) {
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            put(out, width, x, y, rgb);
        }
    }
}

fn outline(out: &mut [u8], fan: &Fan, r: Rect, rgb: [u8; 3]) {
    let t = (fan.scale.round() as usize).max(1);
    for edge in [Rect { h: t, ..r }, Rect { y: r.y + r.h - t, h: t, ..r }, Rect { w: t, ..r }, Rect { x: r.x + r.w - t, w: t, ..r }] {
        fill_rect(out, fan.width, edge, rgb);
    }
}

fn draw_chrome(fan: &Fan, seed: u64, out: &mut [u8]) {
    for px in out.chunks_exact_mut(3) {
        px.copy_from_slice(&BACKGROUND);
    }
    let (s, ts) = (fan.scale, text_scale(fan.scale));
    let id = format!("ID {:08}", seed % 100_000_000);
    let left = (16.0 * s) as usize;
    draw_lines(out, fan.width, (left, (12.0 * s) as usize), ts, &["SONOEDGE PHANTOM", "DOE JANE", &id, "2024-03-14 10:22:05"]);
    let bottom = fan.height.saturating_sub((16.0 * s) as usize + 30 * ts);
    draw_lines(out, fan.width, (left, bottom), ts, &["L12-5 BREAST LT", "GN 52 DR 60", "FR 15HZ D 10CM"]);
    let right = fan.width.saturating_sub((16.0 * s) as usize + 14 * 6 * ts);
    draw_lines(out, fan.width, (right, (12.0 * s) as usize), ts, &["MI 0.9 TIS 0.3", "B 12MHZ"]);
    draw_ruler(fan, out);
}

fn text_scale(scale: f32) -> usize {
    ((2.0 * scale).round() as usize).max(1)
}

fn draw_lines(out: &mut [u8], width: usize, at: (usize, usize), ts: usize, lines: &[&str]) {
    for (i, line) in lines.iter().enumerate() {
        draw_text(out, width, (at.0, at.1 + i * 10 * ts), ts, TEXT, line);
    }
}

/// Depth scale right of the fan: a tick every 0.5 cm (32 reference px), numbers every 2 cm.
fn draw_ruler(fan: &Fan, out: &mut [u8]) {
    let s = fan.scale;
    let t = (s.round() as usize).max(1);
    let bounds = fan.bounds();
    let x = bounds.x + bounds.w + (24.0 * s) as usize;
    let (top, bottom) = (fan.apex.1 as usize, ((fan.apex.1 + fan.r_max) as usize).min(fan.height - 1));
    fill_rect(out, fan.width, Rect { x, y: top, w: t, h: bottom - top }, RULER);
    for tick in 0..=20usize {
        let y = top + (tick as f32 * 32.0 * s) as usize;
        if y > bottom {
            break;
        }
        let length = (if tick % 2 == 0 { 10.0 * s } else { 5.0 * s }) as usize;
        fill_rect(out, fan.width, Rect { x, y, w: length.max(1), h: t }, RULER);
        if tick % 4 == 0 {
            let ts = text_scale(s);
            draw_text(out, fan.width, (x + (14.0 * s) as usize, y.saturating_sub(3 * ts)), ts, RULER, &(tick / 2).to_string());
        }
    }
}

/// The legend a machine shows beside a Doppler image: red (towards) above blue (away).
fn draw_colour_bar(out: &mut [u8], fan: &Fan, area: Rect) {
    let s = fan.scale;
    let (x, w) = (area.x.saturating_sub((24.0 * s) as usize), ((10.0 * s) as usize).max(1));
    let (top, h) = ((120.0 * s) as usize, ((160.0 * s) as usize).max(2));
    for row in 0..h {
        let v = 1.0 - 2.0 * (row as f32 + 0.5) / h as f32;
        fill_rect(out, fan.width, Rect { x, y: top + row, w, h: 1 }, flow_colour(v, 1.0));
    }
}

fn draw_no_signal(fan: &Fan, out: &mut [u8]) {
    out.fill(0);
    let ts = text_scale(fan.scale);
    let at = ((fan.width / 2).saturating_sub(27 * ts), fan.height / 2);
    draw_text(out, fan.width, at, ts, [90, 90, 90], "NO SIGNAL");
}

/// Blocky 5x7 glyphs, `ts` screen pixels per font pixel, 6 font pixels per character.
fn draw_text(out: &mut [u8], width: usize, at: (usize, usize), ts: usize, rgb: [u8; 3], text: &str) {
    for (i, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in (0..5).filter(|col| bits & (0x10 >> col) != 0) {
                let (x, y) = (at.0 + (i * 6 + col) * ts, at.1 + row * ts);
                fill_rect(out, width, Rect { x, y, w: ts, h: ts }, rgb);
            }
        }
    }
}

/// Rows top to bottom, bit 4 = leftmost column (the HD44780 character ROM's shapes).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        _ => [0; 7],
    }
}

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
        assert_eq!([Truth::Benign.label(), Truth::Malignant.label(), Truth::Normal.label()], [Some("benign"), Some("malignant"), Some("normal")]);
        assert_eq!((Truth::Frozen.label(), Truth::NoSignal.label()), (None, None));
        assert_eq!(serde_json::to_string(&Truth::NoSignal).unwrap(), "\"nosignal\"");
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
                assert!(!(kind == Truth::Frozen && segment_kind(seed, k - 1) == Truth::NoSignal), "seed {seed} segment {k}");
                *counts.entry(kind).or_insert(0.0) += 1.0 / 3996.0;
            }
        }
        for (kind, lo, hi) in [(Truth::Normal, 0.24, 0.34), (Truth::Benign, 0.24, 0.34), (Truth::Malignant, 0.24, 0.34), (Truth::Frozen, 0.05, 0.11), (Truth::NoSignal, 0.05, 0.11)] {
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
            (rect.y..rect.y + rect.h).flat_map(|y| (rect.x..rect.x + rect.w).map(move |x| (x, y))).filter(|&(x, y)| px(x, y)[0] as i32 > px(x, y)[1] as i32 + 60).count()
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
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("truth.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
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
        for kind in [Truth::Normal, Truth::Benign, Truth::Malignant, Truth::Frozen, Truth::NoSignal] {
            let i = first_of(&p, kind) + 20;
            save_png(&dir.join(format!("{kind:?}.png").to_lowercase()), &frame(&mut p, i), 1280, None).unwrap();
        }
        let k = (0..500).find(|&k| Plan::draw(7, k, &p.fan).doppler.is_some_and(|_| segment_kind(7, k) != Truth::Normal)).unwrap();
        save_png(&dir.join(format!("doppler-{:?}.png", segment_kind(7, k)).to_lowercase()), &frame(&mut p, k * 40 + 5), 1280, None).unwrap();
    }
}
