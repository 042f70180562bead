//! Pixel-format conversion against an independent implementation: ffmpeg/libswscale's RGB of
//! the same raw frames (tests/fixtures/pixfmt, made by make_golden.sh), for every format, matrix
//! and range, with padded strides and odd ROIs; MJPG robustness on generated, truncated and
//! garbage JPEGs; and an ignored speed measurement (`convert_speed`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use image::codecs::jpeg::JpegEncoder;
use sonoedge::capture::convert::{ConvertError, Converter, Deinterlace, Roi};
use sonoedge::capture::{ColorSpace, FieldOrder, Frame, FrameMeta, PixelFormat, Range};

/// Max abs error per channel allowed against swscale for the raw formats (both take the nearest
/// chroma; measured max 1, from 16.16 fixed point vs swscale's rounding).
const RAW_TOLERANCE: u8 = 1;
/// JPEG decoders differ in IDCT rounding (measured max 2 against ffmpeg); 4:2:2 adds chroma
/// upsampling, zune-jpeg's triangle filter vs swscale's bilinear (measured max 3).
const JPEG_444_TOLERANCE: u8 = 3;
const JPEG_422_TOLERANCE: u8 = 4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pixfmt").join(name)
}

/// One line of cases.txt.
struct Case {
    name: String,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    color_space: ColorSpace,
    range: Range,
    input: Vec<u8>,
    expected: Vec<u8>,
    expected_width: usize,
}

fn cases() -> Vec<Case> {
    let list = std::fs::read_to_string(fixture("cases.txt")).expect("tests/fixtures/pixfmt/cases.txt: run make_golden.sh");
    list.lines().map(|l| parse_case(&l.split_whitespace().collect::<Vec<_>>())).collect()
}

fn parse_case(f: &[&str]) -> Case {
    let read = |name: &str| std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    Case {
        name: f[0].to_string(),
        format: fourcc(f[1]),
        width: f[2].parse().unwrap(),
        height: f[3].parse().unwrap(),
        stride: f[4].parse().unwrap(),
        color_space: if f[5] == "bt709" { ColorSpace::Bt709 } else { ColorSpace::Bt601 },
        range: if f[6] == "tv" { Range::Limited } else { Range::Full },
        input: read(f[7]),
        expected: read(f[8]),
        expected_width: f[9].parse().unwrap(),
    }
}

fn fourcc(name: &str) -> PixelFormat {
    match name {
        "YUYV" => PixelFormat::Yuyv,
        "UYVY" => PixelFormat::Uyvy,
        "NV12" => PixelFormat::Nv12,
        "YU12" => PixelFormat::Yu12,
        "GREY" => PixelFormat::Grey,
        "RGB3" => PixelFormat::Rgb24,
        "BGR3" => PixelFormat::Bgr24,
        "MJPG" => PixelFormat::Mjpg,
        other => panic!("cases.txt: unknown fourcc {other}"),
    }
}

fn meta(format: PixelFormat, width: u32, height: u32, stride: usize) -> FrameMeta {
    FrameMeta {
        width,
        height,
        format,
        stride,
        color_space: ColorSpace::Bt601,
        range: Range::Full,
        field: FieldOrder::Progressive,
        sequence: 0,
        monotonic: Duration::ZERO,
        wall: SystemTime::UNIX_EPOCH,
    }
}

impl Case {
    fn frame(&self) -> Frame<'_> {
        let meta =
            FrameMeta { color_space: self.color_space, range: self.range, ..meta(self.format, self.width, self.height, self.stride) };
        Frame { meta, data: &self.input }
    }

    /// The whole frame, and one starting on an odd pixel and line with an odd width and height.
    fn rois(&self) -> [Roi; 2] {
        [Roi::full(self.width, self.height), Roi { x: 5, y: 3, width: self.width - 11, height: self.height - 7 }]
    }

    /// Max abs difference between sonoedge's ROI and the same rectangle of swscale's frame.
    fn max_error(&self, roi: Roi) -> u8 {
        let mut out = Vec::new();
        Converter::new(Deinterlace::Weave).convert(&self.frame(), roi, &mut out).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let row = roi.width as usize * 3;
        let expected_rows = self.expected.chunks_exact(self.expected_width * 3).skip(roi.y as usize);
        let pairs = out.chunks_exact(row).zip(expected_rows).flat_map(|(o, e)| o.iter().zip(&e[roi.x as usize * 3..]));
        pairs.map(|(a, b)| a.abs_diff(*b)).max().unwrap()
    }

    fn tolerance(&self) -> u8 {
        match self.name.as_str() {
            "mjpg_444" => JPEG_444_TOLERANCE,
            "mjpg_422" => JPEG_422_TOLERANCE,
            _ => RAW_TOLERANCE,
        }
    }
}

