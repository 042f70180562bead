//! The one per-image path, shared by `classify`, the daemon's inference thread and batch
//! evaluation: a still (decoded file) or a converted ROI goes through the region (ROI + fan mask),
//! the model's preprocessing and one tract run, into logits and probabilities.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::capture::convert::{roi_to_rgb, Roi};
use crate::capture::region::Region;
use crate::capture::still::{load_still, Still};
use crate::capture::{ColorSpace, FieldOrder, Frame, FrameMeta, PixelFormat, Range};
use crate::infer::{Model, Session};
use crate::preprocess::{ImageView, Layout, Preprocessor};

/// Preprocessing state and a tract session, reused for every image of one thread.
pub struct Classifier {
    pre: Preprocessor,
    session: Session,
}

impl Classifier {
    pub fn new(model: &Model) -> anyhow::Result<Classifier> {
        Ok(Classifier { pre: Preprocessor::new(model.preprocess()), session: model.session()? })
    }

    /// Preprocesses `view` into the model's input; the first half of [`Classifier::run`], apart
    /// so callers can time the two halves.
    pub fn prepare(&mut self, view: ImageView<'_>) -> anyhow::Result<()> {
        Ok(self.pre.run(view, self.session.input_mut())?)
    }

    /// Runs the model on the prepared input: (logits, probabilities) in label order.
    pub fn infer(&mut self) -> anyhow::Result<(&[f32], &[f64])> {
        Ok(self.session.run()?)
    }

    /// Preprocesses and classifies one image as it is.
    pub fn run(&mut self, view: ImageView<'_>) -> anyhow::Result<(&[f32], &[f64])> {
        self.prepare(view)?;
        self.infer()
    }

    /// Decodes `path`, crops and masks it with `region` exactly as the daemon's capture stage
    /// does (untouched when the region is empty), and classifies it.
    pub fn run_file(&mut self, path: &Path, region: &mut Region) -> anyhow::Result<(&[f32], &[f64])> {
        let still = load_still(path)?;
        if region.configured_roi().is_none() && region.fan().is_none() {
            return self.run(still.view());
        }
        let (rgb, roi) = crop_and_mask(&still, region)?;
        self.run(ImageView { width: roi.width, height: roi.height, layout: Layout::Rgb8, data: &rgb })
    }
}

/// The ROI of a saved frame as RGB with the fan masked, as the daemon's capture stage makes it.
pub fn crop_and_mask(still: &Still, region: &mut Region) -> anyhow::Result<(Vec<u8>, Roi)> {
    let roi = region.roi(still.width, still.height);
    let format = if still.layout == Layout::Grey8 { PixelFormat::Grey } else { PixelFormat::Rgb24 };
    let meta = FrameMeta {
        width: still.width,
        height: still.height,
        format,
        stride: still.width as usize * still.layout.bytes_per_pixel(),
        color_space: ColorSpace::Bt601,
        range: Range::Full,
        field: FieldOrder::Progressive,
        sequence: 0,
        monotonic: Duration::ZERO,
        wall: SystemTime::UNIX_EPOCH,
    };
    let mut rgb = Vec::new();
    roi_to_rgb(&Frame { meta, data: &still.data }, roi, &mut rgb)?;
    region.mask(&mut rgb, roi);
    Ok((rgb, roi))
}
