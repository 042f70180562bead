//! The MJPG capture path with real JPEG frames (generated here): the daemon's own capture stage
//! (convert -> fan mask -> gate -> hand-off) decodes them with the same code a V4L2 MJPG grabber's
//! buffers go through; broken ones are skipped and counted, never fatal, and the next good frame
//! goes through again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;
use sonoedge::capture::convert::{Converter, Deinterlace};
use sonoedge::capture::region::Region;
use sonoedge::capture::{ColorSpace, FieldOrder, Frame, FrameMeta, PixelFormat, Range};
use sonoedge::clinical::input::Dwell;
use sonoedge::config::PipelineConfig;
use sonoedge::pipeline::gate::Gate;
use sonoedge::pipeline::handoff::{Mailbox, Pool};
use sonoedge::pipeline::stats::Counters;
use sonoedge::pipeline::{thresholds, CaptureStage, InputTracker, SharedState};

const W: u32 = 640;
const H: u32 = 480;
const ROI: [u32; 4] = [80, 40, 480, 400];

/// A textured RGB frame that changes with `i` (never "frozen", never "no signal").
fn picture(i: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((W * H * 3) as usize);
    for y in 0..H {
        for x in 0..W {
            let v = ((x * 3 + y * 5 + i * 17) % 200 + 30) as u8;
            rgb.extend_from_slice(&[v, v / 2 + (x % 40) as u8, 255 - v]);
        }
    }
    rgb
}

fn jpeg(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90).encode(rgb, W, H, ExtendedColorType::Rgb8).unwrap();
    out
}

fn meta(sequence: u64) -> FrameMeta {
    FrameMeta {
        width: W,
        height: H,
        format: PixelFormat::Mjpg,
        stride: 0,
        color_space: ColorSpace::Bt601,
        range: Range::Full,
        field: FieldOrder::Progressive,
        sequence,
        monotonic: Duration::ZERO,
        wall: SystemTime::UNIX_EPOCH,
    }
}

fn stage() -> CaptureStage {
    CaptureStage {
        region: Region::new(Some(ROI), None),
        converter: Converter::new(Deinterlace::TopField),
        gate: Gate::new(thresholds(&PipelineConfig::default())),
        // Live takes effect at the first frame: every decoded frame is accepted.
        input: InputTracker::new(Dwell { frames: 1, min: Duration::ZERO }, Duration::from_millis(500), None),
        pool: Arc::new(Pool::new(3, (ROI[2] * ROI[3] * 3) as usize)),
        mailbox: Arc::new(Mailbox::default()),
        counters: Arc::new(Counters::default()),
        state: Arc::new(SharedState::default()),
        geometry: None,
    }
}

/// Max abs difference between the accepted ROI and the same ROI cut from the reference decode.
fn max_error(roi_rgb: &[u8], source: &[u8]) -> u8 {
    let [x0, y0, w, h] = ROI;
    let mut worst = 0u8;
    for y in 0..h {
        for x in 0..w * 3 {
            let got = roi_rgb[(y * w * 3 + x) as usize];
            let want = source[((y0 + y) * W * 3 + x0 * 3 + x) as usize];
            worst = worst.max(got.abs_diff(want));
        }
    }
    worst
}

#[test]
fn jpeg_frames_go_through_and_broken_ones_are_counted() {
    let mut stage = stage();
    // Each good frame with the image crate's own decode of it (a separate decoder set-up) as reference.
    let good: Vec<(Vec<u8>, Vec<u8>)> = (0..4)
        .map(|i| {
            let j = jpeg(&picture(i));
            let reference = image::load_from_memory(&j).unwrap().to_rgb8().into_raw();
            (j, reference)
        })
        .collect();
    let truncated = good[1].0[..good[1].0.len() / 2].to_vec();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 131 % 256) as u8).collect();
    let mut bad_header = good[2].0.clone();
    bad_header[2..40].fill(0x55);
    let sequence: Vec<(&[u8], Option<&[u8]>)> = vec![
        (&good[0].0, Some(&good[0].1)),
        (&truncated, None),
        (&good[1].0, Some(&good[1].1)),
        (&garbage, None),
        (&[], None),
        (&bad_header, None),
        (&good[2].0, Some(&good[2].1)),
        (&good[3].0, Some(&good[3].1)),
    ];
    let mut accepted = 0;
    for (i, (data, source)) in sequence.iter().enumerate() {
        let frame = Frame { meta: meta(i as u64), data };
        let out = stage.accept(frame, i as u64, Instant::now(), true);
        match (out, source) {
            (Some(f), Some(src)) => {
                assert_eq!((f.width, f.height), (ROI[2], ROI[3]));
                let err = max_error(&f.rgb, src);
                // Same bitstream, same IDCT family: at most a rounding step apart, and the ROI in place.
                assert!(err <= 2, "frame {i}: decoded ROI off by {err}");
                stage.pool.put(f.rgb);
                accepted += 1;
            }
            (None, None) => {}
            (got, want) => panic!("frame {i}: accepted {} but expected {}", got.is_some(), want.is_some()),
        }
    }
    let dropped = stage.counters.dropped_corrupt_frame.load(std::sync::atomic::Ordering::Relaxed);
    println!("{accepted} JPEG frames accepted, {dropped} broken ones skipped and counted");
    assert_eq!((accepted, dropped), (4, 4));
}
