//! Converts the ROI of a captured frame into packed RGB, honouring stride, pixel format, YCbCr
//! matrix, range and interlacing. Only ROI pixels are touched; the output buffer is reused (no
//! allocation once its capacity fits the ROI).
//!
//! Kept apart from the sources so every source (V4L2, replay, synthetic) shares one conversion,
//! and so it can be checked against an independent implementation (tests/it/pixfmt.rs, libswscale).
//! The format is matched once per frame; rows are converted by a kernel chosen for it
//! (`rows`), in 16.16 fixed point. 4:2:0 and 4:2:2 chroma is taken from the nearest sample
//! (chroma sited at the centre of its luma pair: x/2, y/2), as swscale does with `neighbor`.

mod layout;
mod mjpg;
mod rows;

use super::{FieldOrder, Frame, PixelFormat};
use crate::config::{MAX_FRAME_HEIGHT, MAX_FRAME_WIDTH};
use layout::Layout;
use mjpg::MjpgDecoder;
use rows::{RowFn, YuvCoeffs};

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
        self.width > 0
            && self.height > 0
            && self.x as u64 + self.width as u64 <= width as u64
            && self.y as u64 + self.height as u64 <= height as u64
    }
}

/// What to do with an interlaced frame (two fields woven line by line, top field on even lines).
/// Progressive frames are always taken as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deinterlace {
    /// Take the frame as it is (combing on motion).
    Weave,
    /// Only the top field: each even line is used twice. No combing, half the vertical detail,
    /// no extra work; the default, since the model input has fewer lines than one field.
    #[default]
    TopField,
    /// Average each pair of lines (top with the bottom below it): no combing, motion ghosts;
    /// converts two lines per output line.
    Blend,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error(
        "a {width}x{height} frame is larger than the largest frame sonoedge takes ({MAX_FRAME_WIDTH}x{MAX_FRAME_HEIGHT}); \
         ask the source for a smaller size"
    )]
    TooLarge { width: u32, height: u32 },
    #[error("ROI {roi:?} does not fit the {width}x{height} frame; fix source.roi (nothing is cropped silently)")]
    RoiOutside { roi: Roi, width: u32, height: u32 },
    #[error("frame buffer holds {got} bytes, a {width}x{height} {format:?} frame with stride {stride} needs {need}")]
    Truncated { got: usize, need: usize, width: u32, height: u32, format: PixelFormat, stride: usize },
    #[error("stride {stride} is too small for a {width}-pixel {format:?} line (needs at least {need}); check the driver's bytesperline")]
    StrideTooSmall { stride: usize, need: usize, width: u32, format: PixelFormat },
    /// The buffer's content cannot be decoded (a broken or truncated MJPG frame); skipped and counted.
    #[error("corrupt frame: {0}")]
    Corrupt(String),
}

/// Per-source conversion state, made once before the frame loop: the deinterlace choice, the
/// MJPG decode buffer and a line for blending. Reusing it keeps the loop free of allocation
/// (except inside the JPEG decoder, which allocates its own working memory per frame).
#[derive(Debug, Default)]
pub struct Converter {
    deinterlace: Deinterlace,
    mjpg: MjpgDecoder,
    blend_line: Vec<u8>,
}

impl Converter {
    pub fn new(deinterlace: Deinterlace) -> Converter {
        Converter { deinterlace, ..Converter::default() }
    }

    /// Writes the ROI of `frame` as packed RGB into `out` (resized to `roi.width * roi.height * 3`).
    pub fn convert(&mut self, frame: &Frame<'_>, roi: Roi, out: &mut Vec<u8>) -> Result<(), ConvertError> {
        let m = &frame.meta;
        // Bounds every buffer a frame sizes (the MJPG decode, the ROI's RGB, the frame pool) and
        // keeps the plane arithmetic far from overflow on 32-bit ARM, whatever a driver reports.
        if m.width > MAX_FRAME_WIDTH || m.height > MAX_FRAME_HEIGHT {
            return Err(ConvertError::TooLarge { width: m.width, height: m.height });
        }
        if !roi.fits(m.width, m.height) {
            return Err(ConvertError::RoiOutside { roi, width: m.width, height: m.height });
        }
        let deinterlace = if m.field == FieldOrder::Interlaced { self.deinterlace } else { Deinterlace::Weave };
        if m.format != PixelFormat::Mjpg {
            return convert_raw(frame, roi, deinterlace, &mut self.blend_line, out);
        }
        let rgb = self.mjpg.decode(frame.data, m.width, m.height)?;
        let meta = super::FrameMeta { format: PixelFormat::Rgb24, stride: m.width as usize * 3, ..*m };
        convert_raw(&Frame { meta, data: rgb }, roi, deinterlace, &mut self.blend_line, out)
    }
}

