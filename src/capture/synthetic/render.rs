//! The phantom renderer: a frame from its segment's cached layers.

use super::*;

/// Deterministic renderer of phantom frames (packed RGB24).
pub struct Phantom {
    pub(super) seed: u64,
    pub(super) segment_frames: u64,
    pub(super) fan: Fan,
    pub(super) area: Rect,
    /// Background, text and ruler: copied under every frame with a picture.
    pub(super) chrome: Vec<u8>,
    pub(super) rayleigh: Vec<f32>,
    pub(super) segment: Segment,
    pub(super) line: Vec<f32>,
}

impl Phantom {
    pub fn new(cfg: &PhantomConfig) -> Phantom {
        let fan = Fan::new(cfg.width, cfg.height);
        let area = fan.bounds();
        let mut chrome = vec![0; fan.width * fan.height * 3];
        draw_chrome(&fan, cfg.seed, &mut chrome);
        let n = area.w * area.h;
        let segment = Segment {
            number: None,
            plan: None,
            tissue: vec![0.0; n],
            speckle: [vec![0.0; n], vec![0.0; n]],
            lesion: Patch::default(),
            flow: Patch::default(),
        };
        Phantom {
            seed: cfg.seed,
            segment_frames: cfg.segment_frames.max(1) as u64,
            fan,
            area,
            chrome,
            rayleigh: rayleigh_table(),
            segment,
            line: vec![0.0; area.w],
        }
    }

    /// Bytes of one frame (`width * height * 3`).
    pub fn frame_len(&self) -> usize {
        self.chrome.len()
    }

    /// The truth of frame `index`.
    pub fn segment_of(&self, index: u64) -> Truth {
        segment_kind(self.seed, index / self.segment_frames)
    }

    /// The lesion visible in frame `index` as `(cx, cy, r)` in frame pixels (`r` = the core's
    /// larger semi-axis), or `None` when it shows none.
    pub fn lesion_of(&self, index: u64) -> Option<(f32, f32, f32)> {
        let source = self.source_index(index);
        let shape = Plan::draw(self.seed, source / self.segment_frames, &self.fan).lesion?;
        let (ox, oy) = shape.offset(self.progress(source));
        Some((shape.centre.0 + ox as f32, shape.centre.1 + oy as f32, shape.rx.max(shape.ry)))
    }

    /// Writes frame `index` into `out` (`width * height * 3` bytes, else it panics) and returns
    /// its truth.
    pub fn render(&mut self, index: u64, out: &mut [u8]) -> Truth {
        assert_eq!(out.len(), self.frame_len(), "render needs a {}x{} RGB24 buffer", self.fan.width, self.fan.height);
        let truth = self.segment_of(index);
        let source = self.source_index(index);
        match self.segment_of(source) {
            Truth::NoSignal => {
                draw_no_signal(&self.fan, out);
                return truth;
            }
            Truth::NoContact => {
                out.copy_from_slice(&self.chrome);
                let look = Lifted::draw(self.seed, source / self.segment_frames);
                draw_lifted(&self.fan, self.area, &look, source, self.seed, out);
                return truth;
            }
            _ => {}
        }
        self.prepare(source / self.segment_frames);
        out.copy_from_slice(&self.chrome);
        self.draw_fan(source, out);
        self.draw_doppler(source, out);
        truth
    }

    /// The frame a frozen one repeats (itself otherwise): the last frame of the nearest segment
    /// before that is not frozen.
    pub(super) fn source_index(&self, index: u64) -> u64 {
        let (mut segment, mut source) = (index / self.segment_frames, index);
        while segment > 0 && segment_kind(self.seed, segment) == Truth::Frozen {
            source = segment * self.segment_frames - 1;
            segment -= 1;
        }
        source
    }

    pub(super) fn frame_in_segment(&self, index: u64) -> u64 {
        index % self.segment_frames
    }

    /// 0 at a segment's first frame, 1 at its last.
    pub(super) fn progress(&self, index: u64) -> f32 {
        self.frame_in_segment(index) as f32 / (self.segment_frames - 1).max(1) as f32
    }

