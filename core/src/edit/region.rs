//! Inpainting by region: a large image's mask box worked on at the model's resolution and
//! blended back at full resolution.

use crate::error::{Error, Result};
use crate::pixels::{self, feathered_blend};

/// Inpainting by region (as canvas apps do for large images): the mask's bounding box plus a
/// context margin, squared up where the image allows, is worked on at the model's resolution and
/// blended back into the full-resolution image; pixels outside the mask are never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The crop in image pixels: origin and size.
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
    /// The crop's size at the model's resolution (its shorter side is the model's image side).
    pub scaled: [usize; 2],
}

impl Region {
    /// The region of a `width x height` image around its `mask` (one byte per pixel, `> 127` =
    /// regenerate) for a model whose image side is `model_side` pixels; the margin is a quarter
    /// of the box, at least an eighth of the model's side and the feather.
    pub fn around(
        mask: &[u8],
        width: usize,
        height: usize,
        model_side: usize,
        feather: usize,
    ) -> Result<Self> {
        if mask.len() != width * height {
            return Err(Error::Internal("region mask size".into()));
        }
        let (w, h) = (width, height);
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m > 127) {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        }
        if x1 <= x0 {
            return Err(Error::InvalidRequest(
                "the mask covers no pixel: paint the area to regenerate in white (or opaque, \
                 when the mask has transparency)"
                    .into(),
            ));
        }
        let (bw, bh) = (x1 - x0, y1 - y0);
        let margin = (bw.max(bh) / 4).max(model_side / 8).max(feather);
        let side = (bw.max(bh) + 2 * margin).max(model_side);
        let (cw, ch) = (side.min(w), side.min(h));
        let centred = |lo: usize, hi: usize, len: usize, total: usize| {
            ((lo + hi) / 2).saturating_sub(len / 2).min(total - len)
        };
        let s = model_side as f64 / cw.min(ch) as f64;
        let scaled = |v: usize| ((v as f64 * s).round() as usize).max(model_side);
        Ok(Self {
            x: centred(x0, x1, cw, w),
            y: centred(y0, y1, ch, h),
            width: cw,
            height: ch,
            scaled: [scaled(cw), scaled(ch)],
        })
    }

    /// The crop of `px` (`channels` bytes per pixel, `image_width` wide) at full resolution.
    pub fn crop(&self, px: &[u8], image_width: usize, channels: usize) -> Vec<u8> {
        crate::pixels::crop(
            px,
            image_width,
            channels,
            (self.x, self.y),
            (self.width, self.height),
        )
    }

    /// The crop of a full-image mask at the model's resolution. A pixel there is masked as
    /// much as the most masked full-resolution pixel it covers (a maximum, not an average), so a
    /// thin stroke stays a stroke when the region is scaled down.
    pub fn scaled_mask(&self, mask: &[u8], image_width: usize) -> Vec<u8> {
        let crop = self.crop(mask, image_width, 1);
        let [sw, sh] = self.scaled;
        let (cw, ch) = (self.width, self.height);
        let span = |i: usize, n: usize, m: usize| {
            (
                i * m / n,
                ((i + 1) * m).div_ceil(n).max(i * m / n + 1).min(m),
            )
        };
        let mut out = vec![0u8; sw * sh];
        for y in 0..sh {
            let (y0, y1) = span(y, sh, ch);
            for x in 0..sw {
                let (x0, x1) = span(x, sw, cw);
                out[y * sw + x] = (y0..y1)
                    .flat_map(|yy| crop[yy * cw + x0..yy * cw + x1].iter().copied())
                    .max()
                    .unwrap_or(0);
            }
        }
        out
    }

    /// The feather at the model's resolution scaled back to full resolution (at least `feather`).
    pub fn full_feather(&self, feather: usize) -> usize {
        let s = self.scaled[0] as f64 / self.width as f64;
        ((feather as f64 / s).round() as usize).max(feather)
    }

    /// Puts a region's result back: `generated` (RGB8 at the scaled size) is scaled to the
    /// crop, blended into the crop's original pixels with the feathered crop mask, and pasted
    /// into `rgb` (the full image, `image_width` wide). Pixels outside the mask keep their
    /// values exactly.
    /// Puts the region's inpainted result back: `inpainted` is the decoded plan's canvas
    /// (`inpainted_width` pixels a row, padded to whole tokens), of which the `scaled` part is
    /// scaled back and blended into `rgb` (`image_width` pixels a row) with the feathered mask.
    pub fn blend_back(
        &self,
        rgb: &mut [u8],
        image_width: usize,
        mask: &[u8],
        inpainted: &[u8],
        inpainted_width: usize,
        feather: usize,
    ) -> Result<()> {
        let [sw, sh] = self.scaled;
        let generated = pixels::crop(inpainted, inpainted_width, 3, (0, 0), (sw, sh));
        self.composite(rgb, image_width, mask, generated, feather)
    }

    pub fn composite(
        &self,
        rgb: &mut [u8],
        image_width: usize,
        mask: &[u8],
        generated: Vec<u8>,
        feather: usize,
    ) -> Result<()> {
        let [sw, sh] = self.scaled;
        let (cw, ch) = (self.width, self.height);
        let back = crate::pixels::resize::<image::Rgb<u8>>(generated, (sw, sh), (cw, ch))?;
        let crop_rgb = self.crop(rgb, image_width, 3);
        let crop_mask = self.crop(mask, image_width, 1);
        let blended = feathered_blend(
            &crop_rgb,
            &back,
            &crop_mask,
            cw,
            ch,
            self.full_feather(feather),
        )?;
        crate::pixels::paste(rgb, image_width, &blended, cw, ch, self.x, self.y);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_keeps_a_thin_stroke_when_scaled_down() {
        // A one-pixel line across a 400x300 image, region at a 32 px model side.
        let (w, h) = (400, 300);
        let mut mask = vec![0u8; w * h];
        mask[150 * w + 100..150 * w + 300].fill(255);
        let region = Region::around(&mask, w, h, 32, 2).expect("region");
        assert!(region.width >= 200 && region.x <= 100 && region.x + region.width >= 300);
        let small = region.scaled_mask(&mask, w);
        assert_eq!(small.len(), region.scaled[0] * region.scaled[1]);
        let row_hits = small.iter().filter(|&&m| m > 127).count();
        assert!(
            row_hits >= region.scaled[0] / 3,
            "the stroke vanished: {row_hits} pixels"
        );
        assert!(Region::around(&vec![0; w * h], w, h, 32, 2).is_err());
    }
}
