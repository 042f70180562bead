//! The inference thread: takes the newest ROI frame from the mailbox, runs the shared per-image
//! path on it and sends the prediction (with why the frame was inferred) to the publish thread;
//! its buffer goes back to the pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handoff::{Mailbox, Pool};
use super::stats::Counters;
use super::status::{Heartbeats, Thread};
use super::{Event, RoiFrame};
use crate::classify::Classifier;
use crate::clinical::abstain::{Abstention, Call};
use crate::infer::{argmax, Model};
use crate::preprocess::{ImageView, Layout};
use crate::publish::{LatencyMs, Prediction};

pub(super) struct InferLoop {
    pub model: Arc<Model>,
    pub abstention: Abstention,
    pub pool: Arc<Pool>,
    pub mailbox: Arc<Mailbox<RoiFrame>>,
    pub tx: SyncSender<Event>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub heartbeats: Arc<Heartbeats>,
}

impl InferLoop {
    pub fn run(self) {
        let mut classifier = match Classifier::new(&self.model) {
            Ok(c) => c,
            // The thread ends; the daemon sees it gone and exits non-zero.
            Err(e) => return log::error!("cannot start inference: {e:#}"),
        };
        loop {
            self.heartbeats.beat(Thread::Inference);
            let Some(frame) = self.mailbox.take_timeout(Duration::from_millis(200)) else {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            };
            self.infer_and_send(&mut classifier, &frame);
            self.pool.put(frame.rgb);
        }
    }

    fn infer_and_send(&self, classifier: &mut Classifier, frame: &RoiFrame) {
        match infer_one(&self.model, classifier, frame, &self.counters, &self.abstention) {
            // The publish thread drains this quickly; if it is ever full, the result is counted lost.
            Ok(p) => {
                if self.tx.try_send(Event::Inferred(p, frame.purpose)).is_err() {
                    Counters::add(&self.counters.inference_errors);
                }
            }
            Err(e) => {
                Counters::add(&self.counters.inference_errors);
                log::warn!("frame {} not inferred: {e:#}", frame.frame_no);
            }
        }
    }
}

/// Preprocess + inference of one ROI frame into a prediction (argmax label, and whether the
/// abstention thresholds call it uncertain).
pub fn infer_one(
    model: &Model,
    classifier: &mut Classifier,
    f: &RoiFrame,
    counters: &Counters,
    abstention: &Abstention,
) -> anyhow::Result<Prediction> {
    let t0 = Instant::now();
    classifier.prepare(ImageView { width: f.width, height: f.height, layout: Layout::Rgb8, data: &f.rgb })?;
    let t1 = Instant::now();
    let (_, probs) = classifier.infer()?;
    let t2 = Instant::now();
    counters.record_inference_ms((t2 - t1).as_secs_f64() * 1e3);
    Counters::add(&counters.inferred);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Prediction {
        frame: f.frame_no,
        generation: f.generation,
        source_sequence: f.meta.sequence,
        captured_wall: f.meta.wall,
        captured_monotonic: f.meta.monotonic,
        captured_at: f.captured_at,
        inferred_at: t2,
        label: model.labels()[argmax(probs)].clone(),
        uncertain: abstention.call(probs) == Call::Uncertain,
        probs: model.labels().iter().cloned().zip(probs.iter().copied()).collect(),
        latency: LatencyMs { capture_to_preprocess: ms(t0 - f.captured_at), preprocess: ms(t1 - t0), inference: ms(t2 - t1), to_mqtt: 0.0 },
    })
}
