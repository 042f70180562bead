//! Row kernels: one line of ROI pixels from a source format into packed RGB. A kernel is chosen
//! once per frame ([`kernel`]); inside it there is no branching on the format, and YCbCr is
//! converted in 16.16 fixed point with the chroma terms computed once per pixel pair. The loops
//! are written for LLVM to vectorize; on x86-64 they run as AVX2 builds when the CPU has it.

use crate::capture::{ColorSpace, PixelFormat, Range};

/// The source lines one output line reads, each starting at its line's first byte.
pub(super) struct Lines<'a> {
    pub luma: &'a [u8],
    /// CbCr (NV12) or Cb (YU12); unused by packed formats.
    pub chroma: &'a [u8],
    /// Cr (YU12).
    pub chroma2: &'a [u8],
}

/// Converts pixels `x0..x0 + dst.len() / 3` of one line into `dst`.
pub(super) type RowFn = fn(&Lines<'_>, usize, &mut [u8], &YuvCoeffs);

pub(super) fn kernel(format: PixelFormat) -> RowFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = avx2::kernel(format) {
        return kernel;
    }
    portable(format)
}

/// The kernels as compiled for the target's baseline.
fn portable(format: PixelFormat) -> RowFn {
    match format {
        PixelFormat::Rgb24 => rgb_row,
        PixelFormat::Bgr24 => bgr_row,
        PixelFormat::Grey => grey_row,
        PixelFormat::Yuyv => yuv_row::<Packed422<0, 1, 3>>,
        PixelFormat::Uyvy => yuv_row::<Packed422<1, 0, 2>>,
        PixelFormat::Nv12 => yuv_row::<Nv12>,
        PixelFormat::Yu12 => yuv_row::<Yu12>,
        // Decoded to RGB24 before any row is converted.
        PixelFormat::Mjpg => rgb_row,
    }
}

fn rgb_row(l: &Lines<'_>, x0: usize, dst: &mut [u8], _: &YuvCoeffs) {
    dst.copy_from_slice(&l.luma[x0 * 3..x0 * 3 + dst.len()]);
}

#[inline(always)]
fn bgr_row(l: &Lines<'_>, x0: usize, dst: &mut [u8], _: &YuvCoeffs) {
    for (d, s) in dst.chunks_exact_mut(3).zip(l.luma[x0 * 3..].chunks_exact(3)) {
        d.copy_from_slice(&[s[2], s[1], s[0]]);
    }
}

#[inline(always)]
fn grey_row(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
    for (d, &s) in dst.chunks_exact_mut(3).zip(&l.luma[x0..]) {
        let v = c.luma(s);
        d.copy_from_slice(&[v, v, v]);
    }
}

/// Where a YCbCr format keeps pixel `x`'s luma and pixel pair `p`'s chroma.
trait YuvSampler {
    fn y(l: &Lines<'_>, x: usize) -> u8;
    fn cbcr(l: &Lines<'_>, pair: usize) -> (u8, u8);
    /// `[Y0, Y1, Cb, Cr]` of `n` pairs from pair `first` on, as slices the compiler can see the
    /// end of (no bounds check per pixel).
    fn pairs<'a>(l: &Lines<'a>, first: usize, n: usize) -> impl Iterator<Item = [u8; 4]> + 'a;
}

/// 4:2:2 packed in 4-byte pairs, with Y0 at byte `Y` (Y1 two bytes on), Cb at `U`, Cr at `V`.
struct Packed422<const Y: usize, const U: usize, const V: usize>;

impl<const Y: usize, const U: usize, const V: usize> YuvSampler for Packed422<Y, U, V> {
    fn y(l: &Lines<'_>, x: usize) -> u8 {
        l.luma[x * 2 + Y]
    }
    fn cbcr(l: &Lines<'_>, pair: usize) -> (u8, u8) {
        (l.luma[pair * 4 + U], l.luma[pair * 4 + V])
    }
    fn pairs<'a>(l: &Lines<'a>, first: usize, n: usize) -> impl Iterator<Item = [u8; 4]> + 'a {
        l.luma[first * 4..(first + n) * 4].chunks_exact(4).map(|p| [p[Y], p[Y + 2], p[U], p[V]])
    }
}

