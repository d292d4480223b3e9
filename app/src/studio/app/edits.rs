//! Commands that become jobs: generate, the edits of the core's pipeline (inpaint, outpaint,
//! expand, re-roll) and region inpainting.

use super::*;

impl StudioApp {
    pub(super) fn start_generate(&mut self) {
        let batch = self.settings.batch.max(1);
        let base = self.settings.settings.clone();
        let order = self.settings.order;
        let jobs = (0..batch)
            .map(|i| {
                // Candidate i is the single image of image_seed(seed, i), as in the CLI.
                let mut s = base.clone();
                s.seed = sampler::image_seed(base.seed, i as u64);
                let place = (batch > 1).then_some(BatchPlace {
                    seed: base.seed,
                    index: i,
                });
                let mut job =
                    self.new_job(JobKind::Generate { batch: place }, "Generate", s, order);
                job.priority = self.painted_priority(self.model.as_ref().map_or(0, |m| m.grid));
                job
            })
            .collect();
        self.submit(jobs);
    }

    /// Plans an edit of the current document with the core's edit pipeline and submits it.
    pub(super) fn start_edit(&mut self, edit: Edit, label: &str) {
        let Some(doc) = self.doc.clone() else {
            self.errors
                .push("Nothing to edit: generate or open an image first.".into());
            return;
        };
        let p = self.patch();
        let source = Source {
            canvas: &doc.canvas,
            rgb: Some(&doc.rgb),
            size: doc.size,
            patch: p,
        };
        let plan = match edit.plan(source) {
            Ok(plan) => plan,
            Err(e) => return self.errors.push(e.to_string()),
        };
        let settings = self.settings.settings.clone();
        let order = self.settings.order;
        let (rows, cols) = (plan.canvas.rows, plan.canvas.cols);
        let mut job = self.new_job(JobKind::Edit(Box::new(plan)), label, settings, order);
        job.priority = self.priority.for_canvas(rows, cols);
        self.submit(vec![job]);
    }

    /// Whether the next job decodes its partial canvas for the live preview.
    pub fn live_decode(&self) -> bool {
        // Not measured yet: Auto keeps the tiles until it is.
        let decode_ms = self
            .model
            .as_ref()
            .and_then(|m| m.decode_ms)
            .unwrap_or(f64::MAX);
        self.tools.live_preview.decodes(decode_ms)
    }

    /// The painted priorities when they cover a `grid x grid` canvas.
    pub(super) fn painted_priority(&self, grid: usize) -> Option<Vec<u8>> {
        self.priority.for_canvas(grid, grid)
    }

    pub(super) fn start_inpaint(&mut self) {
        if !self.mask.pixels.iter().any(|&m| m > 127) {
            self.errors
                .push("Paint the area to regenerate first (the mask is empty).".into());
            return;
        }
        // A document above the working size (opened at full size) is inpainted by region: the
        // mask's box plus context at the model's resolution, every other pixel kept.
        let limit = self.model.as_ref().map_or(0, |m| m.working_limit);
        if let Some(doc) = self.doc.clone() {
            let p = self.patch();
            let side = doc.canvas.rows.max(doc.canvas.cols) * p;
            if limit > 0 && side > limit {
                let kind = JobKind::InpaintRegion {
                    canvas: doc.canvas,
                    rgb: doc.rgb,
                    mask: self.mask.pixels.clone(),
                    options: self.settings.mask,
                    size: doc.size,
                };
                let (settings, order) = (self.settings.settings.clone(), self.settings.order);
                let job = self.new_job(kind, "Inpaint region", settings, order);
                return self.submit(vec![job]);
            }
        }
        let edit = Edit::Inpaint {
            mask: self.mask.pixels.clone(),
            options: self.settings.mask,
        };
        self.start_edit(edit, "Inpaint");
    }

    /// Draws again the least confident share of the cells the latest run decided, with every
    /// other token as context: an inpaint whose mask is exactly those cells.
    pub(super) fn start_reroll(&mut self) {
        let Some(doc) = self.doc.as_ref() else {
            return;
        };
        let (rows, cols) = (doc.canvas.rows, doc.canvas.cols);
        let canvas = doc.canvas.cells.clone();
        self.cell_map.keep_matching(rows, cols, &canvas);
        let cells = self.cell_map.least_confident(self.tools.reroll_share);
        if cells.is_empty() {
            self.errors.push(
                "Nothing to re-roll: this image has no recorded confidences (generate or edit \
                 it here first)."
                    .into(),
            );
            return;
        }
        self.reroll_cells(&cells, "Re-roll");
    }

    /// Draws again exactly the cells the mask covers more than half of (the cell picker masks
    /// whole cells), with every other token as context.
    pub(super) fn start_reroll_masked(&mut self) {
        let Some(doc) = self.doc.as_ref() else {
            return;
        };
        let (rows, cols) = (doc.canvas.rows, doc.canvas.cols);
        let p = self.patch();
        let picked = canvas::token_mask(
            &self.mask.pixels,
            self.mask.width,
            self.mask.height,
            p,
            0.5,
            0,
        );
        let cells: Vec<(usize, usize)> = match picked {
            Ok(m) if m.len() == rows * cols => (0..rows * cols)
                .filter(|&i| m[i])
                .map(|i| (i / cols, i % cols))
                .collect(),
            _ => Vec::new(),
        };
        if cells.is_empty() {
            self.errors.push(
                "Nothing to re-roll: pick cells with the cell picker (K) or paint over more \
                 than half of a cell."
                    .into(),
            );
            return;
        }
        self.reroll_cells(&cells, "Re-roll cells");
    }

    /// An inpaint whose mask is exactly `cells` (every pixel of each, none of any other), with
    /// no feather: the new cells' pixels are shown whole, as their tokens decode.
    pub(super) fn reroll_cells(&mut self, cells: &[(usize, usize)], label: &str) {
        let Some(doc) = self.doc.as_ref() else {
            return;
        };
        let (rows, cols) = (doc.canvas.rows, doc.canvas.cols);
        let p = self.patch();
        let width = cols * p;
        let mut mask = vec![0u8; width * rows * p];
        for &(r, c) in cells {
            for y in r * p..(r + 1) * p {
                mask[y * width + c * p..y * width + (c + 1) * p].fill(255);
            }
        }
        let edit = Edit::Inpaint {
            mask,
            options: MaskOptions {
                threshold: 0.5,
                dilate: 0,
                feather: 0,
            },
        };
        self.start_edit(edit, label);
    }

    /// The cells the hovered Outpaint button would add on each side `[left, right, top,
    /// bottom]` (the canvas' outline shows them), or `None`.
    pub fn outpaint_cells(&self) -> Option<[usize; 4]> {
        let cells = self.settings.outpaint_px.div_ceil(self.patch()).max(1);
        self.outpaint_hover
            .filter(|_| self.doc.is_some() && self.running.is_none())
            .map(|sides| sides.map(|s| s * cells))
    }

    pub(super) fn start_outpaint(&mut self, sides: [usize; 4]) {
        let cells = self.settings.outpaint_px.div_ceil(self.patch()).max(1);
        let label = match sides {
            [1, ..] => "Outpaint left",
            [_, 1, ..] => "Outpaint right",
            [_, _, 1, _] => "Outpaint top",
            _ => "Outpaint bottom",
        };
        let edit = Edit::Outpaint {
            cells: sides.map(|s| s * cells),
        };
        self.start_edit(edit, label);
    }

    pub(super) fn start_expand(&mut self) {
        self.start_edit(Edit::Expand, "Expand");
    }
}
