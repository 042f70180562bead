//! Eight rows of bytes turned into columns of eight, and back: how the horizontal pass gets one
//! contiguous vector per output pixel (see `kernels`). Three rounds of interleaving (bytes, then
//! pairs, then quads) do it in 16-byte registers: SSE2 on x86-64 and NEON on aarch64, both part
//! of their baseline; plain loops on other targets and for the last few bytes of a row.

/// Rows per transpose.
pub const ROWS: usize = 8;

/// `columns[j * 8 + r] = rows[r][j]` for `j` below `columns.len() / 8`.
#[inline(always)]
pub fn rows_to_columns(rows: [&[u8]; ROWS], columns: &mut [u8]) {
    let len = columns.len() / ROWS;
    let rows = rows.map(|r| &r[..len]);
    let done = simd::rows_to_columns(&rows, columns);
    for (j, col) in columns.chunks_exact_mut(ROWS).enumerate().skip(done) {
        for (c, row) in col.iter_mut().zip(&rows) {
            *c = row[j];
        }
    }
}

/// `rows[r * len + j] = columns[j * 8 + r]`, `len` being `columns.len() / 8`.
#[inline(always)]
pub fn columns_to_rows(columns: &[u8], rows: &mut [u8]) {
    let len = columns.len() / ROWS;
    if len == 0 {
        return;
    }
    let rows = &mut rows[..len * ROWS];
    let done = simd::columns_to_rows(columns, rows);
    for (r, row) in rows.chunks_exact_mut(len).enumerate() {
        for (o, col) in row.iter_mut().zip(columns.chunks_exact(ROWS)).skip(done) {
            *o = col[r];
        }
    }
}

/// The 16-byte register operations the transposes are made of.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
trait Reg: Copy {
    /// # Safety
    /// `p` is valid for reading 16 bytes.
    unsafe fn load(p: *const u8) -> Self;
    /// 8 bytes into the low half. # Safety: `p` is valid for reading 8 bytes.
    unsafe fn load_low(p: *const u8) -> Self;
    /// # Safety
    /// `p` is valid for writing 16 bytes.
    unsafe fn store(self, p: *mut u8);
    /// The low half to `lo`, the high half to `hi`. # Safety: both valid for writing 8 bytes.
    unsafe fn store_halves(self, lo: *mut u8, hi: *mut u8);
    /// Interleaves the low halves, then the high halves, in units of 1, 2 and 4 bytes.
    fn zip8(self, other: Self) -> (Self, Self);
    fn zip16(self, other: Self) -> (Self, Self);
    fn zip32(self, other: Self) -> (Self, Self);
}

/// Rounds 2 and 3: from four registers of byte-interleaved row pairs (rows 0-1, 2-3, 4-5, 6-7;
/// eight `j` each) to four registers of two columns each: `j` = (0, 1), (2, 3), (4, 5), (6, 7).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn pairs_to_columns<R: Reg>(p: [R; 4]) -> [R; 4] {
    let (a_lo, a_hi) = p[0].zip16(p[1]); // rows 0-3 for j 0..4, j 4..8
    let (b_lo, b_hi) = p[2].zip16(p[3]); // rows 4-7 likewise
    let (c0, c1) = a_lo.zip32(b_lo);
    let (c2, c3) = a_hi.zip32(b_hi);
    [c0, c1, c2, c3]
}

