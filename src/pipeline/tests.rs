//! The pipeline in process: the synthetic phantom (or a source that loses itself) through the
//! real threads and the committed demo model into a recording publisher; no broker, no daemon.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::capture::synthetic::{roi_for, PhantomConfig, SyntheticSource};
use crate::capture::{CaptureError, Frame};
use crate::infer::{LoadOptions, Overrides};
use crate::publish::{Outgoing, RecordingPublisher, Status};
use crate::state::{DaemonState, Gate as GateState, SourceState};

const W: u32 = 640;
const H: u32 = 360;

fn model() -> Arc<Model> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/int8");
    Arc::new(Model::load(&dir, &Overrides::default(), &LoadOptions::default()).unwrap())
}

fn phantom(seed: u64, fps: f64) -> SyntheticSource {
    SyntheticSource::new(PhantomConfig { width: W, height: H, seed, segment_frames: 8, fps })
}

fn parts(source: Box<dyn FrameSource>, publisher: RecordingPublisher) -> Parts {
    let (x, y, w, h) = roi_for(W, H);
    let identity = Identity { device_id: "test".into(), model_sha256: "m".into(), preprocess_digest: "p".into() };
    Parts {
        source,
        model: model(),
        publisher: Box::new(publisher),
        region: Region::new(Some([x, y, w, h]), None),
        deinterlace: Deinterlace::default(),
        // Unpaced sources deliver a segment in milliseconds: the dwell is counted in frames only.
        config: PipelineConfig { max_fps: 0.0, state_dwell_ms: 0, freeze_min_ms: 0, ..PipelineConfig::default() },
        identity,
        stats_interval: Duration::from_millis(200),
        system_facts: || serde_json::json!({}),
    }
}

