//! The one edit pipeline of every front end (the CLI, the app's worker, `arpg eval`):
//! an [`Edit`] of a document (inpaint, outpaint, expand) becomes an [`EditPlan`]: the token
//! canvas to fill, with its known cells as context, and the composite that turns the decoded
//! canvas into the result's pixels. In between, the caller runs the plan's [`CanvasJob`] however
//! it likes (to the end, step by step with previews, cancellable).
//!
//! mask pixels → token mask ([`token_mask`]) → canvas job → decode → composite
//! ([`feathered_blend`] for inpainting, the original pasted back for outpainting).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::generator::{OrderMode, Settings};
use crate::model::Arpg;
use crate::tasks::{feathered_blend, token_mask, CanvasJob, TokenCanvas};

/// How a painted pixel mask becomes the cells to regenerate and how the result is blended in;
/// the same options in the CLI (`--threshold --dilate --feather`) and the app's settings panel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskOptions {
    /// Share of a token's pixels that must be masked for it to be regenerated, in `[0, 1)`
    /// (0: any masked pixel).
    pub threshold: f32,
    /// Grow the token mask by this many cells.
    pub dilate: usize,
    /// Width in pixels of the blended band inside the mask edge (0: a hard edge).
    pub feather: usize,
}

impl Default for MaskOptions {
    fn default() -> Self {
        Self {
            threshold: 0.0,
            dilate: 0,
            feather: 2,
        }
    }
}

impl MaskOptions {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.threshold) {
            return Err(Error::InvalidRequest(format!(
                "mask threshold {} must be within [0, 1)",
                self.threshold
            )));
        }
        if self.dilate > 64 || self.feather > 256 {
            return Err(Error::InvalidRequest(format!(
                "mask dilation {} (at most 64 cells) or feather {} (at most 256 px) is too large",
                self.dilate, self.feather
            )));
        }
        Ok(())
    }
}

/// The order in which a job's unknown cells are generated, as users choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// A fresh random permutation (what the model was trained on).
    #[default]
    Random,
    /// Row by row.
    Raster,
    /// Cells nearest the known content first, random among equals (edits grow from their
    /// context); the same as random when nothing is known.
    NearKnown,
}

impl Order {
    pub const ALL: [Order; 3] = [Order::Random, Order::Raster, Order::NearKnown];

    pub fn name(self) -> &'static str {
        match self {
            Order::Random => "random",
            Order::Raster => "raster",
            Order::NearKnown => "near-known",
        }
    }

    /// The sampler's order for `canvas` (whose known cells the near-known order grows from).
    pub fn mode(self, canvas: &TokenCanvas) -> OrderMode {
        match self {
            Order::Random => OrderMode::Random,
            Order::Raster => OrderMode::Raster,
            Order::NearKnown if canvas.unknown_count() < canvas.cells.len() => {
                OrderMode::Priority(near_known_priority(canvas))
            }
            Order::NearKnown => OrderMode::Random,
        }
    }
}

impl std::str::FromStr for Order {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Order::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "unknown order `{s}` (expected random, raster or near-known)"
                ))
            })
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Priority levels for [`Order::NearKnown`]: 255 minus the 4-neighbour distance of each cell to
/// the nearest known cell (known cells 255).
pub fn near_known_priority(canvas: &TokenCanvas) -> Vec<u8> {
    let (rows, cols) = (canvas.rows, canvas.cols);
    let mut dist = vec![u32::MAX; rows * cols];
    let mut queue = std::collections::VecDeque::new();
    for (i, cell) in canvas.cells.iter().enumerate() {
        if cell.is_some() {
            dist[i] = 0;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let (r, c) = (i / cols, i % cols);
        let near = [
            (r > 0).then(|| i - cols),
            (r + 1 < rows).then(|| i + cols),
            (c > 0).then(|| i - 1),
            (c + 1 < cols).then(|| i + 1),
        ];
        for j in near.into_iter().flatten() {
            if dist[j] == u32::MAX {
                dist[j] = dist[i] + 1;
                queue.push_back(j);
            }
        }
    }
    dist.iter()
        .map(|&d| 255u32.saturating_sub(d.min(255)) as u8)
        .collect()
}

/// The kind of work that made an image (recorded in its provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Generate,
    Inpaint,
    Outpaint,
    Expand,
    /// A generation paused, edited (cells erased) and resumed: its tokens depend on the paused
    /// state, so its metadata alone cannot make it again.
    Resume,
}

