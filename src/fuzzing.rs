//! The harnesses of the fuzz targets (fuzz/fuzz_targets/) and of the replay of their saved corpora
//! as ordinary tests (tests/it/fuzz_corpus.rs): one function per target, taking arbitrary bytes and
//! feeding them to a parser or converter that sees untrusted input in the daemon. Each panics only
//! on a bug: a crash inside, or a result that breaks the function's own contract. Kept in the
//! library so the fuzzer (nightly) and the replay (stable CI) run the same code; not an API.

use std::path::Path;

use crate::capture::convert::{Converter, Deinterlace, Roi};
use crate::capture::fan::FanMask;
use crate::capture::images::ImageSource;
use crate::capture::still::{decode_still_bytes, StillLimits};
use crate::capture::{ColorSpace, FieldOrder, Frame, FrameMeta, PixelFormat, Range};
use crate::config::{Config, SourceKind, MAX_FRAME_HEIGHT, MAX_FRAME_WIDTH};

/// One harness: arbitrary bytes in, a panic only on a bug.
pub type Harness = fn(&[u8]);

/// Every target by name: fuzz/fuzz_targets/<name>.rs calls it, fuzz/corpus/<name>/ holds its corpus.
pub const TARGETS: [(&str, Harness); 4] = [("config", config), ("convert", convert), ("mjpg", mjpg), ("still", still)];

/// The password the config seeds carry in their broker URLs; no message may show it.
pub const SECRET: &str = "Sup3rS3cretPw";

/// A config file: parsed and checked; an accepted one is put through what the daemon derives from
/// it at start, and a refused one's message must not show a password given in a URL.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text) {
        Ok(c) => use_config(&c),
        Err(e) if only_as_password(text) => {
            let message = e.to_string();
            assert!(!message.contains(SECRET), "the config error shows the URL's password:\n{message}");
        }
        Err(_) => {}
    }
}

/// True if the input holds [`SECRET`], and only ever as a URL's password (`:SECRET@`).
fn only_as_password(text: &str) -> bool {
    let n = text.matches(SECRET).count();
    n > 0 && n == text.matches(&format!(":{SECRET}@")).count()
}

/// What the daemon computes from an accepted config before its threads start.
fn use_config(c: &Config) {
    let _ = (c.pipeline.min_interval(), c.mqtt.stats_interval(), c.mqtt.redacted_urls(), c.mqtt.settings(None));
    if let SourceKind::Images { path, fps, looping } = &c.source.kind {
        ImageSource::new(path.clone(), *fps, *looping);
    }
    let roi = c.source.roi().map_or(Roi::full(MAX_FRAME_WIDTH, MAX_FRAME_HEIGHT), Roi::from_array);
    assert!(roi.fits(MAX_FRAME_WIDTH, MAX_FRAME_HEIGHT), "accepted ROI {roi:?} does not fit the largest frame");
    if let Some(fan) = c.source.fan() {
        // The ROI's top-left corner only: a whole 8K mask per input would slow the fuzzer 1000x.
        let corner = Roi { width: roi.width.min(64), height: roi.height.min(64), ..roi };
        let mut rgb = vec![255; corner.width as usize * corner.height as usize * 3];
        FanMask::new(&fan, corner).apply(&mut rgb);
    }
}

/// Bytes consumed from the front of an input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

const RAW_FORMATS: [PixelFormat; 7] =
    [PixelFormat::Rgb24, PixelFormat::Bgr24, PixelFormat::Grey, PixelFormat::Yuyv, PixelFormat::Uyvy, PixelFormat::Nv12, PixelFormat::Yu12];

/// An uncompressed frame: a 15-byte header (format and flags, width, height, stride, ROI), then
/// the buffer. The ROI's conversion must equal the same rectangle cut from the whole frame's.
///
/// Header: byte 0 = format (bits 0-2, modulo 7), BT.709 (bit 3), full range (bit 4), interlaced
/// (bit 5), deinterlace mode (bits 6-7, modulo 3); u16 width, u16 height; stride = width x byte 5
/// (modulo 5) + byte 6; then the ROI (see [`roi`]).
pub fn convert(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let format = RAW_FORMATS[(flags & 7) as usize % RAW_FORMATS.len()];
    let (width, height) = (input.u16() as u32, input.u16() as u32);
    let stride = width as usize * (input.u8() % 5) as usize + input.u8() as usize;
    let roi = roi(&mut input, width, height);
    let meta = frame_meta(flags, format, width, height, stride);
    check_conversion(&Frame { meta, data: input.rest() }, roi, deinterlace(flags));
}

/// An MJPG buffer from a grabber that negotiated a size: a 13-byte header (flags as for
/// [`convert`], u16 width and height, each modulo 2049, then the ROI), then the JPEG.
pub fn mjpg(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let (width, height) = (input.u16() as u32 % 2049, input.u16() as u32 % 2049);
    let roi = roi(&mut input, width, height);
    let meta = frame_meta(flags, PixelFormat::Mjpg, width, height, 0);
    check_conversion(&Frame { meta, data: input.rest() }, roi, deinterlace(flags));
}

