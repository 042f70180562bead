//! Frame capture: the [`FrameSource`] seam every source implements (replayed files, the synthetic
//! phantom, V4L2 grabbers), the metadata a frame carries, and the ROI conversion into RGB.
//!
//! The ROI is converted in the capture thread, into a buffer from a preallocated pool, so the
//! inference thread only ever sees tightly packed RGB of the region the model should look at.

pub mod convert;
pub mod fan;
pub mod images;
pub mod region;
pub mod still;
pub mod synthetic;
pub mod v4l2;

use std::time::{Duration, SystemTime};

/// Pixel layouts a source can deliver (V4L2 fourcc names in comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// RGB3: R, G, B bytes.
    Rgb24,
    /// BGR3: B, G, R bytes.
    Bgr24,
    /// GREY: one byte of luma (expanded to 0-255 when the range is limited).
    Grey,
    /// YUYV 4:2:2 packed: Y0 Cb Y1 Cr.
    Yuyv,
    /// UYVY 4:2:2 packed: Cb Y0 Cr Y1.
    Uyvy,
    /// NV12 4:2:0: the Y plane (`height` lines of `stride`), then one interleaved CbCr plane with
    /// the same stride.
    Nv12,
    /// YU12 (I420) 4:2:0: the Y plane, then Cb and Cr planes, each with stride `stride / 2`.
    Yu12,
    /// MJPG: one JPEG per buffer (`stride` unused); decoded before the ROI is taken.
    Mjpg,
}

/// YCbCr matrix, for the YUV formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorSpace {
    Bt601,
    Bt709,
}

/// Quantization range of the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    /// 16-235 (studio swing).
    Limited,
    /// 0-255.
    Full,
}

/// Field order of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldOrder {
    Progressive,
    Interlaced,
}

/// Everything the pipeline needs to know about one captured buffer, besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameMeta {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Bytes per line, padding included.
    pub stride: usize,
    pub color_space: ColorSpace,
    pub range: Range,
    pub field: FieldOrder,
    /// The source's own sequence number (the driver's for V4L2); gaps are frames the source dropped.
    pub sequence: u64,
    /// Capture time on the monotonic clock (CLOCK_MONOTONIC, as V4L2 stamps buffers).
    pub monotonic: Duration,
    /// Capture time on the wall clock (may be 1970 on a Pi before NTP).
    pub wall: SystemTime,
}

/// A frame borrowed from its source until the next call to [`FrameSource::next_frame`].
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub meta: FrameMeta,
    pub data: &'a [u8],
}

pub use crate::state::SourceState;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The buffer could not be used (truncated, corrupt); the frame is skipped and counted.
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// A frame the source numbered (the driver's sequence) but could not deliver intact; counted
    /// as corrupt only, never also as a gap in the sequence.
    #[error("corrupt frame {sequence}: {why}")]
    Damaged { sequence: u64, why: String },
    /// The driver says its input has no usable signal (it may still deliver buffers of noise);
    /// `sequence` is the buffer's, when one was dequeued and dropped.
    #[error("no signal: {why}")]
    NoSignal { why: String, sequence: Option<u64> },
    /// The source is gone or not there yet; the caller reports it and retries later.
    #[error("source unavailable: {0}")]
    Unavailable(String),
}

impl CaptureError {
    /// The source's sequence number of the frame this error stands for, if it stands for one.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            CaptureError::Damaged { sequence, .. } => Some(*sequence),
            CaptureError::NoSignal { sequence, .. } => *sequence,
            CaptureError::Corrupt(_) | CaptureError::Unavailable(_) => None,
        }
    }

    /// True when a frame came (and is counted as captured) but cannot be used.
    pub fn is_frame(&self) -> bool {
        matches!(self, CaptureError::Corrupt(_) | CaptureError::Damaged { .. } | CaptureError::NoSignal { sequence: Some(_), .. })
    }
}

/// Where frames come from. `next_frame` blocks until a frame is due (or a short timeout passes,
/// returning `Ok(None)`, so the caller can see its stop flag).
pub trait FrameSource: Send {
    /// What this source is, for logs and status (e.g. `synthetic seed=7`).
    fn describe(&self) -> String;
    /// The next frame, `Ok(None)` on timeout, `Err` when it is corrupt or the source is unavailable.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;
    /// True once a finite source has delivered everything.
    fn ended(&self) -> bool {
        false
    }
}

/// Now on CLOCK_MONOTONIC, the clock V4L2 stamps buffers with.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
