//! Where outpainted content meets the kept image: the band that is blended and the levelling of
//! the colour step across it.

use crate::canvas::TokenCanvas;

/// Seam levelling (the offset half of gradient-domain blending): along each side of the kept
/// rectangle `[x, y, width, height]` that borders new content, the colour step between the
/// rectangle's last line and the new content's first (smoothed along the side over `smooth` px
/// each way) is taken out of the new content, fully at the border and fading linearly to
/// nothing `band` px into it. What was a step at the border becomes a gradient across the band;
/// the kept rectangle's pixels are not touched. `rgb` is RGB8, `w x h`.
pub(super) fn level_seams(
    rgb: &mut [u8],
    w: usize,
    h: usize,
    keep: [usize; 4],
    band: usize,
    smooth: usize,
) {
    let [x0, y0, kw, kh] = keep;
    let (x1, y1) = ((x0 + kw).min(w), (y0 + kh).min(h));
    if x0 >= x1 || y0 >= y1 || band == 0 || rgb.len() != w * h * 3 {
        return;
    }
    // Each side: whether it borders new content, the kept line and the first new line, the
    // direction into the new content, and whether the side runs along x.
    let sides: [(bool, usize, isize, bool); 4] = [
        (x0 > 0, x0, -1, false),
        (x1 < w, x1 - 1, 1, false),
        (y0 > 0, y0, -1, true),
        (y1 < h, y1 - 1, 1, true),
    ];
    for (borders, kept, dir, along_x) in sides {
        if !borders {
            continue;
        }
        let (a, b) = if along_x { (x0, x1) } else { (y0, y1) };
        let at = |line: usize, i: usize| if along_x { (i, line) } else { (line, i) };
        let first_new = (kept as isize + dir) as usize;
        // The step from the kept line to the first new line, per position along the side.
        let step: Vec<[f32; 3]> = (a..b)
            .map(|i| {
                let (kx, ky) = at(kept, i);
                let (nx, ny) = at(first_new, i);
                std::array::from_fn(|k| {
                    rgb[(ky * w + kx) * 3 + k] as f32 - rgb[(ny * w + nx) * 3 + k] as f32
                })
            })
            .collect();
        let n = step.len();
        let smoothed: Vec<[f32; 3]> = (0..n)
            .map(|j| {
                let (lo, hi) = (j.saturating_sub(smooth), (j + smooth + 1).min(n));
                std::array::from_fn(|k| {
                    step[lo..hi].iter().map(|s| s[k]).sum::<f32>() / (hi - lo) as f32
                })
            })
            .collect();
        let limit = if along_x { h } else { w };
        for t in 0..band {
            let line = kept as isize + dir * (t as isize + 1);
            if line < 0 || line as usize >= limit {
                break;
            }
            let fade = 1.0 - t as f32 / band as f32;
            for (j, offset) in smoothed.iter().enumerate() {
                let (px, py) = at(line as usize, a + j);
                for (k, o) in offset.iter().enumerate() {
                    let v = &mut rgb[(py * w + px) * 3 + k];
                    *v = (*v as f32 + o * fade).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
}

/// One byte per pixel of `canvas` (cells of `patch` px): 255 on its unknown cells and within
/// `band` pixels of them (chessboard distance), 0 elsewhere.
pub(super) fn seam_band(canvas: &TokenCanvas, patch: usize, band: usize) -> Vec<u8> {
    let (w, h) = (canvas.cols * patch, canvas.rows * patch);
    let far = u32::MAX / 2;
    let mut dist: Vec<u32> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            if canvas.get(y / patch, x / patch).is_none() {
                0
            } else {
                far
            }
        })
        .collect();
    // Two passes of a chessboard distance transform.
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut d = dist[i];
            if x > 0 {
                d = d.min(dist[i - 1] + 1);
            }
            if y > 0 {
                d = d.min(dist[i - w] + 1);
                if x > 0 {
                    d = d.min(dist[i - w - 1] + 1);
                }
                if x + 1 < w {
                    d = d.min(dist[i - w + 1] + 1);
                }
            }
            dist[i] = d;
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let i = y * w + x;
            let mut d = dist[i];
            if x + 1 < w {
                d = d.min(dist[i + 1] + 1);
            }
            if y + 1 < h {
                d = d.min(dist[i + w] + 1);
                if x + 1 < w {
                    d = d.min(dist[i + w + 1] + 1);
                }
                if x > 0 {
                    d = d.min(dist[i + w - 1] + 1);
                }
            }
            dist[i] = d;
        }
    }
    dist.iter()
        .map(|&d| if d <= band as u32 { 255 } else { 0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seam_levelling_turns_the_border_step_into_a_gradient() {
        // Kept: the left 8 columns at 100; new: the right 8 at 160.
        let (w, h) = (16, 4);
        let mut rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| if (i / 3) % w < 8 { 100 } else { 160 })
            .collect();
        let before = rgb.clone();
        level_seams(&mut rgb, w, h, [0, 0, 8, 4], 4, 1);
        let px = |x: usize, y: usize| rgb[(y * w + x) * 3];
        for y in 0..h {
            // No step at the border; the new content reaches its own colour after the band.
            assert_eq!(px(7, y), 100);
            assert_eq!(px(8, y), 100);
            assert_eq!(px(10, y), 130);
            assert_eq!(px(12, y), 160);
            assert_eq!(px(15, y), 160);
        }
        // The kept pixels are never touched.
        for (i, (a, b)) in rgb.iter().zip(&before).enumerate() {
            if (i / 3) % w < 8 {
                assert_eq!(a, b);
            }
        }
        // Nothing borders new content: nothing changes.
        let mut same = before.clone();
        level_seams(&mut same, w, h, [0, 0, 16, 4], 4, 1);
        assert_eq!(same, before);
    }
}
