//! Running jobs on the worker thread: generations (with fork, pause and resume), canvas edits
//! and region inpainting, step by step with events.

use std::sync::atomic::Ordering;
use std::time::Instant;

use arpg_core::canvas::TokenCanvas;
use arpg_core::document;
use arpg_core::edit::{self, Edit, MaskOptions};
use arpg_core::generator::{Generation, KnownCells, OrderMode, Request};
use arpg_core::pixels::{self, resize};
use arpg_core::provenance::{Provenance, Task};

use super::Worker;
use crate::studio::messages::{Job, JobKind, RunFinished, RunStarted, RunStep, WorkerEvent};

impl Worker {
    pub(super) fn run_job(&mut self, job: Job) -> anyhow::Result<()> {
        let models = self.models()?;
        let plan = match &job.kind {
            JobKind::Generate { .. } => {
                let g = models.grid();
                let req = Request {
                    classes: vec![job.class],
                    settings: job.settings.clone(),
                    order: job.order_mode(&TokenCanvas::empty(g, g)),
                    known: KnownCells::Nothing,
                };
                let gen = Generation::new(&models.arpg.model, &req)?;
                return self.continue_generation(job, gen);
            }
            JobKind::Edit(plan) => plan,
            JobKind::InpaintRegion {
                canvas,
                rgb,
                mask,
                options,
                size,
            } => {
                let (canvas, rgb, mask, options, size) =
                    (canvas.clone(), rgb.clone(), mask.clone(), *options, *size);
                return self.inpaint_region(&job, canvas, rgb, &mask, options, size);
            }
        };
        let start = Instant::now();
        let mut cjob = plan.job_ordered(
            &models.arpg.model,
            job.class,
            job.settings.clone(),
            job.order_mode(&plan.canvas),
        )?;
        self.emit(WorkerEvent::Started(RunStarted {
            id: job.id,
            rows: plan.canvas.rows,
            cols: plan.canvas.cols,
            unknown: plan.unknown(),
            canvas: plan.canvas.clone(),
        }));
        let cancelled = self.run_canvas_job(&job, &mut cjob, start, true)?;
        let filled = cjob.canvas().clone();
        let mut provenance = Provenance::new(plan.task, job.order);
        provenance.priority = job.painted(&plan.canvas).cloned();
        provenance.windows = Some(cjob.windows_done());
        let models = self.models()?;
        let (canvas, rgb) = if cancelled && filled.unknown_count() > 0 {
            (filled, Vec::new())
        } else {
            let edited = plan.finish(filled.clone(), models.decode(&filled)?)?;
            (edited.canvas, edited.rgb)
        };
        self.finish_edit(&job, canvas, rgb, plan.size, cancelled, start, provenance);
        Ok(())
    }

    /// Reports an edit's result with the settings it ran with.
    #[allow(clippy::too_many_arguments)] // one per field of the event
    pub(super) fn finish_edit(
        &mut self,
        job: &Job,
        canvas: TokenCanvas,
        rgb: Vec<u8>,
        size: [usize; 2],
        cancelled: bool,
        start: Instant,
        provenance: Provenance,
    ) {
        self.emit(WorkerEvent::Finished(RunFinished {
            id: job.id,
            rgb,
            canvas,
            size,
            cancelled,
            elapsed: start.elapsed().as_secs_f64(),
            settings: job.settings.clone(),
            provenance,
        }));
    }

