//! The stable live finding: per-frame calls (a label, or `uncertain`) with hysteresis, and their
//! probabilities smoothed. The finding changes only to a call that the last `hold` inferred live
//! frames all made, so a label that alternates from frame to frame never changes it. Its
//! probabilities are the mean over the last `window` (at most) of those frames; when they all made
//! the same model label, the mean makes it too, with a top and a margin at least as large as the
//! thresholds (each is a mean of values above them), so label and probabilities never disagree.

use std::collections::VecDeque;

use super::abstain::{Abstention, Call};

/// `pipeline.finding_window_frames` and `pipeline.finding_hold_frames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Smoothing {
    /// Frames averaged into the finding's probabilities (1 = the last frame alone).
    pub window: usize,
    /// Consecutive frames a new call must hold before the finding changes to it.
    pub hold: u32,
}

/// The finding in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Stable {
    pub call: Call,
    /// Mean probabilities, in label order.
    pub probs: Vec<f64>,
    /// The frame whose prediction completed the hold.
    pub since_frame: u64,
    /// How many frames' probabilities the mean is over.
    pub frames_used: usize,
}

/// Calls of the current run of equal calls, and the finding.
#[derive(Debug)]
pub struct StableFinding {
    smoothing: Smoothing,
    abstention: Abstention,
    run_call: Option<Call>,
    run_len: u32,
    /// The run's last `window` probability vectors.
    run: VecDeque<Vec<f64>>,
    stable: Option<Stable>,
}

impl StableFinding {
    pub fn new(smoothing: Smoothing, abstention: Abstention) -> StableFinding {
        StableFinding { smoothing, abstention, run_call: None, run_len: 0, run: VecDeque::new(), stable: None }
    }

    pub fn current(&self) -> Option<&Stable> {
        self.stable.as_ref()
    }

    /// Live imaging stopped: no finding until a new one has held.
    pub fn reset(&mut self) {
        (self.run_call, self.run_len, self.stable) = (None, 0, None);
        self.run.clear();
    }

    /// One inferred live frame; `Some` (the new finding) when the finding changes with it.
    pub fn push(&mut self, frame: u64, probs: &[f64]) -> Option<&Stable> {
        let call = self.abstention.call(probs);
        if self.run_call != Some(call) {
            (self.run_call, self.run_len) = (Some(call), 0);
            self.run.clear();
        }
        self.run_len += 1;
        self.run.push_back(probs.to_vec());
        while self.run.len() > self.smoothing.window.max(1) {
            self.run.pop_front();
        }
        if self.run_len < self.smoothing.hold || self.stable.as_ref().is_some_and(|s| s.call == call) {
            return None;
        }
        self.stable = Some(Stable { call, probs: self.mean(), since_frame: frame, frames_used: self.run.len() });
        self.stable.as_ref()
    }

    fn mean(&self) -> Vec<f64> {
        let n = self.run.len() as f64;
        let width = self.run.front().map_or(0, Vec::len);
        (0..width).map(|i| self.run.iter().map(|p| p[i]).sum::<f64>() / n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABSTAIN: Abstention = Abstention { min_top: 0.6, min_margin: 0.2 };
    const A: [f64; 3] = [0.9, 0.05, 0.05];
    const B: [f64; 3] = [0.05, 0.9, 0.05];
    const UNSURE: [f64; 3] = [0.4, 0.35, 0.25];

    fn changes(smoothing: Smoothing, frames: &[[f64; 3]]) -> Vec<(u64, Call)> {
        let mut s = StableFinding::new(smoothing, ABSTAIN);
        frames.iter().enumerate().filter_map(|(i, p)| s.push(i as u64 + 1, p).map(|st| (st.since_frame, st.call))).collect()
    }

    const HOLD3: Smoothing = Smoothing { window: 5, hold: 3 };

    #[test]
    fn a_label_that_alternates_every_frame_never_changes_the_finding() {
        let mut frames = vec![A; 3];
        frames.extend((0..200).map(|i| if i % 2 == 0 { B } else { A }));
        assert_eq!(changes(HOLD3, &frames), [(3, Call::Label(0))]);
        let alternating: Vec<[f64; 3]> = (0..200).map(|i| if i % 2 == 0 { B } else { A }).collect();
        assert_eq!(changes(Smoothing { window: 5, hold: 2 }, &alternating), [], "nor establishes one");
    }

    #[test]
    fn a_new_label_takes_over_after_holding_for_the_hold_frames() {
        let frames = [[A; 4].as_slice(), &[B; 2], &[A; 1], &[B; 3]].concat();
        assert_eq!(changes(HOLD3, &frames), [(3, Call::Label(0)), (10, Call::Label(1))]);
    }

    #[test]
    fn uncertain_frames_that_hold_make_the_finding_uncertain() {
        let frames = [[A; 3].as_slice(), &[UNSURE; 3]].concat();
        assert_eq!(changes(HOLD3, &frames), [(3, Call::Label(0)), (6, Call::Uncertain)]);
    }

    #[test]
    fn the_probabilities_are_the_mean_of_the_runs_last_window_and_agree_with_the_label() {
        let mut s = StableFinding::new(Smoothing { window: 2, hold: 3 }, ABSTAIN);
        let frames = [[0.7, 0.1, 0.2], [0.8, 0.1, 0.1], [0.9, 0.0, 0.1]];
        let last = frames.iter().enumerate().filter_map(|(i, p)| s.push(i as u64 + 1, p).cloned()).last().unwrap();
        assert_eq!(last.frames_used, 2);
        for (got, want) in last.probs.iter().zip([0.85, 0.05, 0.1]) {
            assert!((got - want).abs() < 1e-12, "{:?}", last.probs);
        }
        assert_eq!(ABSTAIN.call(&last.probs), last.call);
    }

    #[test]
    fn after_a_reset_a_finding_must_hold_again() {
        let mut s = StableFinding::new(HOLD3, ABSTAIN);
        for f in 1..=3 {
            let _ = s.push(f, &A);
        }
        s.reset();
        assert!(s.current().is_none());
        assert!(s.push(4, &A).is_none() && s.push(5, &A).is_none());
        assert_eq!(s.push(6, &A).map(|st| st.since_frame), Some(6));
    }
}
