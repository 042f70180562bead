//! Still images from files, decoded the way the reference pipeline loads them
//! (`transformers.image_utils.load_image`: EXIF orientation applied, then `convert("RGB")`), within
//! [`StillLimits`]: every still-image path (classify, bench, the images source, the fuzz target)
//! decodes through one function, behind [`load_still_with`] (files) and [`decode_still_bytes`]
//! (memory), so a decompression bomb is refused from its header, before any pixel buffer is
//! allocated.

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{ColorType, DynamicImage, GrayImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use crate::preprocess::{ImageView, Layout};

/// What decoding one still image may cost. The default fits a 1 GB Raspberry Pi: an 8192x8192
/// RGB image (192 MiB of pixels) decodes; anything wider, taller or hungrier is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StillLimits {
    pub max_width: u32,
    pub max_height: u32,
    /// Bytes decoding may hold at once: the file (the JPEG decoder reads it whole), the decoded
    /// pixels, a rotated copy when EXIF asks for a quarter turn, and the decoder's own buffers.
    pub max_alloc_bytes: u64,
}

impl Default for StillLimits {
    fn default() -> Self {
        StillLimits { max_width: 8192, max_height: 8192, max_alloc_bytes: 256 << 20 }
    }
}

/// Why a still image was not decoded; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    // The cause is in the message, so not also a `source` (`{:#}` would print it twice).
    #[error("cannot read image {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("image {path} is {width}x{height}, over the {max_width}x{max_height} limit for still images; consider downscaling it")]
    TooLarge { path: PathBuf, width: u32, height: u32, max_width: u32, max_height: u32 },
    #[error(
        "image {path} needs {need_mib} MiB to decode ({what}), over the {max_mib} MiB limit for still images; consider a smaller image"
    )]
    OverBudget { path: PathBuf, what: String, need_mib: u64, max_mib: u64 },
    #[error("image {0}: {1:?} pixels are not supported (the reference pipeline would clip them, not scale them); convert the image to 8-bit grey or RGB")]
    Unsupported(PathBuf, ColorType),
    #[error("cannot decode image {0}: {1}")]
    Decode(PathBuf, image::ImageError),
}

/// A decoded 8-bit image that owns its pixels.
#[derive(Debug, Clone)]
pub struct Still {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
}

impl Still {
    pub fn view(&self) -> ImageView<'_> {
        ImageView { width: self.width, height: self.height, layout: self.layout, data: &self.data }
    }
}

/// [`load_still_with`] under the default [`StillLimits`].
pub fn load_still(path: &Path) -> Result<Still, StillError> {
    load_still_with(path, &StillLimits::default())
}

/// Decodes a PNG, JPEG or BMP file; grey stays one channel, alpha is dropped as PIL's
/// `convert("RGB")` does. The size and memory checks run on the header, before decoding.
pub fn load_still_with(path: &Path, limits: &StillLimits) -> Result<Still, StillError> {
    let io = |e| StillError::Io(path.to_path_buf(), e);
    let file_bytes = std::fs::metadata(path).map_err(io)?.len();
    decode_still(|| std::fs::File::open(path).map(std::io::BufReader::new), path, file_bytes, limits)
}

/// [`load_still_with`] for an image already in memory; `name` stands for it in errors.
pub fn decode_still_bytes(bytes: &[u8], name: &Path, limits: &StillLimits) -> Result<Still, StillError> {
    decode_still(|| Ok(std::io::Cursor::new(bytes)), name, bytes.len() as u64, limits)
}

/// The one decoding path of both: format from the content, header checks, then the pixels.
/// `open` gives the image's bytes from the start (a second time only for [`refused_early`]).
fn decode_still<R: BufRead + Seek>(
    open: impl Fn() -> std::io::Result<R>,
    path: &Path,
    file_bytes: u64,
    limits: &StillLimits,
) -> Result<Still, StillError> {
    let io = |e| StillError::Io(path.to_path_buf(), e);
    let decode = |e| StillError::Decode(path.to_path_buf(), e);
    let mut reader = ImageReader::new(open().map_err(io)?).with_guessed_format().map_err(io)?;
    // Only the memory bound here, so the dimension check below can report the actual size.
    reader.limits(alloc_only(limits.max_alloc_bytes));
    let format = reader.format();
    let mut decoder = reader.into_decoder().map_err(|e| refused_early(open().ok(), path, limits, format, e))?;
    let orientation = decoder.orientation().map_err(decode)?;
    let left = check_header(path, limits, &decoder, file_bytes, orientation)?;
    let mut decoder_limits = alloc_only(left);
    (decoder_limits.max_image_width, decoder_limits.max_image_height) = (Some(limits.max_width), Some(limits.max_height));
    decoder.set_limits(decoder_limits).map_err(decode)?;
    let mut img = without_alpha(DynamicImage::from_decoder(decoder).map_err(decode)?);
    img.apply_orientation(orientation);
    into_still(img).map_err(|c| StillError::Unsupported(path.to_path_buf(), c))
}

