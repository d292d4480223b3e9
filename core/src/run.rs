//! A run: one generation or one canvas job, from its request to the image it makes.
//!
//! [`Run`] owns the sampler's work (a [`Generation`] of a fresh grid, or the [`CanvasJob`] of an
//! [`EditPlan`]), reports one kind of progress per [`Run::step`] (every cell decided in the step,
//! with its token, probability, step and whether it was a revision: what the app's cell map and
//! replay record), and [`Run::finish`] returns the made images with everything a PNG records
//! ([`Made`]: class, settings, provenance, the user's size). The CLI and the app's worker each
//! keep one loop over it; the metadata is written in one place ([`Made::metadata`]).
//!
//! ```text
//! Run::generate / Run::edit / Run::resume ─► step()… (Progress) ─► finish(models) ─► Made ─► PNG
//! ```

use crate::canvas::{CanvasJob, TokenCanvas};
use crate::document::Metadata;
use crate::edit::EditPlan;
use crate::error::{Error, Result};
use crate::generator::{Generation, KnownCells, OrderMode, Request, Settings};
use crate::order::Order;
use crate::pair::ModelPair;
use crate::provenance::{BatchPlace, Provenance, Task};
use crate::sampler;

/// A cell decided (or drawn again) in one step of a run, on the run's canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decided {
    pub row: usize,
    pub col: usize,
    pub token: u32,
    /// The drawn token's probability under the processed distribution.
    pub probability: f32,
    /// The 0-based step that decided it (in a canvas job, the step of its wave).
    pub step: usize,
    /// Decided before and drawn again (settling, polishing).
    pub revision: bool,
}

/// What one step of a run did. For a batch, `decided` is image 0's.
#[derive(Debug, Clone)]
pub struct Progress {
    pub decided: Vec<Decided>,
    /// 0-based step, and the steps of the current generation (a canvas job's current wave).
    pub step: usize,
    pub total_steps: usize,
    /// Unknown cells left on the run's canvas.
    pub remaining: usize,
    /// For a canvas job: the index of the wave's first window and the wave's window count.
    pub windows: Option<(usize, usize)>,
}

/// The sampler's order for `canvas`: painted priorities when they cover it cell for cell,
/// else the order's own.
pub fn order_mode(order: Order, priority: Option<&[u8]>, canvas: &TokenCanvas) -> OrderMode {
    match priority.filter(|p| p.len() == canvas.cells.len()) {
        Some(levels) => OrderMode::Priority(levels.to_vec()),
        None => order.mode(canvas),
    }
}

enum Work {
    Generation(Box<Generation>),
    Canvas { job: Box<CanvasJob>, plan: EditPlan },
}

/// One generation or canvas job (see the module docs).
pub struct Run {
    work: Work,
    /// Class per image (one for a canvas job).
    classes: Vec<Option<usize>>,
    /// The provenance every image of the run shares (batch places are added per image).
    provenance: Provenance,
    /// Cells of the canvas (`rows x cols`).
    rows: usize,
    cols: usize,
}

/// An image a run made: its canvas (every cell decided unless the run was stopped), its pixels
/// (empty when cells are undecided), the user's size and what made it.
#[derive(Debug, Clone)]
pub struct Made {
    pub canvas: TokenCanvas,
    /// RGB8, `cols·patch x rows·patch` (the part beyond `size` is padding); empty when the run
    /// was stopped before every cell was decided.
    pub rgb: Vec<u8>,
    /// `[width, height]` of the image: at most the canvas's pixels.
    pub size: [usize; 2],
    pub class: Option<usize>,
    /// What the run actually used (a batch image's own seed; a fork's own seed).
    pub settings: Settings,
    pub provenance: Provenance,
}

impl Made {
    /// The PNG metadata of this image made by `models` (the tokens, class, settings, provenance
    /// and the identities of the tokenizer and of the transformer that sampled them).
    pub fn metadata(&self, models: &ModelPair) -> Result<Metadata> {
        let mut meta = models.metadata(&self.canvas, self.class, Some(&self.settings))?;
        meta.provenance = Some(self.provenance.clone());
        meta.transformer = Some(models.arpg.identity.clone());
        Ok(meta)
    }

