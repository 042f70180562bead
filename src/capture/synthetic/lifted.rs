//! The probe-lifted sector: what a machine shows with the probe off the skin. The screen chrome
//! stays; the sector holds no tissue, only one of three looks drawn per segment: a dark noise
//! floor, near-field reverberation arcs (ring-down parallel to the skin line) over that floor, or
//! a uniform grey (gain turned up on nothing). The noise changes every frame, as a live but empty
//! image does.

use super::*;

/// One segment's look, in grey levels and reference pixels of depth below the skin line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifted {
    floor: f32,
    /// Half-width of the uniform per-pixel noise.
    noise: f32,
    arcs: u32,
    arc_gain: f32,
    arc_spacing: f32,
}

impl Lifted {
    pub(super) fn draw(seed: u64, segment: u64) -> Lifted {
        let mut rng = SplitMix::stream(seed, STREAM_LIFTED, segment);
        let look = rng.next_u64() % 3;
        let (floor, noise) = match look {
            2 => (rng.range(45.0, 90.0), rng.range(2.0, 4.0)),
            _ => (rng.range(14.0, 24.0), rng.range(2.0, 5.0)),
        };
        let arcs = if look == 1 { 2 + (rng.next_u64() % 4) as u32 } else { 0 };
        Lifted { floor, noise, arcs, arc_gain: rng.range(120.0, 190.0), arc_spacing: rng.range(9.0, 15.0) }
    }

    /// Reverberation at `depth` reference pixels below the skin line: each echo of the lens is
    /// weaker than the one before.
    fn ring_down(&self, depth: f32) -> f32 {
        let mut v = 0.0;
        for k in 0..self.arcs {
            let d = (depth - k as f32 * self.arc_spacing) / 1.6;
            if d.abs() < 4.0 {
                v += self.arc_gain * 0.6f32.powi(k as i32) * (-d * d).exp();
            }
        }
        v
    }
}

/// Draws the lifted sector of frame `index` over the chrome already in `out`.
pub(super) fn draw_lifted(fan: &Fan, area: Rect, look: &Lifted, index: u64, seed: u64, out: &mut [u8]) {
    let mut rng = SplitMix::stream(seed, STREAM_LIFTED, index ^ (1 << 63));
    for row in 0..area.h {
        let y = (area.y + row) as f32 + 0.5;
        let mut bits = rng.next_u64();
        for col in 0..area.w {
            let x = (area.x + col) as f32 + 0.5;
            if !fan.contains(x, y) {
                continue;
            }
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let noise = ((bits >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * look.noise;
            let depth = (((x - fan.apex.0).powi(2) + (y - fan.apex.1).powi(2)).sqrt() - fan.r_min) / fan.scale;
            let g = (look.floor + look.ring_down(depth) + noise).clamp(0.0, 255.0) as u8;
            put(out, fan.width, area.x + col, area.y + row, [g, g, g]);
        }
    }
}
