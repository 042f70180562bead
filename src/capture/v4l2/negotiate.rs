//! Format negotiation with a V4L2 capture device: ask for the configured (or best offered) format,
//! size and frame rate, then read back and use what the driver actually set, with its stride,
//! YCbCr matrix, quantization range and field order.

use std::io;
use std::os::raw::c_void;

use v4l::framesize::FrameSizeEnum;
use v4l::v4l_sys::{v4l2_format, v4l2_pix_format};
use v4l::video::Capture;
use v4l::{v4l2, Device, FourCC, Fraction};

use crate::capture::{ColorSpace, FieldOrder, PixelFormat, Range};

/// The fourccs sonoedge converts, best first (the order `format = "auto"` tries them in).
pub const SUPPORTED: [(&[u8; 4], PixelFormat); 9] = [
    (b"YUYV", PixelFormat::Yuyv),
    (b"UYVY", PixelFormat::Uyvy),
    (b"NV12", PixelFormat::Nv12),
    (b"YU12", PixelFormat::Yu12),
    (b"RGB3", PixelFormat::Rgb24),
    (b"BGR3", PixelFormat::Bgr24),
    (b"GREY", PixelFormat::Grey),
    (b"MJPG", PixelFormat::Mjpg),
    (b"JPEG", PixelFormat::Mjpg),
];

/// The largest size `auto` picks: more pixels than this only cost conversion time for a 224 input.
const AUTO_MAX_PIXELS: u64 = 1920 * 1080;

/// What the configuration asks for; `None` = let sonoedge choose from what the device offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub fourcc: Option<[u8; 4]>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<f64>,
}

/// What the driver actually set, read back after `VIDIOC_S_FMT`.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    pub fourcc: [u8; 4],
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per line of the first plane, padding included.
    pub stride: usize,
    pub size_image: usize,
    pub color_space: ColorSpace,
    pub range: Range,
    pub field: FieldOrder,
    /// The frame interval the driver reports (e.g. 1001/30000), if it reports one.
    pub interval: Option<(u32, u32)>,
}

impl Negotiated {
    /// One line for logs and status, e.g. `YUYV 1280x720 stride 2560 bt601/limited 1001/30000 s`.
    pub fn describe(&self) -> String {
        let interval = self.interval.map(|(n, d)| format!(" {n}/{d} s")).unwrap_or_default();
        format!(
            "{} {}x{} stride {} {:?}/{:?} {:?}{interval}",
            fourcc_str(&self.fourcc),
            self.width,
            self.height,
            self.stride,
            self.color_space,
            self.range,
            self.field
        )
        .to_lowercase()
    }
}

pub fn fourcc_str(f: &[u8; 4]) -> String {
    String::from_utf8_lossy(f).into_owned()
}

pub fn pixel_format(fourcc: &[u8; 4]) -> Option<PixelFormat> {
    SUPPORTED.iter().find(|(f, _)| *f == fourcc).map(|(_, p)| *p)
}

/// Parses a configured fourcc (`"YUYV"`, case-insensitive; `"auto"` = `None`).
pub fn parse_fourcc(s: &str) -> Result<Option<[u8; 4]>, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let upper = s.to_ascii_uppercase();
    let found = SUPPORTED.iter().find(|(f, _)| f.as_slice() == upper.as_bytes());
    match found {
        Some((f, _)) => Ok(Some(**f)),
        None => Err(format!("`{s}` is not a supported format; use auto or one of {}", supported_list())),
    }
}

fn supported_list() -> String {
    SUPPORTED.iter().map(|(f, _)| fourcc_str(f)).collect::<Vec<_>>().join(", ")
}

/// Negotiates format, size and rate on an open device and returns what the driver set.
pub fn negotiate(dev: &Device, want: &Want) -> Result<Negotiated, String> {
    let fourcc = choose_fourcc(dev, want.fourcc)?;
    let (width, height) = match want.size {
        Some(s) => s,
        None => choose_size(dev, fourcc)?,
    };
    let pix = set_format(dev, fourcc, width, height).map_err(|e| format!("VIDIOC_S_FMT {} {width}x{height}: {e}", fourcc_str(&fourcc)))?;
    let got = pix.pixelformat.to_le_bytes();
    let Some(format) = pixel_format(&got) else {
        return Err(format!(
            "asked for {} but the driver set {}, which sonoedge cannot convert (supported: {})",
            fourcc_str(&fourcc),
            fourcc_str(&got),
            supported_list()
        ));
    };
    if got != fourcc || (pix.width, pix.height) != (width, height) {
        log::warn!(
            "asked for {} {width}x{height}, the driver set {} {}x{}: using what it set",
            fourcc_str(&fourcc),
            fourcc_str(&got),
            pix.width,
            pix.height
        );
    }
    if matches!(pix.field, FIELD_SEQ_TB | FIELD_SEQ_BT) {
        return Err(format!(
            "the driver delivers the two fields one after the other in each buffer (field order {}), which sonoedge does not take; \
            ask the grabber for progressive or interleaved video",
            pix.field
        ));
    }
    let interval = want.fps.map_or_else(|| current_interval(dev), |fps| set_fps(dev, fps));
    Ok(from_pix(&pix, got, format, interval))
}

