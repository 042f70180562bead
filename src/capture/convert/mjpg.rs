//! MJPG frames: decoded whole (zune-jpeg, the decoder behind the `image` crate) into an RGB
//! buffer reused from frame to frame, before the ROI is taken from it. Broken, truncated or
//! mis-sized JPEGs become [`ConvertError::Corrupt`], never a panic: USB cameras deliver such
//! frames now and then, and the pipeline skips and counts them.
//!
//! Truncation: a frame must end with the EOI marker (zero padding after it is allowed), and is
//! then decoded without it, so a scan that runs out of bytes is an error instead of rows the
//! decoder fills in (what it does when an EOI comes early).
//!
//! Size: a JPEG whose header declares any size but the negotiated one is corrupt, found from the
//! header before the RGB buffer is sized, so a frame never costs more than the negotiated size.
//!
//! Many UVC cameras omit the Huffman tables (MJPG's "fixed" tables, as AVI files do); such frames
//! are copied behind an `AVI1` APP0 marker, which makes the decoder use the standard tables.

use std::panic::{catch_unwind, AssertUnwindSafe};

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::ConvertError;

/// SOI, then an APP0 segment of length 7 holding "AVI1\0".
const AVI1_PREFIX: [u8; 11] = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0];

/// The reused buffers: decoded RGB, and the copy of a frame that needed the AVI1 marker.
#[derive(Debug, Default)]
pub(super) struct MjpgDecoder {
    rgb: Vec<u8>,
    patched: Vec<u8>,
}

impl MjpgDecoder {
    /// Decodes one JPEG that must be `width` x `height`; the RGB lives until the next call.
    pub(super) fn decode(&mut self, jpeg: &[u8], width: u32, height: u32) -> Result<&[u8], ConvertError> {
        let jpeg = check_complete(jpeg)?;
        let jpeg = if has_huffman_tables(jpeg) { jpeg } else { with_default_tables(jpeg, &mut self.patched) };
        let (w, h) = (width as usize, height as usize);
        // SIMD paths on (runtime-detected); strict, so damaged data is an error, not grey blocks.
        // The negotiated size is also the decoder's own maximum: a header claiming more (a torn
        // buffer, a hostile device) is refused while the header is parsed, before any allocation.
        let options =
            DecoderOptions::new_fast().set_strict_mode(true).set_max_width(w).set_max_height(h).jpeg_set_out_colorspace(ColorSpace::RGB);
        let rgb = &mut self.rgb;
        let decoded = catch_unwind(AssertUnwindSafe(|| decode_into(jpeg, options, w, h, rgb)));
        decoded.unwrap_or_else(|_| Err(corrupt("the JPEG decoder gave up on it (panicked)")))?;
        Ok(&self.rgb)
    }
}

/// `jpeg` copied into `patched` with the AVI1 marker after its SOI.
fn with_default_tables<'a>(jpeg: &[u8], patched: &'a mut Vec<u8>) -> &'a [u8] {
    patched.clear();
    patched.extend_from_slice(&AVI1_PREFIX);
    patched.extend_from_slice(&jpeg[2..]);
    patched
}

fn decode_into(jpeg: &[u8], options: DecoderOptions, w: usize, h: usize, rgb: &mut Vec<u8>) -> Result<(), ConvertError> {
    // Without its end marker: zune-jpeg fills in a scan that an EOI cuts short (as browsers do),
    // but in strict mode it reports a scan that runs out of bytes.
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&jpeg[..jpeg.len() - 2]), options);
    decoder
        .decode_headers()
        .map_err(|e| corrupt(&format!("bad JPEG header for the announced {w}x{h} frame ({})", e.to_string().trim_end())))?;
    let (got_w, got_h) = decoder.dimensions().unwrap_or((0, 0));
    if (got_w, got_h) != (w, h) {
        return Err(corrupt(&format!("the JPEG is {got_w}x{got_h}, the driver announced {w}x{h}")));
    }
    rgb.clear();
    rgb.resize(w * h * 3, 0);
    decoder.decode_into(rgb).map_err(|e| corrupt(&format!("JPEG data does not decode ({})", e.to_string().trim_end())))
}

/// The JPEG without trailing padding, if it starts with SOI and ends with EOI.
fn check_complete(jpeg: &[u8]) -> Result<&[u8], ConvertError> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(corrupt("no JPEG start marker (a torn buffer, or not JPEG at all)"));
    }
    // Some drivers pad bytesused with zeros after the end marker.
    let end = jpeg.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if !jpeg[..end].ends_with(&[0xFF, 0xD9]) {
        return Err(corrupt("no JPEG end marker: truncated (consider a lower resolution or frame rate if the USB link is saturated)"));
    }
    Ok(&jpeg[..end])
}

/// True if a DHT segment comes before the first scan. Malformed headers answer true, so the
/// decoder reports them itself.
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while let (Some(&0xFF), Some(&marker)) = (jpeg.get(i), jpeg.get(i + 1)) {
        match marker {
            0xC4 => return true,
            0xDA => return false,
            // Fill bytes before a marker.
            0xFF => i += 1,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => match jpeg.get(i + 2..i + 4) {
                Some(len) => i += 2 + u16::from_be_bytes([len[0], len[1]]) as usize,
                None => return true,
            },
        }
    }
    true
}

fn corrupt(why: &str) -> ConvertError {
    ConvertError::Corrupt(format!("MJPG frame skipped: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dht_segment_before_the_scan_is_found() {
        let with = [0xFF, 0xD8, 0xFF, 0xDB, 0, 3, 9, 0xFF, 0xC4, 0, 2, 0xFF, 0xDA];
        let without = [0xFF, 0xD8, 0xFF, 0xDB, 0, 3, 9, 0xFF, 0xDA, 0, 2, 0xFF, 0xC4];
        assert!(has_huffman_tables(&with));
        assert!(!has_huffman_tables(&without));
    }

    #[test]
    fn zero_padding_after_the_end_marker_is_not_truncation() {
        assert_eq!(check_complete(&[0xFF, 0xD8, 1, 0xFF, 0xD9, 0, 0]).unwrap().len(), 5);
        assert!(check_complete(&[0xFF, 0xD8, 1, 2]).is_err());
        assert!(check_complete(&[]).is_err());
    }

    use crate::capture::still::tests::jpeg_claiming;

    #[test]
    fn a_jpeg_of_the_negotiated_size_decodes() {
        let mut d = MjpgDecoder::default();
        assert_eq!(d.decode(&jpeg_claiming(16, 16), 16, 16).unwrap().len(), 16 * 16 * 3);
    }

    #[test]
    fn a_jpeg_claiming_more_than_the_negotiated_size_is_corrupt_and_allocates_nothing() {
        let mut d = MjpgDecoder::default();
        for (w, h) in [(65500, 65500), (17, 16), (16, 4000)] {
            let err = d.decode(&jpeg_claiming(w, h), 16, 16).unwrap_err();
            assert!(matches!(&err, ConvertError::Corrupt(why) if why.contains("limit")), "{w}x{h}: {err}");
            assert_eq!(d.rgb.capacity(), 0, "{w}x{h} sized the RGB buffer");
        }
    }

    #[test]
    fn a_jpeg_claiming_less_than_the_negotiated_size_is_corrupt() {
        let mut d = MjpgDecoder::default();
        let err = d.decode(&jpeg_claiming(8, 16), 16, 16).unwrap_err();
        assert!(matches!(&err, ConvertError::Corrupt(why) if why.contains("8x16")), "{err}");
    }
}
