//! The capture thread: takes frames from the source, counts sequence gaps, converts the ROI of
//! every frame into a pooled buffer, judges its input state (gate, then the dwell of the input
//! tracker), honours `max_fps` and hands what is to be inferred to inference without blocking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gate::Gate;
use super::handoff::{Mailbox, Pool};
use super::stats::Counters;
use super::status::{Heartbeats, SharedState, Thread};
use super::tracker::{Decision, InputTracker};
use super::Purpose;
use super::RoiFrame;
use crate::capture::convert::{ConvertError, Converter, Roi};
use crate::capture::region::Region;
use crate::capture::{CaptureError, Frame, FrameMeta, FrameSource};
use crate::state::{Gate as GateState, InputState, SourceState};

pub(super) struct CaptureLoop {
    pub source: Box<dyn FrameSource>,
    pub stage: CaptureStage,
    pub min_interval: Duration,
    pub stop: Arc<AtomicBool>,
    pub heartbeats: Arc<Heartbeats>,
}

/// What the capture thread does with a frame once it has one: convert, judge, hand off.
pub struct CaptureStage {
    pub region: Region,
    pub converter: Converter,
    pub gate: Gate,
    pub input: InputTracker,
    pub pool: Arc<Pool>,
    pub mailbox: Arc<Mailbox<RoiFrame>>,
    pub counters: Arc<Counters>,
    pub state: Arc<SharedState>,
    /// Width, height and format of the last frame (a change starts a new generation).
    pub geometry: Option<(u32, u32, crate::capture::PixelFormat)>,
}

/// CLOCK_MONOTONIC seconds of the last corrupt-frame warning (0 = none yet); one daemon, one source.
static LAST_CORRUPT_WARNING_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl CaptureLoop {
    pub fn run(mut self) {
        let mut frame_no = 0u64;
        let mut last_seq: Option<u64> = None;
        let mut last_accept: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.heartbeats.beat(Thread::Capture);
            if self.source.ended() {
                self.stage.input.on_error(InputState::SourceWaiting);
                self.stage.state.set(SourceState::Ended, GateState::SourceEnded, Some("the replay finished".into()));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let frame = match self.source.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => continue, // timeout: look at the stop flag again
                Err(e) => {
                    if e.is_frame() {
                        // A frame came and is counted by the kind of its fault; frames lost before
                        // it are gaps, it is not.
                        Counters::add(&self.stage.counters.frames_in);
                        frame_no += 1;
                    }
                    if let Some(sequence) = e.sequence() {
                        count_gaps(&self.stage.counters, &mut last_seq, sequence);
                    }
                    self.stage.observe_error(&e);
                    self.stage.on_error(e);
                    continue;
                }
            };
            let captured_at = capture_instant(&frame.meta);
            Counters::add(&self.stage.counters.frames_in);
            frame_no += 1;
            count_gaps(&self.stage.counters, &mut last_seq, frame.meta.sequence);
            // Every frame is judged; `max_fps` only limits which live frames are inferred.
            let due = last_accept.is_none_or(|t| captured_at.duration_since(t) >= self.min_interval);
            if let Some(roi_frame) = self.stage.accept(frame, frame_no, captured_at, due) {
                last_accept = Some(captured_at);
                self.stage.hand_off(roi_frame);
            }
        }
    }
}

/// The capture time as an Instant: the source's CLOCK_MONOTONIC stamp (the driver's, for V4L2),
/// so ages include the time the buffer waited in the driver; now, if the stamp is implausible.
fn capture_instant(meta: &FrameMeta) -> Instant {
    let now = Instant::now();
    let age = crate::capture::monotonic_now().saturating_sub(meta.monotonic);
    if meta.monotonic.is_zero() || age > Duration::from_secs(10) {
        return now;
    }
    now.checked_sub(age).unwrap_or(now)
}

fn count_gaps(counters: &Counters, last_seq: &mut Option<u64>, seq: u64) {
    if let Some(prev) = *last_seq {
        if seq > prev + 1 {
            counters.source_gaps.fetch_add(seq - prev - 1, Ordering::Relaxed);
        }
    }
    *last_seq = Some(seq);
}

impl CaptureStage {
    /// The input state a source error shows; the next frame is not compared with the last one.
    fn observe_error(&mut self, e: &CaptureError) {
        let state = match e {
            CaptureError::Corrupt(_) | CaptureError::Damaged { .. } => InputState::CorruptInput,
            CaptureError::NoSignal { .. } => InputState::NoSignal,
            CaptureError::Unavailable(_) => InputState::SourceWaiting,
        };
        self.input.on_error(state);
        self.gate.forget();
    }