/// An edit of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Regenerate where `mask` is set: one byte per pixel of the document's canvas
    /// (`cols·patch x rows·patch`), `> 127` = regenerate.
    Inpaint { mask: Vec<u8>, options: MaskOptions },
    /// Extend the canvas by whole cells `[left, right, top, bottom]` and fill them.
    Outpaint { cells: [usize; 4] },
    /// Twice the cells per side, the existing tokens as context on its lattice.
    Expand,
}

/// The document an edit starts from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Every cell known.
    pub canvas: &'a TokenCanvas,
    /// The canvas's pixels, RGB8 `cols·patch x rows·patch`; `None` when only tokens matter (the
    /// evaluation judges decoded tokens), then the result is the decoded canvas.
    pub rgb: Option<&'a [u8]>,
    /// `[width, height]` of the image the canvas stands for: at most its pixels (the rest is
    /// padding, filled, never shown).
    pub size: [usize; 2],
    /// Pixels per token side.
    pub patch: usize,
}

/// What an edit generates and how its result is put together (see the module docs).
#[derive(Debug, Clone)]
pub struct EditPlan {
    pub task: Task,
    /// The canvas to fill: known cells are context, `None` cells are generated.
    pub canvas: TokenCanvas,
    /// `[width, height]` of the result in pixels (at most the filled canvas's pixels).
    pub size: [usize; 2],
    patch: usize,
    composite: Composite,
}

#[derive(Debug, Clone)]
enum Composite {
    /// The decoded canvas as it is (cropped to the cells of `keep` rows x cols for expansion).
    Decoded { keep: Option<(usize, usize)> },
    /// Inpainting: the original outside the mask, a feathered band inside its edge.
    Blend {
        original: Vec<u8>,
        mask: Vec<u8>,
        feather: usize,
    },
    /// Outpainting: the original's pixels (`width x height`) pasted back at pixel `(x, y)`.
    Paste {
        original: Vec<u8>,
        width: usize,
        height: usize,
        x: usize,
        y: usize,
    },
}

/// An edit's result: every cell of `canvas` decided, `rgb` its composited pixels
/// (`cols·patch x rows·patch`, the part beyond `size` being padding).
#[derive(Debug, Clone)]
pub struct Edited {
    pub canvas: TokenCanvas,
    pub rgb: Vec<u8>,
    pub size: [usize; 2],
}

impl Edit {
    pub fn task(&self) -> Task {
        match self {
            Edit::Inpaint { .. } => Task::Inpaint,
            Edit::Outpaint { .. } => Task::Outpaint,
            Edit::Expand => Task::Expand,
        }
    }

