//! Still images from files, decoded the way the reference pipeline loads them
//! (`transformers.image_utils.load_image`: EXIF orientation applied, then `convert("RGB")`).

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::preprocess::{ImageView, Layout};

/// A decoded 8-bit image that owns its pixels.
#[derive(Debug, Clone)]
pub struct Still {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
}

impl Still {
    pub fn view(&self) -> ImageView<'_> {
        ImageView { width: self.width, height: self.height, layout: self.layout, data: &self.data }
    }
}

/// Decodes a PNG, JPEG or BMP file; grey stays one channel, alpha is dropped as PIL's `convert("RGB")` does.
pub fn load_still(path: &Path) -> anyhow::Result<Still> {
    let reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    into_still(img)
}

fn into_still(img: DynamicImage) -> anyhow::Result<Still> {
    let (width, height) = (img.width(), img.height());
    let (layout, data) = match img {
        DynamicImage::ImageLuma8(g) => (Layout::Grey8, g.into_raw()),
        DynamicImage::ImageLumaA8(_) => (Layout::Grey8, img.to_luma8().into_raw()),
        DynamicImage::ImageRgb8(rgb) => (Layout::Rgb8, rgb.into_raw()),
        DynamicImage::ImageRgba8(_) => (Layout::Rgb8, img.to_rgb8().into_raw()),
        other => anyhow::bail!(
            "{:?} pixels are not supported (the reference pipeline would clip them, not scale them); convert the image to 8-bit grey or RGB",
            other.color()
        ),
    };
    Ok(Still { width, height, layout, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, LumaA, Rgba, RgbaImage};

    #[test]
    fn alpha_is_dropped_not_composited() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 1, Rgba([200, 100, 50, 0])));
        let s = into_still(img).unwrap();
        assert_eq!((s.layout, &s.data[..]), (Layout::Rgb8, &[200, 100, 50, 200, 100, 50][..]));
    }

    #[test]
    fn grey_with_alpha_stays_grey() {
        let img = DynamicImage::ImageLumaA8(GrayAlphaImage::from_pixel(1, 1, LumaA([77, 9])));
        let s = into_still(img).unwrap();
        assert_eq!((s.layout, &s.data[..]), (Layout::Grey8, &[77][..]));
    }

    #[test]
    fn sixteen_bit_images_are_refused_with_a_reason() {
        let img = DynamicImage::new_luma16(2, 2);
        assert!(into_still(img).unwrap_err().to_string().contains("8-bit"));
    }
}
