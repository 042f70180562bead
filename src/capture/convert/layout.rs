//! Where each plane's lines sit in a V4L2 single-planar buffer, and whether the buffer is long
//! enough for all of them. Checked once per frame so the row kernels can index without surprises.

use super::rows::Lines;
use super::ConvertError;
use crate::capture::{Frame, PixelFormat};

/// Plane geometry of one frame. Packed formats have only the luma (or only) plane.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    stride: usize,
    /// First chroma plane (CbCr for NV12, Cb for YU12).
    chroma: usize,
    /// Second chroma plane (Cr for YU12).
    chroma2: usize,
    chroma_stride: usize,
}

impl Layout {
    /// The frame's layout, or why its buffer cannot hold the frame.
    pub(super) fn check(frame: &Frame<'_>) -> Result<Layout, ConvertError> {
        let m = &frame.meta;
        let (w, h, stride) = (m.width as usize, m.height as usize, m.stride);
        let line = line_bytes(m.format, w);
        if stride < line {
            return Err(ConvertError::StrideTooSmall { stride, need: line, width: m.width, format: m.format });
        }
        let (layout, need) = Layout::planes(m.format, w, h, stride);
        if frame.data.len() < need {
            return Err(ConvertError::Truncated {
                got: frame.data.len(),
                need,
                width: m.width,
                height: m.height,
                format: m.format,
                stride,
            });
        }
        Ok(layout)
    }

    /// Plane offsets and the bytes the last plane's last line ends at.
    fn planes(format: PixelFormat, w: usize, h: usize, stride: usize) -> (Layout, usize) {
        let packed = Layout { stride, chroma: 0, chroma2: 0, chroma_stride: 0 };
        let (chroma_w, chroma_h) = (w.div_ceil(2), h.div_ceil(2));
        let luma_end = stride * (h - 1) + line_bytes(format, w);
        match format {
            PixelFormat::Nv12 => {
                let chroma = stride * h;
                (Layout { chroma, chroma_stride: stride, ..packed }, chroma + stride * (chroma_h - 1) + 2 * chroma_w)
            }
            PixelFormat::Yu12 => {
                let (chroma, chroma_stride) = (stride * h, stride / 2);
                let chroma2 = chroma + chroma_stride * chroma_h;
                (Layout { chroma, chroma2, chroma_stride, ..packed }, chroma2 + chroma_stride * (chroma_h - 1) + chroma_w)
            }
            _ => (packed, luma_end),
        }
    }

    /// The lines that make source line `y` (chroma line `y / 2` for 4:2:0).
    pub(super) fn lines<'a>(&self, data: &'a [u8], y: usize) -> Lines<'a> {
        let c = (y / 2) * self.chroma_stride;
        Lines { luma: &data[y * self.stride..], chroma: &data[self.chroma + c..], chroma2: &data[self.chroma2 + c..] }
    }
}

/// Bytes of one line's pixels (luma plane for the planar formats), padding excluded.
fn line_bytes(format: PixelFormat, width: usize) -> usize {
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => width * 3,
        PixelFormat::Yuyv | PixelFormat::Uyvy => width.div_ceil(2) * 4,
        PixelFormat::Grey | PixelFormat::Nv12 | PixelFormat::Yu12 => width,
        // Decoded to RGB before a layout is asked for.
        PixelFormat::Mjpg => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yu12_chroma_planes_follow_the_luma_plane_at_half_stride() {
        let (l, need) = Layout::planes(PixelFormat::Yu12, 6, 4, 8);
        assert_eq!((l.chroma, l.chroma2, l.chroma_stride), (32, 40, 4));
        assert_eq!(need, 40 + 4 + 3);
    }

    #[test]
    fn nv12_chroma_plane_shares_the_luma_stride() {
        let (l, need) = Layout::planes(PixelFormat::Nv12, 6, 3, 8);
        assert_eq!((l.chroma, l.chroma_stride), (24, 8));
        assert_eq!(need, 24 + 8 + 6);
    }
}
