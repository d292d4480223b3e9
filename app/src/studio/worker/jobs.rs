//! Running jobs on the worker thread: one loop over a core [`Run`] (a generation, its fork or
//! resumption, an edit, a region inpainting) with a step event per step and the made image at
//! its end.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use arpg_core::canvas::TokenCanvas;
use arpg_core::edit::MaskOptions;
use arpg_core::generator::Generation;
use arpg_core::pixels;
use arpg_core::provenance::{Provenance, Task};
use arpg_core::run::Run;

use super::Worker;
use crate::studio::messages::{Job, JobKind, RunFinished, RunStarted, RunStep, WorkerEvent};

impl Worker {
    pub(super) fn run_job(&mut self, job: Job) -> anyhow::Result<()> {
        let models = self.models()?;
        let priority = job.priority.as_deref();
        let run = match &job.kind {
            JobKind::Generate { batch } => {
                let mut run = Run::generate(
                    models,
                    job.class,
                    job.settings.clone(),
                    job.order,
                    priority,
                    1,
                )?;
                run.provenance_mut().batch = *batch;
                run
            }
            JobKind::Edit(plan) => Run::edit(
                models,
                (**plan).clone(),
                job.class,
                job.settings.clone(),
                job.order,
                priority,
            )?,
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
        self.drive(job, run)
    }

    /// A generation the worker kept, forked or resumed, as the run of `job`.
    pub(super) fn continue_generation(&mut self, job: Job, gen: Generation) -> anyhow::Result<()> {
        let g = self.models()?.grid();
        let task = if job.resumed {
            Task::Resume
        } else {
            Task::Generate
        };
        let mut provenance = Provenance::new(task, job.order);
        provenance.priority = job.painted(&TokenCanvas::empty(g, g)).cloned();
        if let JobKind::Generate { batch } = &job.kind {
            provenance.batch = *batch;
        }
        let run = Run::generation(gen, vec![job.class], provenance, g);
        self.drive(job, run)
    }

    /// The worker's one loop over a run: `Started`, a `Step` per step, then `Finished` with the
    /// made image; a generation is kept to fork or resume.
    fn drive(&mut self, job: Job, mut run: Run) -> anyhow::Result<()> {
        let start = Instant::now();
        let canvas = run.canvas();
        self.emit(WorkerEvent::Started(RunStarted {
            id: job.id,
            rows: canvas.rows,
            cols: canvas.cols,
            unknown: run.unknown(),
            canvas,
        }));
        let cancelled = self.step_loop(&job, &mut run, start, true)?;
        let (made, gen) = run.finish(self.models()?)?;
        let made = made.into_iter().next().context("the run made no image")?;
        let id = job.id;
        if let Some(gen) = gen {
            self.last = Some((id, gen, job));
        }
        self.emit(WorkerEvent::Finished(RunFinished {
            id,
            canvas: made.canvas,
            rgb: made.rgb,
            size: made.size,
            cancelled,
            elapsed: start.elapsed().as_secs_f64(),
            settings: made.settings,
            provenance: made.provenance,
        }));
        Ok(())
    }

    /// Steps `run` to its end or a cancel, emitting a step event per step (with the decided and
    /// revised cells, and a live preview decode when the job asks, when `cells`); returns
    /// whether it was cancelled.
    fn step_loop(
        &mut self,
        job: &Job,
        run: &mut Run,
        start: Instant,
        cells: bool,
    ) -> anyhow::Result<bool> {
        let unknown = run.unknown();
        // The cells this run decides: the live preview paints only those.
        let to_decide = std::sync::Arc::new(
            run.canvas()
                .cells
                .iter()
                .map(Option::is_none)
                .collect::<Vec<bool>>(),
        );
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(true);
            }
            let Some(progress) = run.step()? else {
                return Ok(false);
            };
            let mut changed = Vec::new();
            if cells {
                changed = progress.decided;
                if let (true, Some(p)) = (job.live_decode, &self.preview) {
                    p.submit(job.id, run.canvas(), to_decide.clone());
                }
            }
            pause(job.step_delay_ms);
            self.emit_step(WorkerEvent::Step(RunStep {
                id: job.id,
                cells: changed,
                step: progress.step,
                total_steps: progress.total_steps,
                decided: unknown.saturating_sub(progress.remaining),
                elapsed: start.elapsed().as_secs_f64(),
            }));
        }
    }

    /// Runs a [`JobKind::InpaintRegion`] with the core's region recipe
    /// ([`arpg_core::pair::ModelPair::region_plan`]): the region's run reports its steps (the
    /// document's cells do not change until the end), then the result is blended back and the
    /// cells whose pixels changed are encoded again.
    fn inpaint_region(
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
        let (region, plan) = models.region_plan(&rgb, (w, h), mask, options)?;
        let unknown = plan.unknown();
        let mut run = Run::edit(
            models,
            plan,
            job.class,
            job.settings.clone(),
            job.order,
            None,
        )?;
        self.emit(WorkerEvent::Started(RunStarted {
            id: job.id,
            rows: canvas.rows,
            cols: canvas.cols,
            unknown,
            canvas: canvas.clone(),
        }));
        // The region's cells are not the document's: report progress only.
        let cancelled = self.step_loop(job, &mut run, start, false)?;
        let mut provenance = Provenance::new(Task::Inpaint, job.order);
        if !cancelled {
            let models = self.models()?;
            let (made, _) = run.finish(models)?;
            let made = made.into_iter().next().context("the run made no image")?;
            provenance = made.provenance.clone();
            let before = rgb.clone();
            let made_w = made.canvas.cols * p;
            region.blend_back(&mut rgb, w, mask, &made.rgb, made_w, options.feather)?;
            // The cells whose pixels changed are encoded again from the new pixels; every other
            // cell keeps its token.
            let (cw, ch) = (region.width, region.height);
            let (r0, c0) = (region.y / p, region.x / p);
            let r1 = (region.y + ch).div_ceil(p).min(canvas.rows);
            let c1 = (region.x + cw).div_ceil(p).min(canvas.cols);
            let crop = pixels::crop(&rgb, w, 3, (c0 * p, r0 * p), ((c1 - c0) * p, (r1 - r0) * p));
            let tokens = models.vq.encode_rgb8(&crop, (c1 - c0) * p, (r1 - r0) * p)?;
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
        Ok(())
    }
}

pub(super) fn pause(ms: u64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
