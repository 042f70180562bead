//! Converts the ROI of a captured frame into packed RGB, honouring stride, pixel format, YCbCr
//! matrix and range. Only ROI pixels are touched; the output buffer is reused (no allocation once
//! its capacity fits the ROI).

use super::{ColorSpace, Frame, PixelFormat, Range};

/// A rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Roi {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Roi {
    pub fn full(width: u32, height: u32) -> Roi {
        Roi { x: 0, y: 0, width, height }
    }

    pub fn from_array([x, y, width, height]: [u32; 4]) -> Roi {
        Roi { x, y, width, height }
    }

    /// True if the rectangle lies inside a `width` x `height` frame.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.width > 0 && self.height > 0 && self.x as u64 + self.width as u64 <= width as u64 && self.y as u64 + self.height as u64 <= height as u64
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("ROI {roi:?} does not fit the {width}x{height} frame; fix source.roi (nothing is cropped silently)")]
    RoiOutside { roi: Roi, width: u32, height: u32 },
    #[error("frame buffer holds {got} bytes, a {width}x{height} {format:?} frame with stride {stride} needs {need}")]
    Truncated { got: usize, need: usize, width: u32, height: u32, format: PixelFormat, stride: usize },
}

/// Writes the ROI of `frame` as packed RGB into `out` (resized to `roi.width * roi.height * 3`).
pub fn roi_to_rgb(frame: &Frame<'_>, roi: Roi, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    let m = &frame.meta;
    if !roi.fits(m.width, m.height) {
        return Err(ConvertError::RoiOutside { roi, width: m.width, height: m.height });
    }
    check_size(frame)?;
    out.clear();
    out.resize(roi.width as usize * roi.height as usize * 3, 0);
    let coeffs = YuvCoeffs::new(m.color_space, m.range);
    for (row, dst) in out.chunks_exact_mut(roi.width as usize * 3).enumerate() {
        let line = &frame.data[(roi.y as usize + row) * m.stride..];
        convert_row(m.format, line, roi.x as usize, dst, &coeffs);
    }
    Ok(())
}

fn check_size(frame: &Frame<'_>) -> Result<(), ConvertError> {
    let m = &frame.meta;
    let row_bytes = m.width as usize * bytes_per_pixel(m.format);
    let need = m.stride * (m.height as usize - 1) + row_bytes;
    if m.stride < row_bytes || frame.data.len() < need {
        return Err(ConvertError::Truncated { got: frame.data.len(), need, width: m.width, height: m.height, format: m.format, stride: m.stride });
    }
    Ok(())
}

fn bytes_per_pixel(format: PixelFormat) -> usize {
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
        PixelFormat::Yuyv => 2,
        PixelFormat::Grey => 1,
    }
}

fn convert_row(format: PixelFormat, line: &[u8], x0: usize, dst: &mut [u8], c: &YuvCoeffs) {
    let n = dst.len() / 3;
    match format {
        PixelFormat::Rgb24 => dst.copy_from_slice(&line[x0 * 3..(x0 + n) * 3]),
        PixelFormat::Bgr24 => {
            for (d, s) in dst.chunks_exact_mut(3).zip(line[x0 * 3..].chunks_exact(3)) {
                d.copy_from_slice(&[s[2], s[1], s[0]]);
            }
        }
        PixelFormat::Grey => {
            for (d, s) in dst.chunks_exact_mut(3).zip(&line[x0..x0 + n]) {
                d.fill(*s);
            }
        }
        PixelFormat::Yuyv => {
            for (i, d) in dst.chunks_exact_mut(3).enumerate() {
                let x = x0 + i;
                let pair = &line[(x & !1) * 2..(x & !1) * 2 + 4];
                d.copy_from_slice(&c.rgb(pair[(x & 1) * 2], pair[1], pair[3]));
            }
        }
    }
}

/// YCbCr -> RGB in fixed point (16.16), for one matrix and range.
struct YuvCoeffs {
    y_off: i32,
    y_mul: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl YuvCoeffs {
    fn new(space: ColorSpace, range: Range) -> YuvCoeffs {
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

    fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = (y as i32 - self.y_off) * self.y_mul;
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        let px = |x: i32| ((x + 32768) >> 16).clamp(0, 255) as u8;
        [px(y + self.rv * v), px(y - self.gu * u - self.gv * v), px(y + self.bu * u)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{FieldOrder, FrameMeta};
    use std::time::{Duration, SystemTime};

    fn frame(format: PixelFormat, width: u32, height: u32, stride: usize, data: &[u8]) -> Frame<'_> {
        let meta = FrameMeta { width, height, format, stride, color_space: ColorSpace::Bt601, range: Range::Limited,
            field: FieldOrder::Progressive, sequence: 0, monotonic: Duration::ZERO, wall: SystemTime::UNIX_EPOCH };
        Frame { meta, data }
    }

    #[test]
    fn rgb_roi_honours_stride_padding() {
        // 3x2 RGB frame, stride 10 (one padding byte per line).
        let data = [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0];
        let mut out = Vec::new();
        roi_to_rgb(&frame(PixelFormat::Rgb24, 3, 2, 10, &data), Roi { x: 1, y: 1, width: 2, height: 1 }, &mut out).unwrap();
        assert_eq!(out, [14, 15, 16, 17, 18, 19]);
    }

    #[test]
    fn bgr_is_swapped_to_rgb() {
        let mut out = Vec::new();
        roi_to_rgb(&frame(PixelFormat::Bgr24, 1, 1, 3, &[10, 20, 30]), Roi::full(1, 1), &mut out).unwrap();
        assert_eq!(out, [30, 20, 10]);
    }

    #[test]
    fn limited_range_yuyv_maps_black_white_and_red() {
        // BT.601 limited: Y=16 black, Y=235 white, (81, 90, 240) is pure red.
        let data = [16, 128, 235, 128, 81, 90, 81, 240];
        let mut out = Vec::new();
        roi_to_rgb(&frame(PixelFormat::Yuyv, 4, 1, 8, &data), Roi::full(4, 1), &mut out).unwrap();
        assert_eq!(&out[0..6], &[0, 0, 0, 255, 255, 255]);
        assert!(out[6] > 250 && out[7] < 3 && out[8] < 3, "{:?}", &out[6..9]);
    }

    #[test]
    fn an_roi_outside_the_frame_is_reported_not_clipped() {
        let mut out = Vec::new();
        let e = roi_to_rgb(&frame(PixelFormat::Grey, 4, 4, 4, &[0; 16]), Roi { x: 2, y: 0, width: 3, height: 4 }, &mut out);
        assert!(matches!(e, Err(ConvertError::RoiOutside { .. })));
    }

    #[test]
    fn a_truncated_buffer_is_an_error() {
        let mut out = Vec::new();
        let e = roi_to_rgb(&frame(PixelFormat::Rgb24, 4, 4, 12, &[0; 40]), Roi::full(4, 4), &mut out);
        assert!(matches!(e, Err(ConvertError::Truncated { .. })));
    }
}