struct Nv12;

impl YuvSampler for Nv12 {
    fn y(l: &Lines<'_>, x: usize) -> u8 {
        l.luma[x]
    }
    fn cbcr(l: &Lines<'_>, pair: usize) -> (u8, u8) {
        (l.chroma[pair * 2], l.chroma[pair * 2 + 1])
    }
    fn pairs<'a>(l: &Lines<'a>, first: usize, n: usize) -> impl Iterator<Item = [u8; 4]> + 'a {
        let (luma, chroma) = (&l.luma[first * 2..(first + n) * 2], &l.chroma[first * 2..(first + n) * 2]);
        luma.chunks_exact(2).zip(chroma.chunks_exact(2)).map(|(y, c)| [y[0], y[1], c[0], c[1]])
    }
}

struct Yu12;

impl YuvSampler for Yu12 {
    fn y(l: &Lines<'_>, x: usize) -> u8 {
        l.luma[x]
    }
    fn cbcr(l: &Lines<'_>, pair: usize) -> (u8, u8) {
        (l.chroma[pair], l.chroma2[pair])
    }
    fn pairs<'a>(l: &Lines<'a>, first: usize, n: usize) -> impl Iterator<Item = [u8; 4]> + 'a {
        let (cb, cr) = (&l.chroma[first..first + n], &l.chroma2[first..first + n]);
        l.luma[first * 2..(first + n) * 2].chunks_exact(2).zip(cb.iter().zip(cr)).map(|(y, (&cb, &cr))| [y[0], y[1], cb, cr])
    }
}

/// Any YCbCr row: an odd first pixel alone, then whole pairs sharing their chroma, then an odd
/// last pixel alone.
#[inline(always)]
fn yuv_row<S: YuvSampler>(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
    let last = x0 + dst.len() / 3 - 1;
    let lead = (x0 & 1) * 3;
    let (head, body) = dst.split_at_mut(lead.min(dst.len()));
    if !head.is_empty() {
        c.put(head, S::y(l, x0), c.chroma(S::cbcr(l, x0 / 2)));
    }
    let n_pairs = body.len() / 6;
    let mut pairs = body.chunks_exact_mut(6);
    for (d, [y0, y1, cb, cr]) in (&mut pairs).zip(S::pairs(l, x0.div_ceil(2), n_pairs)) {
        let chroma = c.chroma((cb, cr));
        c.put(&mut d[..3], y0, chroma);
        c.put(&mut d[3..], y1, chroma);
    }
    let tail = pairs.into_remainder();
    if !tail.is_empty() {
        c.put(tail, S::y(l, last), c.chroma(S::cbcr(l, last / 2)));
    }
}