/// A still image file (PNG, JPEG, BMP), decoded under limits smaller than the default so that a
/// bomb costs milliseconds; the result must respect them.
pub fn still(data: &[u8]) {
    let limits = StillLimits { max_width: 1024, max_height: 1024, max_alloc_bytes: 16 << 20 };
    let Ok(s) = decode_still_bytes(data, Path::new("fuzz-input"), &limits) else { return };
    assert!(s.width <= limits.max_width && s.height <= limits.max_height, "{}x{} decoded", s.width, s.height);
    let len = s.width as usize * s.height as usize * s.layout.bytes_per_pixel();
    assert_eq!(s.data.len(), len, "a {}x{} {:?} still", s.width, s.height, s.layout);
}

/// The ROI from 4 u16: one inside the frame (x and y modulo the size, then width and height modulo
/// what is left), unless bit 15 of x is set, which takes all four as they are (mostly outside).
fn roi(input: &mut Input<'_>, width: u32, height: u32) -> Roi {
    let raw = [input.u16(), input.u16(), input.u16(), input.u16()].map(u32::from);
    if raw[0] & 0x8000 != 0 {
        return Roi::from_array([raw[0] & 0x7FFF, raw[1], raw[2], raw[3]]);
    }
    let (x, y) = (raw[0] % width.max(1), raw[1] % height.max(1));
    let (w, h) = (1 + raw[2] % (width - x).max(1), 1 + raw[3] % (height - y).max(1));
    Roi { x, y, width: w, height: h }
}

fn frame_meta(flags: u8, format: PixelFormat, width: u32, height: u32, stride: usize) -> FrameMeta {
    FrameMeta {
        width,
        height,
        format,
        stride,
        color_space: if flags & 8 != 0 { ColorSpace::Bt709 } else { ColorSpace::Bt601 },
        range: if flags & 16 != 0 { Range::Full } else { Range::Limited },
        field: if flags & 32 != 0 { FieldOrder::Interlaced } else { FieldOrder::Progressive },
        sequence: 0,
        monotonic: std::time::Duration::ZERO,
        wall: std::time::SystemTime::UNIX_EPOCH,
    }
}

fn deinterlace(flags: u8) -> Deinterlace {
    [Deinterlace::Weave, Deinterlace::TopField, Deinterlace::Blend][(flags >> 6) as usize % 3]
}

/// Converts the ROI twice with one [`Converter`] (its reused buffers must not change the result),
/// then, for frames small enough, the whole frame, which must hold the ROI's pixels.
fn check_conversion(frame: &Frame<'_>, roi: Roi, mode: Deinterlace) {
    let mut converter = Converter::new(mode);
    let (mut first, mut again) = (Vec::new(), Vec::new());
    let Ok(()) = converter.convert(frame, roi, &mut first) else { return };
    assert_eq!(first.len(), roi.width as usize * roi.height as usize * 3, "{roi:?} of {:?}", frame.meta);
    converter.convert(frame, roi, &mut again).expect("the same frame converts again");
    assert!(first == again, "a second conversion of the same frame differs ({roi:?} of {:?})", frame.meta);
    let (w, h) = (frame.meta.width, frame.meta.height);
    if w as u64 * h as u64 <= 1 << 16 {
        let mut whole = Vec::new();
        converter.convert(frame, Roi::full(w, h), &mut whole).expect("the whole frame converts when its ROI did");
        assert!(first == crop(&whole, w, roi), "the ROI's pixels differ from the whole frame's ({roi:?} of {:?})", frame.meta);
    }
}

/// `roi` cut from packed RGB `width` pixels wide.
fn crop(rgb: &[u8], width: u32, roi: Roi) -> Vec<u8> {
    let (line, x0, w) = (width as usize * 3, roi.x as usize * 3, roi.width as usize * 3);
    let rows = rgb.chunks_exact(line).skip(roi.y as usize).take(roi.height as usize);
    rows.flat_map(|row| &row[x0..x0 + w]).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roi_header_maps_into_the_frame_unless_its_top_bit_is_set() {
        // x 5 % 4, y 7 % 6, width 1 + 4 % (4 - 1), height 1 + 7 % (6 - 1).
        let inside = roi(&mut Input(&[5, 0, 7, 0, 4, 0, 7, 0]), 4, 6);
        assert_eq!(inside, Roi { x: 1, y: 1, width: 2, height: 3 });
        assert!(inside.fits(4, 6));
        let raw = roi(&mut Input(&[0x03, 0x80, 0, 0, 9, 0, 9, 0]), 4, 6);
        assert_eq!(raw, Roi { x: 3, y: 0, width: 9, height: 9 });
    }

    #[test]
    fn the_secret_oracle_applies_only_when_the_secret_is_a_password_everywhere() {
        assert!(only_as_password(&format!("url = \"mqtt://u:{SECRET}@h\"")));
        assert!(!only_as_password(&format!("url = \"mqtt://u:{SECRET}@h\" device_id = \"{SECRET}\"")));
        assert!(!only_as_password("url = \"mqtt://u:pw@h\""));
    }
}
