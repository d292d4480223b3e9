//! The background worker: the only thread that runs model code. The UI sends [`WorkerCommand`]s
//! and drains [`WorkerEvent`]s; both channels are bounded. Step events carry only the cells
//! decided in that step; when the UI falls behind, the worker merges pending steps into one event
//! (the latest preview wins) instead of blocking the sampler. A panic inside a job is caught and
//! reported; the UI restarts the worker if its thread ever dies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arpg_core::document::{self, Metadata};
use arpg_core::edit::{self, Edit, EditPlan, MaskOptions, Order, Task};
use arpg_core::generator::{Generation, KnownCells, OrderMode, Request, Settings};
use arpg_core::pair::{resize, ModelPair, ModelSpec};
use arpg_core::provenance::{BatchPlace, Provenance};
use arpg_core::tasks::TokenCanvas;
use arpg_core::vq::Palette;
use crossbeam_channel::{Receiver, Sender, TrySendError};

/// What to run.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// A fresh image of the model's grid; `batch`: its place in a batch, if it is one.
    Generate { batch: Option<BatchPlace> },
    /// An edit planned by the core's edit pipeline: fill the plan's canvas, then composite.
    Edit(Box<EditPlan>),
    /// Inpainting of a document larger than the working size by region ([`edit::Region`]):
    /// the mask's box plus context at the model's resolution, blended back; the cells under the
    /// region are encoded again from the new pixels. `rgb` and `mask` cover the whole canvas.
    InpaintRegion {
        canvas: TokenCanvas,
        rgb: Vec<u8>,
        mask: Vec<u8>,
        options: MaskOptions,
        /// `[width, height]` of the document (at most the canvas's pixels; the rest is padding).
        size: [usize; 2],
    },
}

/// A job request.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub class: Option<usize>,
    pub settings: Settings,
    pub order: Order,
    /// A painted priority map over the job's canvas (one level per cell, raster order, higher
    /// first): when it has the canvas' size it orders the cells instead of `order`.
    pub priority: Option<Vec<u8>>,
    /// Resumed after a pause (its provenance says so: it cannot be regenerated from it).
    pub resumed: bool,
    /// Decode the partial canvas for the live preview while sampling (on the preview thread).
    pub live_decode: bool,
    /// Human-readable name ("Generate", "Inpaint", ...).
    pub label: String,
    /// Pause after each step, to watch the order form ("slow motion"); 0 = full speed.
    pub step_delay_ms: u64,
}

