//! The daemon's frame path, one thread per stage: [`capture`] (frame -> ROI RGB in a pooled buffer,
//! judged by [`gate`], its input state kept by [`tracker`]), [`inference`] (preprocess
//! -> tract -> prediction) and [`publish`] (predictions, clinical signals, status changes, periodic
//! stats). Hand-offs are bounded and never block capture; [`status`] holds what the threads share
//! with the status topic and the watchdog. Shutdown finishes the frame in flight, publishes the
//! final status and joins every thread.

pub mod capture;
pub mod gate;
pub mod handoff;
pub mod inference;
pub mod publish;
pub mod stats;
pub mod status;
pub mod tracker;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::convert::{Converter, Deinterlace, Roi};
use crate::capture::region::Region;
use crate::capture::{FrameMeta, FrameSource};
use crate::clinical::abstain::Abstention;
pub use crate::clinical::input::Purpose;
use crate::clinical::input::{Dwell, InputChange};
use crate::clinical::stable::Smoothing;
use crate::clinical::Clinic;
use crate::config::PipelineConfig;
use crate::infer::Model;
use crate::publish::{Identity, Prediction, Publisher};
pub use capture::CaptureStage;
use gate::{Gate, Thresholds};
use handoff::{Mailbox, Pool};
pub use inference::infer_one;
use stats::Counters;
pub use status::{Facts, Heartbeats, SharedState, Thread};
pub use tracker::InputTracker;

/// What the capture and inference threads send the publish thread, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// An inferred frame, and why it was inferred.
    Inferred(Prediction, Purpose),
    /// An input state took effect.
    Input(InputChange),
}

/// A converted ROI on its way to inference.
pub struct RoiFrame {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub meta: FrameMeta,
    pub frame_no: u64,
    pub captured_at: Instant,
    /// The stream generation it was captured in (see [`SharedState`]).
    pub generation: u64,
    pub purpose: Purpose,
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
    /// Time between stats messages (zero = off).
    pub stats_interval: Duration,
    /// Extra facts for stats (e.g. SoC temperature), called at each stats message.
    pub system_facts: fn() -> serde_json::Value,
}

/// The running threads; `join` returns once all have stopped.
pub struct Running {
    threads: Vec<(Thread, JoinHandle<()>)>,
    pub counters: Arc<Counters>,
    pub state: Arc<SharedState>,
    /// Set by each loop as it turns; read by the watchdog.
    pub heartbeats: Arc<Heartbeats>,
}

impl Running {
    /// Waits for every thread; names the ones that panicked.
    pub fn join(self) -> Result<(), Vec<Thread>> {
        let panicked: Vec<Thread> = self.threads.into_iter().filter_map(|(name, t)| t.join().is_err().then_some(name)).collect();
        if panicked.is_empty() {
            Ok(())
        } else {
            Err(panicked)
        }
    }

    /// True if every loop turned within `max_age` (liveness, not frame flow).
    pub fn alive(&self, max_age: Duration) -> bool {
        self.heartbeats.stalled(max_age).is_none()
    }

    /// A thread that has ended although nobody asked it to (it panicked or gave up).
    pub fn ended_thread(&self) -> Option<Thread> {
        self.threads.iter().find(|(_, t)| t.is_finished()).map(|(name, _)| *name)
    }
}

/// Starts the three threads; they stop when `stop` is set.
pub fn start(parts: Parts, stop: Arc<AtomicBool>) -> Running {
    let counters = Arc::new(Counters::default());
    let state = Arc::new(SharedState::default());
    let heartbeats = Arc::new(Heartbeats::new());
    let mailbox = Arc::new(Mailbox::<RoiFrame>::default());
    let pool = Arc::new(Pool::new(3, pool_bytes(parts.region.configured_roi())));
    let (tx, rx) = sync_channel::<Event>(256);
    let describe = parts.source.describe();
    let c = &parts.config;
    let stage = CaptureStage {
        region: parts.region,
        converter: Converter::new(parts.deinterlace),
        gate: Gate::new(thresholds(c)),
        input: InputTracker::new(dwell(c), Duration::from_millis(c.freeze_min_ms), Some(tx.clone())),
        pool: pool.clone(),
        mailbox: mailbox.clone(),
        counters: counters.clone(),
        state: state.clone(),
        geometry: None,
    };
    let capture = capture::CaptureLoop {
        source: parts.source,
        stage,
        min_interval: c.min_interval(),
        stop: stop.clone(),
        heartbeats: heartbeats.clone(),
    };
    let infer = inference::InferLoop {
        model: parts.model.clone(),
        abstention: abstention(c),
        pool,
        mailbox,
        tx,
        counters: counters.clone(),
        stop: stop.clone(),
        heartbeats: heartbeats.clone(),
    };
    let publish = publish::PublishLoop {
        publisher: parts.publisher,
        rx,
        clinic: Clinic::new(parts.model.labels().to_vec(), abstention(c), smoothing(c)),
        publish_predictions: c.publish_predictions,
        counters: counters.clone(),
        state: state.clone(),
        identity: parts.identity,
        describe,
        stats_interval: parts.stats_interval,
        system_facts: parts.system_facts,
        heartbeats: heartbeats.clone(),
    };
    let threads = vec![
        spawn(Thread::Capture, move || capture.run()),
        spawn(Thread::Inference, move || infer.run()),
        spawn(Thread::Publish, move || publish.run()),
    ];
    Running { threads, counters, state, heartbeats }
}

/// The per-frame judgement's thresholds from `[pipeline]`.
pub fn thresholds(c: &PipelineConfig) -> Thresholds {
    Thresholds { no_signal_luma: c.no_signal_luma, no_contact_texture: c.no_contact_texture, frozen_mad: c.frozen_mad }
}

/// The abstention thresholds from `[pipeline]`.
pub fn abstention(c: &PipelineConfig) -> Abstention {
    Abstention { min_top: c.abstain_min_top, min_margin: c.abstain_min_margin }
}

/// The minimum dwell of a new input state from `[pipeline]`.
pub fn dwell(c: &PipelineConfig) -> Dwell {
    Dwell { frames: c.state_dwell_frames, min: Duration::from_millis(c.state_dwell_ms) }
}

fn smoothing(c: &PipelineConfig) -> Smoothing {
    Smoothing { window: c.finding_window_frames as usize, hold: c.finding_hold_frames }
}

fn spawn(thread: Thread, f: impl FnOnce() + Send + 'static) -> (Thread, JoinHandle<()>) {
    (thread, std::thread::Builder::new().name(thread.name().into()).spawn(f).expect("spawn pipeline thread"))
}

/// Room for a 1920x1080 ROI, or the configured ROI if larger, so steady state never reallocates.
fn pool_bytes(roi: Option<Roi>) -> usize {
    let (w, h) = roi.map(|r| (r.width, r.height)).unwrap_or((1920, 1080));
    w.max(1920) as usize * h.max(1080) as usize * 3
}

#[cfg(test)]
mod tests;
