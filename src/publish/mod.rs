//! Publishing: the [`Publisher`] seam the pipeline hands results to, its counters, and a recording
//! implementation for tests. The payloads live in [`messages`] and [`signals`] (state and findings);
//! the MQTT implementation in [`mqtt`], its connection policy (queue, backoff, in-flight
//! accounting, counters; no I/O) in [`policy`].

pub mod messages;
pub mod mqtt;
pub mod policy;
pub mod signals;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use messages::{Identity, LatencyMs, Prediction, Status};
pub use signals::{Finding, StateMessage};

/// What the pipeline hands to a publisher.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Prediction(Prediction),
    /// Retained on `status`.
    Status(Status),
    Stats(serde_json::Value),
    /// Retained on `state`: the input state and the stable finding.
    State(StateMessage),
    /// On `finding`, not retained: freeze, unfreeze, change.
    Finding(Finding),
}

/// Counters a publisher keeps; every prediction is counted once, as sent, dropped, queued or in
/// flight: made = `predictions_sent` + `dropped_offline_queue_full` + `queue_depth` + `in_flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PublishCounters {
    /// Predictions the broker has: acknowledged by it (QoS >= 1) or written to the connection (QoS 0).
    pub predictions_sent: u64,
    /// QoS >= 1 publishes the broker acknowledged (predictions, status and stats).
    pub acked: u64,
    /// Predictions dropped because the offline queue was full (oldest first).
    pub dropped_offline_queue_full: u64,
    /// Predictions waiting in the offline queue now.
    pub queue_depth: u64,
    /// Predictions handed to the MQTT client and not yet acknowledged (QoS 0: not yet written) now.
    pub in_flight: u64,
    /// Predictions put back at the head of the offline queue because the link dropped before the
    /// broker acknowledged them; they are sent again after the reconnect. Not a loss: a requeued
    /// prediction that is later dropped counts in `dropped_offline_queue_full`.
    pub requeued_unacked: u64,
    /// Sessions the broker accepted after an earlier one was lost (failed attempts do not count).
    pub reconnects: u64,
    pub connected: bool,
}

/// Where results go. `publish` never blocks the caller: a message that cannot be sent now is
/// queued (bounded) or dropped and counted.
pub trait Publisher: Send {
    fn publish(&mut self, msg: Outgoing);
    fn counters(&self) -> PublishCounters;
    /// Publishes `last` (the final status), waits up to `timeout` for it to be acknowledged, disconnects.
    fn shutdown(&mut self, last: Status, timeout: Duration);
    /// A liveness check for the watchdog: false if the publisher's own loop is stuck.
    fn alive(&self) -> bool {
        true
    }
}

/// Keeps every message, for pipeline tests without a broker.
#[derive(Debug, Clone, Default)]
pub struct RecordingPublisher {
    pub messages: Arc<Mutex<Vec<Outgoing>>>,
}

impl Publisher for RecordingPublisher {
    fn publish(&mut self, msg: Outgoing) {
        self.messages.lock().unwrap().push(msg);
    }

    fn counters(&self) -> PublishCounters {
        let sent = self.messages.lock().unwrap().iter().filter(|m| matches!(m, Outgoing::Prediction(_))).count();
        PublishCounters { predictions_sent: sent as u64, connected: true, ..Default::default() }
    }

    fn shutdown(&mut self, last: Status, _timeout: Duration) {
        self.publish(Outgoing::Status(last));
    }
}
