//! Pixel operations on interleaved 8-bit images (`channels` bytes per pixel, row-major): crop,
//! paste, padding to whole tokens, resizing and the feathered blend of an inpainting composite.
//! Every module that touches pixels (the document, the edit pipeline, the tokenizer's tiles,
//! the model pair's import scaling) uses these, so each rule exists once.

use image::imageops::FilterType;

use crate::error::{Error, Result};

/// Copies a `w x h` RGB8 image into `dst` (row width `dst_width` pixels) at pixel `(x0, y0)`.
pub fn paste(
    dst: &mut [u8],
    dst_width: usize,
    src: &[u8],
    w: usize,
    h: usize,
    x0: usize,
    y0: usize,
) {
    for y in 0..h {
        let d = ((y0 + y) * dst_width + x0) * 3;
        dst[d..d + w * 3].copy_from_slice(&src[y * w * 3..(y + 1) * w * 3]);
    }
}

/// The `w x h` region at `(x0, y0)` of an image with `channels` bytes per pixel.
pub fn crop(
    px: &[u8],
    width: usize,
    channels: usize,
    (x0, y0): (usize, usize),
    (w, h): (usize, usize),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * channels);
    for y in y0..y0 + h {
        out.extend_from_slice(&px[(y * width + x0) * channels..(y * width + x0 + w) * channels]);
    }
    out
}

/// A one-byte-per-pixel mask padded right and bottom with zeros (keep) to `new_w x new_h`.
pub fn pad_zero(px: &[u8], width: usize, height: usize, new_w: usize, new_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; new_w * new_h];
    for y in 0..height.min(new_h) {
        let n = width.min(new_w);
        out[y * new_w..y * new_w + n].copy_from_slice(&px[y * width..y * width + n]);
    }
    out
}

/// Pads an image (`channels` bytes per pixel) right and bottom to `new_w x new_h` by repeating
/// its last column and row, so a size that is not a whole number of tokens loses no pixel.
pub fn pad_edge(
    px: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(new_w * new_h * channels);
    for y in 0..new_h {
        let row = &px[y.min(height - 1) * width * channels..][..width * channels];
        out.extend_from_slice(row);
        let last = &row[(width - 1) * channels..];
        for _ in width..new_w {
            out.extend_from_slice(last);
        }
    }
    out
}

/// An 8-bit image of pixel type `P` (`Luma<u8>`, `Rgb<u8>`) resized with a triangle filter;
/// unchanged when the sizes agree.
pub fn resize<P: image::Pixel<Subpixel = u8> + 'static>(
    px: Vec<u8>,
    from: (usize, usize),
    to: (usize, usize),
) -> Result<Vec<u8>> {
    if from == to {
        return Ok(px);
    }
    let m = image::ImageBuffer::<P, Vec<u8>>::from_raw(from.0 as u32, from.1 as u32, px)
        .ok_or_else(|| Error::Internal("image buffer size".into()))?;
    Ok(image::imageops::resize(&m, to.0 as u32, to.1 as u32, FilterType::Triangle).into_raw())
}

/// Composites a generated image into the original: pixels outside the mask stay exactly the
/// original, masked pixels take the generated image, and a band of `feather` pixels inside the
/// mask edge blends the two linearly. Images are interleaved RGB8, the mask one byte per pixel.
pub fn feathered_blend(
    original: &[u8],
    generated: &[u8],
    mask: &[u8],
    width: usize,
    height: usize,
    feather: usize,
) -> Result<Vec<u8>> {
    let n = width * height;
    if original.len() != n * 3 || generated.len() != n * 3 || mask.len() != n {
        return Err(Error::Internal("blend inputs differ in size".into()));
    }
    // Chessboard distance of each masked pixel to the nearest unmasked one (two-pass sweep).
    let big = u32::MAX / 2;
    let mut dist: Vec<u32> = mask
        .iter()
        .map(|&m| if m > 127 { big } else { 0 })
        .collect();
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            for (dx, dy) in [(-1isize, 0isize), (0, -1), (-1, -1), (1, -1)] {
                let (xx, yy) = (x as isize + dx, y as isize + dy);
                if xx >= 0 && yy >= 0 && (xx as usize) < width {
                    dist[i] = dist[i].min(dist[yy as usize * width + xx as usize] + 1);
                }
            }
        }
    }
    for y in (0..height).rev() {
        for x in (0..width).rev() {
            let i = y * width + x;
            for (dx, dy) in [(1isize, 0isize), (0, 1), (1, 1), (-1, 1)] {
                let (xx, yy) = (x as isize + dx, y as isize + dy);
                if xx >= 0 && (xx as usize) < width && (yy as usize) < height {
                    dist[i] = dist[i].min(dist[yy as usize * width + xx as usize] + 1);
                }
            }
        }
    }
    let mut out = original.to_vec();
    for i in 0..n {
        if dist[i] == 0 {
            continue;
        }
        // A mask with no unmasked pixel at all has every distance `big`: alpha 1.
        let alpha = if feather == 0 {
            1.0
        } else {
            (dist[i] as f32 / (feather + 1) as f32).min(1.0)
        };
        for k in 0..3 {
            let (o, g) = (original[i * 3 + k] as f32, generated[i * 3 + k] as f32);
            out[i * 3 + k] = (o + (g - o) * alpha).round() as u8;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_repeats_the_edge_and_crop_undoes_it() {
        let px: Vec<u8> = (0..6).collect(); // 3x2, one channel
        let padded = pad_edge(&px, 3, 2, 1, 4, 4);
        assert_eq!(padded, vec![0, 1, 2, 2, 3, 4, 5, 5, 3, 4, 5, 5, 3, 4, 5, 5]);
        assert_eq!(crop(&padded, 4, 1, (0, 0), (3, 2)), px);
    }
}