    /// A frame the source could not give: a corrupt one is counted, a lost source reported.
    fn on_error(&self, e: CaptureError) {
        match e {
            CaptureError::Corrupt(why) | CaptureError::Damaged { why, .. } => {
                Counters::add(&self.counters.dropped_corrupt_frame);
                self.warn_corrupt(&why);
                self.state.set(SourceState::Streaming, GateState::CorruptFrames, Some(why));
            }
            CaptureError::NoSignal { why, sequence } => {
                if sequence.is_some() {
                    Counters::add(&self.counters.gated_no_signal);
                }
                self.state.set(SourceState::Streaming, GateState::NoSignal, Some(why));
            }
            CaptureError::Unavailable(why) => {
                self.state.next_generation();
                self.state.set(SourceState::Waiting, GateState::SourceWaiting, Some(why));
                // A frame captured before the loss and not yet inferred is not published late.
                if let Some(stale) = self.mailbox.try_take() {
                    Counters::add(&self.counters.dropped_source_lost);
                    self.pool.put(stale.rgb);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// A warning for the first corrupt frame and then at most one a minute, with the count.
    fn warn_corrupt(&self, why: &str) {
        let count = self.counters.dropped_corrupt_frame.load(Ordering::Relaxed);
        let now = crate::capture::monotonic_now();
        let last = LAST_CORRUPT_WARNING_S.load(Ordering::Relaxed);
        if last == 0 || now.as_secs().saturating_sub(last) >= 60 {
            LAST_CORRUPT_WARNING_S.store(now.as_secs().max(1), Ordering::Relaxed);
            log::warn!("corrupt frame skipped ({count} so far): {why}; check the source's files or the grabber's format");
        } else {
            log::debug!("corrupt frame skipped: {why}");
        }
    }

    /// Puts a frame in the mailbox; a frame still waiting there is dropped and counted.
    pub fn hand_off(&self, frame: RoiFrame) {
        let Some(old) = self.mailbox.put(frame) else { return };
        // Inference is still busy with an earlier frame: the older waiting one goes, unless it is
        // a freeze's only image; then the newer live frame goes instead.
        let dropped = match old.purpose {
            Purpose::Freeze(_) => self.mailbox.put(old).expect("the newer frame was just put"),
            Purpose::Live { .. } => old,
        };
        Counters::add(&self.counters.dropped_inference_busy);
        self.pool.put(dropped.rgb);
    }

    /// Converts and judges one frame; `Some` if it should be inferred (`due`: `max_fps` allows a
    /// live frame now).
    pub fn accept(&mut self, frame: Frame<'_>, frame_no: u64, captured_at: Instant, due: bool) -> Option<RoiFrame> {
        self.follow_geometry(&frame.meta);
        let roi = self.region.roi(frame.meta.width, frame.meta.height);
        let mut rgb = match self.convert(&frame, roi) {
            Ok(rgb) => rgb,
            Err(unusable) => {
                if let Some(state) = unusable {
                    self.input.on_frame(state, frame_no, captured_at, frame.meta.wall);
                }
                return None;
            }
        };
        self.region.mask(&mut rgb, roi);
        let (judged, _) = self.gate.judge(&rgb, roi.width, roi.height);
        let decision = self.input.on_frame(judged, frame_no, captured_at, frame.meta.wall);
        let gate = self.input.current().map_or(GateState::Starting, |c| GateState::of_input(c.state));
        self.state.set(SourceState::Streaming, gate, None);
        let purpose = match decision {
            Decision::Infer(Purpose::Live { .. }) if !due => Err(&self.counters.skipped_max_fps),
            Decision::Infer(purpose) => Ok(purpose),
            Decision::Skip(judged) => Err(self.counters.skipped(judged)),
        };
        match purpose {
            Ok(purpose) => Some(RoiFrame {
                rgb,
                width: roi.width,
                height: roi.height,
                meta: frame.meta,
                frame_no,
                captured_at,
                generation: self.state.generation(),
                purpose,
            }),
            Err(counter) => {
                Counters::add(counter);
                self.pool.put(rgb);
                None
            }
        }
    }

    /// A frame of another size or format than the last one starts a new stream generation.
    fn follow_geometry(&mut self, meta: &FrameMeta) {
        let geometry = (meta.width, meta.height, meta.format);
        if self.geometry.is_some_and(|g| g != geometry) {
            self.state.next_generation();
            self.gate.forget();
        }
        self.geometry = Some(geometry);
    }

    /// The ROI as RGB in a pooled buffer; a frame it cannot convert is counted and reported, and
    /// the input state it shows returned (`None`: no buffer free, nothing about the input).
    fn convert(&mut self, frame: &Frame<'_>, roi: Roi) -> Result<Vec<u8>, Option<InputState>> {
        let Some(mut rgb) = self.pool.get() else {
            Counters::add(&self.counters.dropped_inference_busy);
            return Err(None);
        };
        let Err(e) = self.converter.convert(frame, roi, &mut rgb) else { return Ok(rgb) };
        self.pool.put(rgb);
        let (counter, gate) = match e {
            ConvertError::RoiOutside { .. } => (&self.counters.roi_mismatch, GateState::RoiMismatch),
            ConvertError::TooLarge { .. }
            | ConvertError::Truncated { .. }
            | ConvertError::StrideTooSmall { .. }
            | ConvertError::Corrupt(_) => (&self.counters.dropped_corrupt_frame, GateState::CorruptFrames),
        };
        Counters::add(counter);
        self.state.set(SourceState::Streaming, gate, Some(e.to_string()));
        Err(gate.input_state())
    }
}