#[test]
fn every_format_range_and_matrix_matches_swscale_within_tolerance() {
    let mut failed = Vec::new();
    for case in cases() {
        let errors = case.rois().map(|roi| case.max_error(roi));
        println!("{:<28} max abs error: full frame {}, odd ROI {} (tolerance {})", case.name, errors[0], errors[1], case.tolerance());
        if errors.iter().any(|&e| e > case.tolerance()) {
            failed.push(case.name.clone());
        }
    }
    assert!(failed.is_empty(), "over tolerance against swscale: {failed:?}");
}

#[test]
fn the_fixtures_cover_every_format() {
    let formats: Vec<PixelFormat> = cases().iter().map(|c| c.format).collect();
    for f in [
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Nv12,
        PixelFormat::Yu12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Mjpg,
    ] {
        assert!(formats.contains(&f), "no golden case for {f:?}");
    }
}

// ---- MJPG ----

/// A smooth 64x48 test card: gradients that survive JPEG with small error.
fn card() -> Vec<u8> {
    (0..48u32).flat_map(|y| (0..64u32).flat_map(move |x| [x as u8 * 4, y as u8 * 5, 128 + (x + y) as u8])).collect()
}

fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 95).encode(rgb, width, height, image::ExtendedColorType::Rgb8).unwrap();
    jpeg
}

fn decode_mjpg(converter: &mut Converter, jpeg: &[u8], width: u32, height: u32, roi: Roi) -> Result<Vec<u8>, ConvertError> {
    let mut out = Vec::new();
    converter.convert(&Frame { meta: meta(PixelFormat::Mjpg, width, height, 0), data: jpeg }, roi, &mut out)?;
    Ok(out)
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn a_generated_jpeg_decodes_to_its_roi() {
    let (card, jpeg) = (card(), encode_jpeg(&card(), 64, 48));
    let roi = Roi { x: 7, y: 5, width: 33, height: 21 };
    let out = decode_mjpg(&mut Converter::default(), &jpeg, 64, 48, roi).unwrap();
    let want: Vec<u8> = card.chunks_exact(64 * 3).skip(5).take(21).flat_map(|r| r[7 * 3..40 * 3].to_vec()).collect();
    let err = max_diff(&out, &want);
    println!("generated JPEG (quality 95) vs its source: max abs error {err}");
    assert!(err <= 8, "{err}");
}

#[test]
fn truncated_and_garbage_jpegs_are_corrupt_frames_not_panics() {
    let jpeg = encode_jpeg(&card(), 64, 48);
    let mut converter = Converter::default();
    let mut cut_at_half = jpeg[..jpeg.len() / 2].to_vec();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut framed_garbage = vec![0xFF, 0xD8];
    framed_garbage.extend_from_slice(&garbage);
    framed_garbage.extend_from_slice(&[0xFF, 0xD9]);
    for (what, data) in [
        ("empty", Vec::new()),
        ("garbage", garbage),
        ("garbage between SOI and EOI", framed_garbage),
        ("header only", jpeg[..200].to_vec()),
    ] {
        let e = decode_mjpg(&mut converter, &data, 64, 48, Roi::full(64, 48));
        assert!(matches!(e, Err(ConvertError::Corrupt(_))), "{what}: {e:?}");
    }
    // Cut mid-scan, even with an end marker glued on (the decoder alone would zero-fill the rest).
    cut_at_half.extend_from_slice(&[0xFF, 0xD9]);
    for data in [&jpeg[..jpeg.len() / 2], &cut_at_half[..]] {
        assert!(matches!(decode_mjpg(&mut converter, data, 64, 48, Roi::full(64, 48)), Err(ConvertError::Corrupt(_))));
    }
    for percent in [40, 80, 95, 99] {
        let mut cut = jpeg[..jpeg.len() * percent / 100].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        let e = decode_mjpg(&mut converter, &cut, 64, 48, Roi::full(64, 48));
        assert!(matches!(e, Err(ConvertError::Corrupt(_))), "cut at {percent}%, end marker added: {e:?}");
    }
    // The converter still works after all that.
    assert!(decode_mjpg(&mut converter, &jpeg, 64, 48, Roi::full(64, 48)).is_ok());
}

#[test]
fn complete_jpegs_decode_exactly_as_the_image_crate_decodes_them() {
    // The frame is decoded without its end marker (to catch truncation): no row may be lost.
    let mut converter = Converter::default();
    let mut check = |jpeg: &[u8], width: u32, height: u32| {
        let want = image::load_from_memory(jpeg).unwrap().to_rgb8().into_raw();
        assert_eq!(decode_mjpg(&mut converter, jpeg, width, height, Roi::full(width, height)).unwrap(), want);
    };
    for quality in [50, 100] {
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, quality).encode(&card(), 64, 48, image::ExtendedColorType::Rgb8).unwrap();
        check(&jpeg, 64, 48);
    }
    for name in ["mjpg_444.jpg", "mjpg_422.jpg"] {
        check(&std::fs::read(fixture(name)).unwrap(), 48, 32);
    }
}