/// The request that resumes a paused single-image generation with the decided cells `erase`
/// (raster; cells it had as context count too) erased: every other decided token is known
/// context (never resampled, so settling and polishing leave it alone); the erased cells come
/// first in raster order, then the cells the generation had not reached, in its order, over as
/// many steps as it had left (at least one). The schedule and the CFG ramp start again over those
/// steps.
fn resume_request(gen: &Generation, erase: &[usize]) -> anyhow::Result<Request> {
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

impl Job {
    /// The painted priority map, when it covers `canvas` cell for cell.
    fn painted(&self, canvas: &TokenCanvas) -> Option<&Vec<u8>> {
        self.priority
            .as_ref()
            .filter(|p| p.len() == canvas.cells.len())
    }

    /// The sampler's order for `canvas`: the painted priorities, else the order's own.
    fn order_mode(&self, canvas: &TokenCanvas) -> OrderMode {
        match self.painted(canvas) {
            Some(levels) => OrderMode::Priority(levels.clone()),
            None => self.order.mode(canvas),
        }
    }
}

#[derive(Debug)]
pub enum WorkerCommand {
    LoadModels(ModelSpec),
    Run(Job),
    /// Continue the last cancelled or running generation from its current state with another seed
    /// (only for `Generate` jobs).
    Fork {
        id: u64,
        seed: u64,
    },
    /// Resume the paused generation `id` as run `new_id`: its decided tokens except `erase`
    /// (raster cells) become fixed context, read by one prefill; the erased cells are decided
    /// first, then the cells it had not reached in their order, over its remaining steps.
    Resume {
        id: u64,
        new_id: u64,
        erase: Vec<usize>,
    },
    /// Opens an image; above the working size it is scaled down unless `full_size`.
    OpenImage {
        path: PathBuf,
        full_size: bool,
    },
    /// Makes the open document again from its pixels (`[width, height]` of `rgb`) with the
    /// tokenizer now loaded: sent when the model changed while an image was open, since its
    /// tokens belong to the previous tokenizer and must never be decoded by this one.
    Reencode {
        rgb: Vec<u8>,
        size: [usize; 2],
        class: Option<usize>,
        settings: Option<Settings>,
        provenance: Option<Provenance>,
    },
    Shutdown,
}

/// Facts about the loaded models, for the status bar and the model menu.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub device: String,
    pub grid: usize,
    pub patch: usize,
    pub num_classes: usize,
    pub params: usize,
    /// Class names from `classes.txt` (or `<checkpoint>.classes.txt`) beside the checkpoint,
    /// one per line, when the file has exactly one line per class.
    pub class_names: Option<Vec<String>>,
    /// Sampler settings the model recommends (empty: the app's defaults).
    pub sampling: arpg_core::generator::SamplingDefaults,
    /// Longest side (px) worked on whole; larger documents are inpainted by region (0: never).
    pub working_limit: usize,
    /// The tokenizer's identity (see [`arpg_core::vq::VqModel::identity`]).
    pub tokenizer: String,
    /// Milliseconds one decode of the model's grid takes (what a decoded live preview costs),
    /// once the preview thread has measured it after the load (`None` until then).
    pub decode_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub enum WorkerEvent {
    ModelsLoaded {
        info: ModelInfo,
        palette: Arc<Palette>,
    },
    Started {
        id: u64,
        rows: usize,
        cols: usize,
        unknown: usize,
        canvas: TokenCanvas,
    },
    /// Cells decided (or drawn again: settling, polishing) since the last event:
    /// `(row, col, token, probability)`.
    Step {
        id: u64,
        cells: Vec<(usize, usize, u32, f32)>,
        step: usize,
        total_steps: usize,
        decided: usize,
        elapsed: f64,
    },
    /// How long one decode of the loaded model's grid took on the preview thread, in ms (the
    /// second of two, after warm-up), measured once after each load.
    DecodeTimed {
        ms: f64,
    },
    /// A decode of the run's partial canvas for the live preview: `canvas` is the cells it
    /// had (unknown cells were filled from their nearest decided ones to decode), `rgb` the
    /// decoded pixels.
    Preview {
        id: u64,
        canvas: TokenCanvas,
        rgb: Vec<u8>,
    },
    Finished {
        id: u64,
        canvas: TokenCanvas,
        rgb: Vec<u8>,
        /// `[width, height]` of the image the canvas stands for: at most its pixels (a source
        /// that is not a whole number of tokens keeps its own size; the rest is padding).
        size: [usize; 2],
        cancelled: bool,
        elapsed: f64,
        /// The settings the job actually ran with (a fork's: its own seed) and how it was made:
        /// what the document records.
        settings: Settings,
        provenance: Provenance,
    },
    ImageOpened {
        /// What the user calls it: the file's path, or "the open image".
        name: String,
        canvas: TokenCanvas,
        rgb: Vec<u8>,
        /// The image's own `[width, height]` (the canvas is padded to whole tokens).
        size: [usize; 2],
        class: Option<usize>,
        /// The settings and provenance its PNG records, if any.
        settings: Option<Settings>,
        provenance: Option<Provenance>,
        /// What the user should know about the import (stale metadata, padding, transparency).
        notices: Vec<String>,
        /// The image's wholly transparent pixels as a mask of the canvas's size (255 = fill),
        /// when it has any.
        fill: Option<Vec<u8>>,
    },
    Error(String),
}

/// The UI's handle on the worker thread.
pub struct WorkerHandle {
    pub commands: Sender<WorkerCommand>,
    pub events: Receiver<WorkerEvent>,
    pub cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts a worker; `repaint` is called after every event.
    pub fn spawn(repaint: impl Fn() + Send + Sync + 'static) -> Self {
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(16);
        let (ev_tx, ev_rx) = crossbeam_channel::bounded(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("arpg-worker".into())
            .spawn(move || Worker::new(ev_tx, c, Arc::new(repaint)).run(cmd_rx))
            .ok();
        Self {
            commands: cmd_tx,
            events: ev_rx,
            cancel,
            thread,
        }
    }

    /// Whether the worker thread is gone (it panicked outside a job, or the channel closed).
    pub fn is_dead(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn send(&self, cmd: WorkerCommand) -> Result<(), String> {
        self.commands.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => "the worker is busy; try again in a moment".to_string(),
            TrySendError::Disconnected(_) => {
                "the worker stopped; it is being restarted".to_string()
            }
        })
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.commands.try_send(WorkerCommand::Shutdown);
    }
}

struct Worker {
    events: Sender<WorkerEvent>,
    cancel: Arc<AtomicBool>,
    repaint: Arc<dyn Fn() + Send + Sync>,
    models: Option<ModelPair>,
    /// The live preview's decoder thread (with the loaded tokenizer).
    preview: Option<crate::studio::preview::PreviewDecoder>,
    /// The last generate job that stopped early or is forkable: (id, state).
    last: Option<(u64, Generation, Job)>,
    pending: Option<WorkerEvent>,
}

impl Worker {
    fn new(
        events: Sender<WorkerEvent>,
        cancel: Arc<AtomicBool>,
        repaint: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            events,
            cancel,
            repaint,
            models: None,
            preview: None,
            last: None,
            pending: None,
        }
    }

    fn run(mut self, commands: Receiver<WorkerCommand>) {
        while let Ok(cmd) = commands.recv() {
            if matches!(cmd, WorkerCommand::Shutdown) {
                break;
            }
            // The cancel flag is reset by the UI before it sends a job, never here: a cancel sent
            // right after a job must not be lost.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(cmd)));
            let err = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(p) => Some(format!(
                    "internal error in the worker: {}",
                    p.downcast_ref::<String>()
                        .map(String::as_str)
                        .or(p.downcast_ref::<&str>().copied())
                        .unwrap_or("panic")
                )),
            };
            if let Some(e) = err {
                self.emit(WorkerEvent::Error(e));
            }
        }
    }

    /// Sends an event, blocking; flushes a merged pending step first.
    fn emit(&mut self, ev: WorkerEvent) {
        if matches!(ev, WorkerEvent::Finished { .. } | WorkerEvent::Error(_)) {
            // The run is over: a live decode not started yet would only compete with its end.
            if let Some(p) = &self.preview {
                p.clear();
            }
        }
        if let Some(p) = self.pending.take() {
            let _ = self.events.send(p);
        }
        let _ = self.events.send(ev);
        (self.repaint)();
    }

    /// Sends a step without blocking: if the UI is behind, merge into the pending one.
    fn emit_step(&mut self, ev: WorkerEvent) {
        let merged = match (self.pending.take(), ev) {
            (
                Some(WorkerEvent::Step { id, mut cells, .. }),
                WorkerEvent::Step {
                    id: id2,
                    cells: c2,
                    step,
                    total_steps,
                    decided,
                    elapsed,
                },
            ) if id == id2 => {
                cells.extend(c2);
                WorkerEvent::Step {
                    id,
                    cells,
                    step,
                    total_steps,
                    decided,
                    elapsed,
                }
            }
            (Some(p), ev) => {
                let _ = self.events.send(p);
                ev
            }
            (None, ev) => ev,
        };
        match self.events.try_send(merged) {
            Ok(()) => (self.repaint)(),
            Err(TrySendError::Full(ev)) => self.pending = Some(ev),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn models(&self) -> anyhow::Result<&ModelPair> {
        self.models.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no model is loaded: open checkpoints from the Model menu")
        })
    }

    fn handle(&mut self, cmd: WorkerCommand) -> anyhow::Result<()> {
        match cmd {
            WorkerCommand::LoadModels(args) => {
                let models = ModelPair::load(&args)?;
                let palette = Arc::new(load_palette(&models)?);
                let info = ModelInfo {
                    name: models.arpg.name.clone(),
                    device: args.device.clone(),
                    grid: models.grid(),
                    patch: models.patch(),
                    num_classes: models.arpg.config.num_classes,
                    params: models.arpg.config.num_params(),
                    class_names: class_names_beside(
                        &args
                            .gpt
                            .clone()
                            .unwrap_or_else(arpg_core::shipped::arpg_path),
                        models.arpg.config.num_classes,
                    ),
                    sampling: models.arpg.sampling.clone(),
                    working_limit: models.working_limit(),
                    tokenizer: models.vq.identity().to_string(),
                    // Measured by the preview thread, off the load path (`DecodeTimed`).
                    decode_ms: None,
                };
                self.preview = Some(crate::studio::preview::PreviewDecoder::spawn(
                    models.vq.clone(),
                    models.grid(),
                    self.events.clone(),
                    self.repaint.clone(),
                ));
                self.models = Some(models);
                self.last = None;
                self.emit(WorkerEvent::ModelsLoaded { info, palette });
            }
            WorkerCommand::OpenImage { path, full_size } => {
                let models = self.models()?;
                let pic = document::import_image_over(&path, models.background())?;
                let (pic, scaled) = if full_size {
                    (pic, None)
                } else {
                    models.scaled_to_working_size(pic, &path.display().to_string())?
                };
                let notices = scaled
                    .map(|s| format!("{s} (\"Keep full size on open\" in the File menu keeps it)."))
                    .into_iter()
                    .collect();
                self.open_picture(path.display().to_string(), pic, notices)?;
            }
            WorkerCommand::Reencode {
                rgb,
                size: [width, height],
                class,
                settings,
                provenance,
            } => {
                let pic = document::Picture {
                    width,
                    height,
                    rgb,
                    // No tokens: the pixels are encoded by the tokenizer now loaded.
                    metadata: Some(Metadata {
                        class,
                        settings,
                        provenance,
                        ..Metadata::empty()
                    }),
                    metadata_state: document::MetadataState::Absent,
                    transparency: None,
                };
                let notice = "The model's tokenizer changed: the open image's tokens belonged to \
                              the previous one, so it was kept as pixels and encoded again."
                    .to_string();
                self.open_picture("the open image".into(), pic, vec![notice])?;
            }
            WorkerCommand::Run(job) => self.run_job(job)?,
            WorkerCommand::Fork { id, seed } => {
                let Some((last_id, gen, job)) = self.last.as_ref() else {
                    anyhow::bail!("nothing to fork: generate first, then fork from a step");
                };
                if *last_id != id {
                    anyhow::bail!("that generation is no longer available to fork");
                }
                if gen.is_done() {
                    anyhow::bail!(
                        "that generation is finished: fork continues one stopped before its end"
                    );
                }
                let gen = gen.fork(seed)?;
                let mut job = job.clone();
                job.id = id + 1_000_000;
                self.continue_generation(job, gen)?;
            }
            WorkerCommand::Resume { id, new_id, erase } => {
                let Some((last_id, gen, job)) = self.last.as_ref() else {
                    anyhow::bail!("nothing to resume: pause a generation first");
                };
                if *last_id != id {
                    anyhow::bail!("that generation is no longer available to resume");
                }
                let request = resume_request(gen, &erase)?;
                let models = self.models()?;
                let gen = Generation::new(&models.arpg.model, &request)?;
                let mut job = job.clone();
                job.id = new_id;
                job.resumed = true;
                self.continue_generation(job, gen)?;
            }
            WorkerCommand::Shutdown => {}
        }
        Ok(())
    }

    fn run_job(&mut self, job: Job) -> anyhow::Result<()> {
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
        self.emit(WorkerEvent::Started {
            id: job.id,
            rows: plan.canvas.rows,
            cols: plan.canvas.cols,
            unknown: plan.unknown(),
            canvas: plan.canvas.clone(),
        });
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
    fn finish_edit(
        &mut self,
        job: &Job,
        canvas: TokenCanvas,
        rgb: Vec<u8>,
        size: [usize; 2],
        cancelled: bool,
        start: Instant,
        provenance: Provenance,
    ) {
        self.emit(WorkerEvent::Finished {
            id: job.id,
            rgb,
            canvas,
            size,
            cancelled,
            elapsed: start.elapsed().as_secs_f64(),
            settings: job.settings.clone(),
            provenance,
        });
    }

    /// Steps a canvas job to its end or a cancel, emitting a step event per step (with the
    /// decided and revised cells, and a live preview decode when the job asks, when `cells`);
    /// returns whether it was cancelled.
    fn run_canvas_job(
        &mut self,
        job: &Job,
        cjob: &mut arpg_core::tasks::CanvasJob,
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
            self.emit_step(WorkerEvent::Step {
                id,
                cells: changed,
                step: step.step,
                total_steps: step.window_steps,
                decided,
                elapsed: start.elapsed().as_secs_f64(),
            });
        }
    }

    /// Runs a [`JobKind::InpaintRegion`]: the region's canvas job reports its steps (the
    /// document's cells do not change until the end), then the result is blended back.
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
            mask: document::pad_zero(&small_mask, sw, sh, pw, ph),
            options,
        }
        .plan(imported.source(p))?;
        let mut cjob = plan.job(
            &models.arpg.model,
            job.class,
            job.settings.clone(),
            job.order,
        )?;
        self.emit(WorkerEvent::Started {
            id: job.id,
            rows: canvas.rows,
            cols: canvas.cols,
            unknown: plan.unknown(),
            canvas: canvas.clone(),
        });
        // The region's cells are not the document's: report progress only.
        let cancelled = self.run_canvas_job(job, &mut cjob, start, false)?;
        let mut provenance = Provenance::new(Task::Inpaint, job.order);
        provenance.windows = Some(cjob.windows_done());
        if !cancelled {
            let models = self.models()?;
            let filled = cjob.canvas().clone();
            let edited = plan.finish(filled.clone(), models.decode(&filled)?)?;
            let generated = document::crop(&edited.rgb, pw, 3, (0, 0), (sw, sh));
            let before = rgb.clone();
            region.composite(&mut rgb, w, mask, generated, options.feather)?;
            // The cells whose pixels changed are encoded again from the new pixels; every other
            // cell keeps its token.
            let (r0, c0) = (region.y / p, region.x / p);
            let r1 = (region.y + ch).div_ceil(p).min(canvas.rows);
            let c1 = (region.x + cw).div_ceil(p).min(canvas.cols);
            let crop = document::crop(&rgb, w, 3, (c0 * p, r0 * p), ((c1 - c0) * p, (r1 - r0) * p));
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

    /// Shows a picture as the document: its canvas (its own tokens when they are trusted for
    /// these pixels and this tokenizer, else encoded), with what the user should know.
    fn open_picture(
        &mut self,
        name: String,
        pic: document::Picture,
        mut notices: Vec<String>,
    ) -> anyhow::Result<()> {
        let models = self.models()?;
        let imported = models.canvas_of(&pic)?;
        let meta = pic.metadata.clone();
        let class = meta.as_ref().and_then(|m| m.class);
        let p = models.patch();
        let (pad_x, pad_y) = imported.padding(p);
        notices.extend(imported.warning);
        notices.extend(
            pic.transparency
                .as_ref()
                .map(|t| format!("{name}: {}.", upper_first(&t.notice()))),
        );
        // The wholly transparent area becomes the mask (padded as the canvas is): what
        // Inpaint fills unless the user paints another.
        let fill = pic
            .transparency
            .as_ref()
            .filter(|t| t.clear_pixels > 0)
            .map(|t| {
                document::pad_zero(
                    &t.clear,
                    pic.width,
                    pic.height,
                    pic.width + pad_x,
                    pic.height + pad_y,
                )
            });
        if pad_x > 0 || pad_y > 0 {
            notices.push(format!(
                "{}x{} px is not a whole number of {p}px tokens: the canvas is padded to \
                 {}x{} by repeating the right and bottom edges (no pixel is lost)",
                pic.width,
                pic.height,
                pic.width + pad_x,
                pic.height + pad_y
            ));
        }
        self.emit(WorkerEvent::ImageOpened {
            name,
            canvas: imported.canvas,
            rgb: imported.rgb,
            size: [imported.width, imported.height],
            class,
            settings: meta.as_ref().and_then(|m| m.settings.clone()),
            provenance: meta.and_then(|m| m.provenance),
            notices,
            fill,
        });
        Ok(())
    }

    fn continue_generation(&mut self, job: Job, mut gen: Generation) -> anyhow::Result<()> {
        let start = Instant::now();
        let g = self.models()?.grid();
        let canvas = TokenCanvas {
            rows: g,
            cols: g,
            cells: gen.tokens()[0].clone(),
        };
        let unknown = canvas.unknown_count();
        self.emit(WorkerEvent::Started {
            id: job.id,
            rows: g,
            cols: g,
            unknown,
            canvas,
        });
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
            self.emit_step(WorkerEvent::Step {
                id: job.id,
                cells,
                step: out.step,
                total_steps: out.total_steps,
                decided,
                elapsed: start.elapsed().as_secs_f64(),
            });
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
        self.emit(WorkerEvent::Finished {
            id,
            size,
            canvas,
            rgb,
            cancelled,
            elapsed: start.elapsed().as_secs_f64(),
            settings,
            provenance,
        });
        Ok(())
    }
}