/// [`rows_to_columns`] for whole runs of 16 `j`; returns how many `j` it did.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn rows_to_columns_with<R: Reg>(rows: &[&[u8]; ROWS], columns: &mut [u8]) -> usize {
    let len = columns.len() / ROWS;
    assert!(rows.iter().all(|r| r.len() >= len));
    let mut j = 0;
    while j + 16 <= len {
        // SAFETY: each row holds `len` bytes and `columns` `8 * len`: the loads at `j..j + 16`
        // of a row and the stores at `8 * j..8 * (j + 16)` of `columns` are in bounds.
        unsafe {
            let r: [R; ROWS] = std::array::from_fn(|i| R::load(rows[i].as_ptr().add(j)));
            let pairs: [(R, R); 4] = std::array::from_fn(|i| r[2 * i].zip8(r[2 * i + 1]));
            let lo = pairs_to_columns(pairs.map(|p| p.0)); // j..j + 8
            let hi = pairs_to_columns(pairs.map(|p| p.1)); // j + 8..j + 16
            let out = columns.as_mut_ptr().add(j * ROWS);
            for k in 0..4 {
                lo[k].store(out.add(16 * k));
                hi[k].store(out.add(64 + 16 * k));
            }
        }
        j += 16;
    }
    j
}

/// [`columns_to_rows`] for whole runs of 8 `j`; returns how many `j` it did.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn columns_to_rows_with<R: Reg>(columns: &[u8], rows: &mut [u8]) -> usize {
    let len = columns.len() / ROWS;
    assert!(rows.len() >= len * ROWS);
    let mut j = 0;
    while j + 8 <= len {
        // SAFETY: `columns` holds `8 * len` bytes and `rows` `8 * len`: the 8-byte loads at
        // `8 * (j + i)` and the 8-byte stores at `r * len + j` are in bounds.
        unsafe {
            // Columns j..j + 8 are the rows of an 8x8 block: the same rounds transpose it back.
            let c: [R; ROWS] = std::array::from_fn(|i| R::load_low(columns.as_ptr().add((j + i) * ROWS)));
            let pairs: [R; 4] = std::array::from_fn(|i| c[2 * i].zip8(c[2 * i + 1]).0);
            for (k, v) in pairs_to_columns(pairs).into_iter().enumerate() {
                let out = rows.as_mut_ptr().add(2 * k * len + j);
                v.store_halves(out, out.add(len));
            }
        }
        j += 8;
    }
    j
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Reg, ROWS};

    #[inline(always)]
    pub fn rows_to_columns(rows: &[&[u8]; ROWS], columns: &mut [u8]) -> usize {
        super::rows_to_columns_with::<__m128i>(rows, columns)
    }

    #[inline(always)]
    pub fn columns_to_rows(columns: &[u8], rows: &mut [u8]) -> usize {
        super::columns_to_rows_with::<__m128i>(columns, rows)
    }

    // SAFETY (every block below): SSE2 is part of the x86-64 baseline; pointers as documented.
    impl Reg for __m128i {
        #[inline(always)]
        unsafe fn load(p: *const u8) -> Self {
            // SAFETY: the caller passes a pointer valid for the bytes moved (the trait's contract).
            unsafe { _mm_loadu_si128(p.cast()) }
        }
        #[inline(always)]
        unsafe fn load_low(p: *const u8) -> Self {
            // SAFETY: the caller passes a pointer valid for the bytes moved (the trait's contract).
            unsafe { _mm_loadl_epi64(p.cast()) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut u8) {
            // SAFETY: the caller passes a pointer valid for the bytes moved (the trait's contract).
            unsafe { _mm_storeu_si128(p.cast(), self) }
        }
        #[inline(always)]
        unsafe fn store_halves(self, lo: *mut u8, hi: *mut u8) {
            // SAFETY: the caller passes two pointers valid for 8 bytes each (the trait's contract).
            unsafe {
                _mm_storel_epi64(lo.cast(), self);
                _mm_storel_epi64(hi.cast(), _mm_unpackhi_epi64(self, self));
            }
        }
        #[inline(always)]
        fn zip8(self, o: Self) -> (Self, Self) {
            // SAFETY: register-only SSE2 shuffles; SSE2 is part of the x86-64 baseline.
            unsafe { (_mm_unpacklo_epi8(self, o), _mm_unpackhi_epi8(self, o)) }
        }
        #[inline(always)]
        fn zip16(self, o: Self) -> (Self, Self) {
            // SAFETY: register-only SSE2 shuffles; SSE2 is part of the x86-64 baseline.
            unsafe { (_mm_unpacklo_epi16(self, o), _mm_unpackhi_epi16(self, o)) }
        }
        #[inline(always)]
        fn zip32(self, o: Self) -> (Self, Self) {
            // SAFETY: register-only SSE2 shuffles; SSE2 is part of the x86-64 baseline.
            unsafe { (_mm_unpacklo_epi32(self, o), _mm_unpackhi_epi32(self, o)) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod simd {
    use std::arch::aarch64::*;

    use super::{Reg, ROWS};

    #[inline(always)]
    pub fn rows_to_columns(rows: &[&[u8]; ROWS], columns: &mut [u8]) -> usize {
        super::rows_to_columns_with::<uint8x16_t>(rows, columns)
    }

    #[inline(always)]
    pub fn columns_to_rows(columns: &[u8], rows: &mut [u8]) -> usize {
        super::columns_to_rows_with::<uint8x16_t>(columns, rows)
    }

    // SAFETY (every block below): NEON is part of the aarch64 baseline; pointers as documented.
    impl Reg for uint8x16_t {
        #[inline(always)]
        unsafe fn load(p: *const u8) -> Self {
            unsafe { vld1q_u8(p) }
        }
        #[inline(always)]
        unsafe fn load_low(p: *const u8) -> Self {
            unsafe { vcombine_u8(vld1_u8(p), vdup_n_u8(0)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut u8) {
            unsafe { vst1q_u8(p, self) }
        }
        #[inline(always)]
        unsafe fn store_halves(self, lo: *mut u8, hi: *mut u8) {
            unsafe {
                vst1_u8(lo, vget_low_u8(self));
                vst1_u8(hi, vget_high_u8(self));
            }
        }
        #[inline(always)]
        fn zip8(self, o: Self) -> (Self, Self) {
            unsafe { (vzip1q_u8(self, o), vzip2q_u8(self, o)) }
        }
        #[inline(always)]
        fn zip16(self, o: Self) -> (Self, Self) {
            unsafe {
                let (a, b) = (vreinterpretq_u16_u8(self), vreinterpretq_u16_u8(o));
                (vreinterpretq_u8_u16(vzip1q_u16(a, b)), vreinterpretq_u8_u16(vzip2q_u16(a, b)))
            }
        }
        #[inline(always)]
        fn zip32(self, o: Self) -> (Self, Self) {
            unsafe {
                let (a, b) = (vreinterpretq_u32_u8(self), vreinterpretq_u32_u8(o));
                (vreinterpretq_u8_u32(vzip1q_u32(a, b)), vreinterpretq_u8_u32(vzip2q_u32(a, b)))
            }
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod simd {
    use super::ROWS;

    #[inline(always)]
    pub fn rows_to_columns(_: &[&[u8]; ROWS], _: &mut [u8]) -> usize {
        0
    }

    #[inline(always)]
    pub fn columns_to_rows(_: &[u8], _: &mut [u8]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_columns_and_back_for_every_length() {
        for len in [0, 1, 7, 8, 15, 16, 17, 31, 40, 100] {
            let src: Vec<u8> = (0..ROWS * len).map(|i| (i * 37 % 251) as u8).collect();
            let rows: [&[u8]; ROWS] = std::array::from_fn(|r| &src[r * len..(r + 1) * len]);
            let mut columns = vec![0; ROWS * len];
            rows_to_columns(rows, &mut columns);
            for (j, col) in columns.chunks_exact(ROWS).enumerate() {
                assert!(col.iter().enumerate().all(|(r, v)| *v == rows[r][j]), "len {len}, column {j}: {col:?}");
            }
            let mut back = vec![0; ROWS * len];
            columns_to_rows(&columns, &mut back);
            assert_eq!(back, src, "len {len}");
        }
    }
}
