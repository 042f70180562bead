//! What the capture thread makes of each judged frame: the input state in effect (through the
//! [`InputMachine`]), whether the frame is inferred and why not, and the freeze moment (the frozen
//! image is handed to inference once, when the freeze has lasted `freeze_min`). Each state that
//! takes effect is sent to the publish thread, which turns it into `state` and `finding` messages.
//! No allocation per frame: a change is a `Copy` value sent on a bounded channel.

use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant, SystemTime};

use super::Event;
use crate::clinical::input::{Dwell, FrozenImage, InputChange, InputMachine, Observation, Purpose, Stretch};
use crate::state::InputState;

/// What to do with a converted frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Infer(Purpose),
    /// Not inferred: the frame's own judgement when it is not `live`; `Live` when it is live but the
    /// live state has not taken effect yet (the dwell).
    Skip(InputState),
}

/// The capture thread's input bookkeeping.
pub struct InputTracker {
    machine: InputMachine,
    freeze_min: Duration,
    /// The current stretch is frozen and its image went to inference.
    freeze_sent: bool,
    events: Option<SyncSender<Event>>,
    last_frame: u64,
}

impl InputTracker {
    /// `events`: where changes go (`None`: nowhere, for tests of the frame path alone).
    pub fn new(dwell: Dwell, freeze_min: Duration, events: Option<SyncSender<Event>>) -> InputTracker {
        InputTracker { machine: InputMachine::new(dwell), freeze_min, freeze_sent: false, events, last_frame: 0 }
    }

    /// The state in effect, if any has taken effect yet.
    pub fn current(&self) -> Option<Stretch> {
        self.machine.current()
    }

    /// Takes one judged frame; says whether to infer it.
    pub fn on_frame(&mut self, judged: InputState, frame: u64, at: Instant, wall: SystemTime) -> Decision {
        self.last_frame = frame;
        self.observe(Observation { state: judged, frame, at, wall });
        match self.machine.current() {
            Some(c) if judged == InputState::Live && c.state == InputState::Live => Decision::Infer(Purpose::Live { stretch: c.number }),
            Some(c) if judged == InputState::Frozen && c.state == InputState::Frozen => self.freeze_moment(c, at),
            _ => Decision::Skip(judged),
        }
    }

    /// A state without a frame (a source error): it takes effect at the next frame's number.
    pub fn on_error(&mut self, state: InputState) {
        let now = Instant::now();
        self.observe(Observation { state, frame: self.last_frame + 1, at: now, wall: SystemTime::now() });
    }

    /// The frozen image goes to inference once, when the freeze has lasted `freeze_min`.
    fn freeze_moment(&mut self, c: Stretch, at: Instant) -> Decision {
        if self.freeze_sent || at.saturating_duration_since(c.at) < self.freeze_min {
            return Decision::Skip(InputState::Frozen);
        }
        self.freeze_sent = true;
        Decision::Infer(Purpose::Freeze(FrozenImage { stretch: c.number, frame: c.frame, wall: c.wall }))
    }

    fn observe(&mut self, o: Observation) {
        let Some(change) = self.machine.observe(o) else { return };
        let ended_freeze = std::mem::take(&mut self.freeze_sent);
        let Some(events) = &self.events else { return };
        if events.try_send(Event::Input(InputChange { change, ended_freeze })).is_err() {
            log::warn!("input state {:?} at frame {} not passed on: the publish thread is behind", change.now.state, change.now.frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InputState::*;

    const DWELL: Dwell = Dwell { frames: 2, min: Duration::ZERO };

    /// Feeds frames 1, 2, ... 100 ms apart; returns each decision and the changes sent.
    fn feed(freeze_min_ms: u64, states: &[InputState]) -> (Vec<Decision>, Vec<InputChange>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let mut t = InputTracker::new(DWELL, Duration::from_millis(freeze_min_ms), Some(tx));
        let t0 = Instant::now();
        let at = |i: usize| t0 + Duration::from_millis(100 * i as u64);
        let decisions = states.iter().enumerate().map(|(i, s)| t.on_frame(*s, i as u64 + 1, at(i), SystemTime::UNIX_EPOCH)).collect();
        drop(t);
        let changes = rx.iter().map(|e| if let Event::Input(c) = e { c } else { panic!("only input changes") }).collect();
        (decisions, changes)
    }

    fn freezes(decisions: &[Decision]) -> Vec<u64> {
        decisions.iter().filter_map(|d| if let Decision::Infer(Purpose::Freeze(f)) = d { Some(f.frame) } else { None }).collect()
    }

    #[test]
    fn live_frames_are_inferred_once_live_has_taken_effect() {
        let (d, _) = feed(0, &[Live, Live, Live]);
        assert_eq!(d, [Decision::Skip(Live), Decision::Infer(Purpose::Live { stretch: 1 }), Decision::Infer(Purpose::Live { stretch: 1 })]);
    }

    #[test]
    fn a_long_freeze_sends_its_image_once_naming_the_first_frozen_frame() {
        let states = [[Live; 3].as_slice(), &[Frozen; 8], &[Live; 3]].concat();
        let (d, changes) = feed(300, &states);
        assert_eq!(freezes(&d), [4]);
        let Some(Decision::Infer(Purpose::Freeze(f))) = d.iter().find(|d| matches!(d, Decision::Infer(Purpose::Freeze(_)))) else {
            panic!()
        };
        assert_eq!(d.iter().position(|x| *x == Decision::Infer(Purpose::Freeze(*f))), Some(6), "at 300 ms after frame 4");
        let ends: Vec<(InputState, bool)> = changes.iter().map(|c| (c.change.now.state, c.ended_freeze)).collect();
        assert_eq!(ends, [(Live, false), (Frozen, false), (Live, true)]);
    }

    #[test]
    fn a_freeze_shorter_than_the_minimum_sends_nothing() {
        let states = [[Live; 3].as_slice(), &[Frozen; 3], &[Live; 3]].concat();
        let (d, changes) = feed(500, &states);
        assert!(freezes(&d).is_empty());
        assert_eq!(changes.iter().filter(|c| c.ended_freeze).count(), 0);
        assert_eq!(changes.len(), 3, "the frozen state itself is still published");
    }

    #[test]
    fn a_frozen_image_of_a_lifted_probe_is_never_inferred() {
        let (d, _) = feed(0, &[[Live; 3].as_slice(), &[NoContact; 6]].concat());
        assert!(d[3..].iter().all(|x| *x == Decision::Skip(NoContact)), "{d:?}");
    }
}
