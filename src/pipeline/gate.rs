//! The per-frame judgement of the input: three cheap features of a sparse luma sample of the ROI
//! (64 x 36 points, the same sample for every feature) and which input state this one frame shows.
//! It stands apart from the dwell ([`crate::clinical::input`]), which decides when a judgement becomes the
//! published state, so each can be tested alone. Nothing here allocates after [`Gate::new`].
//!
//! - `mean_luma` below `no_signal_luma`: a black screen, `no_signal`.
//! - `texture` (the fraction of horizontally neighbouring sample points whose luma differs by
//!   [`TEXTURE_STEP`] levels or more) below `no_contact_texture`: the ROI holds no tissue,
//!   `no_contact`. Speckle and tissue make large steps between points a few pixels apart almost
//!   everywhere; a noise floor, a uniform grey and reverberation arcs (which run along the rows)
//!   make them only at the sector's edges. A fraction, not a mean step, so a large dark cyst
//!   beside tissue still counts as tissue.
//! - `change` (mean absolute difference to the previous frame's sample) below `frozen_mad`: the
//!   image is unchanged, `frozen`.
//!
//! The first that holds wins, in [`InputState`]'s precedence; otherwise the frame is `live`.

use crate::state::InputState;

/// Samples per axis: 64 x 36 points are enough to see a screen change, and cost microseconds.
pub const GRID_W: usize = 64;
pub const GRID_H: usize = 36;
/// A step between neighbouring sample points that counts as texture: above what a noise floor of
/// a few levels makes, below the steps of speckle (tens of levels).
pub const TEXTURE_STEP: u8 = 12;

/// What one frame's sample measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    /// Mean luma, 0-255.
    pub mean_luma: f64,
    /// Fraction (0-1) of horizontally adjacent sample points that differ by [`TEXTURE_STEP`] or more.
    pub texture: f64,
    /// Mean absolute luma difference to the previous frame's sample (`None`: no previous frame).
    pub change: Option<f64>,
}

/// The thresholds of the judgement (`[pipeline]` in the config); 0 turns a check off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub no_signal_luma: f64,
    pub no_contact_texture: f64,
    pub frozen_mad: f64,
}

impl Thresholds {
    /// The input state these features show, the highest in precedence first.
    pub fn judge(&self, f: &Features) -> InputState {
        if f.mean_luma < self.no_signal_luma {
            InputState::NoSignal
        } else if f.texture < self.no_contact_texture {
            InputState::NoContact
        } else if f.change.is_some_and(|c| c < self.frozen_mad) {
            InputState::Frozen
        } else {
            InputState::Live
        }
    }
}

/// The sample buffers and the thresholds: one per capture thread.
pub struct Gate {
    thresholds: Thresholds,
    current: Vec<u8>,
    previous: Vec<u8>,
    has_previous: bool,
}

impl Gate {
    pub fn new(thresholds: Thresholds) -> Gate {
        Gate { thresholds, current: vec![0; GRID_W * GRID_H], previous: vec![0; GRID_W * GRID_H], has_previous: false }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Judges a packed RGB image of `width` x `height`; it becomes the previous frame.
    pub fn judge(&mut self, rgb: &[u8], width: u32, height: u32) -> (InputState, Features) {
        let features = self.measure(rgb, width, height);
        (self.thresholds.judge(&features), features)
    }

    /// The features of a packed RGB image; it becomes the previous frame.
    pub fn measure(&mut self, rgb: &[u8], width: u32, height: u32) -> Features {
        std::mem::swap(&mut self.current, &mut self.previous);
        sample_luma(rgb, width as usize, height as usize, &mut self.current);
        let change = self.has_previous.then(|| mad(&self.current, &self.previous));
        self.has_previous = true;
        Features { mean_luma: mean(&self.current), texture: texture(&self.current), change }
    }

    /// The next frame is not compared with the last one (the stream broke or changed size).
    pub fn forget(&mut self) {
        self.has_previous = false;
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

fn mean(s: &[u8]) -> f64 {
    s.iter().map(|&v| v as u32).sum::<u32>() as f64 / s.len() as f64
}

fn texture(s: &[u8]) -> f64 {
    let textured = |row: &[u8]| row.windows(2).filter(|p| p[0].abs_diff(p[1]) >= TEXTURE_STEP).count();
    s.chunks_exact(GRID_W).map(textured).sum::<usize>() as f64 / (GRID_H * (GRID_W - 1)) as f64
}

fn mad(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u32).sum::<u32>() as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { no_signal_luma: 8.0, no_contact_texture: 0.06, frozen_mad: 0.5 };

    /// Grey noise of `spread` levels from `level` up, as packed RGB of `n` bytes.
    fn noise(seed: u32, n: usize, level: u8, spread: u8) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            level.saturating_add((x >> 24) as u8 % spread.max(1))
        };
        (0..n / 3).flat_map(|_| [next(); 3]).collect()
    }

    #[test]
    fn a_black_frame_is_no_signal() {
        let mut g = Gate::new(T);
        assert_eq!(g.judge(&vec![2; 320 * 180 * 3], 320, 180).0, InputState::NoSignal);
    }

    #[test]
    fn the_same_textured_image_twice_is_frozen_and_a_changed_one_is_live() {
        let mut g = Gate::new(T);
        let (a, b) = (noise(1, 320 * 180 * 3, 40, 120), noise(2, 320 * 180 * 3, 40, 120));
        assert_eq!(g.judge(&a, 320, 180).0, InputState::Live);
        assert_eq!(g.judge(&a, 320, 180).0, InputState::Frozen);
        assert_eq!(g.judge(&b, 320, 180).0, InputState::Live);
    }

    #[test]
    fn a_uniform_or_faintly_noisy_sector_is_no_contact_even_when_unchanged() {
        let mut g = Gate::new(T);
        let faint = noise(3, 320 * 180 * 3, 20, 5);
        assert_eq!(g.judge(&faint, 320, 180).0, InputState::NoContact);
        assert_eq!(g.judge(&faint, 320, 180).0, InputState::NoContact, "a frozen image of a lifted probe is no_contact");
        assert_eq!(g.judge(&vec![70; 320 * 180 * 3], 320, 180).0, InputState::NoContact);
    }

    #[test]
    fn horizontal_bands_have_no_texture_and_vertical_ones_do() {
        let (w, h) = (128usize, 72usize);
        let band = |horizontal: bool| -> Vec<u8> {
            (0..w * h).flat_map(|i| if (if horizontal { i / w } else { i % w }) % 4 < 2 { [200; 3] } else { [30; 3] }).collect()
        };
        let mut g = Gate::new(T);
        assert_eq!(g.measure(&band(true), w as u32, h as u32).texture, 0.0);
        assert_eq!(g.measure(&band(false), w as u32, h as u32).texture, 1.0);
    }

    #[test]
    fn after_forget_an_unchanged_image_is_not_frozen() {
        let mut g = Gate::new(T);
        let a = noise(3, 64 * 36 * 3, 40, 120);
        assert_eq!(g.judge(&a, 64, 36).0, InputState::Live);
        g.forget();
        let (state, features) = g.judge(&a, 64, 36);
        assert_eq!((state, features.change), (InputState::Live, None));
    }

    #[test]
    fn a_zero_threshold_turns_its_check_off() {
        let off = Thresholds { no_signal_luma: 0.0, no_contact_texture: 0.0, frozen_mad: 0.0 };
        let black = Features { mean_luma: 0.0, texture: 0.0, change: Some(0.0) };
        assert_eq!(off.judge(&black), InputState::Live);
    }
}