/// Runs until `done` holds for the counters (or 60 s pass), then stops and joins.
fn run_until(parts: Parts, done: impl Fn(&Counters) -> bool) -> Arc<Counters> {
    let stop = Arc::new(AtomicBool::new(false));
    let running = start(parts, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&running.counters) && Instant::now() < deadline {
        assert!(running.ended_thread().is_none(), "a pipeline thread ended on its own");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    let counters = running.counters.clone();
    running.join().expect("no thread panicked");
    counters
}

fn statuses(messages: &[Outgoing]) -> Vec<&Status> {
    messages.iter().filter_map(|m| if let Outgoing::Status(s) = m { Some(s) } else { None }).collect()
}

/// Every captured frame is published or counted under exactly one reason.
fn unaccounted(c: &Counters, predictions: u64) -> i64 {
    let counted = [
        &c.skipped_max_fps,
        &c.gated_no_signal,
        &c.gated_frozen,
        &c.gated_no_contact,
        &c.skipped_dwell,
        &c.dropped_inference_busy,
        &c.dropped_corrupt_frame,
        &c.roi_mismatch,
        &c.inference_errors,
        &c.dropped_source_lost,
    ];
    c.frames_in.load(Relaxed) as i64 - predictions as i64 - counted.iter().map(|a| a.load(Relaxed) as i64).sum::<i64>()
}

#[test]
fn the_phantom_is_gated_inferred_and_published_and_every_frame_is_accounted_for() {
    let rec = RecordingPublisher::default();
    // 240 frames and 5 published results: under qemu-user inference is 10-50x slower than the
    // unpaced phantom, and 240 frames alone gave 4 (CI, aarch64).
    let published = |c: &Counters| c.inferred.load(Relaxed).saturating_sub(c.dropped_source_lost.load(Relaxed));
    let c = run_until(parts(Box::new(phantom(11, 0.0)), rec.clone()), |c| c.frames_in.load(Relaxed) >= 240 && published(c) >= 5);
    let messages = rec.messages.lock().unwrap();
    let predictions = messages.iter().filter(|m| matches!(m, Outgoing::Prediction(_))).count() as u64;
    assert!(predictions >= 5, "{predictions} predictions");
    // A result that finished after the next segment turned the input to no signal is withheld.
    assert_eq!(predictions + c.dropped_source_lost.load(Relaxed), c.inferred.load(Relaxed));
    // An unthrottled source outruns inference: the busy drops are counted, not lost.
    assert!(c.dropped_inference_busy.load(Relaxed) > 0);
    assert!(c.gated_no_signal.load(Relaxed) + c.gated_frozen.load(Relaxed) > 0, "the phantom's gated segments were not gated");
    // A frame captured while the stop was being set may not reach the mailbox: at most one.
    assert!((0..=1).contains(&unaccounted(&c, predictions)), "unaccounted frames: {}", unaccounted(&c, predictions));
}

#[test]
fn shutdown_publishes_final_stats_then_the_stopped_status_last() {
    let rec = RecordingPublisher::default();
    run_until(parts(Box::new(phantom(3, 30.0)), rec.clone()), |c| c.inferred.load(Relaxed) >= 3);
    let messages = rec.messages.lock().unwrap();
    let n = messages.len();
    assert!(matches!(messages[n - 2], Outgoing::Stats(_)), "{:?}", messages[n - 2]);
    let Outgoing::Status(last) = &messages[n - 1] else { panic!("last message is not a status: {:?}", messages[n - 1]) };
    assert_eq!((last.state, last.gate, last.source_state), (DaemonState::Stopped, GateState::Stopped, SourceState::Streaming));
    let first = statuses(&messages)[0];
    assert_eq!((first.state, first.source_state), (DaemonState::Online, SourceState::Streaming));
}

#[test]
fn status_is_published_once_per_change_never_twice_the_same() {
    let rec = RecordingPublisher::default();
    // Paced, so the publish thread looks many times while the gate moves between segments.
    run_until(parts(Box::new(phantom(5, 40.0)), rec.clone()), |c| c.frames_in.load(Relaxed) >= 80);
    let messages = rec.messages.lock().unwrap();
    let online: Vec<_> = statuses(&messages).into_iter().filter(|s| s.state == DaemonState::Online).collect();
    assert!(online.len() >= 2, "the phantom's segments should change the gate");
    for pair in online.windows(2) {
        assert_ne!((pair[0].gate, pair[0].source_state, &pair[0].detail), (pair[1].gate, pair[1].source_state, &pair[1].detail));
    }
}

/// The phantom, lost for `lost_calls` calls after every `live_frames` frames.
struct LosingSource {
    inner: SyntheticSource,
    live_frames: u64,
    lost_calls: u64,
    calls: u64,
}

impl FrameSource for LosingSource {
    fn describe(&self) -> String {
        "losing phantom".into()
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        self.calls += 1;
        if self.calls % (self.live_frames + self.lost_calls) >= self.live_frames {
            return Err(CaptureError::Unavailable("unplugged by the test".into()));
        }
        self.inner.next_frame()
    }
}

#[test]
fn no_prediction_is_published_while_the_source_is_lost() {
    let rec = RecordingPublisher::default();
    let source = LosingSource { inner: phantom(9, 0.0), live_frames: 12, lost_calls: 2, calls: 0 };
    let c = run_until(parts(Box::new(source), rec.clone()), |c| c.frames_in.load(Relaxed) >= 120);
    let messages = rec.messages.lock().unwrap();
    let mut lost = false;
    let (mut losses, mut predictions) = (0, 0);
    for m in messages.iter() {
        match m {
            Outgoing::Status(s) if s.state == DaemonState::Online => {
                losses += usize::from(!lost && s.source_state == SourceState::Waiting);
                lost = s.source_state == SourceState::Waiting;
            }
            Outgoing::Prediction(p) => {
                assert!(!lost, "prediction of frame {} published while the source was lost", p.frame);
                predictions += 1;
            }
            _ => {}
        }
    }
    assert!(losses >= 3, "{losses} losses seen on status");
    assert!((0..=1).contains(&unaccounted(&c, predictions)), "unaccounted frames: {}", unaccounted(&c, predictions));
}

/// A source whose driver code panics on its third frame.
struct PanickingSource(SyntheticSource, u32);

impl FrameSource for PanickingSource {
    fn describe(&self) -> String {
        "panicking phantom".into()
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        self.1 += 1;
        assert!(self.1 < 3, "the test source panics on purpose");
        self.0.next_frame()
    }
}

#[test]
fn a_thread_that_panics_is_seen_as_ended_and_named_at_join() {
    let stop = Arc::new(AtomicBool::new(false));
    let running = start(parts(Box::new(PanickingSource(phantom(1, 0.0), 0)), RecordingPublisher::default()), stop.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.ended_thread().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(running.ended_thread(), Some(Thread::Capture));
    stop.store(true, Relaxed);
    assert_eq!(running.join(), Err(vec![Thread::Capture]));
}

#[test]
fn a_publisher_whose_own_loop_died_stops_the_publish_heartbeat_so_the_watchdog_starves() {
    struct DeadLoop(RecordingPublisher);
    impl Publisher for DeadLoop {
        fn publish(&mut self, msg: Outgoing) {
            self.0.publish(msg)
        }
        fn counters(&self) -> crate::publish::PublishCounters {
            self.0.counters()
        }
        fn shutdown(&mut self, last: Status, timeout: Duration) {
            self.0.shutdown(last, timeout)
        }
        fn alive(&self) -> bool {
            false
        }
    }
    let mut parts = parts(Box::new(phantom(1, 30.0)), RecordingPublisher::default());
    parts.publisher = Box::new(DeadLoop(RecordingPublisher::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let running = start(parts, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let (publish, capture) = (running.heartbeats.age(Thread::Publish), running.heartbeats.age(Thread::Capture));
    assert!(publish > Duration::from_secs(1) && capture < Duration::from_secs(1), "publish {publish:?}, capture {capture:?}");
    assert!(!running.alive(Duration::from_secs(1)), "the watchdog would still be fed");
    stop.store(true, Relaxed);
    running.join().expect("no thread panicked");
}

#[test]
fn corrupt_frames_from_the_source_are_counted_and_said_on_status() {
    struct Corrupt;
    impl FrameSource for Corrupt {
        fn describe(&self) -> String {
            "corrupt files".into()
        }
        fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
            std::thread::sleep(Duration::from_millis(5));
            Err(CaptureError::Corrupt("frame_1.png: not a PNG".into()))
        }
    }
    let rec = RecordingPublisher::default();
    let c = run_until(parts(Box::new(Corrupt), rec.clone()), |c| c.dropped_corrupt_frame.load(Relaxed) >= 20);
    assert!(c.dropped_corrupt_frame.load(Relaxed) >= 20);
    let messages = rec.messages.lock().unwrap();
    let gates: Vec<GateState> = statuses(&messages).iter().map(|s| s.gate).collect();
    assert!(gates.contains(&GateState::CorruptFrames), "{gates:?}");
}

fn prediction(frame: u64, generation: u64) -> crate::publish::Prediction {
    let now = Instant::now();
    crate::publish::Prediction {
        frame,
        generation,
        source_sequence: frame,
        captured_wall: std::time::SystemTime::now(),
        captured_monotonic: Duration::ZERO,
        captured_at: now,
        inferred_at: now,
        label: "benign".into(),
        uncertain: false,
        probs: vec![("benign".into(), 1.0)],
        latency: crate::publish::LatencyMs::default(),
    }
}

#[test]
fn a_result_from_before_a_reopen_is_withheld_even_when_it_arrives_after_streaming_resumed() {
    let rec = RecordingPublisher::default();
    let (counters, state) = (Arc::new(Counters::default()), Arc::new(SharedState::default()));
    let (tx, rx) = sync_channel(8);
    let publish = publish_loop(&rec, rx, &counters, &state);
    state.set(SourceState::Streaming, GateState::Inferring, None);
    let thread = std::thread::spawn(move || publish.run());
    let count = |rec: &RecordingPublisher| rec.messages.lock().unwrap().iter().filter(|m| matches!(m, Outgoing::Prediction(_))).count();
    let live = Purpose::Live { stretch: 1 };
    tx.send(Event::Inferred(prediction(1, 0), live)).unwrap();
    while count(&rec) < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The device is lost and reopened: the state says streaming again before the old result lands.
    state.next_generation();
    state.set(SourceState::Streaming, GateState::Inferring, None);
    tx.send(Event::Inferred(prediction(2, 0), live)).unwrap();
    tx.send(Event::Inferred(prediction(3, 1), live)).unwrap();
    drop(tx);
    thread.join().unwrap();
    let published: Vec<u64> =
        rec.messages.lock().unwrap().iter().filter_map(|m| if let Outgoing::Prediction(p) = m { Some(p.frame) } else { None }).collect();
    assert_eq!(published, [1, 3]);
    assert_eq!(counters.dropped_source_lost.load(Relaxed), 1);
}

/// A publish loop recording what it publishes, with the default clinical thresholds.
fn publish_loop(
    rec: &RecordingPublisher,
    rx: std::sync::mpsc::Receiver<Event>,
    counters: &Arc<Counters>,
    state: &Arc<SharedState>,
) -> publish::PublishLoop {
    publish::PublishLoop {
        publisher: Box::new(rec.clone()),
        rx,
        clinic: Clinic::new(vec!["benign".into()], abstention(&PipelineConfig::default()), smoothing(&PipelineConfig::default())),
        publish_predictions: true,
        counters: counters.clone(),
        state: state.clone(),
        identity: Identity { device_id: "t".into(), model_sha256: "m".into(), preprocess_digest: "p".into() },
        describe: "test".into(),
        stats_interval: Duration::ZERO,
        system_facts: || serde_json::json!({}),
        heartbeats: Arc::new(Heartbeats::new()),
    }
}

#[test]
fn a_result_that_finishes_after_status_said_no_signal_is_withheld() {
    let rec = RecordingPublisher::default();
    let (counters, state) = (Arc::new(Counters::default()), Arc::new(SharedState::default()));
    let (tx, rx) = sync_channel(8);
    let publish = publish_loop(&rec, rx, &counters, &state);
    state.set(SourceState::Streaming, GateState::NoSignal, Some("the grabber reports no signal".into()));
    let thread = std::thread::spawn(move || publish.run());
    tx.send(Event::Inferred(prediction(1, 0), Purpose::Live { stretch: 1 })).unwrap();
    drop(tx);
    thread.join().unwrap();
    let messages = rec.messages.lock().unwrap();
    assert!(!messages.iter().any(|m| matches!(m, Outgoing::Prediction(_))), "a prediction was published under no_signal");
    assert_eq!(statuses(&messages)[0].gate, GateState::NoSignal);
    assert_eq!(counters.dropped_source_lost.load(Relaxed), 1);
}

#[test]
fn a_freeze_result_that_finishes_after_the_input_moved_on_is_still_its_finding_but_a_live_one_is_withheld() {
    let rec = RecordingPublisher::default();
    let (counters, state) = (Arc::new(Counters::default()), Arc::new(SharedState::default()));
    let (tx, rx) = sync_channel(8);
    let publish = publish_loop(&rec, rx, &counters, &state);
    // The probe was lifted while the frozen image was in inference.
    state.set(SourceState::Streaming, GateState::NoContact, None);
    let thread = std::thread::spawn(move || publish.run());
    let frozen = crate::clinical::input::FrozenImage { stretch: 3, frame: 1, wall: std::time::SystemTime::now() };
    tx.send(Event::Inferred(prediction(1, 0), Purpose::Freeze(frozen))).unwrap();
    tx.send(Event::Inferred(prediction(2, 0), Purpose::Live { stretch: 4 })).unwrap();
    drop(tx);
    thread.join().unwrap();
    let messages = rec.messages.lock().unwrap();
    let freezes: Vec<u64> = messages.iter().filter_map(|m| if let Outgoing::Finding(f) = m { Some(f.frame) } else { None }).collect();
    assert_eq!(freezes, [1], "the freeze finding names the frozen frame");
    let predictions: Vec<u64> =
        messages.iter().filter_map(|m| if let Outgoing::Prediction(p) = m { Some(p.frame) } else { None }).collect();
    assert_eq!(predictions, [1], "the live result under no_contact is withheld");
    assert_eq!(counters.dropped_source_lost.load(Relaxed), 1);
}

/// The phantom (unpaced, so every call gives a frame) as a grabber with faults: frame 3 never
/// arrives (a gap in the driver's sequence), frames 5 and 6 arrive flagged as damaged.
struct FaultyGrabber(SyntheticSource, u64);

impl FrameSource for FaultyGrabber {
    fn describe(&self) -> String {
        "faulty grabber".into()
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let sequence = self.1;
        self.1 += 1;
        match sequence {
            3 => {
                self.0.next_frame()?;
                self.1 += 1;
                self.0.next_frame()
            }
            5 | 6 => {
                self.0.next_frame()?;
                Err(CaptureError::Damaged { sequence, why: "flagged by the driver".into() })
            }
            _ => self.0.next_frame(),
        }
    }
}

#[test]
fn each_lost_or_damaged_frame_is_counted_once_in_one_counter() {
    let rec = RecordingPublisher::default();
    let c = run_until(parts(Box::new(FaultyGrabber(phantom(3, 0.0), 0)), rec), |c| c.frames_in.load(Relaxed) >= 12);
    assert_eq!(c.source_gaps.load(Relaxed), 1, "frame 3 never arrived");
    assert_eq!(c.dropped_corrupt_frame.load(Relaxed), 2, "frames 5 and 6 were damaged");
    let predictions = c.inferred.load(Relaxed);
    assert!((0..=1).contains(&unaccounted(&c, predictions)), "unaccounted frames: {}", unaccounted(&c, predictions));
}