    /// Builds segment `number`'s textures unless they are cached.
    pub(super) fn prepare(&mut self, number: u64) {
        if self.segment.number == Some(number) {
            return;
        }
        let plan = Plan::draw(self.seed, number, &self.fan);
        let mut rng = SplitMix::stream(self.seed, STREAM_TEXTURE, number);
        let seg = &mut self.segment;
        fill_tissue(&self.fan, self.area, &mut rng, &mut seg.tissue);
        for field in &mut seg.speckle {
            fill_speckle(&mut rng, &self.rayleigh, field, self.area.w);
        }
        if let Some(shape) = &plan.lesion {
            lesion_patch(shape, &self.fan, self.area, &mut seg.lesion);
        }
        if let Some(shape) = &plan.doppler {
            doppler_patch(shape, &mut seg.flow);
        }
        (seg.number, seg.plan) = (Some(number), Some(plan));
    }

    /// Tissue times speckle times lesion gain, written as grey over the fan's pixels.
    pub(super) fn draw_fan(&mut self, index: u64, out: &mut [u8]) {
        // Rotating between two speckle fields keeps the statistics and changes every pixel a
        // little per frame, as real speckle does (and as the frozen-frame detector needs).
        let (sin, cos) = (self.frame_in_segment(index) as f32 * 0.25).sin_cos();
        let plan = self.segment.plan.expect("prepared");
        let offset = plan.lesion.map(|l| l.offset(self.progress(index)));
        let (area, w) = (self.area, self.area.w);
        for row in 0..area.h {
            let tissue = &self.segment.tissue[row * w..][..w];
            let (a, b) = (&self.segment.speckle[0][row * w..][..w], &self.segment.speckle[1][row * w..][..w]);
            for (col, v) in self.line.iter_mut().enumerate() {
                *v = tissue[col] * (1.0 + cos * a[col] + sin * b[col]);
            }
            if let Some((ox, oy)) = offset {
                apply_patch(&self.segment.lesion, (ox, oy), area, row, &mut self.line);
            }
            let start = ((area.y + row) * self.fan.width + area.x) * 3;
            write_grey(tissue, &self.line, &mut out[start..start + w * 3]);
        }
    }

    /// Colour flow inside the Doppler box, pulsing with a heartbeat, and the box's outline.
    pub(super) fn draw_doppler(&self, index: u64, out: &mut [u8]) {
        let Some(shape) = self.segment.plan.and_then(|p| p.doppler) else { return };
        let beat = 0.5 + 0.5 * (2.0 * PI * self.frame_in_segment(index) as f32 / 10.0 + shape.phase).sin();
        let threshold = 0.55 - 0.45 * beat;
        let (r, flow) = (shape.rect, &self.segment.flow.values);
        for row in 0..r.h {
            for col in 0..r.w {
                let v = flow[row * r.w + col];
                if v.abs() > threshold {
                    put(out, self.fan.width, r.x + col, r.y + row, flow_colour(v, beat));
                }
            }
        }
        outline(out, &self.fan, r, DOPPLER_BOX);
        draw_colour_bar(out, &self.fan, self.area);
    }
}

/// Multiplies the part of `line` (fan box row `row`) that the patch, shifted by `offset`, covers.
pub(super) fn apply_patch(patch: &Patch, offset: (i64, i64), area: Rect, row: usize, line: &mut [f32]) {
    let patch_row = (area.y + row) as i64 - (patch.y + offset.1);
    if patch_row < 0 || patch_row >= patch.h as i64 {
        return;
    }
    let left = patch.x + offset.0 - area.x as i64; // patch column 0 in line coordinates
    let from = left.max(0);
    let to = (left + patch.w as i64).min(line.len() as i64);
    let values = &patch.values[patch_row as usize * patch.w..][..patch.w];
    for x in from..to {
        line[x as usize] *= values[(x - left) as usize];
    }
}

pub(super) fn write_grey(tissue: &[f32], line: &[f32], out: &mut [u8]) {
    for ((t, v), px) in tissue.iter().zip(line).zip(out.chunks_exact_mut(3)) {
        if *t > 0.0 {
            let g = v.clamp(0.0, 255.0) as u8;
            px.copy_from_slice(&[g, g, g]);
        }
    }
}

/// Red towards the probe, blue away; brighter with speed and at systole.
pub(super) fn flow_colour(v: f32, beat: f32) -> [u8; 3] {
    let m = v.abs() * (0.6 + 0.4 * beat);
    let (strong, weak) = ((110.0 + 145.0 * m) as u8, (12.0 + 30.0 * m) as u8);
    if v > 0.0 {
        [strong, weak, 12]
    } else {
        [12, weak + 20, strong]
    }
}
