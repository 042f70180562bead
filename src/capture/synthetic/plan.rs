//! Phantom segment kinds and plans: which truth a segment has and where its lesion or Doppler box lies.

use super::*;

pub(super) fn raw_kind(seed: u64, segment: u64) -> Truth {
    match SplitMix::stream(seed, STREAM_KIND, segment).unit() {
        u if u < 0.28 => Truth::Normal,
        u if u < 0.56 => Truth::Benign,
        u if u < 0.84 => Truth::Malignant,
        u if u < 0.92 => Truth::Frozen,
        _ => Truth::NoSignal,
    }
}

/// Share of picture segments (normal, benign, malignant) in which the probe is lifted instead.
/// Drawn from a stream of its own, so every other segment keeps the kind it had before this kind
/// existed.
pub(super) const NO_CONTACT_SHARE: f32 = 0.08;

/// The raw kind, with some picture segments turned into probe-lifted ones.
pub(super) fn contact_kind(seed: u64, segment: u64) -> Truth {
    let raw = raw_kind(seed, segment);
    let picture = matches!(raw, Truth::Normal | Truth::Benign | Truth::Malignant);
    if picture && SplitMix::stream(seed, STREAM_CONTACT, segment).unit() < NO_CONTACT_SHARE {
        return Truth::NoContact;
    }
    raw
}

/// A segment's kind; a freeze needs a picture of tissue to freeze, so none opens the stream or
/// follows a black screen or a lifted probe (a frozen image of a lifted probe is `no_contact`).
/// Substitutions yield only picture kinds, so looking one segment back is enough.
pub(super) fn segment_kind(seed: u64, segment: u64) -> Truth {
    let kind = contact_kind(seed, segment);
    if kind == Truth::Frozen && (segment == 0 || matches!(contact_kind(seed, segment - 1), Truth::NoSignal | Truth::NoContact)) {
        let pick = SplitMix::stream(seed, STREAM_SUBSTITUTE, segment).next_u64() % 3;
        return [Truth::Normal, Truth::Benign, Truth::Malignant][pick as usize];
    }
    kind
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Spike {
    pub(super) angle: f32,
    pub(super) length: f32,
    pub(super) half_width: f32,
}

/// Where a lesion is and what shape it has, in frame pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct LesionShape {
    pub(super) malignant: bool,
    pub(super) centre: (f32, f32),
    /// Core semi-axes.
    pub(super) rx: f32,
    pub(super) ry: f32,
    pub(super) spikes: [Spike; 14],
    pub(super) spike_count: usize,
    /// Half-size of the box holding core and spikes.
    pub(super) reach: (f32, f32),
    /// Probe motion over the whole segment.
    pub(super) drift: (f32, f32),
}

impl LesionShape {
    pub(super) fn draw(rng: &mut SplitMix, fan: &Fan, malignant: bool) -> LesionShape {
        let r = rng.range(45.0, 90.0) * fan.scale;
        let mut shape = if malignant { Self::spiculated(rng, r) } else { Self::oval(rng, r) };
        shape.drift = (rng.range(-4.0, 4.0) * fan.scale, rng.range(-3.0, 3.0) * fan.scale);
        shape.centre = shape.place(rng, fan);
        shape
    }

    /// Benign: smooth, wider than tall.
    pub(super) fn oval(rng: &mut SplitMix, r: f32) -> LesionShape {
        let ry = r * rng.range(0.55, 0.75);
        let spikes = [Spike::default(); 14];
        LesionShape { malignant: false, centre: (0.0, 0.0), rx: r, ry, spikes, spike_count: 0, reach: (r, ry), drift: (0.0, 0.0) }
    }

    /// Malignant: taller than wide, 8-14 spikes reaching 40-80% beyond the core.
    pub(super) fn spiculated(rng: &mut SplitMix, r: f32) -> LesionShape {
        let rx = r * rng.range(0.6, 0.8);
        let count = 8 + (rng.next_u64() % 7) as usize;
        let mut spikes = [Spike::default(); 14];
        for (i, spike) in spikes.iter_mut().take(count).enumerate() {
            let angle = 2.0 * PI * (i as f32 + rng.range(-0.3, 0.3)) / count as f32 - PI;
            *spike = Spike { angle, length: r * rng.range(0.4, 0.8), half_width: rng.range(0.05, 0.1) };
        }
        let longest = spikes.iter().map(|s| s.length).fold(0.0, f32::max);
        LesionShape {
            malignant: true,
            centre: (0.0, 0.0),
            rx,
            ry: r,
            spikes,
            spike_count: count,
            reach: (rx + longest, r + longest),
            drift: (0.0, 0.0),
        }
    }

