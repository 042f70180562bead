//! The V4L2 frame source: a single-planar capture device (a USB grabber on the cart's video
//! output), streamed through mmap buffers. It negotiates and then trusts only what the driver set,
//! stamps each frame with the driver's timestamp and sequence, and survives the device going away:
//! every failure closes everything, reports `Unavailable` and reopens with backoff.

pub mod devices;
pub mod negotiate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::{Flags, Metadata, Type};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::Device;

use super::{monotonic_now, CaptureError, Frame, FrameMeta, FrameSource, PixelFormat};
pub use devices::DeviceSpec;
pub use negotiate::{Negotiated, Want};

/// How long `next_frame` waits for a buffer before returning to look at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// No buffer for this long on an open stream counts as a lost device (closed and reopened).
const STALL: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// What the `[source]` section says about the grabber.
#[derive(Debug, Clone)]
pub struct V4l2Settings {
    pub device: DeviceSpec,
    pub want: Want,
    /// mmap buffers queued in the driver (2-8; 4 is plenty at 30 fps).
    pub buffers: u32,
}

/// An open, streaming device. The stream is declared first so it is dropped (STREAMOFF, unmap)
/// before the device's file descriptor closes.
struct Open {
    stream: Stream<'static>,
    _device: Device,
    node: PathBuf,
    neg: Negotiated,
    last_frame: Instant,
}

pub struct V4l2Source {
    settings: V4l2Settings,
    open: Option<Open>,
    /// Why the stream failed during the last call; it is closed at the start of the next one.
    failed: Option<String>,
    /// Why the device is not open, while it is not.
    waiting: String,
    next_attempt: Instant,
    delay: Duration,
}

impl V4l2Source {
    pub fn new(settings: V4l2Settings) -> V4l2Source {
        V4l2Source {
            settings,
            open: None,
            failed: None,
            waiting: "not opened yet".into(),
            next_attempt: Instant::now(),
            delay: BACKOFF_FIRST,
        }
    }

    /// Opens and negotiates if due; `Err(Unavailable)` while the device cannot be used.
    fn ensure_open(&mut self) -> Result<(), CaptureError> {
        if let Some(why) = self.failed.take() {
            self.close(why);
        }
        if self.open.is_some() {
            return Ok(());
        }
        if Instant::now() < self.next_attempt {
            return Err(CaptureError::Unavailable(self.waiting.clone()));
        }
        match self.try_open() {
            Ok(open) => {
                log::info!("capturing from {} ({}): {}", open.node.display(), self.describe(), open.neg.describe());
                self.open = Some(open);
                self.delay = BACKOFF_FIRST;
                Ok(())
            }
            Err(why) => {
                self.waiting = why;
                self.schedule_retry();
                Err(CaptureError::Unavailable(self.waiting.clone()))
            }
        }
    }

    fn try_open(&self) -> Result<Open, String> {
        let node = self.settings.device.resolve()?;
        let device = Device::with_path(&node).map_err(|e| open_error(&node, e))?;
        let neg = negotiate::negotiate(&device, &self.settings.want).map_err(|e| format!("{}: {e}", node.display()))?;
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, self.settings.buffers)
            .map_err(|e| format!("{}: cannot map {} capture buffers: {e}", node.display(), self.settings.buffers))?;
        stream.set_timeout(POLL);
        Ok(Open { stream, _device: device, node, neg, last_frame: Instant::now() })
    }

    fn schedule_retry(&mut self) {
        self.next_attempt = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    /// Closes the stream and the device and schedules a reopen; `why` is reported meanwhile.
    fn close(&mut self, why: String) {
        if let Some(open) = self.open.take() {
            log::warn!("{}: {why}; closing it and reopening", open.node.display());
            // v4l's stream panics in Drop when STREAMOFF fails with anything but ENODEV; a
            // grabber in a bad state must not take the capture thread down with it.
            if catch_unwind(AssertUnwindSafe(move || drop(open))).is_err() {
                log::warn!("closing the device reported an error; it is closed regardless");
            }
        }
        self.waiting = why;
        self.schedule_retry();
    }
}

fn open_error(node: &std::path::Path, e: std::io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => " (is this user in group `video`?)",
        Some(libc::EBUSY) => " (another program holds the grabber)",
        _ => "",
    };
    format!("cannot open {}: {e}{hint}", node.display())
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        let d = &self.settings.device;
        match d {
            DeviceSpec::Path(p) => format!("v4l2 {}", p.display()),
            DeviceSpec::Card(c) => format!("v4l2 card:{c}"),
            DeviceSpec::Bus(b) => format!("v4l2 bus:{b}"),
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        self.ensure_open()?;
        let Some(open) = self.open.as_mut() else { return Err(CaptureError::Unavailable(self.waiting.clone())) };
        match open.stream.next() {
            Ok((buf, meta)) => {
                open.last_frame = Instant::now();
                frame(&open.neg, buf, meta).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if open.last_frame.elapsed() < STALL {
                    return Ok(None);
                }
                let why = format!("no frame for {} s (grabber stalled or unplugged)", STALL.as_secs());
                self.failed = Some(why.clone());
                Err(CaptureError::Unavailable(why))
            }
            Err(e) => {
                let why = stream_error(&e);
                self.failed = Some(why.clone());
                Err(CaptureError::Unavailable(why))
            }
        }
    }
}

fn stream_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENODEV) => "device lost (ENODEV: unplugged or disconnected)".into(),
        Some(libc::EPIPE) => "stream stopped by the driver (EPIPE: the input format may have changed)".into(),
        _ => format!("capture failed: {e}"),
    }
}

/// Wraps a dequeued buffer: the driver's sequence and timestamp, the negotiated layout.
fn frame<'a>(neg: &Negotiated, buf: &'a [u8], meta: &Metadata) -> Result<Frame<'a>, CaptureError> {
    if meta.flags.contains(Flags::ERROR) {
        return Err(CaptureError::Corrupt(format!("the driver flagged buffer {} as damaged", meta.sequence)));
    }
    let used = match meta.bytesused as usize {
        0 => buf.len(),
        n => n.min(buf.len()),
    };
    let monotonic = Duration::new(meta.timestamp.sec as u64, meta.timestamp.usec as u32 * 1000);
    let meta = FrameMeta {
        width: neg.width,
        height: neg.height,
        format: neg.format,
        stride: neg.stride,
        color_space: neg.color_space,
        range: neg.range,
        field: if meta.field == 0 { neg.field } else { negotiate::field_order(meta.field) },
        sequence: meta.sequence as u64,
        monotonic,
        wall: wall_time(monotonic),
    };
    if meta.format != PixelFormat::Mjpg && used < neg.size_image.min(buf.len()) {
        return Err(CaptureError::Corrupt(format!("short buffer: {used} of {} bytes", neg.size_image)));
    }
    Ok(Frame { meta, data: &buf[..used] })
}

/// The wall-clock time of a CLOCK_MONOTONIC stamp (now minus its age).
fn wall_time(stamp: Duration) -> SystemTime {
    let age = monotonic_now().saturating_sub(stamp);
    SystemTime::now() - age
}