    /// The plan of this edit of `source`; errors name what the user must change (an empty
    /// mask, a mask of another size, nothing to extend).
    pub fn plan(&self, source: Source<'_>) -> Result<EditPlan> {
        let Source {
            canvas,
            rgb,
            size: [w0, h0],
            patch: p,
        } = source;
        let (w, h) = (canvas.cols * p, canvas.rows * p);
        if canvas.unknown_count() > 0 || w0 > w || h0 > h || w0 + p <= w || h0 + p <= h {
            return Err(Error::Internal(format!(
                "an edit's source must be a whole canvas covering its {w0}x{h0} image ({w}x{h} \
                 px of {p}px tokens)"
            )));
        }
        if rgb.is_some_and(|px| px.len() != w * h * 3) {
            return Err(Error::Internal(
                "an edit's source pixels do not fit its canvas".into(),
            ));
        }
        let (pad_x, pad_y) = (w - w0, h - h0);
        let plan = |canvas, size, composite| EditPlan {
            task: self.task(),
            canvas,
            size,
            patch: p,
            composite,
        };
        match self {
            Edit::Inpaint { mask, options } => {
                options.validate()?;
                if mask.len() != w * h {
                    return Err(Error::InvalidRequest(format!(
                        "the mask has {} pixels; the canvas has {w}x{h}",
                        mask.len()
                    )));
                }
                // The padding is kept, never regenerated.
                let mut mask = mask.clone();
                for (i, m) in mask.iter_mut().enumerate() {
                    if i % w >= w0 || i / w >= h0 {
                        *m = 0;
                    }
                }
                let cells = token_mask(&mask, w, h, p, options.threshold, options.dilate)?;
                if !cells.iter().any(|&c| c) {
                    return Err(Error::InvalidRequest(
                        "the mask covers no token: paint the area to regenerate in white (or \
                         opaque, when the mask has transparency)"
                            .into(),
                    ));
                }
                let composite = match rgb {
                    // Blend only where the mask says; the token mask may be wider.
                    Some(px) => Composite::Blend {
                        original: px.to_vec(),
                        mask,
                        feather: options.feather,
                    },
                    None => Composite::Decoded { keep: None },
                };
                Ok(plan(canvas.with_unknown(&cells)?, [w0, h0], composite))
            }
            Edit::Outpaint {
                cells: [l, r, t, b],
            } => {
                let [l, r, t, b] = [*l, *r, *t, *b];
                if l + r + t + b == 0 {
                    return Err(Error::InvalidRequest(
                        "nothing to extend: give at least one side".into(),
                    ));
                }
                let (rows0, cols0) = (canvas.rows, canvas.cols);
                let mut extended = canvas.extended(l, r, t, b);
                let cols = extended.cols;
                // A partly padded edge cell on a side being extended is generated with the
                // extension (the image's own pixels in it are pasted back); on other sides the
                // padding is cropped away.
                for (i, cell) in extended.cells.iter_mut().enumerate() {
                    let (row, col) = (i / cols, i % cols);
                    let inside = row >= t && row < t + rows0 && col >= l && col < l + cols0;
                    let last_col = col + 1 == l + cols0;
                    let last_row = row + 1 == t + rows0;
                    if inside
                        && ((pad_x > 0 && r > 0 && last_col) || (pad_y > 0 && b > 0 && last_row))
                    {
                        *cell = None;
                    }
                }
                let width = extended.cols * p - if r == 0 { pad_x } else { 0 };
                let height = extended.rows * p - if b == 0 { pad_y } else { 0 };
                let composite = match rgb {
                    Some(px) => Composite::Paste {
                        original: crate::document::crop(px, w, 3, (0, 0), (w0, h0)),
                        width: w0,
                        height: h0,
                        x: l * p,
                        y: t * p,
                    },
                    None => Composite::Decoded { keep: None },
                };
                Ok(plan(extended, [width, height], composite))
            }
            Edit::Expand => {
                // Twice the image's own size; cell rows and columns wholly in the padding go.
                let (w2, h2) = (2 * w0, 2 * h0);
                let keep = Some((h2.div_ceil(p), w2.div_ceil(p)));
                Ok(plan(
                    canvas.spread(2),
                    [w2, h2],
                    Composite::Decoded { keep },
                ))
            }
        }
    }
}

impl EditPlan {
    /// Unknown cells the job generates.
    pub fn unknown(&self) -> usize {
        self.canvas.unknown_count()
    }

    /// The canvas job that fills the plan's canvas (see [`CanvasJob::new`]).
    pub fn job(
        &self,
        model: &Arpg,
        class: Option<usize>,
        settings: Settings,
        order: Order,
    ) -> Result<CanvasJob> {
        self.job_ordered(model, class, settings, order.mode(&self.canvas))
    }

    /// [`EditPlan::job`] with an explicit sampler order (a painted priority map over the plan's
    /// canvas, for one).
    pub fn job_ordered(
        &self,
        model: &Arpg,
        class: Option<usize>,
        settings: Settings,
        order: OrderMode,
    ) -> Result<CanvasJob> {
        let g = model.config().grid_size();
        if self.canvas.rows < g || self.canvas.cols < g {
            return Err(Error::InvalidRequest(format!(
                "the canvas ({}x{} tokens) is smaller than the model's {g}x{g} grid: extend \
                 further",
                self.canvas.rows, self.canvas.cols
            )));
        }
        CanvasJob::new(model, self.canvas.clone(), class, settings, order)
    }

