//! Phantom geometry and randomness: pixel rectangles, the B-mode fan, the seeded generator.

use super::*;

/// A pixel rectangle inside the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rect {
    pub(super) x: usize,
    pub(super) y: usize,
    pub(super) w: usize,
    pub(super) h: usize,
}

/// The B-mode sector: angles measured from straight down, pixel centres at `+0.5`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fan {
    pub(super) width: usize,
    pub(super) height: usize,
    /// Pixels per reference (1280x720) pixel.
    pub(super) scale: f32,
    pub(super) apex: (f32, f32),
    pub(super) r_min: f32,
    pub(super) r_max: f32,
    pub(super) tan_half: f32,
}

impl Fan {
    pub(super) fn new(width: u32, height: u32) -> Fan {
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

    pub(super) fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.apex.0, y - self.apex.1);
        let r2 = dx * dx + dy * dy;
        dy > 0.0 && dx.abs() <= dy * self.tan_half && r2 >= self.r_min * self.r_min && r2 <= self.r_max * self.r_max
    }

    pub(super) fn bounds(&self) -> Rect {
        let (sin, cos) = HALF_ANGLE_DEG.to_radians().sin_cos();
        let x0 = (self.apex.0 - self.r_max * sin).floor().max(0.0) as usize;
        let x1 = ((self.apex.0 + self.r_max * sin).ceil() as usize).min(self.width);
        let y0 = (self.apex.1 + self.r_min * cos).floor().max(0.0) as usize;
        let y1 = ((self.apex.1 + self.r_max).ceil() as usize).min(self.height);
        Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }

    /// Brightness loss with depth and at the sector's edges (what TGC does not fully undo).
    pub(super) fn gain(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.apex.0, y - self.apex.1);
        let r = (dx * dx + dy * dy).sqrt() / self.r_max;
        let edge = dx.abs() / (dy * self.tan_half);
        let lateral = if edge > 0.92 { 1.0 - (edge - 0.92) * 6.0 } else { 1.0 };
        (1.12 - 0.42 * r) * lateral
    }

    /// True when the box of half-size `reach` around `centre` lies inside the fan (it is convex
    /// once the box is below the apex's small inner arc).
    pub(super) fn holds(&self, centre: (f32, f32), reach: (f32, f32)) -> bool {
        let (x0, x1, y0, y1) = (centre.0 - reach.0, centre.0 + reach.0, centre.1 - reach.1, centre.1 + reach.1);
        y0 > self.apex.1 + self.r_min && [(x0, y0), (x1, y0), (x0, y1), (x1, y1)].iter().all(|&(x, y)| self.contains(x, y))
    }
}

/// Angles in a spiculated lesion's outline table (a spike is at least 0.05 rad = 8 steps wide).
pub(super) const BOUNDARY_STEPS: usize = 1024;

/// splitmix64: tiny, seedable, and good enough for textures; every stream is a pure function of
/// `(seed, stream, n)` so any segment can be rebuilt alone.
#[derive(Debug, Clone)]
pub(super) struct SplitMix(u64);

pub(super) const STREAM_KIND: u64 = 1;
pub(super) const STREAM_SUBSTITUTE: u64 = 2;
pub(super) const STREAM_PLAN: u64 = 3;
pub(super) const STREAM_TEXTURE: u64 = 4;
pub(super) const STREAM_CONTACT: u64 = 5;
pub(super) const STREAM_LIFTED: u64 = 6;

impl SplitMix {
    pub(super) fn stream(seed: u64, stream: u64, n: u64) -> SplitMix {
        SplitMix(mix(seed ^ mix(stream.wrapping_mul(0xA076_1D64_78BD_642F) ^ n.wrapping_mul(0xE703_7ED1_A0B4_28DB))))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub(super) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn smoothstep(lo: f32, hi: f32, x: f32) -> f32 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}
