//! The frame path from a captured buffer to the model's input tensor allocates nothing per frame
//! (ROI conversion into a pooled buffer, judging the input state, the mailbox hand-off, preprocessing into the
//! session's reused input). Inference and the prediction after it allocate a fixed count per frame.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sonoedge::capture::convert::{Converter, Deinterlace};
use sonoedge::capture::region::Region;
use sonoedge::capture::{ColorSpace, FieldOrder, Frame, FrameMeta, PixelFormat, Range};
use sonoedge::classify::Classifier;
use sonoedge::clinical::abstain::Abstention;
use sonoedge::clinical::input::Dwell;
use sonoedge::config::PipelineConfig;
use sonoedge::infer::{LoadOptions, Model, Overrides};
use sonoedge::pipeline::gate::Gate;
use sonoedge::pipeline::handoff::{Mailbox, Pool};
use sonoedge::pipeline::stats::Counters;
use sonoedge::pipeline::{infer_one, thresholds, CaptureStage, InputTracker, RoiFrame, SharedState};
use sonoedge::preprocess::{ImageView, Layout as PixelLayout, Preprocessor};

/// Counts allocations made by the current thread only (other test threads do not disturb it).
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's layout is passed on as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc/realloc with this layout (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: as for dealloc; `new_size` is passed on as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

fn meta(sequence: u64) -> FrameMeta {
    FrameMeta {
        width: 1280,
        height: 720,
        format: PixelFormat::Yuyv,
        stride: 1280 * 2,
        color_space: ColorSpace::Bt709,
        range: Range::Limited,
        field: FieldOrder::Progressive,
        sequence,
        monotonic: Duration::ZERO,
        wall: SystemTime::UNIX_EPOCH,
    }
}

struct Rig {
    stage: CaptureStage,
    mailbox: Arc<Mailbox<RoiFrame>>,
    pool: Arc<Pool>,
    raw: Vec<u8>,
    pre: Preprocessor,
}

impl Rig {
    fn new(model: &Model) -> Rig {
        let pool = Arc::new(Pool::new(3, 736 * 624 * 3));
        let mailbox = Arc::new(Mailbox::default());
        let stage = CaptureStage {
            region: Region::new(Some([272, 56, 736, 624]), None),
            converter: Converter::new(Deinterlace::Weave),
            gate: Gate::new(thresholds(&PipelineConfig::default())),
            // Live takes effect at the first frame, so every frame of the test is inferred.
            input: InputTracker::new(Dwell { frames: 1, min: Duration::ZERO }, Duration::from_millis(500), None),
            pool: pool.clone(),
            mailbox: mailbox.clone(),
            counters: Arc::new(Counters::default()),
            state: Arc::new(SharedState::default()),
            geometry: None,
        };
        let raw = (0..1280 * 720 * 2).map(|i| (i * 7 % 251) as u8).collect();
        Rig { stage, mailbox, pool, raw, pre: Preprocessor::new(model.preprocess()) }
    }

    /// Capture -> mailbox -> taken by the inference side, for frame `i`.
    fn capture(&mut self, i: u64) -> RoiFrame {
        self.raw.iter_mut().step_by(7).for_each(|b| *b = b.wrapping_add(31)); // a changing image, never "frozen"
        let frame = Frame { meta: meta(i), data: &self.raw };
        let roi_frame = self.stage.accept(frame, i, Instant::now(), true).expect("frame accepted");
        self.stage.hand_off(roi_frame);
        self.mailbox.take_timeout(Duration::from_millis(10)).expect("frame in mailbox")
    }

    /// Capture -> input tensor for frame `i`; returns the frame handed to inference.
    fn capture_into_tensor(&mut self, i: u64, input: &mut [f32]) -> RoiFrame {
        let f = self.capture(i);
        self.pre.run(ImageView { width: f.width, height: f.height, layout: PixelLayout::Rgb8, data: &f.rgb }, input).unwrap();
        f
    }
}

#[test]
fn capture_to_input_tensor_allocates_nothing_per_frame() {
    let model = Model::load(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-random/int8")),
        &Overrides::default(),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut session = model.session().unwrap();
    let mut rig = Rig::new(&model);
    for i in 0..3 {
        let f = rig.capture_into_tensor(i, session.input_mut());
        session.run().unwrap();
        rig.pool.put(f.rgb);
    }
    let mut on_path = 0;
    for i in 3..23 {
        let before = allocs();
        let f = rig.capture_into_tensor(i, session.input_mut());
        on_path += allocs() - before;
        session.run().unwrap();
        rig.pool.put(f.rgb);
    }
    assert_eq!(on_path, 0, "allocations between capture and the input tensor over 20 frames");
    assert_eq!(session.fresh_inputs(), 0, "tract kept the input; the buffer had to be replaced");
}

#[test]
fn inference_and_prediction_allocate_a_fixed_count_that_does_not_grow() {
    let model = Model::load(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-random/int8")),
        &Overrides::default(),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut classifier = Classifier::new(&model).unwrap();
    let mut rig = Rig::new(&model);
    let counters = Counters::default();
    let mut per_frame = Vec::new();
    for i in 0..15 {
        let f = rig.capture(i);
        let before = allocs();
        let p = infer_one(&model, &mut classifier, &f, &counters, &Abstention { min_top: 0.6, min_margin: 0.2 }).unwrap();
        per_frame.push(allocs() - before);
        drop(p);
        rig.pool.put(f.rgb);
    }
    let steady = &per_frame[5..];
    assert!(steady.iter().all(|n| *n == steady[0]), "allocations per inference vary: {per_frame:?}");
    eprintln!("allocations per inference + prediction: {}", steady[0]);
}
