//! The input-state machine: the per-frame judgements of [`crate::pipeline::gate`] (and the
//! source's errors) in, the published input state out. A new state takes effect only once every frame for at least
//! `dwell_frames` frames and `dwell` of capture time has shown it, so one odd frame does not flap
//! the state; it then takes effect retroactively, at the first of those frames. A grabber that
//! repeats frames (60 Hz capture of a 15 Hz image) therefore never looks frozen: its repeats last
//! less than the dwell. `source_waiting` takes effect at once: no frames come to dwell on.
//!
//! Pure and allocation-free: time is passed in, and nothing grows per frame.

use std::time::{Duration, Instant, SystemTime};

use crate::state::InputState;

/// How long a new state must hold before it takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dwell {
    /// At least this many consecutive frames (1 = the frame itself).
    pub frames: u32,
    /// And at least this much capture time from the first of them to the current one.
    pub min: Duration,
}

/// One judged frame (or source error), with when it was captured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub state: InputState,
    /// The daemon's frame number.
    pub frame: u64,
    pub at: Instant,
    pub wall: SystemTime,
}

/// A stretch of one input state: where it took effect, and its number (it counts up at every change).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub state: InputState,
    pub frame: u64,
    pub at: Instant,
    pub wall: SystemTime,
    pub number: u64,
}

/// A state that took effect, and the stretch it ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub now: Stretch,
    pub ended: Option<Stretch>,
}

/// Why an inferred frame is inferred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Purpose {
    /// A live frame of live stretch `stretch`: raw prediction and stable finding.
    Live { stretch: u64 },
    /// The frozen image, once per freeze: the `freeze` finding.
    Freeze(FrozenImage),
}

/// The image a freeze is about: where the frozen state took effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrozenImage {
    pub stretch: u64,
    pub frame: u64,
    pub wall: SystemTime,
}

/// A state change as the publish thread gets it: did the stretch it ended hold a freeze event?
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputChange {
    pub change: Change,
    pub ended_freeze: bool,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    first: Observation,
    frames: u32,
}

/// The committed state and the candidate that may replace it.
#[derive(Debug)]
pub struct InputMachine {
    dwell: Dwell,
    current: Option<Stretch>,
    candidate: Option<Candidate>,
}

impl InputMachine {
    pub fn new(dwell: Dwell) -> InputMachine {
        InputMachine { dwell, current: None, candidate: None }
    }

    /// The state in effect (`None` until the first one has dwelt long enough).
    pub fn current(&self) -> Option<Stretch> {
        self.current
    }

    /// Feeds one observation; `Some` when a new state takes effect with it.
    pub fn observe(&mut self, o: Observation) -> Option<Change> {
        if self.current.is_some_and(|c| c.state == o.state) {
            self.candidate = None;
            return None;
        }
        let candidate = match self.candidate {
            Some(c) if c.first.state == o.state => Candidate { frames: c.frames + 1, ..c },
            _ => Candidate { first: o, frames: 1 },
        };
        if o.state == InputState::SourceWaiting || self.has_dwelt(&candidate, o.at) {
            return Some(self.commit(candidate.first));
        }
        self.candidate = Some(candidate);
        None
    }

    fn has_dwelt(&self, c: &Candidate, now: Instant) -> bool {
        c.frames >= self.dwell.frames && now.saturating_duration_since(c.first.at) >= self.dwell.min
    }

    fn commit(&mut self, first: Observation) -> Change {
        let number = self.current.map_or(1, |c| c.number + 1);
        let now = Stretch { state: first.state, frame: first.frame, at: first.at, wall: first.wall, number };
        self.candidate = None;
        Change { now, ended: self.current.replace(now) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InputState::*;

    /// Feeds `states` as frames 1, 2, ... `ms_apart` apart; returns (frame, state) of each change.
    fn run(dwell: Dwell, ms_apart: u64, states: &[InputState]) -> Vec<(u64, InputState)> {
        let (mut m, t0) = (InputMachine::new(dwell), Instant::now());
        let obs = |i: usize, state| Observation {
            state,
            frame: i as u64 + 1,
            at: t0 + Duration::from_millis(i as u64 * ms_apart),
            wall: SystemTime::UNIX_EPOCH,
        };
        states.iter().enumerate().filter_map(|(i, s)| m.observe(obs(i, *s))).map(|c| (c.now.frame, c.now.state)).collect()
    }

    const THREE: Dwell = Dwell { frames: 3, min: Duration::ZERO };

    #[test]
    fn a_state_takes_effect_after_the_dwell_at_its_first_frame() {
        assert_eq!(run(THREE, 10, &[Live, Live, Live, Frozen, Frozen, Frozen, Frozen]), [(1, Live), (4, Frozen)]);
    }

    #[test]
    fn a_state_shorter_than_the_dwell_never_takes_effect() {
        assert_eq!(run(THREE, 10, &[Live, Live, Live, NoContact, NoContact, Live, Frozen, Live, Live]), [(1, Live)]);
    }

    #[test]
    fn the_dwell_in_time_outlasts_a_grabbers_repeated_frames() {
        let dwell = Dwell { frames: 2, min: Duration::from_millis(250) };
        // A 60 Hz grabber of a 15 Hz image: each image repeated 3 times after it appears.
        let repeats: Vec<InputState> = (0..40).map(|i| if i < 20 || i % 4 == 0 { Live } else { Frozen }).collect();
        assert_eq!(run(dwell, 17, &repeats), [(1, Live)]);
        let frozen_after: Vec<InputState> = (0..40).map(|i| if i < 20 { Live } else { Frozen }).collect();
        assert_eq!(run(dwell, 17, &frozen_after), [(1, Live), (21, Frozen)]);
    }

    #[test]
    fn source_waiting_takes_effect_at_once_and_stretches_are_numbered() {
        let (mut m, t0) = (InputMachine::new(THREE), Instant::now());
        let obs = |frame, state| Observation { state, frame, at: t0, wall: SystemTime::UNIX_EPOCH };
        assert!(m.observe(obs(1, Live)).is_none());
        let c = m.observe(obs(2, SourceWaiting)).expect("no dwell for a lost source");
        assert_eq!((c.now.state, c.now.number, c.ended), (SourceWaiting, 1, None));
        for f in 3..5 {
            assert!(m.observe(obs(f, Live)).is_none());
        }
        let c = m.observe(obs(5, Live)).unwrap();
        assert_eq!((c.now.frame, c.now.number, c.ended.map(|e| e.state)), (3, 2, Some(SourceWaiting)));
    }

    #[test]
    fn a_dwell_of_one_frame_follows_every_judgement() {
        let one = Dwell { frames: 1, min: Duration::ZERO };
        assert_eq!(run(one, 10, &[Live, Frozen, Live]), [(1, Live), (2, Frozen), (3, Live)]);
    }
}
