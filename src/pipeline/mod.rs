//! The daemon's frame path: a capture thread (frame -> gated ROI RGB in a pooled buffer), an
//! inference thread (preprocess -> tract -> prediction) and a publish thread (predictions, status
//! changes, periodic stats). Hand-offs are bounded and never block capture; shutdown finishes the
//! frame in flight, publishes the final status and joins every thread.

pub mod gate;
pub mod handoff;
pub mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::convert::{ConvertError, Converter, Deinterlace, Roi};
use crate::capture::region::Region;
use crate::capture::{CaptureError, Frame, FrameMeta, FrameSource};
use crate::cli::classify::argmax;
use crate::config::PipelineConfig;
use crate::infer::Model;
use crate::preprocess::{ImageView, Layout, Preprocessor};
use crate::publish::{Identity, LatencyMs, Outgoing, Prediction, Publisher, Status};
use gate::{Gate, Verdict};
use handoff::{Mailbox, Pool};
use stats::{Counters, StatsReporter};

/// A converted ROI on its way to inference.
pub struct RoiFrame {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub meta: FrameMeta,
    pub frame_no: u64,
    pub captured_at: Instant,
}

/// What the status topic says about the source and the gate; versioned so changes are published once.
#[derive(Default)]
pub struct SharedState {
    inner: Mutex<(String, String, Option<String>)>,
    version: AtomicU64,
}

impl SharedState {
    pub fn set(&self, source_state: &str, gate: &str, detail: Option<String>) {
        let mut s = self.inner.lock().unwrap();
        if s.0 != source_state || s.1 != gate || s.2 != detail {
            *s = (source_state.to_string(), gate.to_string(), detail);
            self.version.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> (u64, (String, String, Option<String>)) {
        (self.version.load(Ordering::Relaxed), self.inner.lock().unwrap().clone())
    }
}

/// Everything the pipeline runs with.
pub struct Parts {
    pub source: Box<dyn FrameSource>,
    pub model: Arc<Model>,
    pub publisher: Box<dyn Publisher>,
    pub region: Region,
    pub deinterlace: Deinterlace,
    pub config: PipelineConfig,
    pub identity: Identity,
    /// Seconds between stats messages (0 = off).
    pub stats_interval_s: u64,
    /// Extra facts for stats (e.g. SoC temperature), called at each stats message.
    pub system_facts: fn() -> serde_json::Value,
}

/// The running threads; `join` returns once all have stopped.
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    pub counters: Arc<Counters>,
    pub state: Arc<SharedState>,
    /// Set by each loop as it turns; read by the watchdog.
    pub heartbeats: Arc<[AtomicU64; 3]>,
    started: Instant,
}

impl Running {
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// True if every loop turned within `max_age` (liveness, not frame flow).
    pub fn alive(&self, max_age: Duration) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        self.heartbeats.iter().all(|h| now.saturating_sub(h.load(Ordering::Relaxed)) <= max_age.as_millis() as u64)
    }
}

/// Starts the three threads; they stop when `stop` is set.
pub fn start(parts: Parts, stop: Arc<AtomicBool>) -> Running {
    let counters = Arc::new(Counters::default());
    let state = Arc::new(SharedState::default());
    let mailbox = Arc::new(Mailbox::<RoiFrame>::default());
    let started = Instant::now();
    let heartbeats: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let pool = Arc::new(Pool::new(3, pool_bytes(parts.region.configured_roi())));
    let (tx, rx) = sync_channel::<Outgoing>(256);
    let beat = Beat { heartbeats: heartbeats.clone(), started };
    let describe = parts.source.describe();
    let stage = CaptureStage {
        region: parts.region,
        converter: Converter::new(parts.deinterlace),
        gate: Gate::new(parts.config.no_signal_luma, parts.config.frozen_mad),
        pool: pool.clone(),
        mailbox: mailbox.clone(),
        counters: counters.clone(),
        state: state.clone(),
    };
    let capture = CaptureLoop {
        source: parts.source,
        stage,
        min_interval: min_interval(parts.config.max_fps),
        counters: counters.clone(),
        state: state.clone(),
        stop: stop.clone(),
        beat: beat.with(0),
    };
    let infer =
        InferLoop { model: parts.model.clone(), pool, mailbox, tx, counters: counters.clone(), stop: stop.clone(), beat: beat.with(1) };
    let publish = PublishLoop {
        publisher: parts.publisher,
        rx,
        counters: counters.clone(),
        state: state.clone(),
        identity: parts.identity,
        describe,
        stats_interval: Duration::from_secs(parts.stats_interval_s),
        system_facts: parts.system_facts,
        beat: beat.with(2),
    };
    let threads =
        vec![spawn("capture", move || capture.run()), spawn("inference", move || infer.run()), spawn("publish", move || publish.run())];
    Running { threads, counters, state, heartbeats, started }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.into()).spawn(f).expect("spawn pipeline thread")
}

