//! Phantom textures built once per segment: tissue, speckle, lesion and Doppler patches.

use super::*;

/// Horizontal tissue layers with wavy boundaries: skin, fat, gland, fascia, striated muscle.
pub(super) struct Layers {
    pub(super) fat_end: Vec<f32>,
    pub(super) gland_end: Vec<f32>,
    pub(super) stripes: Vec<f32>,
    pub(super) stripe_slope: f32,
}

impl Layers {
    pub(super) fn draw(rng: &mut SplitMix, area: Rect, scale: f32) -> Layers {
        let (fat_depth, gland_depth) = (rng.range(95.0, 130.0), rng.range(380.0, 450.0));
        let fat_end = Self::boundary(rng, area, scale, fat_depth, 12.0);
        let gland_end = Self::boundary(rng, area, scale, gland_depth, 25.0);
        let period = rng.range(14.0, 22.0) as usize;
        let stripes = (0..period).map(|i| (0.5 + 0.5 * (2.0 * PI * i as f32 / period as f32).cos()).powi(6)).collect();
        Layers { fat_end, gland_end, stripes, stripe_slope: rng.range(-0.08, 0.08) }
    }

    /// Depth (reference pixels) of a boundary per column: a mean plus two slow waves.
    pub(super) fn boundary(rng: &mut SplitMix, area: Rect, scale: f32, mean: f32, amplitude: f32) -> Vec<f32> {
        let waves: [(f32, f32, f32); 2] =
            std::array::from_fn(|_| (rng.range(0.3, 1.0) * amplitude, 2.0 * PI / rng.range(150.0, 400.0), rng.range(0.0, 2.0 * PI)));
        let at = |col: usize| {
            let x = col as f32 / scale;
            mean + waves.iter().map(|&(a, f, p)| a * (x * f + p).sin()).sum::<f32>()
        };
        (0..area.w).map(at).collect()
    }

    /// Echo strength (0-255 before gain) at `depth` reference pixels below the apex.
    pub(super) fn echo(&self, col: usize, depth: f32, scale: f32) -> f32 {
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
pub(super) struct CoarseNoise {
    pub(super) cols: usize,
    pub(super) cell: f32,
    pub(super) grid: Vec<f32>,
}

impl CoarseNoise {
    pub(super) fn draw(rng: &mut SplitMix, area: Rect, cell: f32) -> CoarseNoise {
        let cols = (area.w as f32 / cell) as usize + 2;
        let rows = (area.h as f32 / cell) as usize + 2;
        CoarseNoise { cols, cell, grid: (0..cols * rows).map(|_| rng.range(0.8, 1.2)).collect() }
    }

    pub(super) fn at(&self, col: usize, row: usize) -> f32 {
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
pub(super) fn fill_tissue(fan: &Fan, area: Rect, rng: &mut SplitMix, map: &mut [f32]) {
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
pub(super) fn rayleigh_table() -> Vec<f32> {
    let norm = (PI / 2.0).sqrt();
    (0..1024).map(|i| (-2.0 * (1.0 - (i as f32 + 0.5) / 1024.0).ln()).sqrt() / norm).collect()
}

/// A speckle field stored as deviation from 1, smoothed more across than along the beam (lateral
/// resolution is the worse one).
pub(super) fn fill_speckle(rng: &mut SplitMix, table: &[f32], field: &mut [f32], width: usize) {
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
pub(super) fn smooth_line(line: &mut [f32]) {
    let mut previous = line[0];
    for i in 1..line.len().saturating_sub(1) {
        let current = line[i];
        line[i] = 0.25 * previous + 0.5 * current + 0.25 * line[i + 1];
        previous = current;
    }
}

/// A rectangle of per-pixel values placed in the frame at `(x, y)`.
#[derive(Default)]
pub(super) struct Patch {
    pub(super) x: i64,
    pub(super) y: i64,
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) values: Vec<f32>,
}

/// The lesion's gain from its top down to below the fan's bottom (the posterior band), with room
/// for the drift.
pub(super) fn lesion_patch(shape: &LesionShape, fan: &Fan, area: Rect, patch: &mut Patch) {
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

pub(super) fn doppler_patch(shape: &DopplerShape, patch: &mut Patch) {
    let r = shape.rect;
    (patch.x, patch.y, patch.w, patch.h) = (r.x as i64, r.y as i64, r.w, r.h);
    patch.values.clear();
    for row in 0..r.h {
        patch.values.extend((0..r.w).map(|col| shape.flow(col as f32 + 0.5, row as f32 + 0.5)));
    }
}

/// One segment's cached plan and textures; buffers are reused from segment to segment.
pub(super) struct Segment {
    pub(super) number: Option<u64>,
    pub(super) plan: Option<Plan>,
    pub(super) tissue: Vec<f32>,
    pub(super) speckle: [Vec<f32>; 2],
    pub(super) lesion: Patch,
    pub(super) flow: Patch,
}
