//! The clinical-signal payloads: the input state (retained on `state`, `sonoedge.state.v1`) and
//! the findings (`finding`, `sonoedge.finding.v1`), built by [`crate::clinical`] in the publish
//! thread and serialized here, the one place their JSON shape is written.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

use super::messages::rfc3339_ms;
use super::Identity;
use crate::state::InputState;

pub const STATE_SCHEMA: &str = "sonoedge.state.v1";
pub const FINDING_SCHEMA: &str = "sonoedge.finding.v1";

/// The stable live finding, as the state message carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentFinding {
    /// A model label or `uncertain`.
    pub label: String,
    pub probs: Vec<(String, f64)>,
    pub since_frame: u64,
}

/// What the input shows since `frame`, and the stable finding if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct StateMessage {
    pub input: InputState,
    pub frame: u64,
    pub since: SystemTime,
    pub finding: Option<CurrentFinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingEvent {
    /// The image froze: the frozen image's probabilities, inferred once.
    Freeze,
    /// The frozen image is gone.
    Unfreeze,
    /// The stable live finding changed.
    Change,
}

/// One clinical event.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub event: FindingEvent,
    /// A model label or `uncertain`; `None` for unfreeze.
    pub label: Option<String>,
    pub probs: Option<Vec<(String, f64)>>,
    /// The frame the event is about (the frozen image for freeze).
    pub frame: u64,
    pub captured_wall: SystemTime,
    /// How many inferred frames the probabilities summarise.
    pub frames_used: usize,
}

fn probs_json(probs: &[(String, f64)]) -> Value {
    Value::Object(probs.iter().map(|(l, p)| (l.clone(), Value::from(*p))).collect::<Map<String, Value>>())
}

impl StateMessage {
    pub fn to_json(&self, id: &Identity) -> Value {
        let finding = self
            .finding
            .as_ref()
            .map(|f| serde_json::json!({"label": f.label, "probs": probs_json(&f.probs), "since_frame": f.since_frame}));
        serde_json::json!({
            "schema": STATE_SCHEMA,
            "device_id": id.device_id,
            "input": self.input,
            "frame": self.frame,
            "since": rfc3339_ms(self.since),
            "finding": finding,
            "model_sha256": id.model_sha256,
            "preprocess_digest": id.preprocess_digest,
            "assistive_only": true,
        })
    }
}

impl Finding {
    pub fn to_json(&self, id: &Identity) -> Value {
        serde_json::json!({
            "schema": FINDING_SCHEMA,
            "device_id": id.device_id,
            "event": self.event,
            "label": self.label,
            "probs": self.probs.as_deref().map(probs_json),
            "frame": self.frame,
            "captured_at": rfc3339_ms(self.captured_wall),
            "frames_used": self.frames_used,
            "model_sha256": id.model_sha256,
            "preprocess_digest": id.preprocess_digest,
            "assistive_only": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id() -> Identity {
        Identity { device_id: "d".into(), model_sha256: "s".into(), preprocess_digest: "p".into() }
    }

    #[test]
    fn an_unfreeze_has_null_label_and_probs_and_the_state_names_its_input() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let f = Finding { event: FindingEvent::Unfreeze, label: None, probs: None, frame: 9, captured_wall: t, frames_used: 0 };
        let v = f.to_json(&id());
        assert_eq!(
            (&v["event"], &v["label"], &v["probs"], &v["captured_at"]),
            (&"unfreeze".into(), &Value::Null, &Value::Null, &"2023-11-14T22:13:20.123Z".into())
        );
        let s = StateMessage { input: InputState::NoContact, frame: 3, since: t, finding: None };
        assert_eq!((s.to_json(&id())["input"].as_str(), s.to_json(&id())["finding"].is_null()), (Some("no_contact"), true));
    }
}