/// A decoder that refused the file before [`check_header`] could see it. On 32-bit systems the PNG
/// decoder does so for any image whose pixels cannot be addressed, so its size is read from the
/// header here, to name it and the limit as on 64-bit systems.
fn refused_early<R: BufRead + Seek>(
    bytes: Option<R>,
    path: &Path,
    limits: &StillLimits,
    format: Option<ImageFormat>,
    e: ImageError,
) -> StillError {
    if let (ImageError::Limits(_), Some(ImageFormat::Png)) = (&e, format) {
        let header = bytes.and_then(|r| png::Decoder::new(r).read_header_info().ok().map(|info| (info.width, info.height)));
        if let Some((width, height)) = header.filter(|&(w, h)| w > limits.max_width || h > limits.max_height) {
            let (max_width, max_height) = (limits.max_width, limits.max_height);
            return StillError::TooLarge { path: path.to_path_buf(), width, height, max_width, max_height };
        }
    }
    StillError::Decode(path.to_path_buf(), e)
}

fn alloc_only(max_alloc_bytes: u64) -> Limits {
    let mut l = Limits::no_limits();
    l.max_alloc = Some(max_alloc_bytes);
    l
}

/// Checks the header against `limits`; returns the bytes left for the decoder's own buffers.
fn check_header(path: &Path, limits: &StillLimits, decoder: &impl ImageDecoder, file: u64, o: Orientation) -> Result<u64, StillError> {
    let (width, height) = decoder.dimensions();
    if width > limits.max_width || height > limits.max_height {
        let (max_width, max_height) = (limits.max_width, limits.max_height);
        return Err(StillError::TooLarge { path: path.to_path_buf(), width, height, max_width, max_height });
    }
    let color = decoder.color_type();
    if !matches!(color, ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8) {
        return Err(StillError::Unsupported(path.to_path_buf(), color));
    }
    let pixels = decoder.total_bytes();
    let quarter_turn =
        matches!(o, Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH);
    let rotated = if quarter_turn { pixels / color.bytes_per_pixel() as u64 * color.channel_count().min(3) as u64 } else { 0 };
    let need = file.saturating_add(pixels).saturating_add(rotated);
    if need > limits.max_alloc_bytes {
        let what = format!("{file} bytes of file, {width}x{height} {color:?} pixels{}", if quarter_turn { ", a rotated copy" } else { "" });
        return Err(StillError::OverBudget {
            path: path.to_path_buf(),
            what,
            need_mib: need.div_ceil(1 << 20),
            max_mib: limits.max_alloc_bytes >> 20,
        });
    }
    Ok(limits.max_alloc_bytes - need)
}

/// Drops the alpha channel in the decoded buffer itself (no second image-sized buffer).
fn without_alpha(img: DynamicImage) -> DynamicImage {
    let (width, height) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgba8(rgba) => {
            let rgb = RgbImage::from_raw(width, height, drop_last_channel(rgba.into_raw(), 4));
            rgb.map(DynamicImage::ImageRgb8).expect("3 bytes per pixel kept")
        }
        DynamicImage::ImageLumaA8(la) => {
            let grey = GrayImage::from_raw(width, height, drop_last_channel(la.into_raw(), 2));
            grey.map(DynamicImage::ImageLuma8).expect("1 byte per pixel kept")
        }
        other => other,
    }
}

/// Keeps the first `channels - 1` bytes of each `channels`-byte pixel, compacting in place.
fn drop_last_channel(mut data: Vec<u8>, channels: usize) -> Vec<u8> {
    let keep = channels - 1;
    for i in 0..data.len() / channels {
        data.copy_within(i * channels..i * channels + keep, i * keep);
    }
    data.truncate(data.len() / channels * keep);
    data.shrink_to_fit();
    data
}

