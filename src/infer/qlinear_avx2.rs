//! The AVX2 tile of [`QLinear`](super::QLinear): i8 weights and activations widened to i16, each
//! pair of k summed in i32 by `vpmaddwd` (exact: two products of at most 2^14 each), 16 columns as
//! two ymm of i32.

use std::arch::x86_64::*;

use super::{Kernel, Tile};

/// Output columns per block: two ymm of 8 i32.
const PAIRS_BLOCK: usize = Kernel::Pairs.block();
/// Rows (tokens) per tile.
pub(super) const PAIRS_ROWS: usize = 6;

impl Tile<'_> {
    /// `rows` rows (1 to [`PAIRS_ROWS`]) of `a` into `out`.
    ///
    /// # Safety
    /// As [`Self::run_pairs`] for `rows` rows.
    pub(super) unsafe fn pairs_rows(&self, a: *const i16, out: *mut f32, rows: usize) {
        // SAFETY: the caller's contract, for `rows` rows.
        unsafe {
            match rows {
                6 => self.run_pairs::<6>(a, out),
                5 => self.run_pairs::<5>(a, out),
                4 => self.run_pairs::<4>(a, out),
                3 => self.run_pairs::<3>(a, out),
                2 => self.run_pairs::<2>(a, out),
                _ => self.run_pairs::<1>(a, out),
            }
        }
    }

    /// `out[r, col + j] = (Σ_k a[r, k] w[k, j] - sub[col + j]) as f32` for `R` rows and the block's
    /// columns, over k pairs (32 bytes of interleaved weights each), this pass's share of them.
    ///
    /// # Safety
    /// AVX2; `a` holds `R` rows of `k` i16 (stride `k`); `out` holds `R` rows of stride `n` with
    /// the block's columns inside (the earlier passes' i32 sums unless first); `w` holds the block's
    /// k / 2 pairs.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn run_pairs<const R: usize>(&self, a: *const i16, out: *mut f32) {
        let k = self.k;
        let cols = (self.n - self.col).min(PAIRS_BLOCK);
        let mut c = [[_mm256_setzero_si256(); 2]; R];
        if !self.first {
            for (r, c) in c.iter_mut().enumerate() {
                let mut lanes = [0i32; PAIRS_BLOCK];
                // SAFETY: row r of `out` has the block's `cols` columns, holding i32 sums.
                unsafe { std::ptr::copy_nonoverlapping(out.add(r * self.n + self.col) as *const i32, lanes.as_mut_ptr(), cols) };
                // SAFETY: `lanes` holds 16 i32: two unaligned 8-lane loads.
                unsafe {
                    *c = [_mm256_loadu_si256(lanes.as_ptr() as *const __m256i), _mm256_loadu_si256(lanes.as_ptr().add(8) as *const __m256i)]
                };
            }
        }
        for p in self.pass.clone() {
            // SAFETY: pair p is bytes 32p..32p+32 of the block; each half, widened, is 8 i16 pairs.
            let (y0, y1) = unsafe {
                let x = self.w.add(32 * p) as *const __m128i;
                (_mm256_cvtepi8_epi16(_mm_loadu_si128(x)), _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(1))))
            };
            for (r, c) in c.iter_mut().enumerate() {
                // SAFETY: row r has k i16; elements 2p and 2p + 1 are read as one i32.
                let pair = unsafe { (a.add(r * k + 2 * p) as *const i32).read_unaligned() };
                let b = _mm256_set1_epi32(pair);
                c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(y0, b));
                c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(y1, b));
            }
        }
        for (r, c) in c.iter().enumerate() {
            // SAFETY: row r of `out` has the block's columns (checked by the caller's shape).
            let row = unsafe { out.add(r * self.n + self.col) };
            if !self.last {
                let mut lanes = [0i32; PAIRS_BLOCK];
                // SAFETY: `lanes` holds 16 i32; row r of `out` has `cols` columns for the sums.
                unsafe {
                    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, c[0]);
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8) as *mut __m256i, c[1]);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), row as *mut i32, cols);
                }
            } else if cols == PAIRS_BLOCK {
                for (half, c) in c.iter().enumerate() {
                    // SAFETY: `sub` has n values and col + 16 <= n; 8 f32 stored inside the row.
                    unsafe {
                        let s = _mm256_loadu_si256(self.sub.as_ptr().add(self.col + 8 * half) as *const __m256i);
                        _mm256_storeu_ps(row.add(8 * half), _mm256_cvtepi32_ps(_mm256_sub_epi32(*c, s)));
                    }
                }
            } else {
                let mut lanes = [0i32; PAIRS_BLOCK];
                // SAFETY: `lanes` holds 16 i32: two unaligned 8-lane stores.
                unsafe {
                    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, c[0]);
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8) as *mut __m256i, c[1]);
                }
                for (j, &v) in lanes.iter().enumerate().take(cols) {
                    // SAFETY: col + j < n: inside the row.
                    unsafe { *row.add(j) = v.wrapping_sub(self.sub[self.col + j]) as f32 };
                }
            }
        }
    }
}