/// Room for a 1920x1080 ROI, or the configured ROI if larger, so steady state never reallocates.
fn pool_bytes(roi: Option<Roi>) -> usize {
    let (w, h) = roi.map(|r| (r.width, r.height)).unwrap_or((1920, 1080));
    w.max(1920) as usize * h.max(1080) as usize * 3
}

fn min_interval(max_fps: f64) -> Duration {
    if max_fps > 0.0 {
        Duration::from_secs_f64(1.0 / max_fps)
    } else {
        Duration::ZERO
    }
}

/// A thread's liveness stamp: milliseconds since start, written every turn of its loop.
#[derive(Clone)]
struct Beat {
    heartbeats: Arc<[AtomicU64; 3]>,
    started: Instant,
}

struct ThreadBeat(Beat, usize);

impl Beat {
    fn with(&self, i: usize) -> ThreadBeat {
        ThreadBeat(self.clone(), i)
    }
}

impl ThreadBeat {
    fn beat(&self) {
        self.0.heartbeats[self.1].store(self.0.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

struct CaptureLoop {
    source: Box<dyn FrameSource>,
    stage: CaptureStage,
    min_interval: Duration,
    counters: Arc<Counters>,
    state: Arc<SharedState>,
    stop: Arc<AtomicBool>,
    beat: ThreadBeat,
}

/// What the capture thread does with a frame once it has one: convert, gate, hand off.
pub struct CaptureStage {
    pub region: Region,
    pub converter: Converter,
    pub gate: Gate,
    pub pool: Arc<Pool>,
    pub mailbox: Arc<Mailbox<RoiFrame>>,
    pub counters: Arc<Counters>,
    pub state: Arc<SharedState>,
}

impl CaptureLoop {
    fn run(mut self) {
        let mut frame_no = 0u64;
        let mut last_seq: Option<u64> = None;
        let mut last_accept: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.beat.beat();
            if self.source.ended() {
                self.state.set("ended", "source_ended", Some("the replay finished".into()));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let frame = match self.source.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => continue, // timeout: look at the stop flag again
                Err(e) => {
                    Self::on_error(&self.stage, e);
                    continue;
                }
            };
            let captured_at = capture_instant(&frame.meta);
            Counters::add(&self.counters.frames_in);
            frame_no += 1;
            count_gaps(&self.counters, &mut last_seq, frame.meta.sequence);
            if last_accept.is_some_and(|t| captured_at.duration_since(t) < self.min_interval) {
                Counters::add(&self.counters.skipped_max_fps);
                continue;
            }
            if let Some(roi_frame) = self.stage.accept(frame, frame_no, captured_at) {
                last_accept = Some(captured_at);
                self.stage.hand_off(roi_frame);
            }
        }
    }

    /// The stage holds the same counters and state the loop does.
    fn on_error(stage: &CaptureStage, e: CaptureError) {
        let (counters, state) = (&stage.counters, &stage.state);
        match e {
            CaptureError::Corrupt(why) => {
                Counters::add(&counters.dropped_corrupt_frame);
                log::debug!("corrupt frame skipped: {why}");
            }
            CaptureError::Unavailable(why) => {
                state.set("waiting", "source_waiting", Some(why));
                // A frame captured before the loss and not yet inferred is not published late.
                if let Some(stale) = stage.mailbox.try_take() {
                    stage.pool.put(stale.rgb);
                }
                std::thread::sleep(Duration::from_millis(500));
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
    /// Puts a frame in the mailbox; a frame still waiting there is dropped and counted.
    pub fn hand_off(&self, frame: RoiFrame) {
        if let Some(old) = self.mailbox.put(frame) {
            // Inference is still busy with an earlier frame: the older waiting one goes.
            Counters::add(&self.counters.dropped_inference_busy);
            self.pool.put(old.rgb);
        }
    }

    /// Converts and gates one frame; `Some` if it should be inferred.
    pub fn accept(&mut self, frame: Frame<'_>, frame_no: u64, captured_at: Instant) -> Option<RoiFrame> {
        let roi = self.region.roi(frame.meta.width, frame.meta.height);
        let mut rgb = self.convert(&frame, roi)?;
        self.region.mask(&mut rgb, roi);
        let verdict = self.gate.judge(&rgb, roi.width, roi.height);
        self.state.set("streaming", verdict.as_str(), None);
        match verdict {
            Verdict::Infer => Some(RoiFrame { rgb, width: roi.width, height: roi.height, meta: frame.meta, frame_no, captured_at }),
            Verdict::NoSignal | Verdict::Frozen => {
                Counters::add(if verdict == Verdict::NoSignal { &self.counters.gated_no_signal } else { &self.counters.gated_frozen });
                self.pool.put(rgb);
                None
            }
        }
    }

    /// The ROI as RGB in a pooled buffer; a frame it cannot convert is counted and reported.
    fn convert(&mut self, frame: &Frame<'_>, roi: Roi) -> Option<Vec<u8>> {
        let Some(mut rgb) = self.pool.get() else {
            Counters::add(&self.counters.dropped_inference_busy);
            return None;
        };
        let Err(e) = self.converter.convert(frame, roi, &mut rgb) else { return Some(rgb) };
        self.pool.put(rgb);
        let (counter, gate) = match e {
            ConvertError::RoiOutside { .. } => (&self.counters.roi_mismatch, "roi_mismatch"),
            ConvertError::Truncated { .. } | ConvertError::StrideTooSmall { .. } | ConvertError::Corrupt(_) => {
                (&self.counters.dropped_corrupt_frame, "corrupt_frames")
            }
        };
        Counters::add(counter);
        self.state.set("streaming", gate, Some(e.to_string()));
        None
    }
}

struct InferLoop {
    model: Arc<Model>,
    pool: Arc<Pool>,
    mailbox: Arc<Mailbox<RoiFrame>>,
    tx: SyncSender<Outgoing>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    beat: ThreadBeat,
}

impl InferLoop {
    fn run(self) {
        let mut session = match self.model.session() {
            Ok(s) => s,
            Err(e) => return log::error!("cannot start inference: {e}"),
        };
        let mut pre = Preprocessor::new(self.model.preprocess());
        loop {
            self.beat.beat();
            let Some(frame) = self.mailbox.take_timeout(Duration::from_millis(200)) else {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            };
            match infer_one(&self.model, &mut pre, &mut session, &frame, &self.counters) {
                Ok(p) => {
                    // The publish thread drains this quickly; if it is ever full, the result is counted lost.
                    if self.tx.try_send(Outgoing::Prediction(p)).is_err() {
                        Counters::add(&self.counters.inference_errors);
                    }
                }
                Err(e) => {
                    Counters::add(&self.counters.inference_errors);
                    log::warn!("frame {} not inferred: {e:#}", frame.frame_no);
                }
            }
            self.pool.put(frame.rgb);
        }
    }
}

/// Preprocess + inference of one ROI frame into a prediction.
pub fn infer_one(
    model: &Model,
    pre: &mut Preprocessor,
    session: &mut crate::infer::Session,
    f: &RoiFrame,
    counters: &Counters,
) -> anyhow::Result<Prediction> {
    let t0 = Instant::now();
    let view = ImageView { width: f.width, height: f.height, layout: Layout::Rgb8, data: &f.rgb };
    pre.run(view, session.input_mut())?;
    let t1 = Instant::now();
    let (_, probs) = session.run()?;
    let t2 = Instant::now();
    counters.record_inference_ms((t2 - t1).as_secs_f64() * 1e3);
    Counters::add(&counters.inferred);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Prediction {
        frame: f.frame_no,
        source_sequence: f.meta.sequence,
        captured_wall: f.meta.wall,
        captured_monotonic: f.meta.monotonic,
        captured_at: f.captured_at,
        inferred_at: t2,
        label: model.labels()[argmax(probs)].clone(),
        probs: model.labels().iter().cloned().zip(probs.iter().copied()).collect(),
        latency: LatencyMs { capture_to_preprocess: ms(t0 - f.captured_at), preprocess: ms(t1 - t0), inference: ms(t2 - t1), to_mqtt: 0.0 },
    })
}

struct PublishLoop {
    publisher: Box<dyn Publisher>,
    rx: Receiver<Outgoing>,
    counters: Arc<Counters>,
    state: Arc<SharedState>,
    identity: Identity,
    describe: String,
    stats_interval: Duration,
    system_facts: fn() -> serde_json::Value,
    beat: ThreadBeat,
}

/// How often freed heap pages go back to the OS. Without it the per-thread heaps each keep their
/// high-water mark of tract's per-inference buffers (ViT-B int8: RSS 155 -> 228 MB in 100 s).
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

impl PublishLoop {
    fn run(mut self) {
        let mut published_version = u64::MAX;
        let mut reporter = StatsReporter::new();
        let mut next_stats = Instant::now() + self.stats_interval;
        let mut next_trim = Instant::now() + TRIM_INTERVAL;
        loop {
            self.beat.beat();
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg @ Outgoing::Prediction(_)) => {
                    // The status goes out first; a result finishing after the source was lost is stale.
                    published_version = self.publish_status_if_changed(published_version);
                    if self.state.snapshot().1 .0 != "waiting" {
                        self.publisher.publish(msg);
                    } else {
                        Counters::add(&self.counters.dropped_source_lost);
                    }
                }
                Ok(msg) => self.publisher.publish(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break, // the inference thread has finished
            }
            published_version = self.publish_status_if_changed(published_version);
            if !self.stats_interval.is_zero() && Instant::now() >= next_stats {
                next_stats += self.stats_interval;
                let stats = reporter.report(&self.counters, &self.publisher.counters(), &self.identity.device_id, (self.system_facts)());
                self.publisher.publish(Outgoing::Stats(stats));
            }
            if Instant::now() >= next_trim {
                next_trim += TRIM_INTERVAL;
                crate::sysinfo::release_freed_memory();
            }
        }
        let stats = reporter.report(&self.counters, &self.publisher.counters(), &self.identity.device_id, (self.system_facts)());
        self.publisher.publish(Outgoing::Stats(stats));
        let (_, (src, _gate, _)) = self.state.snapshot();
        let mut last = self.status("stopped");
        last.source_state = src;
        last.gate = "stopped".into();
        self.publisher.shutdown(last, Duration::from_secs(3));
    }

    fn status(&self, state: &'static str) -> Status {
        Status::new(&self.identity, state, &self.describe)
    }

    fn publish_status_if_changed(&mut self, published: u64) -> u64 {
        let (version, (source_state, gate, detail)) = self.state.snapshot();
        if version != published {
            let mut s = self.status("online");
            (s.source_state, s.gate, s.detail) = (source_state, gate, detail);
            self.publisher.publish(Outgoing::Status(s));
        }
        version
    }
}
