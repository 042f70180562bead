//! The V4L2 frame source: a single-planar capture device (a USB grabber on the cart's video
//! output), streamed through mmap buffers. It negotiates and then trusts only what the driver set,
//! stamps each frame with the driver's timestamp and sequence, and survives the device going away:
//! every failure closes everything, reports `Unavailable` and reopens with backoff. A stream that
//! is only slow or paused (many HDMI grabbers deliver nothing while the cart shows no picture) is
//! not a failure: only [`STALL`] without a buffer is.

pub mod devices;
pub mod negotiate;
pub mod signal;
pub mod stream;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::{Flags, Metadata};
use v4l::Device;

use super::{monotonic_now, CaptureError, Frame, FrameMeta, FrameSource, PixelFormat};
pub use devices::DeviceSpec;
pub use negotiate::{Negotiated, Want};
pub use signal::InputSpec;
use signal::{Verdict, Watch};
use stream::{MmapStream, Wait};

/// How long `next_frame` waits for a buffer before returning to look at the stop flag; a wait
/// that ends empty is not an error and queues nothing.
const POLL: Duration = Duration::from_millis(200);
/// The default of `[source] stall_s`: no buffer for this long on an open stream, without the
/// driver saying there is no signal, counts as a lost device (closed and reopened).
pub const STALL: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// What the `[source]` section says about the grabber.
#[derive(Debug, Clone)]
pub struct V4l2Settings {
    pub device: DeviceSpec,
    pub want: Want,
    /// mmap buffers queued in the driver (2-8; 4 is plenty at 30 fps).
    pub buffers: u32,
    /// The input of a multi-input grabber (HDMI, S-Video...); `None` = the driver's current one.
    pub input: Option<InputSpec>,
    /// No buffer for this long (and no "no signal" from the driver) is a lost device.
    pub stall: Duration,
}

/// An open, streaming device. The stream is declared first so it is dropped (STREAMOFF, unmap)
/// before the device's file descriptor closes.
struct Open {
    stream: MmapStream,
    device: Device,
    node: PathBuf,
    neg: Negotiated,
    watch: Watch,
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
                let input = open.watch.input().map(|i| format!(" input {} \"{}\"", i.index, i.name)).unwrap_or_default();
                log::info!("capturing from {}{input} ({}): {}", open.node.display(), self.describe(), open.neg.describe());
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
        let watch = Watch::open(device.handle().fd(), self.settings.input.as_ref()).map_err(|e| format!("{}: {e}", node.display()))?;
        let neg = negotiate::negotiate(&device, &self.settings.want).map_err(|e| format!("{}: {e}", node.display()))?;
        let stream = MmapStream::new(device.handle(), self.settings.buffers)
            .map_err(|e| format!("{}: cannot map {} capture buffers: {e}", node.display(), self.settings.buffers))?;
        Ok(Open { stream, device, node, neg, watch, last_frame: Instant::now() })
    }

    fn schedule_retry(&mut self) {
        self.next_attempt = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    /// Closes the stream and the device and schedules a reopen; `why` is reported meanwhile.
    fn close(&mut self, why: String) {
        if let Some(open) = self.open.take() {
            log::warn!("{}: {why}; closing it and reopening", open.node.display());
            // The stream's Drop ignores errors; the guard stays for the device's own Drop (v4l
            // closes the descriptor there): a grabber in a bad state must not end the thread.
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
        let stall = self.settings.stall;
        let Some(open) = self.open.as_mut() else { return Err(CaptureError::Unavailable(self.waiting.clone())) };
        let fd = open.device.handle().fd();
        match open.stream.next(POLL) {
            Ok(Wait::Frame(buf, meta)) => {
                open.last_frame = Instant::now();
                match open.watch.check(false) {
                    Verdict::Present => frame(&open.neg, buf, &meta).map(Some),
                    Verdict::Absent(why) => Err(CaptureError::NoSignal { why: why.clone(), sequence: Some(meta.sequence as u64) }),
                    Verdict::Changed(why) => Err(fail(&mut self.failed, why.clone())),
                }
            }
            Ok(Wait::Event) => {
                let changed = signal::take_source_change(fd);
                match open.watch.check(true) {
                    Verdict::Absent(why) => Err(CaptureError::NoSignal { why: why.clone(), sequence: None }),
                    _ if changed => Err(fail(&mut self.failed, "the grabber reports a change of its input signal".into())),
                    // Events alone never keep a stalled stream open.
                    _ if open.last_frame.elapsed() >= stall => {
                        Err(fail(&mut self.failed, format!("no frame for {} s (grabber stalled or unplugged)", stall.as_secs_f64())))
                    }
                    _ => Ok(None),
                }
            }
            Ok(Wait::Timeout) => match open.watch.check(false) {
                // No buffers because there is no signal: reported as such, not a stall.
                Verdict::Absent(why) => {
                    open.last_frame = Instant::now();
                    Err(CaptureError::NoSignal { why: why.clone(), sequence: None })
                }
                Verdict::Changed(why) => Err(fail(&mut self.failed, why.clone())),
                Verdict::Present if open.last_frame.elapsed() < stall => Ok(None),
                Verdict::Present => {
                    Err(fail(&mut self.failed, format!("no frame for {} s (grabber stalled or unplugged)", stall.as_secs_f64())))
                }
            },
            Err(e) => Err(fail(&mut self.failed, stream_error(&e))),
        }
    }
}

/// Marks the stream failed (closed at the start of the next call) and reports it unavailable.
fn fail(failed: &mut Option<String>, why: String) -> CaptureError {
    *failed = Some(why.clone());
    CaptureError::Unavailable(why)
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
    let damaged = |why: String| CaptureError::Damaged { sequence: meta.sequence as u64, why };
    if meta.flags.contains(Flags::ERROR) {
        return Err(damaged("the driver flagged the buffer as damaged".into()));
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
        return Err(damaged(format!("short buffer: {used} of {} bytes", neg.size_image)));
    }
    Ok(Frame { meta, data: &buf[..used] })
}

/// The wall-clock time of a CLOCK_MONOTONIC stamp (now minus its age).
fn wall_time(stamp: Duration) -> SystemTime {
    let age = monotonic_now().saturating_sub(stamp);
    SystemTime::now() - age
}