/// Reads class names from `<checkpoint>.classes.txt` or `classes.txt` beside a checkpoint (for
/// ImageNet checkpoints: the 1000 names in label order).
fn class_names_beside(checkpoint: &std::path::Path, n: usize) -> Option<Vec<String>> {
    let dir = checkpoint.parent()?;
    [
        checkpoint.with_extension("classes.txt"),
        dir.join("classes.txt"),
    ]
    .iter()
    .find_map(|p| {
        let text = arpg_core::text::read(p, arpg_core::text::MAX_CONFIG_BYTES).ok()?;
        let names: Vec<String> = text
            .lines()
            .map(|l| l.trim().replace('_', " "))
            .filter(|l| !l.is_empty())
            .collect();
        (names.len() == n).then_some(names)
    })
}

fn pause(ms: u64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Codebooks up to this size get the in-context palette (see [`load_palette`]).
const IN_CONTEXT_PALETTE_CODES: usize = 4096;

/// The preview palette, cached on disk per tokenizer (keyed by its identity).
fn load_palette(models: &ModelPair) -> anyhow::Result<Palette> {
    // Codes decoded among copies of themselves preview closer to the final decode (measured on
    // the shipped model: 27 instead of 48 levels of mean error, `arpg eval --seams`), at nine
    // times the decoding; large codebooks (VQ-16's 16384 codes) keep codes decoded alone.
    let in_context = models.vq.config().codebook_size <= IN_CONTEXT_PALETTE_CODES;
    let key = format!(
        "{}{}",
        if in_context { "ctx-" } else { "" },
        models.vq.identity()
    );
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("arpg-studio"));
    if let Some(dir) = &dir {
        if let Ok(bytes) = std::fs::read(dir.join(format!("palette-{key}.bin"))) {
            if let Ok(p) = Palette::from_bytes(&bytes) {
                return Ok(p);
            }
        }
    }
    let palette = if in_context {
        Palette::compute_in_context(&models.vq, 256)?
    } else {
        Palette::compute(&models.vq, 256)?
    };
    if let Some(dir) = dir {
        // A cache that cannot be written is only slower next time.
        let _ = std::fs::create_dir_all(&dir).and_then(|_| {
            std::fs::write(dir.join(format!("palette-{key}.bin")), palette.to_bytes())
        });
    }
    Ok(palette)
}

/// `text` with its first letter in upper case (core's sentences start in lower case, to follow
/// a file name; the app shows them alone).
fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