    /// Steps a canvas job to its end or a cancel, emitting a step event per step (with the
    /// decided and revised cells, and a live preview decode when the job asks, when `cells`);
    /// returns whether it was cancelled.
    pub(super) fn run_canvas_job(
        &mut self,
        job: &Job,
        cjob: &mut arpg_core::canvas::CanvasJob,
        start: Instant,
        cells: bool,
    ) -> anyhow::Result<bool> {
        let (id, delay_ms, live_decode) = (job.id, job.step_delay_ms, job.live_decode);
        let mut decided = 0;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(true);
            }
            let Some(step) = cjob.step()? else {
                return Ok(false);
            };
            decided += step.cells.len();
            pause(delay_ms);
            let mut changed = Vec::new();
            if cells {
                changed = step.cells;
                changed.extend(step.revised);
                if live_decode {
                    if let Some(p) = &self.preview {
                        p.submit(id, cjob.canvas().clone());
                    }
                }
            }
            self.emit_step(WorkerEvent::Step(RunStep {
                id,
                cells: changed,
                step: step.step,
                total_steps: step.window_steps,
                decided,
                elapsed: start.elapsed().as_secs_f64(),
            }));
        }
    }

    /// Runs a [`JobKind::InpaintRegion`]: the region's canvas job reports its steps (the
    /// document's cells do not change until the end), then the result is blended back.
    pub(super) fn inpaint_region(
        &mut self,
        job: &Job,
        mut canvas: TokenCanvas,
        mut rgb: Vec<u8>,
        mask: &[u8],
        options: MaskOptions,
        size: [usize; 2],
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let models = self.models()?;
        let p = models.patch();
        let (w, h) = (canvas.cols * p, canvas.rows * p);
        let region = edit::Region::around(mask, w, h, models.grid() * p, options.feather)?;
        let [sw, sh] = region.scaled;
        let (cw, ch) = (region.width, region.height);
        let small = document::Picture {
            width: sw,
            height: sh,
            rgb: resize::<image::Rgb<u8>>(region.crop(&rgb, w, 3), (cw, ch), (sw, sh))?,
            metadata: None,
            metadata_state: document::MetadataState::Absent,
            transparency: None,
        };
        let small_mask = region.scaled_mask(mask, w);
        let imported = models.canvas_of(&small)?;
        let (pw, ph) = (imported.canvas.cols * p, imported.canvas.rows * p);
        let plan = Edit::Inpaint {
            mask: pixels::pad_zero(&small_mask, sw, sh, pw, ph),
            options,
        }
        .plan(imported.source(p))?;
        let mut cjob = plan.job(
            &models.arpg.model,
            job.class,
            job.settings.clone(),
            job.order,
        )?;
        self.emit(WorkerEvent::Started(RunStarted {
            id: job.id,
            rows: canvas.rows,
            cols: canvas.cols,
            unknown: plan.unknown(),
            canvas: canvas.clone(),
        }));
        // The region's cells are not the document's: report progress only.
        let cancelled = self.run_canvas_job(job, &mut cjob, start, false)?;
        let mut provenance = Provenance::new(Task::Inpaint, job.order);
        provenance.windows = Some(cjob.windows_done());
        if !cancelled {
            let models = self.models()?;
            let filled = cjob.canvas().clone();
            let edited = plan.finish(filled.clone(), models.decode(&filled)?)?;
            let generated = pixels::crop(&edited.rgb, pw, 3, (0, 0), (sw, sh));
            let before = rgb.clone();
            region.composite(&mut rgb, w, mask, generated, options.feather)?;
            // The cells whose pixels changed are encoded again from the new pixels; every other
            // cell keeps its token.
            let (r0, c0) = (region.y / p, region.x / p);
            let r1 = (region.y + ch).div_ceil(p).min(canvas.rows);
            let c1 = (region.x + cw).div_ceil(p).min(canvas.cols);
            let crop = pixels::crop(&rgb, w, 3, (c0 * p, r0 * p), ((c1 - c0) * p, (r1 - r0) * p));
            let tokens = models.vq.encode_rgb8(
                &crop,
                (c1 - c0) * p,
                (r1 - r0) * p,
                arpg_core::vq::Tiling::default(),
            )?;
            let changed = |r: usize, c: usize| {
                (r * p..(r + 1) * p).any(|y| {
                    let row = (y * w + c * p) * 3..(y * w + (c + 1) * p) * 3;
                    rgb[row.clone()] != before[row]
                })
            };
            for r in r0..r1 {
                for c in c0..c1 {
                    if changed(r, c) {
                        canvas.cells[r * canvas.cols + c] =
                            Some(tokens[(r - r0) * (c1 - c0) + c - c0]);
                    }
                }
            }
        }
        self.finish_edit(job, canvas, rgb, size, cancelled, start, provenance);
        Ok(())
    }

    pub(super) fn continue_generation(
        &mut self,
        job: Job,
        mut gen: Generation,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let g = self.models()?.grid();
        let canvas = TokenCanvas {
            rows: g,
            cols: g,
            cells: gen.tokens()[0].clone(),
        };
        let unknown = canvas.unknown_count();
        self.emit(WorkerEvent::Started(RunStarted {
            id: job.id,
            rows: g,
            cols: g,
            unknown,
            canvas,
        }));
        let mut cancelled = false;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                cancelled = true;
                break;
            }
            let Some(out) = gen.step()? else { break };
            let revised = out.revised[0].iter().map(|&(c, t, p)| (c / g, c % g, t, p));
            let cells = out.cells[0]
                .iter()
                .zip(&out.tokens[0])
                .zip(&out.probs[0])
                .map(|((&c, &t), &p)| (c / g, c % g, t, p))
                .chain(revised)
                .collect();
            let decided = gen.tokens()[0].iter().filter(|t| t.is_some()).count();
            if let (true, Some(p)) = (job.live_decode, &self.preview) {
                p.submit(
                    job.id,
                    TokenCanvas {
                        rows: g,
                        cols: g,
                        cells: gen.tokens()[0].clone(),
                    },
                );
            }
            pause(job.step_delay_ms);
            self.emit_step(WorkerEvent::Step(RunStep {
                id: job.id,
                cells,
                step: out.step,
                total_steps: out.total_steps,
                decided,
                elapsed: start.elapsed().as_secs_f64(),
            }));
        }
        let canvas = TokenCanvas {
            rows: g,
            cols: g,
            cells: gen.tokens()[0].clone(),
        };
        // Cancelled while polishing: every cell is decided, so the image is whole.
        let rgb = if canvas.unknown_count() == 0 {
            self.models()?.decode(&canvas)?
        } else {
            Vec::new()
        };
        // What the generation actually used: a fork's own seed and the forks that led here.
        let settings = gen.settings().clone();
        let task = if job.resumed {
            Task::Resume
        } else {
            Task::Generate
        };
        let mut provenance = Provenance::new(task, job.order);
        provenance.priority = job.painted(&TokenCanvas::empty(g, g)).cloned();
        provenance.forked_from = gen.snapshot().forked_from;
        if let JobKind::Generate { batch } = &job.kind {
            provenance.batch = *batch;
        }
        let id = job.id;
        self.last = Some((id, gen, job));
        let p = self.models()?.patch();
        let size = [canvas.cols * p, canvas.rows * p];
        self.emit(WorkerEvent::Finished(RunFinished {
            id,
            size,
            canvas,
            rgb,
            cancelled,
            elapsed: start.elapsed().as_secs_f64(),
            settings,
            provenance,
        }));
        Ok(())
    }
}