    /// A centre 150-450 px below the apex with the whole lesion inside the fan all segment long.
    pub(super) fn place(&self, rng: &mut SplitMix, fan: &Fan) -> (f32, f32) {
        for _ in 0..64 {
            let depth = rng.range(150.0, 450.0) * fan.scale;
            let centre = (fan.apex.0 + rng.range(-1.0, 1.0) * depth * fan.tan_half, fan.apex.1 + depth);
            if fan.holds(centre, self.travel_reach(fan)) {
                return centre;
            }
        }
        // Rarely needed: on the axis at this depth even the widest spiculated lesion fits.
        (fan.apex.0, fan.apex.1 + 430.0 * fan.scale)
    }

    pub(super) fn travel_reach(&self, fan: &Fan) -> (f32, f32) {
        (self.reach.0 + self.drift.0.abs() + 2.0 * fan.scale, self.reach.1 + self.drift.1.abs() + 2.0 * fan.scale)
    }

    /// Whole-pixel shift at `progress` (0..1 through the segment), so patch and centre agree.
    pub(super) fn offset(&self, progress: f32) -> (i64, i64) {
        ((self.drift.0 * progress).round() as i64, (self.drift.1 * progress).round() as i64)
    }

    /// Multiplicative echo gain at `(dx, dy)` from the centre: dark inside, and the band below.
    pub(super) fn gain(&self, dx: f32, dy: f32, scale: f32, boundary: &[f32]) -> f32 {
        let inside = self.inside(dx, dy, boundary);
        let below = if dy > 0.0 && dx.abs() < self.rx { (1.0 - inside) * self.posterior(dx, dy, scale) } else { 0.0 };
        let body = 1.0 - if self.malignant { 0.78 } else { 0.75 } * inside;
        body * (1.0 + below)
    }

    /// 1 inside, 0 outside, a soft edge of a few pixels between; `boundary` is
    /// [`Self::boundary_table`] (spiculated lesions only).
    pub(super) fn inside(&self, dx: f32, dy: f32, boundary: &[f32]) -> f32 {
        if !self.malignant {
            let q = ((dx / self.rx).powi(2) + (dy / self.ry).powi(2)).sqrt();
            return 1.0 - smoothstep(-2.0, 2.0, (q - 1.0) * self.ry);
        }
        let dist = (dx * dx + dy * dy).sqrt();
        if dist > self.reach.1.max(self.reach.0) + 2.0 {
            return 0.0; // beyond every spike: skip the atan2
        }
        let step = ((dy.atan2(dx) + PI) / (2.0 * PI) * BOUNDARY_STEPS as f32) as usize;
        1.0 - smoothstep(-1.5, 1.5, dist - boundary[step % BOUNDARY_STEPS])
    }

    /// The spiculated outline's radius at `BOUNDARY_STEPS` angles from -pi: the trig and the spike
    /// search are done once per angle instead of once per pixel.
    pub(super) fn boundary_table(&self) -> Vec<f32> {
        let angle = |i: usize| -PI + 2.0 * PI * i as f32 / BOUNDARY_STEPS as f32;
        (0..BOUNDARY_STEPS).map(|i| self.core_radius(angle(i)) + self.spike_length(angle(i))).collect()
    }

    /// Lobulated ellipse radius at `angle`.
    pub(super) fn core_radius(&self, angle: f32) -> f32 {
        let (sin, cos) = angle.sin_cos();
        let ellipse = 1.0 / ((cos / self.rx).powi(2) + (sin / self.ry).powi(2)).sqrt();
        ellipse * (1.0 + 0.08 * (3.0 * angle + self.spikes[0].angle).sin())
    }

    pub(super) fn spike_length(&self, angle: f32) -> f32 {
        let reach = |s: &Spike| {
            let delta = (angle - s.angle + 3.0 * PI).rem_euclid(2.0 * PI) - PI;
            s.length * (1.0 - delta.abs() / s.half_width).max(0.0)
        };
        self.spikes[..self.spike_count].iter().map(reach).fold(0.0, f32::max)
    }

    /// Benign: enhancement (+) fading with depth; malignant: shadowing (-) that persists.
    pub(super) fn posterior(&self, dx: f32, dy: f32, scale: f32) -> f32 {
        let taper = (1.0 - (dx / (0.9 * self.rx)).powi(2)).max(0.0);
        let lower_edge = self.ry * (1.0 - (dx / self.rx).powi(2)).max(0.0).sqrt();
        let below = (dy - lower_edge).max(0.0);
        if self.malignant {
            -0.65 * taper * smoothstep(0.0, 12.0 * scale, below) * (-below / (900.0 * scale)).exp()
        } else {
            0.45 * taper * smoothstep(0.0, 6.0 * scale, below) * (-below / (220.0 * scale)).exp()
        }
    }
}

