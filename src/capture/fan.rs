//! The fan (sector) mask of a curvilinear/phased probe image, in the PLUS Toolkit's terms: fan
//! origin in source pixels, fan angles in degrees, start and stop radius in pixels. Pixels of the
//! ROI outside the fan are blanked (set to 0) before preprocessing, so on-screen text, scales and
//! icons around the fan never reach the model.
//!
//! Angles are measured at the origin from the image's downward axis (+y, the beam direction of a
//! probe drawn at the top of the screen), positive towards +x (image right), as PLUS draws them:
//! `x = origin_x + r * sin(angle)`, `y = origin_y + r * cos(angle)`.
//!
//! ```text
//!            origin (x0, y0)
//!                  *
//!   angle_start  / | \  angle_stop        e.g. angles_deg = [-35, 35]
//!     (-35°)    /  |0°\   (+35°)
//!              / r0|   \                  radius_start_px = r0 (skin line)
//!             /  __|__  \                 radius_stop_px  = r1 (depth)
//!            / /   |   \ \
//!           /_/____|____\_\  r1
//!                  v +y
//! ```

use super::convert::Roi;

/// A sector as configured (source pixels, degrees).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fan {
    /// The fan's apex `[x, y]` in source pixels (it may lie above the frame).
    pub origin_px: [f64; 2],
    /// `[start, stop]` in degrees from +y (down), positive towards +x (right).
    pub angles_deg: [f64; 2],
    pub radius_start_px: f64,
    pub radius_stop_px: f64,
}

impl Fan {
    /// Checks the geometry; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let [a0, a1] = self.angles_deg;
        if !(a0.is_finite() && a1.is_finite() && -180.0 <= a0 && a0 < a1 && a1 <= 180.0) {
            return Err(format!("angles_deg {:?} must be [start, stop] with -180 <= start < stop <= 180", self.angles_deg));
        }
        if !(self.radius_start_px >= 0.0 && self.radius_start_px < self.radius_stop_px && self.radius_stop_px.is_finite()) {
            return Err(format!(
                "radius_start_px {} and radius_stop_px {} must satisfy 0 <= start < stop",
                self.radius_start_px, self.radius_stop_px
            ));
        }
        if !self.origin_px.iter().all(|v| v.is_finite()) {
            return Err("origin_px must be two finite numbers".into());
        }
        Ok(())
    }

    /// True if the centre of source pixel (x, y) lies inside the fan.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        let dx = x as f64 + 0.5 - self.origin_px[0];
        let dy = y as f64 + 0.5 - self.origin_px[1];
        let r = dx.hypot(dy);
        let angle = dx.atan2(dy).to_degrees();
        r >= self.radius_start_px && r <= self.radius_stop_px && angle >= self.angles_deg[0] && angle <= self.angles_deg[1]
    }
}

/// The fan rasterised over one ROI: for each ROI row, the spans of columns to keep.
#[derive(Debug, Clone)]
pub struct FanMask {
    roi: Roi,
    rows: Vec<Vec<(u32, u32)>>,
}

impl FanMask {
    pub fn new(fan: &Fan, roi: Roi) -> FanMask {
        let rows = (0..roi.height).map(|y| spans(fan, roi, roi.y + y)).collect();
        FanMask { roi, rows }
    }

    pub fn roi(&self) -> Roi {
        self.roi
    }

    /// Pixels of the ROI inside the fan (to warn about a mask that keeps almost nothing).
    pub fn kept_pixels(&self) -> u64 {
        self.rows.iter().flatten().map(|(a, b)| (b - a) as u64).sum()
    }

    /// Blanks everything outside the fan in a packed RGB buffer of the ROI.
    pub fn apply(&self, rgb: &mut [u8]) {
        let w = self.roi.width as usize;
        for (row, keep) in rgb.chunks_exact_mut(w * 3).zip(&self.rows) {
            let mut x = 0usize;
            for &(a, b) in keep {
                row[x * 3..a as usize * 3].fill(0);
                x = b as usize;
            }
            row[x * 3..].fill(0);
        }
    }
}

/// Half-open column spans `[a, b)` of ROI row at source line `y` that lie inside the fan.
fn spans(fan: &Fan, roi: Roi, y: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut start = None;
    for x in 0..roi.width {
        match (fan.contains(roi.x + x, y), start) {
            (true, None) => start = Some(x),
            (false, Some(a)) => {
                out.push((a, x));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(a) = start {
        out.push((a, roi.width));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan() -> Fan {
        Fan { origin_px: [50.0, 0.0], angles_deg: [-30.0, 30.0], radius_start_px: 10.0, radius_stop_px: 80.0 }
    }

    #[test]
    fn zero_degrees_points_down_and_positive_angles_go_right() {
        let f = Fan { angles_deg: [0.0, 30.0], ..fan() };
        assert!(f.contains(55, 40), "below and a little right of the origin is inside [0, 30]");
        assert!(!f.contains(44, 40), "left of the origin is a negative angle");
        assert!(!f.contains(50, 5), "inside the start radius");
        assert!(!f.contains(50, 90), "beyond the stop radius");
    }

    #[test]
    fn the_mask_blanks_exactly_the_pixels_outside() {
        let roi = Roi { x: 10, y: 0, width: 80, height: 90 };
        let mask = FanMask::new(&fan(), roi);
        let mut rgb = vec![200u8; 80 * 90 * 3];
        mask.apply(&mut rgb);
        for y in 0..90 {
            for x in 0..80 {
                let kept = rgb[(y * 80 + x) as usize * 3] == 200;
                assert_eq!(kept, fan().contains(10 + x, y), "pixel ({x}, {y})");
            }
        }
        assert!(mask.kept_pixels() > 1000);
    }

    #[test]
    fn bad_geometry_is_named() {
        assert!(Fan { angles_deg: [30.0, -30.0], ..fan() }.validate().unwrap_err().contains("angles_deg"));
        assert!(Fan { radius_start_px: 90.0, ..fan() }.validate().unwrap_err().contains("radius"));
        assert!(fan().validate().is_ok());
    }
}
