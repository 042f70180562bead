//! The part of a frame the model sees: the ROI rectangle (or the whole frame) and the optional fan
//! mask blanking everything outside the sector. Shared by the daemon, `classify --config` and
//! `snapshot`, so all three crop and mask the same way.

use super::convert::Roi;
use super::fan::{Fan, FanMask};

#[derive(Debug, Clone, Default)]
pub struct Region {
    roi: Option<Roi>,
    fan: Option<Fan>,
    /// The fan rasterised for the last ROI it was used with (rebuilt only when that changes).
    mask: Option<FanMask>,
}

impl Region {
    pub fn new(roi: Option<[u32; 4]>, fan: Option<Fan>) -> Region {
        Region { roi: roi.map(Roi::from_array), fan, mask: None }
    }

    /// The configured rectangle, or the whole `width` x `height` frame.
    pub fn roi(&self, width: u32, height: u32) -> Roi {
        self.roi.unwrap_or(Roi::full(width, height))
    }

    pub fn configured_roi(&self) -> Option<Roi> {
        self.roi
    }

    pub fn fan(&self) -> Option<&Fan> {
        self.fan.as_ref()
    }

    /// Blanks the pixels outside the fan in `rgb`, the packed RGB of `roi`; no-op without a fan.
    pub fn mask(&mut self, rgb: &mut [u8], roi: Roi) {
        let Some(fan) = &self.fan else { return };
        if self.mask.as_ref().is_none_or(|m| m.roi() != roi) {
            let mask = FanMask::new(fan, roi);
            if mask.kept_pixels() < roi.width as u64 * roi.height as u64 / 20 {
                log::warn!(
                    "the fan mask keeps {} of {} ROI pixels: check source.fan against `sonoedge snapshot`",
                    mask.kept_pixels(),
                    roi.width as u64 * roi.height as u64
                );
            }
            self.mask = Some(mask);
        }
        if let Some(m) = &self.mask {
            m.apply(rgb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_roi_the_whole_frame_is_used_and_masked() {
        let fan = Fan { origin_px: [8.0, 0.0], angles_deg: [-20.0, 20.0], radius_start_px: 0.0, radius_stop_px: 100.0 };
        let mut region = Region::new(None, Some(fan));
        let roi = region.roi(16, 16);
        assert_eq!(roi, Roi::full(16, 16));
        let mut rgb = vec![255u8; 16 * 16 * 3];
        region.mask(&mut rgb, roi);
        assert_eq!(rgb[0], 0, "top-left corner is outside a downward fan");
        assert_eq!(rgb[(15 * 16 + 8) * 3], 255, "bottom centre is inside");
    }
}
