//! What the threads tell each other and the watchdog: the source and gate state the status topic
//! publishes (typed, versioned so a change is published once), and each thread's named heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::{Gate, SourceState};

/// The source and gate facts of the status topic, with free text only in `detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub source: SourceState,
    pub gate: Gate,
    pub detail: Option<String>,
}

/// The latest [`Facts`], shared by the capture thread (writer) and the publish thread (reader),
/// and the stream generation: it moves on at every source loss and every change of frame geometry,
/// and a result from an older generation is never published, however late it arrives.
#[derive(Default)]
pub struct SharedState {
    facts: Mutex<Facts>,
    version: AtomicU64,
    generation: AtomicU64,
}

impl SharedState {
    /// Records new facts; the version moves only when something changed.
    pub fn set(&self, source: SourceState, gate: Gate, detail: Option<String>) {
        let next = Facts { source, gate, detail };
        let mut facts = self.facts.lock().unwrap();
        if *facts != next {
            *facts = next;
            self.version.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The version and the facts it numbers.
    pub fn snapshot(&self) -> (u64, Facts) {
        let facts = self.facts.lock().unwrap();
        (self.version.load(Ordering::Relaxed), facts.clone())
    }

    pub fn source(&self) -> SourceState {
        self.facts.lock().unwrap().source
    }

    /// True while a finished result may still be published: the source streams and its input is
    /// one whose images are classified (not lost, no signal, ROI mismatch or corrupt input now).
    /// A replay that ended still has its last results published.
    pub fn accepts_results(&self) -> bool {
        let facts = self.facts.lock().unwrap();
        let unclassified = facts.gate != Gate::SourceEnded && facts.gate.input_state().is_some_and(|s| !s.is_classified());
        facts.source != SourceState::Waiting && !unclassified
    }

    /// The current stream generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts a new stream generation: everything captured before is stale from now on.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// The pipeline's threads, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    Capture,
    Inference,
    Publish,
}

impl Thread {
    pub const ALL: [Thread; 3] = [Thread::Capture, Thread::Inference, Thread::Publish];

    pub fn name(self) -> &'static str {
        match self {
            Thread::Capture => "capture",
            Thread::Inference => "inference",
            Thread::Publish => "publish",
        }
    }
}

/// Each thread's liveness stamp: milliseconds since start, written every turn of its loop.
pub struct Heartbeats {
    started: Instant,
    capture: AtomicU64,
    inference: AtomicU64,
    publish: AtomicU64,
}

impl Heartbeats {
    pub fn new() -> Heartbeats {
        Heartbeats { started: Instant::now(), capture: AtomicU64::new(0), inference: AtomicU64::new(0), publish: AtomicU64::new(0) }
    }

    fn slot(&self, thread: Thread) -> &AtomicU64 {
        match thread {
            Thread::Capture => &self.capture,
            Thread::Inference => &self.inference,
            Thread::Publish => &self.publish,
        }
    }

    pub fn beat(&self, thread: Thread) {
        self.slot(thread).store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long ago `thread` last beat.
    pub fn age(&self, thread: Thread) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.slot(thread).load(Ordering::Relaxed)))
    }

    /// The first thread that has not beaten within `max_age`, if any.
    pub fn stalled(&self, max_age: Duration) -> Option<Thread> {
        Thread::ALL.into_iter().find(|t| self.age(*t) > max_age)
    }
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_moves_only_when_the_facts_change() {
        let s = SharedState::default();
        let (v0, f0) = s.snapshot();
        assert_eq!(f0, Facts::default());
        s.set(SourceState::Streaming, Gate::Inferring, None);
        s.set(SourceState::Streaming, Gate::Inferring, None);
        let (v1, f1) = s.snapshot();
        assert_eq!((v1 - v0, f1.gate), (1, Gate::Inferring));
        s.set(SourceState::Waiting, Gate::SourceWaiting, Some("absent".into()));
        assert_eq!(s.snapshot().0 - v1, 1);
    }

    #[test]
    fn a_thread_that_stops_beating_is_named_as_stalled() {
        let h = Heartbeats::new();
        std::thread::sleep(Duration::from_millis(30));
        h.beat(Thread::Capture);
        h.beat(Thread::Publish);
        assert_eq!(h.stalled(Duration::from_millis(20)), Some(Thread::Inference));
        h.beat(Thread::Inference);
        assert_eq!(h.stalled(Duration::from_millis(20)), None);
    }
}
