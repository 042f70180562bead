//! Convolution resampling computed exactly as Pillow's `Image.resize` does it for 8-bit images
//! (libImaging/Resample.c): the same filters and supports, antialiasing when shrinking, 22-bit
//! fixed-point coefficients, a horizontal pass into an 8-bit intermediate, then a vertical pass.
//!
//! Why not a general-purpose resizer: the model was trained on Pillow's output, and resizers that
//! order the passes differently or round coefficients to 16 bits differ from it by up to 13 uint8
//! steps with bicubic (measured on tests/fixtures with fast_image_resize 6.1). Matching the
//! reference bit for bit is the point of this module; speed comes from computing the same sums
//! in an order the compiler vectorises (`kernels`), checked against a plain port of Pillow's loops
//! (tests/it/preprocess_speed.rs).

use std::ops::Range;

use super::kernels::{self, BlockBuffers, Isa, BLOCK_ROWS, PRECISION_BITS};

/// The filters Pillow applies for `Image.BILINEAR` and `Image.BICUBIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point weights of one pass: for each output index, the first input index and its taps.
#[derive(Debug, Clone, Default)]
pub struct Coeffs {
    /// Per output: (first input index, number of taps).
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output, in Pillow's 22-bit fixed point.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut c = Coeffs { bounds: Vec::with_capacity(out_size), weights: vec![0; out_size * ksize], ksize };
        let mut k = vec![0.0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C's (int) truncation
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let ss = 1.0 / filterscale;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                *kx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
                ww += *kx;
            }
            for (x, kx) in k.iter().enumerate().take(xmax) {
                let w = if ww != 0.0 { kx / ww } else { *kx };
                c.weights[xx * ksize + x] = to_fixed(w);
            }
            c.bounds.push((xmin, xmax));
        }
        c
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.bounds.len()
    }

    /// The first input index of output `out` and its weights.
    pub fn taps(&self, out: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[out];
        (start, &self.weights[out * self.ksize..out * self.ksize + n])
    }

    /// The input indices any output reads.
    fn span(&self) -> Range<usize> {
        let first = self.bounds.first().map_or(0, |b| b.0);
        let last = self.bounds.iter().map(|(start, n)| start + n).max().unwrap_or(0);
        first..last
    }
}

