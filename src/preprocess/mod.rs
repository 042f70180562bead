//! Preprocessing equal to `ViTImageProcessor`: Pillow's convolution resize (antialiased when
//! shrinking), then rescale and normalise, written into a caller-owned `[1, 3, H, W]` f32 buffer.
//!
//! Resize runs on 8-bit pixels exactly as Pillow does (the reference resizes a uint8 PIL image), so
//! the float values are `lut[c][u8]` for a per-channel table built once from the spec, applied to
//! each resized row as it comes out of the resampler.

mod kernels;
pub mod resample;
mod transpose;

use crate::infer::{PreprocessSpec, Resample};
use resample::{Filter, Resampler};

/// How pixels are laid out in an [`ImageView`]. Grey stands for three equal channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Rgb8,
    Grey8,
}

impl Layout {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Layout::Rgb8 => 3,
            Layout::Grey8 => 1,
        }
    }
}

/// A borrowed, tightly packed 8-bit image (a decoded file or a converted ROI).
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("image is {0}x{1} with {2} bytes; expected {3} bytes")]
    BadBuffer(u32, u32, usize, usize),
    #[error("output buffer holds {0} values; the model input needs {1}")]
    BadOutput(usize, usize),
}

/// Resizes and normalises frames for one model; owns every buffer it needs, allocated once.
pub struct Preprocessor {
    spec: PreprocessSpec,
    rgb_resampler: Resampler,
    grey_resampler: Resampler,
    rgb: Vec<u8>,
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    pub fn new(spec: &PreprocessSpec) -> Preprocessor {
        let filter = match spec.resample {
            Resample::Bilinear => Filter::Bilinear,
            Resample::Bicubic => Filter::Bicubic,
        };
        let (w, h) = (spec.width as usize, spec.height as usize);
        Preprocessor {
            spec: spec.clone(),
            rgb_resampler: Resampler::new(filter, 3, w, h),
            grey_resampler: Resampler::new(filter, 1, w, h),
            rgb: vec![0; w * h * 3],
            lut: lookup_table(spec),
        }
    }

    /// Number of f32 values in the model input (`3 * H * W`).
    pub fn output_len(&self) -> usize {
        3 * self.spec.width as usize * self.spec.height as usize
    }

    /// The last resized image as packed RGB (what the model saw, before normalisation).
    pub fn resized_rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Resizes `image` and writes the normalised planar tensor into `out`.
    pub fn run(&mut self, image: ImageView<'_>, out: &mut [f32]) -> Result<(), PreprocessError> {
        if out.len() != self.output_len() {
            return Err(PreprocessError::BadOutput(out.len(), self.output_len()));
        }
        let expected = image.width as usize * image.height as usize * image.layout.bytes_per_pixel();
        if image.data.len() != expected || image.width == 0 || image.height == 0 {
            return Err(PreprocessError::BadBuffer(image.width, image.height, image.data.len(), expected));
        }
        let w = self.spec.width as usize;
        let (r, rest) = out.split_at_mut(w * self.spec.height as usize);
        let (g, b) = rest.split_at_mut(r.len());
        let mut planes = Planes { rgb: &mut self.rgb, r, g, b, lut: &self.lut, width: w };
        let (in_w, in_h) = (image.width as usize, image.height as usize);
        // Each resized row is normalised while it is still in cache.
        match image.layout {
            Layout::Rgb8 => self.rgb_resampler.resize_rows(image.data, in_w, in_h, &mut |y, row| planes.rgb_row(y, row)),
            // Resizing one grey plane then repeating it equals PIL's convert("RGB") then resize.
            Layout::Grey8 => self.grey_resampler.resize_rows(image.data, in_w, in_h, &mut |y, row| planes.grey_row(y, row)),
        }
        Ok(())
    }
}