/// One-off conversion of a progressive or woven frame. A pipeline keeps a [`Converter`] instead
/// (it reuses the MJPG buffer and honours the deinterlace setting).
pub fn roi_to_rgb(frame: &Frame<'_>, roi: Roi, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    Converter::new(Deinterlace::Weave).convert(frame, roi, out)
}

/// The ROI of an uncompressed frame, line by line through the format's row kernel.
fn convert_raw(
    frame: &Frame<'_>,
    roi: Roi,
    deinterlace: Deinterlace,
    blend_line: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), ConvertError> {
    let m = &frame.meta;
    let layout = Layout::check(frame)?;
    let kernel = rows::kernel(m.format);
    let coeffs = YuvCoeffs::new(m.color_space, m.range);
    let row_bytes = roi.width as usize * 3;
    out.clear();
    out.resize(row_bytes * roi.height as usize, 0);
    if deinterlace == Deinterlace::Blend {
        blend_line.clear();
        blend_line.resize(row_bytes, 0);
    }
    let job = RowJob { data: frame.data, layout, kernel, coeffs, x0: roi.x as usize, height: m.height as usize };
    for (i, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
        job.line(roi.y as usize + i, deinterlace, dst, blend_line);
    }
    Ok(())
}

/// Everything one frame's rows share.
struct RowJob<'a> {
    data: &'a [u8],
    layout: Layout,
    kernel: RowFn,
    coeffs: YuvCoeffs,
    x0: usize,
    height: usize,
}

