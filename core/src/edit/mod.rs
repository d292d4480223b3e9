//! The one edit pipeline of every front end (the CLI, the app's worker, `arpg eval`):
//! an [`Edit`] of a document (inpaint, outpaint, expand) becomes an [`EditPlan`]: the token
//! canvas to fill, with its known cells as context, and the composite that turns the decoded
//! canvas into the result's pixels. In between, the caller runs the plan's [`CanvasJob`] however
//! it likes (to the end, step by step with previews, cancellable).
//!
//! mask pixels → token mask ([`token_mask`]) → canvas job → decode → composite
//! ([`feathered_blend`] for inpainting, the original pasted back for outpainting).

use serde::{Deserialize, Serialize};

use crate::backend::Transformer;
use crate::canvas::{token_mask, CanvasJob, TokenCanvas};
use crate::error::{Error, Result};
use crate::generator::{OrderMode, Settings};
use crate::order::Order;
use crate::pixels::feathered_blend;
use crate::provenance::Task;

mod region;
mod seams;

pub use region::Region;
use seams::{level_seams, seam_band};

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
                        original: crate::pixels::crop(px, w, 3, (0, 0), (w0, h0)),
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
        model: impl Into<Transformer>,
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
        model: impl Into<Transformer>,
        class: Option<usize>,
        settings: Settings,
        order: OrderMode,
    ) -> Result<CanvasJob> {
        let model: Transformer = model.into();
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
                let rgb = crate::pixels::crop(&decoded, w, 3, (0, 0), (sw, sh));
                let rgb = crate::pixels::pad_edge(&rgb, sw, sh, 3, cols * p, rows * p);
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
                crate::pixels::paste(&mut kept, w, original, *width, *height, *x, *y);
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

#[cfg(test)]
mod tests {
    use super::*;

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