/// Where resized rows go: the packed copy behind [`Preprocessor::resized_rgb`] and the tensor planes.
struct Planes<'a> {
    rgb: &'a mut [u8],
    r: &'a mut [f32],
    g: &'a mut [f32],
    b: &'a mut [f32],
    lut: &'a [[f32; 256]; 3],
    width: usize,
}

impl Planes<'_> {
    fn rgb_row(&mut self, y: usize, row: &[u8]) {
        self.rgb[y * self.width * 3..][..self.width * 3].copy_from_slice(row);
        self.normalise(y);
    }

    fn grey_row(&mut self, y: usize, row: &[u8]) {
        for (px, v) in self.rgb[y * self.width * 3..][..self.width * 3].chunks_exact_mut(3).zip(row) {
            px.fill(*v);
        }
        self.normalise(y);
    }

    /// Row `y` of the packed copy into the three planes.
    fn normalise(&mut self, y: usize) {
        let at = y * self.width..(y + 1) * self.width;
        let planes = self.r[at.clone()].iter_mut().zip(&mut self.g[at.clone()]).zip(&mut self.b[at.clone()]);
        for (((r, g), b), px) in planes.zip(self.rgb[at.start * 3..at.end * 3].chunks_exact(3)) {
            *r = self.lut[0][px[0] as usize];
            *g = self.lut[1][px[1] as usize];
            *b = self.lut[2][px[2] as usize];
        }
    }
}

/// `value = ((u8 * rescale) - mean) / std`, computed once per channel and byte value.
fn lookup_table(spec: &PreprocessSpec) -> [[f32; 256]; 3] {
    let rescale = spec.rescale.map(f64::from).unwrap_or(1.0);
    let (mean, std) = spec.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
    std::array::from_fn(|c| {
        std::array::from_fn(|u| {
            let x = (u as f64 * rescale) as f32;
            if spec.normalize.is_some() {
                (x - mean[c]) / std[c]
            } else {
                x
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32) -> PreprocessSpec {
        PreprocessSpec {
            width: w,
            height: h,
            resample: Resample::Bilinear,
            rescale: Some(1.0 / 255.0),
            normalize: Some(([0.5; 3], [0.5; 3])),
        }
    }

    #[test]
    fn normalisation_maps_0_and_255_to_minus_one_and_one() {
        let lut = lookup_table(&spec(4, 4));
        assert_eq!(lut[0][0], -1.0);
        assert!((lut[2][255] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn channels_stay_in_rgb_order_in_planes() {
        let mut p = Preprocessor::new(&spec(2, 2));
        let data = [10u8, 128, 250].repeat(16);
        let mut out = vec![0.0; p.output_len()];
        p.run(ImageView { width: 4, height: 4, layout: Layout::Rgb8, data: &data }, &mut out).unwrap();
        let want = [10.0f32, 128.0, 250.0].map(|u| (u / 255.0 - 0.5) / 0.5);
        for c in 0..3 {
            assert!(out[c * 4..(c + 1) * 4].iter().all(|v| (v - want[c]).abs() < 1e-6), "channel {c}: {out:?}");
        }
    }

    #[test]
    fn grey_input_becomes_three_equal_channels() {
        let mut p = Preprocessor::new(&spec(3, 3));
        let data: Vec<u8> = (0..49).map(|i| (i * 5) as u8).collect();
        let mut out = vec![0.0; p.output_len()];
        p.run(ImageView { width: 7, height: 7, layout: Layout::Grey8, data: &data }, &mut out).unwrap();
        assert_eq!(out[0..9], out[9..18]);
        assert_eq!(out[0..9], out[18..27]);
    }

    #[test]
    fn a_short_buffer_is_an_error_not_a_panic() {
        let mut p = Preprocessor::new(&spec(2, 2));
        let mut out = vec![0.0; p.output_len()];
        let e = p.run(ImageView { width: 4, height: 4, layout: Layout::Rgb8, data: &[0; 10] }, &mut out);
        assert!(matches!(e, Err(PreprocessError::BadBuffer(..))));
    }
}