/// The YCbCr, grey and BGR kernels compiled for AVX2, chosen at run time when the CPU has it. The
/// 16.16 fixed point needs 32-bit lane multiplies, which baseline x86-64 (SSE2) lacks: there LLVM
/// leaves the loops scalar, about 6x slower. (AArch64's NEON has them, so no variant there.)
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    pub(super) fn kernel(format: PixelFormat) -> Option<RowFn> {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return None;
        }
        Some(match format {
            PixelFormat::Grey => grey,
            PixelFormat::Bgr24 => bgr,
            PixelFormat::Yuyv => yuv::<Packed422<0, 1, 3>>,
            PixelFormat::Uyvy => yuv::<Packed422<1, 0, 2>>,
            PixelFormat::Nv12 => yuv::<Nv12>,
            PixelFormat::Yu12 => yuv::<Yu12>,
            // A copy: nothing to vectorize.
            PixelFormat::Rgb24 | PixelFormat::Mjpg => return None,
        })
    }

    fn yuv<S: YuvSampler>(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
        // SAFETY: only handed out by `kernel`, after the CPU was seen to support AVX2.
        unsafe { yuv_avx2::<S>(l, x0, dst, c) }
    }

    fn grey(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
        // SAFETY: as for `yuv`.
        unsafe { grey_avx2(l, x0, dst, c) }
    }

    fn bgr(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
        // SAFETY: as for `yuv`.
        unsafe { bgr_avx2(l, x0, dst, c) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn yuv_avx2<S: YuvSampler>(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
        yuv_row::<S>(l, x0, dst, c)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn grey_avx2(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
        grey_row(l, x0, dst, c)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn bgr_avx2(l: &Lines<'_>, x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
        bgr_row(l, x0, dst, c)
    }
}

/// `dst = (dst + other + 1) / 2`, bytewise.
pub(super) fn average(dst: &mut [u8], other: &[u8]) {
    for (d, &o) in dst.iter_mut().zip(other) {
        *d = ((*d as u16 + o as u16 + 1) >> 1) as u8;
    }
}

/// YCbCr -> RGB in fixed point (16.16), for one matrix and range.
pub(super) struct YuvCoeffs {
    y_off: i32,
    y_mul: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

/// A pixel pair's chroma contribution to R, G and B (16.16, rounding offset included).
#[derive(Clone, Copy)]
pub(super) struct Chroma(i32, i32, i32);

impl YuvCoeffs {
    pub(super) fn new(space: ColorSpace, range: Range) -> YuvCoeffs {
        let (kr, kb) = match space {
            ColorSpace::Bt601 => (0.299, 0.114),
            ColorSpace::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (y_off, y_scale, c_scale) = match range {
            Range::Limited => (16, 255.0 / 219.0, 255.0 / 224.0),
            Range::Full => (0, 1.0, 1.0),
        };
        let fx = |v: f64| (v * 65536.0).round() as i32;
        YuvCoeffs {
            y_off,
            y_mul: fx(y_scale),
            rv: fx(2.0 * (1.0 - kr) * c_scale),
            gu: fx(2.0 * (1.0 - kb) * kb / kg * c_scale),
            gv: fx(2.0 * (1.0 - kr) * kr / kg * c_scale),
            bu: fx(2.0 * (1.0 - kb) * c_scale),
        }
    }

    #[inline(always)]
    fn chroma(&self, (u, v): (u8, u8)) -> Chroma {
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        const HALF: i32 = 1 << 15;
        Chroma(self.rv * v + HALF, HALF - self.gu * u - self.gv * v, self.bu * u + HALF)
    }

    #[inline(always)]
    fn put(&self, dst: &mut [u8], y: u8, c: Chroma) {
        let y = (y as i32 - self.y_off) * self.y_mul;
        dst[0] = clamp16(y + c.0);
        dst[1] = clamp16(y + c.1);
        dst[2] = clamp16(y + c.2);
    }

    /// Luma alone (GREY), expanded when the range is limited.
    #[inline(always)]
    fn luma(&self, y: u8) -> u8 {
        clamp16((y as i32 - self.y_off) * self.y_mul + (1 << 15))
    }
}

#[inline(always)]
fn clamp16(v: i32) -> u8 {
    (v >> 16).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 24) as u8).collect()
    }

    #[test]
    fn the_kernel_picked_for_this_cpu_matches_the_portable_one() {
        let (luma, chroma, chroma2) = (noise(400, 1), noise(200, 2), noise(100, 3));
        let lines = Lines { luma: &luma, chroma: &chroma, chroma2: &chroma2 };
        let c = YuvCoeffs::new(ColorSpace::Bt709, Range::Limited);
        let formats = [
            PixelFormat::Rgb24,
            PixelFormat::Bgr24,
            PixelFormat::Grey,
            PixelFormat::Yuyv,
            PixelFormat::Uyvy,
            PixelFormat::Nv12,
            PixelFormat::Yu12,
        ];
        for (format, x0) in formats.iter().flat_map(|&f| [(f, 0), (f, 3)]) {
            let (mut a, mut b) = ([0u8; 3 * 97], [0u8; 3 * 97]);
            kernel(format)(&lines, x0, &mut a, &c);
            portable(format)(&lines, x0, &mut b, &c);
            assert_eq!(a, b, "{format:?} from x {x0}");
        }
    }

    #[test]
    fn average_rounds_half_up() {
        let mut a = [0, 1, 254, 255];
        average(&mut a, &[1, 2, 255, 255]);
        assert_eq!(a, [1, 2, 255, 255]);
    }
}
