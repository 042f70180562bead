//! The daemon's frame path, one thread per stage: [`capture`] (frame -> gated ROI RGB in a pooled
//! buffer), [`inference`] (preprocess -> tract -> prediction) and [`publish`] (predictions, status
//! changes, periodic stats). Hand-offs are bounded and never block capture; [`status`] holds what
//! the threads share with the status topic and the watchdog. Shutdown finishes the frame in
//! flight, publishes the final status and joins every thread.

pub mod capture;
pub mod gate;
pub mod handoff;
pub mod inference;
pub mod publish;
pub mod stats;
pub mod status;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::convert::{Converter, Deinterlace, Roi};
use crate::capture::region::Region;
use crate::capture::{FrameMeta, FrameSource};
use crate::config::PipelineConfig;
use crate::infer::Model;
use crate::publish::{Identity, Outgoing, Publisher};
pub use capture::CaptureStage;
use gate::Gate;
use handoff::{Mailbox, Pool};
pub use inference::infer_one;
use stats::Counters;
pub use status::{Facts, Heartbeats, SharedState, Thread};

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
    let (tx, rx) = sync_channel::<Outgoing>(256);
    let describe = parts.source.describe();
    let stage = CaptureStage {
        region: parts.region,
        converter: Converter::new(parts.deinterlace),
        gate: Gate::new(parts.config.no_signal_luma, parts.config.frozen_mad),
        pool: pool.clone(),
        mailbox: mailbox.clone(),
        counters: counters.clone(),
        state: state.clone(),
        geometry: None,
    };
    let capture = capture::CaptureLoop {
        source: parts.source,
        stage,
        min_interval: parts.config.min_interval(),
        stop: stop.clone(),
        heartbeats: heartbeats.clone(),
    };
    let infer = inference::InferLoop {
        model: parts.model.clone(),
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