fn into_still(img: DynamicImage) -> Result<Still, ColorType> {
    let (width, height) = (img.width(), img.height());
    let (layout, data) = match without_alpha(img) {
        DynamicImage::ImageLuma8(g) => (Layout::Grey8, g.into_raw()),
        DynamicImage::ImageRgb8(rgb) => (Layout::Rgb8, rgb.into_raw()),
        other => return Err(other.color()),
    };
    Ok(Still { width, height, layout, data })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{GrayAlphaImage, LumaA, Rgba, RgbaImage};

    #[test]
    fn alpha_is_dropped_not_composited() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 1, Rgba([200, 100, 50, 0])));
        let s = into_still(img).unwrap();
        assert_eq!((s.layout, &s.data[..]), (Layout::Rgb8, &[200, 100, 50, 200, 100, 50][..]));
    }

    #[test]
    fn grey_with_alpha_stays_grey() {
        let img = DynamicImage::ImageLumaA8(GrayAlphaImage::from_pixel(1, 1, LumaA([77, 9])));
        let s = into_still(img).unwrap();
        assert_eq!((s.layout, &s.data[..]), (Layout::Grey8, &[77][..]));
    }

    #[test]
    fn sixteen_bit_images_are_refused_with_a_reason() {
        let img = DynamicImage::new_luma16(2, 2);
        assert_eq!(into_still(img).unwrap_err(), ColorType::L16);
        let err = StillError::Unsupported("x.png".into(), ColorType::L16).to_string();
        assert!(err.contains("8-bit") && err.contains("x.png"), "{err}");
    }

    #[test]
    fn dropping_alpha_keeps_every_pixel_in_order() {
        let rgba = vec![1, 2, 3, 9, 4, 5, 6, 9, 7, 8, 0, 9];
        assert_eq!(drop_last_channel(rgba, 4), [1, 2, 3, 4, 5, 6, 7, 8, 0]);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sonoedge-still-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// A valid PNG header declaring `width` x `height` 8-bit grey, with a token IDAT: a bomb's
    /// header without its megabytes of zeros (refusal must come from the header alone).
    pub(crate) fn png_bomb(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut png, b"IEND", &[]);
        png
    }

    /// A real 16x16 JPEG whose SOF0 is rewritten to claim `width` x `height` (also used by the
    /// MJPG decoder's tests).
    pub(crate) fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        let img = RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 128]));
        img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG has SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_png_declaring_60000_squared_is_refused_from_its_header_naming_file_and_limit() {
        let path = tmp("bomb.png");
        std::fs::write(&path, png_bomb(60000, 60000)).unwrap();
        let err = load_still(&path).unwrap_err();
        assert!(matches!(err, StillError::TooLarge { width: 60000, height: 60000, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("bomb.png") && text.contains("60000x60000") && text.contains("8192x8192"), "{text}");
        let in_memory = decode_still_bytes(&png_bomb(60000, 60000), Path::new("mem.png"), &StillLimits::default());
        assert!(matches!(in_memory, Err(StillError::TooLarge { width: 60000, height: 60000, .. })), "{in_memory:?}");
    }

    #[test]
    fn a_jpeg_whose_header_claims_65500_squared_is_refused_before_decoding() {
        let path = tmp("claims.jpg");
        std::fs::write(&path, jpeg_claiming(65500, 65500)).unwrap();
        let err = load_still(&path).unwrap_err();
        assert!(matches!(err, StillError::TooLarge { width: 65500, height: 65500, .. }), "{err:?}");
    }

    #[test]
    fn an_image_within_the_size_but_over_the_memory_limit_is_refused_by_its_budget() {
        let path = tmp("wide.png");
        RgbImage::new(1000, 1000).save(&path).unwrap();
        let limits = StillLimits { max_alloc_bytes: 1 << 20, ..StillLimits::default() };
        let err = load_still_with(&path, &limits).unwrap_err();
        assert!(matches!(err, StillError::OverBudget { need_mib: 3, max_mib: 1, .. }), "{err:?}");
        assert!(load_still(&path).is_ok());
    }

    #[test]
    fn an_image_at_the_limit_decodes_and_one_pixel_more_does_not() {
        let path = tmp("edge.png");
        GrayImage::new(64, 32).save(&path).unwrap();
        let limits = StillLimits { max_width: 64, max_height: 32, ..StillLimits::default() };
        let s = load_still_with(&path, &limits).unwrap();
        assert_eq!((s.width, s.height, s.data.len()), (64, 32, 64 * 32));
        let tighter = StillLimits { max_width: 63, ..limits };
        assert!(matches!(load_still_with(&path, &tighter), Err(StillError::TooLarge { .. })));
    }

    #[test]
    fn a_sixteen_bit_png_is_refused_from_its_header() {
        let path = tmp("deep.png");
        DynamicImage::new_luma16(4, 4).save(&path).unwrap();
        assert!(matches!(load_still(&path), Err(StillError::Unsupported(_, ColorType::L16))));
    }
}