/// The request that resumes a paused single-image generation with the decided cells `erase`
/// (raster; cells it had as context count too) erased: every other decided token is known
/// context (never resampled, so settling and polishing leave it alone); the erased cells come
/// first in raster order, then the cells the generation had not reached, in its order, over as
/// many steps as it had left (at least one). The schedule and the CFG ramp start again over those
/// steps.
pub(super) fn resume_request(gen: &Generation, erase: &[usize]) -> anyhow::Result<Request> {
    let state = gen.snapshot();
    let (Some(order), Some(tokens), [class]) = (
        state.orders.first(),
        state.tokens.first(),
        state.classes.as_slice(),
    ) else {
        anyhow::bail!("only a single image can be resumed");
    };
    let parallel = state.tokens_per_step.len();
    let done = state.step.min(parallel);
    let decided: usize = state.tokens_per_step[..done].iter().sum();
    let mut erased: Vec<usize> = erase
        .iter()
        .copied()
        .filter(|&c| tokens.get(c).is_some_and(Option::is_some))
        .collect();
    erased.sort_unstable();
    erased.dedup();
    let mut known = tokens.clone();
    for &c in &erased {
        known[c] = None;
    }
    let rest: Vec<usize> = erased
        .iter()
        .chain(
            order
                .iter()
                .skip(decided)
                .filter(|&&c| tokens.get(c).is_some_and(Option::is_none)),
        )
        .copied()
        .collect();
    if rest.is_empty() {
        anyhow::bail!(
            "every cell is decided: erase some (paint over them, or pick them with K) before \
             resuming"
        );
    }
    let mut settings = gen.settings().clone();
    settings.steps = (parallel - done).max(1).min(rest.len());
    Ok(Request {
        classes: vec![*class],
        settings,
        order: OrderMode::Fixed(rest),
        known: KnownCells::Shared(known),
    })
}

pub(super) fn pause(ms: u64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