    /// The pixels cropped to the user's size (`size`).
    pub fn pixels(&self, patch: usize) -> Vec<u8> {
        let (pw, ph) = (self.canvas.cols * patch, self.canvas.rows * patch);
        if self.size == [pw, ph] {
            self.rgb.clone()
        } else {
            crate::pixels::crop(&self.rgb, pw, 3, (0, 0), (self.size[0], self.size[1]))
        }
    }

    /// Writes the image as a PNG at the user's size with its metadata, atomically.
    pub fn write_png(&self, models: &ModelPair, path: &std::path::Path) -> Result<()> {
        if self.rgb.is_empty() {
            return Err(Error::InvalidRequest(
                "the run was stopped before every cell was decided: nothing to write".into(),
            ));
        }
        let [w, h] = self.size;
        let meta = self.metadata(models)?;
        crate::document::write_png(path, w, h, &self.pixels(models.patch()), Some(&meta))
    }
}

impl Run {
    /// A fresh generation of `batch` images of `class`: image `i` is the single image of
    /// `image_seed(settings.seed, i)`; `priority` orders the cells when it covers the grid.
    pub fn generate(
        models: &ModelPair,
        class: Option<usize>,
        settings: Settings,
        order: Order,
        priority: Option<&[u8]>,
        batch: usize,
    ) -> Result<Self> {
        let g = models.grid();
        let mode = order_mode(order, priority, &TokenCanvas::empty(g, g));
        let request = Request {
            classes: vec![class; batch.max(1)],
            settings,
            order: mode,
            known: KnownCells::Nothing,
        };
        let gen = Generation::new(&models.arpg.model, &request)?;
        let mut provenance = Provenance::new(Task::Generate, order);
        provenance.priority = priority.filter(|p| p.len() == g * g).map(<[u8]>::to_vec);
        Ok(Self::generation(
            gen,
            vec![class; batch.max(1)],
            provenance,
            g,
        ))
    }

    /// A run over a generation made elsewhere (a fork, a resumption, a regeneration from a
    /// PNG's provenance): `provenance` says what it is.
    pub fn generation(
        gen: Generation,
        classes: Vec<Option<usize>>,
        provenance: Provenance,
        grid: usize,
    ) -> Self {
        Self {
            work: Work::Generation(Box::new(gen)),
            classes,
            provenance,
            rows: grid,
            cols: grid,
        }
    }

    /// The canvas job of an edit plan; `priority` orders the cells when it covers the canvas.
    pub fn edit(
        models: &ModelPair,
        plan: EditPlan,
        class: Option<usize>,
        settings: Settings,
        order: Order,
        priority: Option<&[u8]>,
    ) -> Result<Self> {
        let mode = order_mode(order, priority, &plan.canvas);
        let job = plan.job_ordered(&models.arpg.model, class, settings, mode)?;
        let mut provenance = Provenance::new(plan.task, order);
        provenance.priority = priority
            .filter(|p| p.len() == plan.canvas.cells.len())
            .map(<[u8]>::to_vec);
        let (rows, cols) = (plan.canvas.rows, plan.canvas.cols);
        Ok(Self {
            work: Work::Canvas {
                job: Box::new(job),
                plan,
            },
            classes: vec![class],
            provenance,
            rows,
            cols,
        })
    }

    /// The provenance every image of the run will record (a batch place, say, is set here).
    pub fn provenance_mut(&mut self) -> &mut Provenance {
        &mut self.provenance
    }

    /// Image 0's canvas as it stands (undecided cells `None`).
    pub fn canvas(&self) -> TokenCanvas {
        match &self.work {
            Work::Generation(gen) => TokenCanvas {
                rows: self.rows,
                cols: self.cols,
                cells: gen.tokens().first().cloned().unwrap_or_default(),
            },
            Work::Canvas { job, .. } => job.canvas().clone(),
        }
    }

    /// Unknown cells of image 0's canvas when the run started.
    pub fn unknown(&self) -> usize {
        match &self.work {
            Work::Generation(_) => self.canvas().unknown_count(),
            Work::Canvas { plan, .. } => plan.unknown(),
        }
    }

    /// The generation a fresh or resumed run works on (what fork and pause keep).
    pub fn generation_state(&self) -> Option<&Generation> {
        match &self.work {
            Work::Generation(gen) => Some(gen.as_ref()),
            Work::Canvas { .. } => None,
        }
    }