impl RowJob<'_> {
    /// Output line for source line `y`, which interlaced input may take from other lines.
    fn line(&self, y: usize, deinterlace: Deinterlace, dst: &mut [u8], blend_line: &mut [u8]) {
        match deinterlace {
            Deinterlace::Weave => self.convert(y, dst),
            Deinterlace::TopField => self.convert(y & !1, dst),
            Deinterlace::Blend => {
                self.convert(y & !1, dst);
                // A frame with an odd height has no bottom line under its last top line.
                self.convert((y | 1).min(self.height - 1), blend_line);
                rows::average(dst, blend_line);
            }
        }
    }

    fn convert(&self, y: usize, dst: &mut [u8]) {
        (self.kernel)(&self.layout.lines(self.data, y), self.x0, dst, &self.coeffs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{ColorSpace, FrameMeta, Range};
    use std::time::{Duration, SystemTime};

    fn frame(format: PixelFormat, width: u32, height: u32, stride: usize, data: &[u8]) -> Frame<'_> {
        let meta = FrameMeta {
            width,
            height,
            format,
            stride,
            color_space: ColorSpace::Bt601,
            range: Range::Limited,
            field: FieldOrder::Progressive,
            sequence: 0,
            monotonic: Duration::ZERO,
            wall: SystemTime::UNIX_EPOCH,
        };
        Frame { meta, data }
    }

    fn interlaced(data: &[u8], height: u32) -> Frame<'_> {
        let mut f = frame(PixelFormat::Grey, 1, height, 1, data);
        f.meta.range = Range::Full;
        f.meta.field = FieldOrder::Interlaced;
        f
    }

    fn grey_column(mode: Deinterlace, f: &Frame<'_>, roi: Roi) -> Vec<u8> {
        let mut out = Vec::new();
        Converter::new(mode).convert(f, roi, &mut out).unwrap();
        out.chunks_exact(3).map(|p| p[0]).collect()
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
    fn uyvy_and_yuyv_of_the_same_pixels_agree_from_an_odd_x() {
        let yuyv = [16, 90, 235, 240, 81, 128, 145, 60];
        let uyvy = [90, 16, 240, 235, 128, 81, 60, 145];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let roi = Roi { x: 1, y: 0, width: 3, height: 1 };
        roi_to_rgb(&frame(PixelFormat::Yuyv, 4, 1, 8, &yuyv), roi, &mut a).unwrap();
        roi_to_rgb(&frame(PixelFormat::Uyvy, 4, 1, 8, &uyvy), roi, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn nv12_and_yu12_of_the_same_pixels_agree() {
        // 4x2: Y plane, then CbCr interleaved (NV12) or Cb plane, Cr plane (YU12).
        let nv12 = [16, 50, 100, 235, 30, 60, 90, 120, 90, 240, 128, 60];
        let yu12 = [16, 50, 100, 235, 30, 60, 90, 120, 90, 128, 240, 60];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        roi_to_rgb(&frame(PixelFormat::Nv12, 4, 2, 4, &nv12), Roi::full(4, 2), &mut a).unwrap();
        roi_to_rgb(&frame(PixelFormat::Yu12, 4, 2, 4, &yu12), Roi::full(4, 2), &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn top_field_doubles_even_lines_of_interlaced_frames_only() {
        let data = [10, 20, 30, 40, 50];
        assert_eq!(grey_column(Deinterlace::TopField, &interlaced(&data, 5), Roi::full(1, 5)), [10, 10, 30, 30, 50]);
        assert_eq!(grey_column(Deinterlace::TopField, &interlaced(&data, 5), Roi { x: 0, y: 1, width: 1, height: 2 }), [10, 30]);
        let mut progressive = interlaced(&data, 5);
        progressive.meta.field = FieldOrder::Progressive;
        assert_eq!(grey_column(Deinterlace::TopField, &progressive, Roi::full(1, 5)), data);
    }

    #[test]
    fn blend_averages_line_pairs_and_weave_keeps_them() {
        let data = [10, 21, 30, 40, 50];
        assert_eq!(grey_column(Deinterlace::Blend, &interlaced(&data, 5), Roi::full(1, 5)), [16, 16, 35, 35, 50]);
        assert_eq!(grey_column(Deinterlace::Weave, &interlaced(&data, 5), Roi::full(1, 5)), data);
    }

    #[test]
    fn deinterlace_reads_its_config_names() {
        #[derive(serde::Deserialize)]
        struct S {
            interlace: Deinterlace,
        }
        let names = ["weave", "top_field", "blend"].map(|n| toml::from_str::<S>(&format!("interlace = \"{n}\"")).unwrap().interlace);
        assert_eq!(names, [Deinterlace::Weave, Deinterlace::TopField, Deinterlace::Blend]);
    }

    #[test]
    fn an_roi_outside_the_frame_is_reported_not_clipped() {
        let mut out = Vec::new();
        let e = roi_to_rgb(&frame(PixelFormat::Grey, 4, 4, 4, &[0; 16]), Roi { x: 2, y: 0, width: 3, height: 4 }, &mut out);
        assert!(matches!(e, Err(ConvertError::RoiOutside { .. })));
    }

    #[test]
    fn a_frame_larger_than_the_largest_supported_is_refused_before_any_buffer_is_sized() {
        let mut out = Vec::new();
        for (w, h) in [(MAX_FRAME_WIDTH + 1, 16), (16, MAX_FRAME_HEIGHT + 1), (u32::MAX, u32::MAX)] {
            let e = roi_to_rgb(&frame(PixelFormat::Mjpg, w, h, 0, &[0xFF, 0xD8, 0xFF, 0xD9]), Roi::full(16, 16), &mut out);
            assert!(matches!(e, Err(ConvertError::TooLarge { .. })), "{w}x{h}: {e:?}");
            assert_eq!(out.capacity(), 0, "{w}x{h} sized the output");
        }
        let edge = vec![0; (MAX_FRAME_WIDTH * MAX_FRAME_HEIGHT) as usize];
        roi_to_rgb(
            &frame(PixelFormat::Grey, MAX_FRAME_WIDTH, MAX_FRAME_HEIGHT, MAX_FRAME_WIDTH as usize, &edge),
            Roi::full(16, 16),
            &mut out,
        )
        .unwrap();
    }

    #[test]
    fn a_truncated_buffer_is_an_error() {
        let mut out = Vec::new();
        let e = roi_to_rgb(&frame(PixelFormat::Rgb24, 4, 4, 12, &[0; 40]), Roi::full(4, 4), &mut out);
        assert!(matches!(e, Err(ConvertError::Truncated { .. })));
    }

    #[test]
    fn a_truncated_chroma_plane_is_an_error() {
        // 4x4 YU12 needs 16 + 4 + 4 bytes; the Cr plane is cut short.
        let mut out = Vec::new();
        let e = roi_to_rgb(&frame(PixelFormat::Yu12, 4, 4, 4, &[0; 23]), Roi::full(2, 2), &mut out);
        assert!(matches!(e, Err(ConvertError::Truncated { need: 24, .. })), "{e:?}");
    }

    #[test]
    fn a_stride_shorter_than_a_line_is_an_error() {
        let mut out = Vec::new();
        let e = roi_to_rgb(&frame(PixelFormat::Yuyv, 4, 2, 6, &[0; 16]), Roi::full(4, 2), &mut out);
        assert!(matches!(e, Err(ConvertError::StrideTooSmall { need: 8, .. })), "{e:?}");
    }
}
