//! The payloads sonoedge publishes, one struct per topic, versioned by `schema` (see schemas/).
//!
//! A prediction is built in the inference thread and serialized only when it is handed to the MQTT
//! client, so `age_ms` is true even after it waited in the offline queue.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::state::{DaemonState, Gate, SourceState};

pub const PREDICTION_SCHEMA: &str = "sonoedge.prediction.v1";
pub const STATUS_SCHEMA: &str = "sonoedge.status.v1";
pub const STATS_SCHEMA: &str = "sonoedge.stats.v1";

/// Milliseconds spent in each stage, from the capture timestamp on.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencyMs {
    /// Capture timestamp -> preprocessing starts (ROI conversion + hand-off wait).
    pub capture_to_preprocess: f64,
    pub preprocess: f64,
    pub inference: f64,
    /// Inference done -> handed to the MQTT client.
    pub to_mqtt: f64,
}

/// One inference result.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub frame: u64,
    /// The stream generation of the frame (not published; stale results are withheld by it).
    pub generation: u64,
    pub source_sequence: u64,
    pub captured_wall: SystemTime,
    pub captured_monotonic: Duration,
    /// When the frame was captured, on this process's clock (for ages).
    pub captured_at: Instant,
    pub inferred_at: Instant,
    /// The argmax label (the raw output, even when `uncertain`).
    pub label: String,
    /// The abstention thresholds call these probabilities `uncertain`.
    pub uncertain: bool,
    pub probs: Vec<(String, f64)>,
    pub latency: LatencyMs,
}

/// Identity fields every payload carries.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub device_id: String,
    pub model_sha256: String,
    pub preprocess_digest: String,
}

impl Prediction {
    /// The JSON payload, with `to_mqtt` and `age_ms` taken now.
    pub fn to_json(&self, id: &Identity, now: Instant) -> Value {
        let mut latency = self.latency;
        latency.to_mqtt = ms(now.saturating_duration_since(self.inferred_at));
        let probs: Map<String, Value> = self.probs.iter().map(|(l, p)| (l.clone(), Value::from(*p))).collect();
        serde_json::json!({
            "schema": PREDICTION_SCHEMA,
            "device_id": id.device_id,
            "frame": self.frame,
            "source_sequence": self.source_sequence,
            "captured_at": rfc3339_ms(self.captured_wall),
            "captured_monotonic_ms": self.captured_monotonic.as_millis() as u64,
            "clock_synced": clock_synced(),
            "label": self.label,
            "uncertain": self.uncertain,
            "probs": probs,
            "model_sha256": id.model_sha256,
            "preprocess_digest": id.preprocess_digest,
            "latency_ms": latency,
            "age_ms": ms(now.saturating_duration_since(self.captured_at)),
            "assistive_only": true,
        })
    }
}

/// The daemon's state as published (retained) on `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema: &'static str,
    pub state: DaemonState,
    pub device_id: String,
    pub version: &'static str,
    pub source: String,
    pub source_state: SourceState,
    /// Why predictions are (not) being published.
    pub gate: Gate,
    pub detail: Option<String>,
    /// Why the last broker connection ended, as the log named it (the MQTT 5 DISCONNECT reason
    /// where the broker gave one); set by the MQTT client on the statuses after a loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_disconnect: Option<String>,
    pub model_sha256: String,
    pub preprocess_digest: String,
    /// This daemon process (pid and start time): a subscriber sees a restart as a new value.
    pub instance: &'static str,
    /// When this process started (wall clock, as `time`).
    pub started_at: &'static str,
    pub time: String,
}

/// The process's `(instance, started_at)`, fixed at the first call.
fn process_identity() -> (&'static str, &'static str) {
    static ID: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    let (instance, started) = ID.get_or_init(|| {
        let now = SystemTime::now();
        let ms = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
        (format!("{:x}-{ms:x}", std::process::id()), rfc3339_ms(now))
    });
    (instance, started)
}

impl Status {
    /// A status in `state`, source and gate `starting` until the caller says more.
    pub fn new(id: &Identity, state: DaemonState, source: &str) -> Status {
        Status {
            schema: STATUS_SCHEMA,
            state,
            device_id: id.device_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            source: source.to_string(),
            source_state: SourceState::Starting,
            gate: Gate::Starting,
            detail: None,
            last_disconnect: None,
            model_sha256: id.model_sha256.clone(),
            preprocess_digest: id.preprocess_digest.clone(),
            instance: process_identity().0,
            started_at: process_identity().1,
            time: rfc3339_ms(SystemTime::now()),
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T19:05:01.123Z`.
pub fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// True when the kernel says the clock is synchronised (NTP), as `timedatectl` reports it.
pub fn clock_synced() -> bool {
    // SAFETY: timex is a plain C struct for which all-zero bytes are valid (modes = 0: read only).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into the struct we own.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    if rc < 0 {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            log::warn!(
                "cannot read the clock state (adjtimex: {}); clock_synced stays false. Under systemd, ProtectClock=yes causes this",
                std::io::Error::last_os_error()
            )
        });
    }
    rc != libc::TIME_ERROR && rc >= 0 && tx.status & libc::STA_UNSYNC == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_milliseconds_and_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_ms(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn age_and_hand_off_latency_are_taken_when_serialized() {
        let t0 = Instant::now();
        let p = Prediction {
            frame: 1,
            generation: 0,
            source_sequence: 5,
            captured_wall: SystemTime::now(),
            captured_monotonic: Duration::from_millis(42),
            captured_at: t0,
            inferred_at: t0 + Duration::from_millis(30),
            label: "benign".into(),
            uncertain: false,
            probs: vec![("benign".into(), 0.7), ("malignant".into(), 0.3)],
            latency: LatencyMs::default(),
        };
        let id = Identity { device_id: "d".into(), model_sha256: "s".into(), preprocess_digest: "p".into() };
        let v = p.to_json(&id, t0 + Duration::from_millis(100));
        assert_eq!(v["age_ms"], 100.0);
        assert_eq!(v["latency_ms"]["to_mqtt"], 70.0);
        assert_eq!(v["probs"]["benign"], 0.7);
    }
}