    /// The result from the filled canvas and its decoded pixels (`cols·patch x rows·patch`).
    pub fn finish(&self, filled: TokenCanvas, decoded: Vec<u8>) -> Result<Edited> {
        let p = self.patch;
        let (w, h) = (filled.cols * p, filled.rows * p);
        if decoded.len() != w * h * 3
            || (filled.rows, filled.cols) != (self.canvas.rows, self.canvas.cols)
        {
            return Err(Error::Internal(
                "the decoded canvas does not fit the edit".into(),
            ));
        }
        let (canvas, rgb) = match &self.composite {
            Composite::Decoded { keep: None } => (filled, decoded),
            Composite::Decoded {
                keep: Some((rows, cols)),
            } => {
                let [sw, sh] = self.size;
                let rgb = crate::document::crop(&decoded, w, 3, (0, 0), (sw, sh));
                let rgb = crate::document::pad_edge(&rgb, sw, sh, 3, cols * p, rows * p);
                (filled.cropped(*rows, *cols), rgb)
            }
            Composite::Blend {
                original,
                mask,
                feather,
            } => {
                let rgb = feathered_blend(original, &decoded, mask, w, h, *feather)?;
                (filled, rgb)
            }
            Composite::Paste {
                original,
                width,
                height,
                x,
                y,
            } => {
                // The original's pixels, except across a band of one token inside its border
                // with the new content, where the decoded canvas blends into them (feathered):
                // the decoder's own edge and the original meet gradually, not at a hard seam.
                let mut kept = decoded.clone();
                crate::document::paste(&mut kept, w, original, *width, *height, *x, *y);
                let band = seam_band(&self.canvas, p, 2 * p);
                let mut rgb = feathered_blend(&kept, &decoded, &band, w, h, 2 * p)?;
                level_seams(&mut rgb, w, h, [*x, *y, *width, *height], 2 * p, p / 4);
                (filled, rgb)
            }
        };
        Ok(Edited {
            canvas,
            rgb,
            size: self.size,
        })
    }
}

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
        crate::document::crop(
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
        let back = crate::pair::resize::<image::Rgb<u8>>(generated, (sw, sh), (cw, ch))?;
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
        crate::document::paste(rgb, image_width, &blended, cw, ch, self.x, self.y);
        Ok(())
    }
}

