//! The resize's inner loops, shaped so the compiler vectorises them: every sum runs over a
//! contiguous run of bytes with one weight per run (no per-pixel reductions, no gathers).
//!
//! The horizontal pass works on blocks of eight rows turned on their side (column-major, see
//! `transpose`), so that one output pixel's sums for the eight rows and all channels are one
//! contiguous vector; the vertical pass sums whole rows. On x86-64 the loops are compiled three
//! times, for the baseline (SSE2), SSE4.1 and AVX2, picked at run time ([`Isa`]); aarch64 has
//! NEON in its baseline; other targets get what their baseline allows.
//!
//! Exactness: every output is Pillow's `half + sum(w_k * p_k)` in i32, clipped as Pillow's
//! `clip8`; the same integers are added (integer addition does not care about order), several
//! outputs at a time.

use std::ops::Range;

use super::resample::Coeffs;
use super::transpose;

/// Pillow's `PRECISION_BITS` for 8-bit images: weights are fixed point with this many fraction bits.
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Rows per block of the horizontal pass (the lanes of its sums for each channel).
pub const BLOCK_ROWS: usize = transpose::ROWS;

/// Output bytes per vertical-pass step (kept in registers across all of a row's taps).
const VERTICAL_LANES: usize = 32;

/// Which build of the loops runs; the same bytes come out of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Portable,
    /// For `pmulld`: SSE2 has no 32-bit multiply, and emulating it halves the speed.
    #[cfg(target_arch = "x86_64")]
    Sse41,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The fastest build this CPU runs.
    pub fn detect() -> Isa {
        *Isa::available().last().expect("the portable build runs everywhere")
    }

    /// Every build this CPU runs, slowest first (tests compare them).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("sse4.1") {
                all.push(Isa::Sse41);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Isa::Avx2);
            }
        }
        all
    }
}

/// `pub fn $name(isa, args)`: calls `$body(args)` compiled for `isa`. The body is
/// `#[inline(always)]`, so each wrapper gets its own copy vectorised for its instruction set.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        pub fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "sse4.1")]
            unsafe fn sse41($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            match isa {
                Isa::Portable => $body($($arg),*),
                // SAFETY: `Isa::available` names only instruction sets this CPU reports.
                #[cfg(target_arch = "x86_64")]
                Isa::Sse41 => unsafe { sse41($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2($($arg),*) },
            }
        }
    };
}

/// Pillow's rounding and clipping of a fixed-point sum to a byte.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `out[i] = clip8(half + sum_k weights[k] * src[k * stride + i])`: the one sum of both passes.
/// Wrapping i32 arithmetic, so the sum is the same in any order (Pillow's sums stay in range
/// anyway: an output's weights add up to about 1 << 22, and pixels are below 256).
#[inline(always)]
fn weighted_sum<const N: usize>(src: &[u8], stride: usize, weights: &[i32], out: &mut [u8]) {
    let mut acc = [1i32 << (PRECISION_BITS - 1); N];
    for (k, &w) in weights.iter().enumerate() {
        let px: &[u8; N] = src[k * stride..k * stride + N].try_into().expect("N bytes");
        for (a, &p) in acc.iter_mut().zip(px) {
            *a = a.wrapping_add(w.wrapping_mul(p as i32));
        }
    }
    for (o, a) in out[..N].iter_mut().zip(acc) {
        *o = clip8(a);
    }
}

/// Work buffers of the horizontal pass, sized for one input width.
#[derive(Debug, Default)]
pub struct BlockBuffers {
    /// `BLOCK_ROWS` input rows, column-major: byte `j` of row `r` at `j * BLOCK_ROWS + r`.
    columns: Vec<u8>,
    /// The block's output, column-major likewise.
    sums: Vec<u8>,
}

impl BlockBuffers {
    pub fn resize(&mut self, in_row_bytes: usize, out_row_bytes: usize) {
        self.columns.resize(in_row_bytes * BLOCK_ROWS, 0);
        self.sums.resize(out_row_bytes * BLOCK_ROWS, 0);
    }
}

multiversion! {
    /// Horizontal pass over `rows` of `src` (`channels` per pixel): writes one row of
    /// `out_w * channels` bytes per input row into `dst`, which holds `rows.len()` rounded up to
    /// whole blocks (the rows past the end are scratch).
    pub fn horizontal(src: &[u8], channels: usize, rows: Range<usize>, c: &Coeffs, buf: &mut BlockBuffers, dst: &mut [u8]) => horizontal_any
}

#[inline(always)]
fn horizontal_any(src: &[u8], channels: usize, rows: Range<usize>, c: &Coeffs, buf: &mut BlockBuffers, dst: &mut [u8]) {
    match channels {
        1 => horizontal_blocks::<{ BLOCK_ROWS }>(src, rows, c, buf, dst),
        3 => horizontal_blocks::<{ 3 * BLOCK_ROWS }>(src, rows, c, buf, dst),
        n => unreachable!("{n} channels: the resampler is built for 1 or 3"),
    }
}

/// `N` is `channels * BLOCK_ROWS`: one output pixel of a block, all channels and rows.
#[inline(always)]
fn horizontal_blocks<const N: usize>(src: &[u8], rows: Range<usize>, c: &Coeffs, buf: &mut BlockBuffers, dst: &mut [u8]) {
    let in_row = buf.columns.len() / BLOCK_ROWS;
    let out_row = buf.sums.len() / BLOCK_ROWS;
    for (block, out) in rows.clone().step_by(BLOCK_ROWS).zip(dst.chunks_exact_mut(out_row * BLOCK_ROWS)) {
        // A short last block repeats its last row; those lanes land in `dst`'s scratch rows.
        let row = |r: usize| {
            let y = (block + r).min(rows.end - 1);
            &src[y * in_row..(y + 1) * in_row]
        };
        transpose::rows_to_columns(std::array::from_fn(row), &mut buf.columns);
        // A stride the optimiser cannot see as the constant N: with it, LLVM vectorises across
        // the taps (byte gathers) instead of across the N lanes, three times slower.
        let stride = std::hint::black_box(N);
        for (xx, px) in buf.sums.chunks_exact_mut(N).enumerate() {
            let (start, w) = c.taps(xx);
            weighted_sum::<N>(&buf.columns[start * stride..], stride, w, px);
        }
        transpose::columns_to_rows(&buf.sums, out);
    }
}

multiversion! {
    /// Vertical pass: for each output row, the weighted sum of the `src` rows its taps name
    /// (`src` starts at input row `first_row`, `row_bytes` per row), handed to `sink` in `row`.
    pub fn vertical(src: &[u8], row_bytes: usize, c: &Coeffs, first_row: usize, row: &mut [u8], sink: &mut dyn FnMut(usize, &[u8])) => vertical_any
}

#[inline(always)]
fn vertical_any(src: &[u8], row_bytes: usize, c: &Coeffs, first_row: usize, row: &mut [u8], sink: &mut dyn FnMut(usize, &[u8])) {
    for yy in 0..c.outputs() {
        let (start, w) = c.taps(yy);
        let rows = &src[(start - first_row) * row_bytes..];
        let mut x = 0;
        while x + VERTICAL_LANES <= row_bytes {
            weighted_sum::<VERTICAL_LANES>(&rows[x..], row_bytes, w, &mut row[x..]);
            x += VERTICAL_LANES;
        }
        for x in x..row_bytes {
            weighted_sum::<1>(&rows[x..], row_bytes, w, &mut row[x..]);
        }
        sink(yy, row);
    }
}
