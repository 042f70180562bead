//! Gating: decides, from a sparse sample of the ROI, whether a frame is worth inferring.
//! A black screen ("no signal") gets no prediction; an image unchanged since the last inferred
//! frame (frozen) is not inferred and published again.

use serde::Serialize;

/// Why a frame was (not) inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Infer,
    NoSignal,
    Frozen,
}

impl Verdict {
    /// What the status topic says for a frame judged so.
    pub fn gate(self) -> crate::state::Gate {
        match self {
            Verdict::Infer => crate::state::Gate::Inferring,
            Verdict::NoSignal => crate::state::Gate::NoSignal,
            Verdict::Frozen => crate::state::Gate::Frozen,
        }
    }
}

/// Samples per axis: 64 x 36 points are enough to see a screen change, and cost microseconds.
const GRID_W: usize = 64;
const GRID_H: usize = 36;

pub struct Gate {
    no_signal_luma: f64,
    frozen_mad: f64,
    current: Vec<u8>,
    last_inferred: Vec<u8>,
    has_last: bool,
}

impl Gate {
    pub fn new(no_signal_luma: f64, frozen_mad: f64) -> Gate {
        Gate { no_signal_luma, frozen_mad, current: vec![0; GRID_W * GRID_H], last_inferred: vec![0; GRID_W * GRID_H], has_last: false }
    }

    /// Judges a packed RGB image; `Infer` also remembers it as the last inferred frame.
    pub fn judge(&mut self, rgb: &[u8], width: u32, height: u32) -> Verdict {
        sample_luma(rgb, width as usize, height as usize, &mut self.current);
        let mean = self.current.iter().map(|&v| v as f64).sum::<f64>() / self.current.len() as f64;
        if mean < self.no_signal_luma {
            self.has_last = false;
            return Verdict::NoSignal;
        }
        if self.has_last && mad(&self.current, &self.last_inferred) < self.frozen_mad {
            return Verdict::Frozen;
        }
        self.last_inferred.copy_from_slice(&self.current);
        self.has_last = true;
        Verdict::Infer
    }
}

fn sample_luma(rgb: &[u8], w: usize, h: usize, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        let (gx, gy) = (i % GRID_W, i / GRID_W);
        let (x, y) = ((2 * gx + 1) * w / (2 * GRID_W), (2 * gy + 1) * h / (2 * GRID_H));
        let p = &rgb[(y * w + x) * 3..][..3];
        *o = ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8) as u8;
    }
}

fn mad(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as f64).sum::<f64>() / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                40 + (x >> 26) as u8
            })
            .collect()
    }

    #[test]
    fn a_black_frame_is_no_signal() {
        let mut g = Gate::new(8.0, 0.5);
        assert_eq!(g.judge(&vec![2; 320 * 180 * 3], 320, 180), Verdict::NoSignal);
    }

    #[test]
    fn the_same_image_twice_is_frozen_and_a_changed_one_is_inferred() {
        let mut g = Gate::new(8.0, 0.5);
        let (a, b) = (noise(1, 320 * 180 * 3), noise(2, 320 * 180 * 3));
        assert_eq!(g.judge(&a, 320, 180), Verdict::Infer);
        assert_eq!(g.judge(&a, 320, 180), Verdict::Frozen);
        assert_eq!(g.judge(&b, 320, 180), Verdict::Infer);
    }

    #[test]
    fn after_no_signal_the_first_image_is_inferred_even_if_unchanged() {
        let mut g = Gate::new(8.0, 0.5);
        let a = noise(3, 64 * 36 * 3);
        assert_eq!(g.judge(&a, 64, 36), Verdict::Infer);
        assert_eq!(g.judge(&vec![0; 64 * 36 * 3], 64, 36), Verdict::NoSignal);
        assert_eq!(g.judge(&a, 64, 36), Verdict::Infer);
    }
}
