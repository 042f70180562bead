//! The AVX-512 VNNI tile of [`QLinear`](super::QLinear): activations offset to u8, each quad of k
//! summed in i32 by `vpdpbusd` (u8 x i8, not saturating: exact), 32 columns as two zmm of i32 per
//! row, eight rows, so that sixteen independent sums hide the instruction's latency.

use std::arch::x86_64::*;

use super::{Kernel, Tile};

/// Output columns per block: two zmm of 16 i32.
const QUADS_BLOCK: usize = Kernel::Quads.block();
/// Rows (tokens) per tile.
pub(super) const QUADS_ROWS: usize = 8;

impl Tile<'_> {
    /// `rows` rows (1 to [`QUADS_ROWS`]) of `a` into `out`.
    ///
    /// # Safety
    /// As [`Self::run_quads`] for `rows` rows.
    pub(super) unsafe fn quads_rows(&self, a: *const u8, out: *mut f32, rows: usize) {
        // SAFETY: the caller's contract, for `rows` rows.
        unsafe {
            match rows {
                8 => self.run_quads::<8>(a, out),
                7 => self.run_quads::<7>(a, out),
                6 => self.run_quads::<6>(a, out),
                5 => self.run_quads::<5>(a, out),
                4 => self.run_quads::<4>(a, out),
                3 => self.run_quads::<3>(a, out),
                2 => self.run_quads::<2>(a, out),
                _ => self.run_quads::<1>(a, out),
            }
        }
    }

    /// `out[r, col + j] = (Σ_k a[r, k] w[k, j] - sub[col + j]) as f32` for `R` rows and the block's
    /// columns, over quads of k (128 bytes of weights each: columns 0-15 then 16-31, four bytes a
    /// column), this pass's share of them. `a` is u8 here, and `sub` corrects for its offset.
    ///
    /// # Safety
    /// AVX-512F and VNNI; `a` holds `R` rows of `k` u8 (stride `k`); `out` holds `R` rows of stride
    /// `n` with the block's columns inside (the earlier passes' i32 sums unless first); `w` holds
    /// the block's k / 4 quads.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn run_quads<const R: usize>(&self, a: *const u8, out: *mut f32) {
        let k = self.k;
        let masks = half_masks((self.n - self.col).min(QUADS_BLOCK));
        let mut c = [[_mm512_setzero_si512(); 2]; R];
        if !self.first {
            for (r, c) in c.iter_mut().enumerate() {
                // SAFETY: row r of `out` holds the block's columns (masked), as i32 sums.
                let row = unsafe { out.add(r * self.n + self.col) } as *const i32;
                for (half, (c, mask)) in c.iter_mut().zip(masks).enumerate().filter(|(_, (_, m))| *m != 0) {
                    // SAFETY: the half has columns (its mask is not empty): its masked lanes exist.
                    *c = unsafe { _mm512_maskz_loadu_epi32(mask, row.add(16 * half)) };
                }
            }
        }
        for q in self.pass.clone() {
            // SAFETY: quad q is bytes 128q..128q+128 of the block's weights: two zmm.
            let (w0, w1) = unsafe {
                let x = self.w.add(128 * q);
                (_mm512_loadu_si512(x as *const _), _mm512_loadu_si512(x.add(64) as *const _))
            };
            for (r, c) in c.iter_mut().enumerate() {
                // SAFETY: row r has k bytes; elements 4q..4q + 4 are read as one i32.
                let quad = unsafe { (a.add(r * k + 4 * q) as *const i32).read_unaligned() };
                let b = _mm512_set1_epi32(quad);
                c[0] = _mm512_dpbusd_epi32(c[0], b, w0);
                c[1] = _mm512_dpbusd_epi32(c[1], b, w1);
            }
        }
        for (r, c) in c.iter().enumerate() {
            // SAFETY: row r of `out` holds the block's columns, which the masks cover.
            unsafe { self.store_quads(out.add(r * self.n + self.col), c, masks) };
        }
    }

    /// One row of the block: the i32 sums if more passes follow, else `sum - sub` as f32.
    ///
    /// # Safety
    /// AVX-512F; `row` points at the block's first column in `out`; `masks` cover the columns that
    /// exist (`sub` has them too), and a half past them has an empty mask.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_quads(&self, row: *mut f32, c: &[__m512i; 2], masks: [__mmask16; 2]) {
        for (half, (c, mask)) in c.iter().zip(masks).enumerate().filter(|(_, (_, m))| *m != 0) {
            // SAFETY: the half has columns (its mask is not empty); masked stores and loads touch only the columns that exist, in `out` and `sub`.
            unsafe {
                let at = row.add(16 * half);
                if self.last {
                    let s = _mm512_maskz_loadu_epi32(mask, self.sub.as_ptr().add(self.col + 16 * half));
                    _mm512_mask_storeu_ps(at, mask, _mm512_cvtepi32_ps(_mm512_sub_epi32(*c, s)));
                } else {
                    _mm512_mask_storeu_epi32(at as *mut i32, mask, *c);
                }
            }
        }
    }
}

/// Lane masks of the block's two halves for its first `cols` columns.
fn half_masks(cols: usize) -> [__mmask16; 2] {
    let lanes = |n: usize| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
    [lanes(cols), lanes(cols.saturating_sub(16))]
}
