//! Pipeline counters, shared by the threads as atomics, and the `stats` payload built from them.
//! Every frame that does not become a prediction is counted under exactly one reason.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use heapless::HistoryBuf;
use serde_json::{json, Value};

use crate::publish::messages::STATS_SCHEMA;
use crate::publish::PublishCounters;

#[derive(Default)]
pub struct Counters {
    pub frames_in: AtomicU64,
    pub inferred: AtomicU64,
    /// A newer frame replaced this one while inference was busy.
    pub dropped_inference_busy: AtomicU64,
    pub dropped_corrupt_frame: AtomicU64,
    /// A frame or result from before a source loss: withheld, it would be stale.
    pub dropped_source_lost: AtomicU64,
    /// Sequence numbers the source skipped (frames the driver dropped).
    pub source_gaps: AtomicU64,
    pub gated_no_signal: AtomicU64,
    pub gated_frozen: AtomicU64,
    /// The ROI held no tissue (probe lifted).
    pub gated_no_contact: AtomicU64,
    /// Judged live while another input state was still in effect (the dwell before live).
    pub skipped_dwell: AtomicU64,
    /// Skipped to honour `max_fps`.
    pub skipped_max_fps: AtomicU64,
    pub roi_mismatch: AtomicU64,
    pub inference_errors: AtomicU64,
    /// Every frame's inference time, the last 256, for percentiles.
    inference_ms: Mutex<HistoryBuf<f32, 256>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counter of a frame not inferred because of its input state: its own judgement, or
    /// the dwell when it was judged live before live took effect.
    pub fn skipped(&self, judged: crate::state::InputState) -> &AtomicU64 {
        use crate::state::InputState::*;
        match judged {
            NoSignal => &self.gated_no_signal,
            NoContact => &self.gated_no_contact,
            Frozen => &self.gated_frozen,
            RoiMismatch => &self.roi_mismatch,
            CorruptInput | SourceWaiting => &self.dropped_corrupt_frame,
            Live => &self.skipped_dwell,
        }
    }

    pub fn record_inference_ms(&self, ms: f64) {
        self.inference_ms.lock().unwrap().write(ms as f32);
    }

    fn inference_percentiles(&self) -> (Option<f64>, Option<f64>) {
        let buf = self.inference_ms.lock().unwrap();
        let mut v: heapless::Vec<f32, 256> = buf.iter().copied().collect();
        if v.is_empty() {
            return (None, None);
        }
        v.sort_unstable_by(f32::total_cmp);
        let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64;
        (Some(at(0.5)), Some(at(0.95)))
    }
}

/// Rates over the interval since the previous stats message.
pub struct StatsReporter {
    last_at: Instant,
    last_in: u64,
    last_inferred: u64,
}

impl StatsReporter {
    pub fn new() -> StatsReporter {
        StatsReporter { last_at: Instant::now(), last_in: 0, last_inferred: 0 }
    }

    pub fn report(&mut self, c: &Counters, p: &PublishCounters, device_id: &str, extra: Value) -> Value {
        let secs = self.last_at.elapsed().as_secs_f64().max(1e-3);
        let (frames_in, inferred) = (c.frames_in.load(Relaxed), c.inferred.load(Relaxed));
        let (p50, p95) = c.inference_percentiles();
        let v = json!({
            "schema": STATS_SCHEMA,
            "device_id": device_id,
            "time": crate::publish::messages::rfc3339_ms(std::time::SystemTime::now()),
            "interval_s": (secs * 1000.0).round() / 1000.0,
            "frames_in": frames_in,
            "inferred": inferred,
            "predictions_sent": p.predictions_sent,
            "acked": p.acked,
            "fps_in": (frames_in - self.last_in) as f64 / secs,
            "fps_inferred": (inferred - self.last_inferred) as f64 / secs,
            "inference_ms_p50": p50,
            "inference_ms_p95": p95,
            "dropped": {
                "inference_busy": c.dropped_inference_busy.load(Relaxed),
                "offline_queue_full": p.dropped_offline_queue_full,
                "corrupt_frame": c.dropped_corrupt_frame.load(Relaxed),
                "source_gaps": c.source_gaps.load(Relaxed),
                "inference_error": c.inference_errors.load(Relaxed),
                "source_lost": c.dropped_source_lost.load(Relaxed),
            },
            "skipped": {
                "no_signal": c.gated_no_signal.load(Relaxed),
                "frozen": c.gated_frozen.load(Relaxed),
                "no_contact": c.gated_no_contact.load(Relaxed),
                "dwell": c.skipped_dwell.load(Relaxed),
                "max_fps": c.skipped_max_fps.load(Relaxed),
                "roi_mismatch": c.roi_mismatch.load(Relaxed),
            },
            "refused": p.refused,
            "queue_depth": p.queue_depth,
            "in_flight": p.in_flight,
            "requeued_unacked": p.requeued_unacked,
            "reconnects": p.reconnects,
            "connected": p.connected,
            "system": extra,
        });
        (self.last_at, self.last_in, self.last_inferred) = (Instant::now(), frames_in, inferred);
        v
    }
}

impl Default for StatsReporter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_only_the_last_256_inferences() {
        let c = Counters::default();
        for i in 0..300 {
            c.record_inference_ms(if i < 44 { 1000.0 } else { (i - 43) as f64 });
        }
        assert_eq!(c.inference_percentiles(), (Some(128.0), Some(244.0)));
    }
}