#[test]
fn a_grey_jpeg_becomes_grey_rgb() {
    let grey: Vec<u8> = (0..64 * 48u32).map(|i| (i % 64 * 4) as u8).collect();
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 95).encode(&grey, 64, 48, image::ExtendedColorType::L8).unwrap();
    let out = decode_mjpg(&mut Converter::default(), &jpeg, 64, 48, Roi { x: 1, y: 1, width: 62, height: 46 }).unwrap();
    assert!(out.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn a_jpeg_of_another_size_than_announced_is_corrupt() {
    let jpeg = encode_jpeg(&card(), 64, 48);
    let e = decode_mjpg(&mut Converter::default(), &jpeg, 32, 24, Roi::full(32, 24));
    let Err(ConvertError::Corrupt(why)) = e else { panic!("{e:?}") };
    // A larger JPEG is refused by the decoder's limit while its header is read, a smaller one
    // after it: either way the message names the announced size.
    assert!(why.contains("32x24"), "{why}");
    let e = decode_mjpg(&mut Converter::default(), &jpeg, 128, 96, Roi::full(128, 96));
    let Err(ConvertError::Corrupt(why)) = e else { panic!("{e:?}") };
    assert!(why.contains("64x48") && why.contains("128x96"), "{why}");
}

#[test]
fn damaged_scan_bytes_never_panic() {
    let jpeg = encode_jpeg(&card(), 64, 48);
    let mut converter = Converter::default();
    let mut state = 12345u32;
    let (mut ok, mut corrupt) = (0, 0);
    for _ in 0..300 {
        let mut bad = jpeg.clone();
        for _ in 0..4 {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            let at = 2 + (state >> 8) as usize % (bad.len() - 4);
            bad[at] ^= (state >> 24) as u8 | 1;
        }
        match decode_mjpg(&mut converter, &bad, 64, 48, Roi::full(64, 48)) {
            Ok(_) => ok += 1,
            Err(ConvertError::Corrupt(_)) => corrupt += 1,
            Err(e) => panic!("unexpected error kind: {e:?}"),
        }
    }
    println!("300 damaged JPEGs: {ok} decoded (damage in tolerated places), {corrupt} corrupt");
}

/// The ffmpeg JPEG with its DHT segment cut out, as many UVC cameras send MJPG.
fn without_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    while jpeg[i + 1] != 0xDA {
        let len = 2 + u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if jpeg[i + 1] != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + len]);
        }
        i += len;
    }
    out.extend_from_slice(&jpeg[i..]);
    out
}

#[test]
fn mjpg_without_huffman_tables_decodes_with_the_standard_ones() {
    let jpeg = std::fs::read(fixture("mjpg_422.jpg")).unwrap();
    let stripped = without_dht(&jpeg);
    assert!(stripped.len() < jpeg.len(), "the fixture should carry a DHT segment");
    let mut converter = Converter::default();
    let full = decode_mjpg(&mut converter, &jpeg, 48, 32, Roi::full(48, 32)).unwrap();
    assert_eq!(decode_mjpg(&mut converter, &stripped, 48, 32, Roi::full(48, 32)).unwrap(), full);
}

// ---- speed ----

fn time_ms(runs: u32, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

fn time_roi(format: PixelFormat, data: &[u8], stride: usize, roi: Roi) -> (f64, f64) {
    let frame = Frame { meta: FrameMeta { range: Range::Limited, ..meta(format, 1920, 1080, stride) }, data };
    let (mut converter, mut out) = (Converter::default(), Vec::new());
    time_ms(100, || converter.convert(&frame, roi, &mut out).unwrap())
}

#[test]
#[ignore = "timing: cargo test --release --test it -- pixfmt::convert_speed --ignored --nocapture"]
fn convert_speed() {
    let bytes: Vec<u8> = (0..1920 * 1080 * 3u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let roi = Roi { x: 460, y: 140, width: 1000, height: 800 };
    for (format, stride) in [
        (PixelFormat::Yuyv, 3840),
        (PixelFormat::Uyvy, 3840),
        (PixelFormat::Nv12, 1920),
        (PixelFormat::Yu12, 1920),
        (PixelFormat::Grey, 1920),
        (PixelFormat::Rgb24, 5760),
        (PixelFormat::Bgr24, 5760),
    ] {
        let (min, median) = time_roi(format, &bytes, stride, roi);
        println!("1920x1080 {format:?} -> 1000x800 ROI RGB: min {min:.3} ms, median {median:.3} ms");
    }
    let rgb: Vec<u8> = (0..1080u32).flat_map(|y| (0..1920u32).flat_map(move |x| [(x / 8) as u8, (y / 5) as u8, (x ^ y) as u8])).collect();
    let jpeg = encode_jpeg(&rgb, 1920, 1080);
    let (mut converter, mut out) = (Converter::default(), Vec::new());
    let frame = Frame { meta: meta(PixelFormat::Mjpg, 1920, 1080, 0), data: &jpeg };
    let (min, median) = time_ms(30, || converter.convert(&frame, roi, &mut out).unwrap());
    println!("1920x1080 MJPG ({} KB, quality 95) -> 1000x800 ROI RGB: min {min:.3} ms, median {median:.3} ms", jpeg.len() / 1024);
}