/// A colour-Doppler box with vessels; `sign` +1 = towards the probe (red), -1 = away (blue).
#[derive(Debug, Clone, Copy)]
pub(super) struct DopplerShape {
    pub(super) rect: Rect,
    pub(super) vessels: [(f32, f32, f32, f32, f32, f32); 3],
    pub(super) phase: f32,
}

impl DopplerShape {
    /// A box fully inside the fan, clear of the lesion, in about half the segments.
    pub(super) fn draw(rng: &mut SplitMix, fan: &Fan, lesion: Option<&LesionShape>) -> Option<DopplerShape> {
        if rng.unit() >= 0.5 {
            return None;
        }
        let (w, h) = (rng.range(150.0, 220.0) * fan.scale, rng.range(100.0, 150.0) * fan.scale);
        for _ in 0..32 {
            let depth = rng.range(110.0, 520.0) * fan.scale;
            let centre = (fan.apex.0 + rng.range(-0.8, 0.8) * depth * fan.tan_half, fan.apex.1 + depth);
            if fan.holds(centre, (w / 2.0, h / 2.0)) && !lesion.is_some_and(|l| overlaps(l, centre, (w, h), fan)) {
                let rect = Rect { x: (centre.0 - w / 2.0) as usize, y: (centre.1 - h / 2.0) as usize, w: w as usize, h: h as usize };
                return Some(DopplerShape { rect, vessels: Self::vessels(rng, rect, fan.scale), phase: rng.range(0.0, 2.0 * PI) });
            }
        }
        None // no room beside this lesion: this segment has no Doppler
    }

    /// Three vessel segments `(x0, y0, x1, y1, radius, sign)` in box coordinates.
    pub(super) fn vessels(rng: &mut SplitMix, rect: Rect, scale: f32) -> [(f32, f32, f32, f32, f32, f32); 3] {
        let (w, h) = (rect.w as f32, rect.h as f32);
        std::array::from_fn(|i| {
            let (y0, slope, length) = (rng.range(0.2, 0.8) * h, rng.range(-0.4, 0.4), rng.range(0.4, 1.0) * w);
            let x0 = rng.range(0.0, w - length);
            let sign = if i == 1 { -1.0 } else { 1.0 };
            (x0, y0, x0 + length, y0 + slope * length, rng.range(5.0, 11.0) * scale, sign)
        })
    }

    /// Flow at `(x, y)` in the box: signed, 1 on a vessel's axis, 0 outside it.
    pub(super) fn flow(&self, x: f32, y: f32) -> f32 {
        let mut best = 0.0f32;
        for &(x0, y0, x1, y1, radius, sign) in &self.vessels {
            let (vx, vy) = (x1 - x0, y1 - y0);
            let t = (((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
            let d2 = (x - x0 - t * vx).powi(2) + (y - y0 - t * vy).powi(2);
            let v = (1.0 - d2 / (radius * radius)).max(0.0);
            if v > best.abs() {
                best = sign * v;
            }
        }
        best
    }
}

pub(super) fn overlaps(lesion: &LesionShape, centre: (f32, f32), size: (f32, f32), fan: &Fan) -> bool {
    let (rx, ry) = lesion.travel_reach(fan);
    let margin = 8.0 * fan.scale;
    (lesion.centre.0 - centre.0).abs() < rx + size.0 / 2.0 + margin && (lesion.centre.1 - centre.1).abs() < ry + size.1 / 2.0 + margin
}

/// Everything random about a segment that is cheap to draw.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) lesion: Option<LesionShape>,
    pub(super) doppler: Option<DopplerShape>,
}

impl Plan {
    pub(super) fn draw(seed: u64, segment: u64, fan: &Fan) -> Plan {
        let kind = segment_kind(seed, segment);
        let mut rng = SplitMix::stream(seed, STREAM_PLAN, segment);
        let lesion = matches!(kind, Truth::Benign | Truth::Malignant).then(|| LesionShape::draw(&mut rng, fan, kind == Truth::Malignant));
        let doppler = match kind {
            Truth::Normal | Truth::Benign | Truth::Malignant => DopplerShape::draw(&mut rng, fan, lesion.as_ref()),
            _ => None,
        };
        Plan { lesion, doppler }
    }
}
