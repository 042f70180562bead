//! Publishing: the [`Publisher`] seam the pipeline hands results to, its counters, and a recording
//! implementation for tests. The payloads live in [`messages`] and [`signals`] (state and findings);
//! the MQTT implementation in [`mqtt`], its connection policy (queue, backoff, in-flight
//! accounting, counters; no I/O) in [`policy`].

pub mod messages;
pub mod mqtt;
pub mod policy;
pub mod probe;
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

/// Counters a publisher keeps; every prediction is counted once, as sent, dropped, refused, queued
/// or in flight: made = `predictions_sent` + `dropped_offline_queue_full` + `refused.total()` +
/// `queue_depth` + `in_flight`.
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
    /// Predictions an MQTT 5 broker refused (PUBACK/PUBREC reason code), or not sent because they
    /// exceed its Maximum Packet Size; per kind. Always zero on MQTT 3.1.1, which cannot say.
    pub refused: RefusedCounts,
}

/// Why a prediction was not delivered although the link was up: the broker's reason code (MQTT 5)
/// or its Maximum Packet Size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAuthorized,
    TopicNameInvalid,
    QuotaExceeded,
    PayloadFormatInvalid,
    PacketIdInUse,
    ImplementationSpecific,
    Unspecified,
    /// Larger than the broker's Maximum Packet Size: not sent at all (sending it would end the session).
    PacketTooLarge,
}

impl Refusal {
    /// The key in `stats.refused` and the name in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotAuthorized => "not_authorized",
            Refusal::TopicNameInvalid => "topic_name_invalid",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::PayloadFormatInvalid => "payload_format_invalid",
            Refusal::PacketIdInUse => "packet_id_in_use",
            Refusal::ImplementationSpecific => "implementation_specific",
            Refusal::Unspecified => "unspecified",
            Refusal::PacketTooLarge => "packet_too_large",
        }
    }
}

/// Refused predictions per [`Refusal`] kind (published as `stats.refused`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RefusedCounts {
    pub not_authorized: u64,
    pub topic_name_invalid: u64,
    pub quota_exceeded: u64,
    pub payload_format_invalid: u64,
    pub packet_id_in_use: u64,
    pub implementation_specific: u64,
    pub unspecified: u64,
    pub packet_too_large: u64,
}

impl RefusedCounts {
    pub fn add(&mut self, why: Refusal) {
        *match why {
            Refusal::NotAuthorized => &mut self.not_authorized,
            Refusal::TopicNameInvalid => &mut self.topic_name_invalid,
            Refusal::QuotaExceeded => &mut self.quota_exceeded,
            Refusal::PayloadFormatInvalid => &mut self.payload_format_invalid,
            Refusal::PacketIdInUse => &mut self.packet_id_in_use,
            Refusal::ImplementationSpecific => &mut self.implementation_specific,
            Refusal::Unspecified => &mut self.unspecified,
            Refusal::PacketTooLarge => &mut self.packet_too_large,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        let r = self;
        r.not_authorized
            + r.topic_name_invalid
            + r.quota_exceeded
            + r.payload_format_invalid
            + r.packet_id_in_use
            + r.implementation_specific
            + r.unspecified
            + r.packet_too_large
    }
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