    /// One step; `None` when the run is done.
    pub fn step(&mut self) -> Result<Option<Progress>> {
        let cols = self.cols;
        match &mut self.work {
            Work::Generation(gen) => {
                let Some(out) = gen.step()? else {
                    return Ok(None);
                };
                let mut decided: Vec<Decided> = out.cells[0]
                    .iter()
                    .zip(&out.tokens[0])
                    .zip(&out.probs[0])
                    .map(|((&c, &token), &probability)| Decided {
                        row: c / cols,
                        col: c % cols,
                        token,
                        probability,
                        step: out.step,
                        revision: false,
                    })
                    .collect();
                decided.extend(
                    out.revised[0]
                        .iter()
                        .map(|&(c, token, probability)| Decided {
                            row: c / cols,
                            col: c % cols,
                            token,
                            probability,
                            step: out.step,
                            revision: true,
                        }),
                );
                let remaining = gen.tokens()[0].iter().filter(|t| t.is_none()).count();
                Ok(Some(Progress {
                    decided,
                    step: out.step,
                    total_steps: out.total_steps,
                    remaining,
                    windows: None,
                }))
            }
            Work::Canvas { job, .. } => {
                let Some(step) = job.step()? else {
                    return Ok(None);
                };
                let at = step.step;
                let cell = |revision: bool| {
                    move |&(row, col, token, probability): &(usize, usize, u32, f32)| Decided {
                        row,
                        col,
                        token,
                        probability,
                        step: at,
                        revision,
                    }
                };
                let mut decided: Vec<Decided> = step.cells.iter().map(cell(false)).collect();
                decided.extend(step.revised.iter().map(cell(true)));
                Ok(Some(Progress {
                    decided,
                    step: step.step,
                    total_steps: step.window_steps,
                    remaining: step.remaining,
                    windows: Some((step.window_index, step.windows.len())),
                }))
            }
        }
    }

    /// Steps to the end.
    pub fn run_to_end(&mut self) -> Result<()> {
        while self.step()?.is_some() {}
        Ok(())
    }

    /// The made images: decoded (and composited, for an edit) when every cell is decided, else
    /// the partial canvas with no pixels. For a generation, the generation comes back too (a
    /// stopped one can be forked or resumed).
    pub fn finish(self, models: &ModelPair) -> Result<(Vec<Made>, Option<Generation>)> {
        let p = models.patch();
        match self.work {
            Work::Generation(gen) => {
                // What the generation actually used: a fork's own seed and its fork points.
                let settings = gen.settings().clone();
                let mut provenance = self.provenance;
                provenance.forked_from = gen.snapshot().forked_from;
                let batch = gen.tokens().len();
                let mut made = Vec::with_capacity(batch);
                for (i, cells) in gen.tokens().iter().enumerate() {
                    let canvas = TokenCanvas {
                        rows: self.rows,
                        cols: self.cols,
                        cells: cells.clone(),
                    };
                    // Stopped while polishing: every cell is decided, so the image is whole.
                    let rgb = if canvas.unknown_count() == 0 {
                        models.decode(&canvas)?
                    } else {
                        Vec::new()
                    };
                    let mut own = settings.clone();
                    let mut prov = provenance.clone();
                    if batch > 1 {
                        own.seed = sampler::image_seed(settings.seed, i as u64);
                        prov.batch = Some(BatchPlace {
                            seed: settings.seed,
                            index: i,
                        });
                    }
                    made.push(Made {
                        size: [canvas.cols * p, canvas.rows * p],
                        canvas,
                        rgb,
                        class: self.classes.get(i).copied().flatten(),
                        settings: own,
                        provenance: prov,
                    });
                }
                Ok((made, Some(*gen)))
            }
            Work::Canvas { job, plan } => {
                let mut provenance = self.provenance;
                provenance.windows = Some(job.windows_done());
                let filled = job.canvas().clone();
                let settings = job.settings().clone();
                let (canvas, rgb) = if filled.unknown_count() > 0 {
                    (filled, Vec::new())
                } else {
                    let decoded = models.decode(&filled)?;
                    let edited = plan.finish(filled, decoded)?;
                    (edited.canvas, edited.rgb)
                };
                let made = Made {
                    canvas,
                    rgb,
                    size: plan.size,
                    class: self.classes.first().copied().flatten(),
                    settings,
                    provenance,
                };
                Ok((vec![made], None))
            }
        }
    }
}