fn to_fixed(w: f64) -> i32 {
    let scaled = w * (1u32 << PRECISION_BITS) as f64;
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Resizes packed 8-bit images with 1 or 3 channels per pixel; owns its coefficient tables and
/// work buffers, rebuilt only when the input size changes.
#[derive(Debug)]
pub struct Resampler {
    filter: Filter,
    channels: usize,
    out_w: usize,
    out_h: usize,
    isa: Isa,
    in_size: (usize, usize),
    horiz: Coeffs,
    vert: Coeffs,
    blocks: BlockBuffers,
    /// The horizontal pass's output: the rows the vertical pass reads, in whole blocks.
    temp: Vec<u8>,
    /// One output row of the vertical pass.
    row: Vec<u8>,
}

impl Resampler {
    /// A resampler to `out_w` x `out_h` for images of `channels` (1 or 3) bytes per pixel.
    pub fn new(filter: Filter, channels: usize, out_w: usize, out_h: usize) -> Resampler {
        Resampler::with_isa(filter, channels, out_w, out_h, Isa::detect())
    }

    /// As [`Resampler::new`] with the given build of the inner loops (tests compare them).
    pub(crate) fn with_isa(filter: Filter, channels: usize, out_w: usize, out_h: usize, isa: Isa) -> Resampler {
        assert!(channels == 1 || channels == 3, "{channels} channels: only grey and RGB are resampled");
        Resampler {
            filter,
            channels,
            out_w,
            out_h,
            isa,
            in_size: (0, 0),
            horiz: Coeffs::default(),
            vert: Coeffs::default(),
            blocks: BlockBuffers::default(),
            temp: Vec::new(),
            row: vec![0; out_w * channels],
        }
    }

    /// Resizes `src` (`in_w` x `in_h`, tightly packed) into `dst` (`out_w * out_h * channels` bytes).
    pub fn resize(&mut self, src: &[u8], in_w: usize, in_h: usize, dst: &mut [u8]) {
        let row_bytes = self.out_w * self.channels;
        assert_eq!(dst.len(), row_bytes * self.out_h);
        self.resize_rows(src, in_w, in_h, &mut |y, row| dst[y * row_bytes..][..row_bytes].copy_from_slice(row));
    }

    /// Resizes `src` and hands each output row, top to bottom, to `sink(y, row)`.
    pub fn resize_rows(&mut self, src: &[u8], in_w: usize, in_h: usize, sink: &mut dyn FnMut(usize, &[u8])) {
        assert_eq!(src.len(), in_w * in_h * self.channels, "{in_w}x{in_h} image of {} channels", self.channels);
        self.prepare(in_w, in_h);
        let (isa, row_bytes) = (self.isa, self.out_w * self.channels);
        match (in_w != self.out_w, in_h != self.out_h) {
            // Pillow returns a copy.
            (false, false) => src.chunks_exact(row_bytes).enumerate().for_each(|(y, row)| sink(y, row)),
            (true, false) => {
                self.horizontal(src, 0..in_h);
                self.temp.chunks_exact(row_bytes).take(in_h).enumerate().for_each(|(y, row)| sink(y, row));
            }
            (false, true) => kernels::vertical(isa, src, row_bytes, &self.vert, 0, &mut self.row, sink),
            (true, true) => {
                let rows = self.vert.span();
                self.horizontal(src, rows.clone());
                kernels::vertical(isa, &self.temp, row_bytes, &self.vert, rows.start, &mut self.row, sink);
            }
        }
    }

    /// Rebuilds the tables and buffers for a new input size (never for the same size again).
    fn prepare(&mut self, in_w: usize, in_h: usize) {
        if (in_w, in_h) == self.in_size {
            return;
        }
        self.horiz = Coeffs::new(in_w, self.out_w, self.filter);
        self.vert = Coeffs::new(in_h, self.out_h, self.filter);
        self.blocks.resize(in_w * self.channels, self.out_w * self.channels);
        let rows = match (in_w != self.out_w, in_h != self.out_h) {
            (false, _) => 0,
            (true, false) => in_h,
            (true, true) => self.vert.span().len(),
        };
        self.temp.resize(rows.div_ceil(BLOCK_ROWS) * BLOCK_ROWS * self.out_w * self.channels, 0);
        self.in_size = (in_w, in_h);
    }

    fn horizontal(&mut self, src: &[u8], rows: Range<usize>) {
        kernels::horizontal(self.isa, src, self.channels, rows, &self.horiz, &mut self.blocks, &mut self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_sum_to_one_in_fixed_point() {
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (n_in, n_out) in [(1280, 224), (160, 224), (225, 224)] {
                let c = Coeffs::new(n_in, n_out, filter);
                for xx in 0..n_out {
                    let sum: i32 = c.taps(xx).1.iter().sum();
                    assert!((sum - (1 << PRECISION_BITS)).abs() <= c.ksize as i32, "{filter:?} {n_in}->{n_out} out {xx}: {sum}");
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let mut r = Resampler::new(Filter::Bicubic, 3, 7, 5);
        let mut dst = vec![0; 7 * 5 * 3];
        r.resize(&[99u8; 40 * 30 * 3], 40, 30, &mut dst);
        assert!(dst.iter().all(|v| *v == 99), "{dst:?}");
    }

    #[test]
    fn shrinking_by_two_with_bilinear_averages_pairs() {
        // Value checked against Pillow 13: Image.frombytes("L", (4, 1), ...).resize((2, 1), BILINEAR).
        let mut r = Resampler::new(Filter::Bilinear, 1, 2, 1);
        let mut dst = [0u8; 2];
        r.resize(&[10, 30, 50, 70], 4, 1, &mut dst);
        // Support 2 px around centres 1.0 and 3.0; edge-clipped triangles give weights 3/7, 3/7, 1/7.
        assert_eq!(dst, [24, 56]);
    }

    /// Pillow's two passes written out one output value at a time, from the same tables.
    fn plain(src: &[u8], (in_w, in_h): (usize, usize), ch: usize, (out_w, out_h): (usize, usize), filter: Filter) -> Vec<u8> {
        let sum = |taps: (usize, &[i32]), at: &dyn Fn(usize) -> u8| {
            let acc = taps.1.iter().enumerate().fold(1i32 << (PRECISION_BITS - 1), |a, (k, w)| a + w * at(taps.0 + k) as i32);
            (acc >> PRECISION_BITS).clamp(0, 255) as u8
        };
        let (h, v) = (Coeffs::new(in_w, out_w, filter), Coeffs::new(in_h, out_h, filter));
        let mid: Vec<u8> = if in_w == out_w {
            src.to_vec()
        } else {
            (0..in_h * out_w * ch).map(|i| sum(h.taps(i / ch % out_w), &|x| src[(i / ch / out_w * in_w + x) * ch + i % ch])).collect()
        };
        if in_h == out_h {
            return mid;
        }
        (0..out_h * out_w * ch).map(|i| sum(v.taps(i / ch / out_w), &|y| mid[(y * out_w + i / ch % out_w) * ch + i % ch])).collect()
    }

    #[test]
    fn every_build_of_the_loops_gives_the_bytes_of_the_plain_loops() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for case in 0..60 {
            let filter = if case % 2 == 0 { Filter::Bilinear } else { Filter::Bicubic };
            let ch = if case % 3 == 0 { 1 } else { 3 };
            let out = (1 + next(20), 1 + next(20));
            let inp = if case % 5 == 0 {
                (out.0, 1 + next(100))
            } else if case % 7 == 0 {
                (1 + next(100), out.1)
            } else {
                (1 + next(150), 1 + next(150))
            };
            let src: Vec<u8> =
                (0..inp.0 * inp.1 * ch).map(|_| if next(4) == 0 { 255 * (next(2) as u8) } else { next(256) as u8 }).collect();
            let want = plain(&src, inp, ch, out, filter);
            for isa in Isa::available() {
                let mut r = Resampler::with_isa(filter, ch, out.0, out.1, isa);
                let mut got = vec![0; out.0 * out.1 * ch];
                r.resize(&src, inp.0, inp.1, &mut got);
                assert_eq!(got, want, "{isa:?} {filter:?} {inp:?} -> {out:?} x{ch}");
            }
        }
    }
}
