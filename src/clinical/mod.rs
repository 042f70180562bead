//! From inferred frames and input-state changes to clinical signals, in the publish thread: the
//! retained `state` message at every change of input state or of the stable finding, and the
//! `freeze`, `unfreeze` and `change` findings. Pure: it takes what the capture and inference
//! threads send and returns the messages to publish, so it is tested without threads or a broker.
//!
//! - [`input`]: the input-state machine (the dwell) and what the capture thread tells this one.
//! - [`abstain`]: a label, or `uncertain` when the model is not clear enough.
//! - [`stable`]: the stable live finding (smoothing and hysteresis).
//!
//! A finding is assistive output of a model, never a diagnosis.

pub mod abstain;
pub mod input;
pub mod stable;

use abstain::{Abstention, Call};
use stable::{Smoothing, StableFinding};

use crate::publish::signals::{CurrentFinding, Finding, FindingEvent, StateMessage};
use crate::publish::{Outgoing, Prediction};
use crate::state::InputState;
use input::{InputChange, Purpose, Stretch};

/// The signals' state between messages.
pub struct Clinic {
    labels: Vec<String>,
    abstention: Abstention,
    stable: StableFinding,
    input: Option<Stretch>,
    /// The frozen stretch whose `freeze` finding went out.
    announced: Option<u64>,
    /// A frozen stretch that ended before its image was inferred: its unfreeze waits for its freeze.
    pending_unfreeze: Option<(u64, Stretch)>,
}

impl Clinic {
    pub fn new(labels: Vec<String>, abstention: Abstention, smoothing: Smoothing) -> Clinic {
        Clinic {
            labels,
            abstention,
            stable: StableFinding::new(smoothing, abstention),
            input: None,
            announced: None,
            pending_unfreeze: None,
        }
    }

    /// A new input state: `unfreeze` if it ended a freeze, then the new state (no finding yet).
    pub fn on_input(&mut self, c: InputChange) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if let (true, Some(ended)) = (c.ended_freeze, c.change.ended) {
            if self.announced == Some(ended.number) {
                out.push(unfreeze(&c.change.now));
            } else {
                self.pending_unfreeze = Some((ended.number, c.change.now));
            }
        }
        self.stable.reset();
        self.input = Some(c.change.now);
        out.push(self.state_message());
        out
    }

    /// An inferred frame: the freeze finding, or a step of the stable live finding.
    pub fn on_prediction(&mut self, p: &Prediction, purpose: Purpose) -> Vec<Outgoing> {
        let probs: Vec<f64> = p.probs.iter().map(|(_, v)| *v).collect();
        match purpose {
            Purpose::Freeze(image) => {
                let call = self.abstention.call(&probs);
                let finding = self.finding(FindingEvent::Freeze, call, probs, image.frame, image.wall, 1);
                self.announced = Some(image.stretch);
                let mut out = vec![Outgoing::Finding(finding)];
                if let Some((_, now)) = self.pending_unfreeze.take_if(|(s, _)| *s == image.stretch) {
                    out.push(unfreeze(&now));
                }
                out
            }
            Purpose::Live { stretch } => self.live_step(p, stretch, &probs),
        }
    }

    /// A live frame of the current live stretch moves the stable finding; an older one does not.
    fn live_step(&mut self, p: &Prediction, stretch: u64, probs: &[f64]) -> Vec<Outgoing> {
        if !self.input.is_some_and(|i| i.state == InputState::Live && i.number == stretch) {
            return Vec::new();
        }
        let Some(st) = self.stable.push(p.frame, probs).cloned() else { return Vec::new() };
        let change = self.finding(FindingEvent::Change, st.call, st.probs, p.frame, p.captured_wall, st.frames_used);
        vec![Outgoing::Finding(change), self.state_message()]
    }

    fn finding(&self, event: FindingEvent, call: Call, probs: Vec<f64>, frame: u64, wall: std::time::SystemTime, used: usize) -> Finding {
        let label = Some(self.abstention.word(call, &self.labels).to_string());
        Finding { event, label, probs: Some(self.labelled(&probs)), frame, captured_wall: wall, frames_used: used }
    }

    fn labelled(&self, probs: &[f64]) -> Vec<(String, f64)> {
        self.labels.iter().cloned().zip(probs.iter().copied()).collect()
    }

    fn state_message(&self) -> Outgoing {
        let input = self.input.expect("a state message follows an input change");
        let finding = self.stable.current().map(|s| CurrentFinding {
            label: self.abstention.word(s.call, &self.labels).to_string(),
            probs: self.labelled(&s.probs),
            since_frame: s.since_frame,
        });
        Outgoing::State(StateMessage { input: input.state, frame: input.frame, since: input.wall, finding })
    }
}

fn unfreeze(now: &Stretch) -> Outgoing {
    Outgoing::Finding(Finding {
        event: FindingEvent::Unfreeze,
        label: None,
        probs: None,
        frame: now.frame,
        captured_wall: now.wall,
        frames_used: 0,
    })
}

#[cfg(test)]
mod tests;