/// Seam levelling (the offset half of gradient-domain blending): along each side of the kept
/// rectangle `[x, y, width, height]` that borders new content, the colour step between the
/// rectangle's last line and the new content's first (smoothed along the side over `smooth` px
/// each way) is taken out of the new content, fully at the border and fading linearly to
/// nothing `band` px into it. What was a step at the border becomes a gradient across the band;
/// the kept rectangle's pixels are not touched. `rgb` is RGB8, `w x h`.
fn level_seams(rgb: &mut [u8], w: usize, h: usize, keep: [usize; 4], band: usize, smooth: usize) {
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
fn seam_band(canvas: &TokenCanvas, patch: usize, band: usize) -> Vec<u8> {
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

    #[test]
    fn near_known_grows_from_the_known_cells() {
        let mut canvas = TokenCanvas::empty(1, 4);
        canvas.cells[0] = Some(1);
        assert_eq!(near_known_priority(&canvas), vec![255, 254, 253, 252]);
        assert_eq!(
            Order::NearKnown.mode(&TokenCanvas::empty(2, 2)),
            OrderMode::Random
        );
        assert_eq!("near-known".parse::<Order>().ok(), Some(Order::NearKnown));
        assert!("zigzag".parse::<Order>().is_err());
    }

    #[test]
    fn the_feather_softens_the_inpainting_composite() {
        // The right half of a 16x4 image (4 px cells) is masked; original 0, decoded 200.
        let canvas = TokenCanvas::from_tokens(1, 4, &[1, 2, 3, 4]).expect("test");
        let rgb = vec![0u8; 16 * 4 * 3];
        let mask: Vec<u8> = (0..16 * 4)
            .map(|i| if i % 16 >= 8 { 255 } else { 0 })
            .collect();
        let source = Source {
            canvas: &canvas,
            rgb: Some(&rgb),
            size: [16, 4],
            patch: 4,
        };
        let row = |feather: usize| -> Vec<u8> {
            let edit = Edit::Inpaint {
                mask: mask.clone(),
                options: MaskOptions {
                    threshold: 0.5,
                    dilate: 0,
                    feather,
                },
            };
            let plan = edit.plan(source).expect("test");
            let filled = TokenCanvas::from_tokens(1, 4, &[1, 2, 8, 9]).expect("test");
            let done = plan.finish(filled, vec![200; 16 * 4 * 3]).expect("test");
            (0..16).map(|x| done.rgb[(16 + x) * 3]).collect()
        };
        // No feather: a hard step at the mask's edge.
        assert_eq!(&row(0)[6..10], &[0, 0, 200, 200]);
        // A feather of 4 px: a ramp inside the mask, the unmasked side untouched.
        let soft = row(4);
        assert_eq!(&soft[..8], &[0; 8]);
        assert!(
            soft[8] > 0 && soft[8] < soft[9] && soft[9] < soft[10] && soft[11] <= 200,
            "{soft:?}"
        );
        assert_eq!(soft[15], 200);
    }

    #[test]
    fn inpainting_plans_only_the_masked_cells_and_keeps_the_rest_exact() {
        let canvas = TokenCanvas::from_tokens(2, 2, &[1, 2, 3, 4]).expect("test");
        let rgb: Vec<u8> = (0..4 * 4 * 3).map(|i| i as u8).collect();
        let mut mask = vec![0u8; 16];
        mask[0] = 255; // one pixel of cell (0, 0)
        let source = Source {
            canvas: &canvas,
            rgb: Some(&rgb),
            size: [4, 4],
            patch: 2,
        };
        let edit = Edit::Inpaint {
            mask,
            options: MaskOptions {
                feather: 0,
                ..Default::default()
            },
        };
        let plan = edit.plan(source).expect("test");
        assert_eq!(plan.canvas.cells, vec![None, Some(2), Some(3), Some(4)]);
        let filled = TokenCanvas::from_tokens(2, 2, &[9, 2, 3, 4]).expect("test");
        let done = plan.finish(filled, vec![200; 48]).expect("test");
        assert_eq!(&done.rgb[..3], &[200, 200, 200]);
        assert_eq!(
            &done.rgb[3..],
            &rgb[3..],
            "unmasked pixels are the original's"
        );
        let empty = Edit::Inpaint {
            mask: vec![0; 16],
            options: MaskOptions::default(),
        };
        assert!(empty.plan(source).is_err());
    }

    #[test]
    fn outpainting_keeps_the_original_beyond_a_blended_band_and_expansion_doubles_the_size() {
        // A 1x4-cell original (2 px cells), one new cell on its left.
        let canvas = TokenCanvas::from_tokens(1, 4, &[5, 5, 5, 5]).expect("test");
        let rgb = vec![200u8; 8 * 2 * 3];
        let source = Source {
            canvas: &canvas,
            rgb: Some(&rgb),
            size: [8, 2],
            patch: 2,
        };
        let plan = Edit::Outpaint {
            cells: [1, 0, 0, 0],
        }
        .plan(source)
        .expect("test");
        assert_eq!(plan.canvas.cells[0], None);
        assert_eq!(plan.size, [10, 2]);
        let done = plan
            .finish(
                TokenCanvas::from_tokens(1, 5, &[6, 5, 5, 5, 5]).expect("test"),
                vec![0; 10 * 2 * 3],
            )
            .expect("test");
        let px = |x: usize| done.rgb[x * 3];
        // New content is the decoded canvas, levelled to meet the kept border without a step
        // and fading back towards its own colour away from it.
        assert_eq!(px(1), px(2), "a step at the border");
        assert!(px(0) < px(1), "the levelling does not fade");
        // Two cells (4 px) inside the old border blend from the decoded canvas to the original.
        assert!(
            px(2) < px(3) && px(3) < px(4) && px(4) < px(5),
            "a ramp, not a step"
        );
        for x in 6..10 {
            assert_eq!(px(x), 200, "original pixel {x} kept beyond the band");
        }
        let source = Source {
            canvas: &canvas,
            rgb: Some(&rgb),
            size: [8, 2],
            patch: 2,
        };
        let plan = Edit::Expand.plan(source).expect("test");
        assert_eq!(
            (plan.canvas.rows, plan.canvas.cols, plan.size),
            (2, 8, [16, 4])
        );
    }
}