fn from_pix(pix: &v4l2_pix_format, fourcc: [u8; 4], format: PixelFormat, interval: Option<(u32, u32)>) -> Negotiated {
    // SAFETY: ycbcr_enc and hsv_enc share a u32; reading it as ycbcr_enc is always defined.
    let ycbcr_enc = unsafe { pix.__bindgen_anon_1.ycbcr_enc };
    Negotiated {
        fourcc,
        format,
        width: pix.width,
        height: pix.height,
        stride: pix.bytesperline as usize,
        size_image: pix.sizeimage as usize,
        color_space: matrix(pix.colorspace, ycbcr_enc),
        range: range(format, pix.colorspace, pix.quantization),
        field: field_order(pix.field),
        interval,
    }
}

const FIELD_SEQ_TB: u32 = 5;
const FIELD_SEQ_BT: u32 = 6;

/// Woven fields (INTERLACED, _TB, _BT) are interlaced frames; NONE, and single fields per buffer
/// (TOP, BOTTOM, ALTERNATE: half-height images), are progressive pictures.
pub fn field_order(field: u32) -> FieldOrder {
    const INTERLACED: u32 = 4;
    const INTERLACED_TB: u32 = 8;
    const INTERLACED_BT: u32 = 9;
    match field {
        INTERLACED | INTERLACED_TB | INTERLACED_BT => FieldOrder::Interlaced,
        _ => FieldOrder::Progressive,
    }
}

/// The YCbCr matrix: the driver's explicit encoding, else the colorspace's default
/// (V4L2_MAP_YCBCR_ENC_DEFAULT: Rec. 709 and DCI-P3 use BT.709, everything else BT.601).
pub fn matrix(colorspace: u32, ycbcr_enc: u32) -> ColorSpace {
    const REC709: u32 = 3;
    const DCIP3: u32 = 12;
    const ENC_709: u32 = 2;
    const ENC_XV709: u32 = 4;
    match ycbcr_enc {
        ENC_709 | ENC_XV709 => ColorSpace::Bt709,
        0 if colorspace == REC709 || colorspace == DCIP3 => ColorSpace::Bt709,
        _ => ColorSpace::Bt601,
    }
}

/// The quantization range: the driver's explicit value, else V4L2_MAP_QUANTIZATION_DEFAULT
/// (RGB and GREY full, YUV limited except the JPEG colorspace, which is full).
pub fn range(format: PixelFormat, colorspace: u32, quantization: u32) -> Range {
    const FULL: u32 = 1;
    const LIMITED: u32 = 2;
    const JPEG: u32 = 7;
    match quantization {
        FULL => Range::Full,
        LIMITED => Range::Limited,
        _ if matches!(format, PixelFormat::Rgb24 | PixelFormat::Bgr24 | PixelFormat::Grey) => Range::Full,
        _ if colorspace == JPEG || format == PixelFormat::Mjpg => Range::Full,
        _ => Range::Limited,
    }
}

fn choose_fourcc(dev: &Device, want: Option<[u8; 4]>) -> Result<[u8; 4], String> {
    if let Some(f) = want {
        return Ok(f);
    }
    let offered: Vec<[u8; 4]> = dev.enum_formats().map_err(|e| format!("VIDIOC_ENUM_FMT: {e}"))?.iter().map(|d| d.fourcc.repr).collect();
    SUPPORTED.iter().map(|(f, _)| **f).find(|f| offered.contains(f)).ok_or_else(|| {
        let offered: Vec<String> = offered.iter().map(fourcc_str).collect();
        format!(
            "the device offers none of the formats sonoedge converts: it offers [{}], sonoedge takes {}",
            offered.join(", "),
            supported_list()
        )
    })
}

/// The largest offered size up to 1920x1080 (or the current size when the device lists none).
fn choose_size(dev: &Device, fourcc: [u8; 4]) -> Result<(u32, u32), String> {
    let sizes = dev.enum_framesizes(FourCC::new(&fourcc)).unwrap_or_default();
    let best = sizes.into_iter().filter_map(|s| largest_within(&s.size)).max_by_key(|&(w, h)| w as u64 * h as u64);
    match best {
        Some(s) => Ok(s),
        None => get_format(dev).map(|p| (p.width, p.height)).map_err(|e| format!("VIDIOC_G_FMT: {e}")),
    }
}

/// The largest size of one enumeration entry within [`AUTO_MAX_PIXELS`] (stepwise ranges on their grid).
fn largest_within(size: &FrameSizeEnum) -> Option<(u32, u32)> {
    match size {
        FrameSizeEnum::Discrete(d) => Some((d.width, d.height)).filter(|&(w, h)| w as u64 * h as u64 <= AUTO_MAX_PIXELS),
        FrameSizeEnum::Stepwise(s) => {
            let snap = |max: u32, cap: u32, min: u32, step: u32| {
                let v = max.min(cap).max(min);
                v - (v - min) % step.max(1)
            };
            Some((snap(s.max_width, 1920, s.min_width, s.step_width), snap(s.max_height, 1080, s.min_height, s.step_height)))
        }
    }
}

