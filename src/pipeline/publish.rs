//! The publish thread: hands predictions to the publisher (withholding results that finished after
//! the source was lost), turns input changes and inferred frames into clinical signals (state and
//! findings, through the [`Clinic`]), publishes each change of status once, stats every interval,
//! and on stop the final stats and the `stopped` status.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::{Counters, StatsReporter};
use super::status::{Facts, Heartbeats, SharedState, Thread};
use super::{Event, Purpose};
use crate::clinical::Clinic;
use crate::publish::{Identity, Outgoing, Prediction, Publisher, Status};
use crate::state::{DaemonState, Gate, SourceState};

pub(super) struct PublishLoop {
    pub publisher: Box<dyn Publisher>,
    pub rx: Receiver<Event>,
    pub clinic: Clinic,
    /// `pipeline.publish_predictions`: the raw per-frame stream (findings and state go out regardless).
    pub publish_predictions: bool,
    pub counters: Arc<Counters>,
    pub state: Arc<SharedState>,
    pub identity: Identity,
    pub describe: String,
    pub stats_interval: Duration,
    pub system_facts: fn() -> serde_json::Value,
    pub heartbeats: Arc<Heartbeats>,
}

/// How often freed heap pages go back to the OS. Without it the per-thread heaps each keep their
/// high-water mark of tract's per-inference buffers (ViT-B int8: RSS 155 -> 228 MB in 100 s).
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

impl PublishLoop {
    pub fn run(mut self) {
        let mut published = None;
        let mut reporter = StatsReporter::new();
        let mut next_stats = Instant::now() + self.stats_interval;
        let mut next_trim = Instant::now() + TRIM_INTERVAL;
        loop {
            // The publisher's own loop (the MQTT event thread) is watched through this one.
            if self.publisher.alive() {
                self.heartbeats.beat(Thread::Publish);
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Inferred(p, purpose)) => {
                    // The status goes out first; a result from before a loss or a size change is
                    // stale, and so is a live one that finished after the input stopped being
                    // classified (no signal, ROI mismatch): no live prediction after status said so.
                    published = self.publish_status_if_changed(published);
                    if p.generation == self.state.generation() && self.still_wanted(purpose) {
                        let signals = self.clinic.on_prediction(&p, purpose);
                        self.publish_prediction(p);
                        signals.into_iter().for_each(|m| self.publisher.publish(m));
                    } else {
                        Counters::add(&self.counters.dropped_source_lost);
                    }
                }
                Ok(Event::Input(change)) => self.clinic.on_input(change).into_iter().for_each(|m| self.publisher.publish(m)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break, // the inference thread has finished
            }
            published = self.publish_status_if_changed(published);
            if !self.stats_interval.is_zero() && Instant::now() >= next_stats {
                next_stats += self.stats_interval;
                self.publish_stats(&mut reporter);
            }
            if Instant::now() >= next_trim {
                next_trim += TRIM_INTERVAL;
                crate::sysinfo::release_freed_memory();
            }
        }
        self.finish(&mut reporter);
    }

    /// Whether a result of this stream is still published. A freeze's image is inferred once, when
    /// the freeze has lasted `freeze_min_ms`; its finding (and its unfreeze, held until then) goes out
    /// even if the input moved on meanwhile (it names the frozen frame), unless the source is lost.
    fn still_wanted(&self, purpose: Purpose) -> bool {
        match purpose {
            Purpose::Freeze(_) => self.state.source() != SourceState::Waiting,
            Purpose::Live { .. } => self.state.accepts_results(),
        }
    }

    /// The raw prediction, unless the config turned the per-frame stream off.
    fn publish_prediction(&mut self, p: Prediction) {
        if self.publish_predictions {
            self.publisher.publish(Outgoing::Prediction(p));
        }
    }

    fn publish_stats(&mut self, reporter: &mut StatsReporter) {
        let stats = reporter.report(&self.counters, &self.publisher.counters(), &self.identity.device_id, (self.system_facts)());
        self.publisher.publish(Outgoing::Stats(stats));
    }

    /// The final stats, then `stopped` (kept retained: the publisher disconnects cleanly).
    fn finish(mut self, reporter: &mut StatsReporter) {
        self.publish_stats(reporter);
        let mut last = self.status(DaemonState::Stopped);
        (last.source_state, last.gate) = (self.state.source(), Gate::Stopped);
        self.publisher.shutdown(last, Duration::from_secs(3));
    }

    fn status(&self, state: DaemonState) -> Status {
        Status::new(&self.identity, state, &self.describe)
    }

    /// Publishes the facts if they differ from the last published ones: a gate that went there
    /// and back between two looks (several versions) is not published again unchanged.
    fn publish_status_if_changed(&mut self, published: Option<Facts>) -> Option<Facts> {
        let (_, facts) = self.state.snapshot();
        if published.as_ref() == Some(&facts) {
            return published;
        }
        let mut s = self.status(DaemonState::Online);
        (s.source_state, s.gate, s.detail) = (facts.source, facts.gate, facts.detail.clone());
        self.publisher.publish(Outgoing::Status(s));
        Some(facts)
    }
}