/// `VIDIOC_S_FMT` with `bytesperline` cleared and any field order, then `VIDIOC_G_FMT`.
fn set_format(dev: &Device, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<v4l2_pix_format> {
    let mut fmt = capture_format();
    // SAFETY: `pix` is the active union member for a single-planar capture buffer type.
    unsafe {
        fmt.fmt.pix.width = width;
        fmt.fmt.pix.height = height;
        fmt.fmt.pix.pixelformat = u32::from_le_bytes(fourcc);
        fmt.fmt.pix.field = 0; // V4L2_FIELD_ANY
        fmt.fmt.pix.bytesperline = 0;
        v4l2::ioctl(dev.handle().fd(), v4l2::vidioc::VIDIOC_S_FMT, &mut fmt as *mut _ as *mut c_void)?;
    }
    get_format(dev)
}

pub fn get_format(dev: &Device) -> io::Result<v4l2_pix_format> {
    let mut fmt = capture_format();
    // SAFETY: G_FMT fills the v4l2_format we own; `pix` is the member for VIDEO_CAPTURE.
    unsafe {
        v4l2::ioctl(dev.handle().fd(), v4l2::vidioc::VIDIOC_G_FMT, &mut fmt as *mut _ as *mut c_void)?;
        Ok(fmt.fmt.pix)
    }
}

fn capture_format() -> v4l2_format {
    // SAFETY: v4l2_format is plain old data; all-zero is a valid value.
    let mut fmt: v4l2_format = unsafe { std::mem::zeroed() };
    fmt.type_ = v4l::buffer::Type::VideoCapture as u32;
    fmt
}

/// Asks for `fps` (29.97 is sent as 1001/30000) and returns the interval the driver set.
fn set_fps(dev: &Device, fps: f64) -> Option<(u32, u32)> {
    let params = v4l::video::capture::Parameters::new(fps_fraction(fps));
    match dev.set_params(&params) {
        Ok(p) => Some((p.interval.numerator, p.interval.denominator)),
        Err(e) => {
            log::warn!("the driver did not take {fps} fps (VIDIOC_S_PARM: {e}); it runs at its own rate");
            current_interval(dev)
        }
    }
}

fn current_interval(dev: &Device) -> Option<(u32, u32)> {
    dev.params().ok().map(|p| (p.interval.numerator, p.interval.denominator)).filter(|&(n, d)| n > 0 && d > 0)
}

/// A frame interval for `fps`: NTSC-style rates (29.97, 59.94, 23.976) become 1001/(1000*n).
pub fn fps_fraction(fps: f64) -> Fraction {
    let ntsc = (fps * 1.001).round();
    if (fps * 1.001 - ntsc).abs() < 0.005 && (fps - fps.round()).abs() > 0.01 {
        return Fraction::new(1001, ntsc as u32 * 1000);
    }
    Fraction::new(1000, (fps * 1000.0).round().max(1.0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntsc_rates_become_1001_fractions() {
        let f = fps_fraction(29.97);
        assert_eq!((f.numerator, f.denominator), (1001, 30000));
        let f = fps_fraction(30.0);
        assert_eq!((f.numerator, f.denominator), (1000, 30000));
        let f = fps_fraction(59.94);
        assert_eq!((f.numerator, f.denominator), (1001, 60000));
    }

    #[test]
    fn colorimetry_defaults_follow_v4l2() {
        assert_eq!(matrix(3, 0), ColorSpace::Bt709); // Rec. 709, default encoding
        assert_eq!(matrix(8, 0), ColorSpace::Bt601); // sRGB -> BT.601 for YUV
        assert_eq!(matrix(8, 2), ColorSpace::Bt709); // explicit 709
        assert_eq!(range(PixelFormat::Yuyv, 8, 0), Range::Limited);
        assert_eq!(range(PixelFormat::Yuyv, 7, 0), Range::Full); // JPEG colorspace
        assert_eq!(range(PixelFormat::Rgb24, 8, 0), Range::Full);
        assert_eq!(range(PixelFormat::Yuyv, 8, 1), Range::Full);
    }

    #[test]
    fn only_woven_fields_are_interlaced() {
        assert_eq!(field_order(1), FieldOrder::Progressive);
        assert_eq!(field_order(4), FieldOrder::Interlaced);
        assert_eq!(field_order(9), FieldOrder::Interlaced);
        assert_eq!(field_order(7), FieldOrder::Progressive, "ALTERNATE: one field per buffer");
    }

    #[test]
    fn configured_formats_parse() {
        assert_eq!(parse_fourcc("auto"), Ok(None));
        assert_eq!(parse_fourcc("yuyv"), Ok(Some(*b"YUYV")));
        assert!(parse_fourcc("H264").unwrap_err().contains("YUYV"));
    }
}
