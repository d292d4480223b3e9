//! The app: the document and the routing of commands to jobs ([`StudioApp::execute`]: a
//! command becomes a job of the core's edit pipeline or a generation, sent to the worker). It
//! owns no model and runs no model code. Worker events update the document in [`events`]; the
//! frame's panels and canvas are laid out in [`frame`].

mod events;
mod frame;

use std::time::Instant;

use arpg_core::canvas::{self, TokenCanvas};
use arpg_core::edit::{Edit, MaskOptions, Source};
use arpg_core::generator::Settings;
use arpg_core::order::Order;
use arpg_core::pair::ModelSpec;
use arpg_core::provenance::{BatchPlace, Provenance};
use arpg_core::sampler::{self, stream, Rng};
use arpg_core::vq::Palette;
use eframe::egui;

use super::canvas::cell_map::{CellMap, Overlay};
use super::canvas::image::CanvasImage;
use super::canvas::mask::MaskDocument;
use super::canvas::priority::PriorityMap;
use super::canvas::view::CanvasView;
use super::commands::UiCommand;
use super::gpu::CanvasResources;
use super::messages::{Job, JobKind, ModelInfo, RunKind, WorkerCommand};
use super::ui::class_panel::ClassPanel;
use super::ui::history_panel::HistoryPanel;
use super::ui::settings_panel::SettingsPanel;
use super::ui::status_bar::StatusBar;
use super::ui::tools_panel::{Tool, ToolsPanel};
use super::worker::WorkerHandle;

/// The document on the canvas: tokens are the source of truth, pixels what is shown.
#[derive(Clone)]
pub struct Document {
    pub canvas: TokenCanvas,
    /// RGB8 pixels, `cols*patch x rows*patch`.
    pub rgb: Vec<u8>,
    /// `[width, height]` of the image: at most the canvas's pixels. An image that is not a
    /// whole number of tokens is padded right and bottom; saving crops the padding away.
    pub size: [usize; 2],
    pub class: Option<usize>,
    /// The settings and provenance that made it (`None` for an image opened without them).
    pub settings: Option<Settings>,
    pub provenance: Option<Provenance>,
}

/// A run in progress.
struct Running {
    id: u64,
    kind: RunKind,
    label: String,
    class: Option<usize>,
    started: Instant,
    /// Canvas as last seen (decided cells filled in).
    canvas: TokenCanvas,
    /// Cells highlighted as "latest step".
    latest: Vec<(usize, usize)>,
    last_step_at: Instant,
    /// Fork requested while running: start it when this run stops.
    fork_after: bool,
    /// Pause requested: when this run stops, it waits to be resumed.
    pause_after: bool,
    /// The cells this run decides (unknown when it started): the only ones a live decode
    /// repaints.
    to_decide: Vec<bool>,
}

impl Running {
    fn new(id: u64, kind: RunKind, label: String, class: Option<usize>) -> Self {
        Self {
            id,
            kind,
            label,
            class,
            started: Instant::now(),
            canvas: TokenCanvas::empty(1, 1),
            latest: Vec::new(),
            last_step_at: Instant::now(),
            fork_after: false,
            pause_after: false,
            to_decide: Vec::new(),
        }
    }

    /// A generation (or a fork of one), the runs Fork can continue.
    fn is_generation(&self) -> bool {
        self.kind.is_generation()
    }
}

pub struct StudioApp {
    worker: WorkerHandle,
    repaint: egui::Context,
    /// The models the worker holds (what it reloads if it has to restart).
    model_args: ModelSpec,
    /// Models asked for and not loaded yet; they replace `model_args` only once they load, so
    /// a checkpoint that fails leaves the previous model in use.
    loading: Option<ModelSpec>,
    /// File → Keep full size on open: large images are not scaled to the working size.
    pub keep_full_size: bool,
    /// The official checkpoints' downloads (Model menu).
    pub downloads: super::downloads::Downloads,
    /// Where the last model that loaded is remembered across restarts (`None`: not kept).
    pub remember: Option<std::path::PathBuf>,
    pub model: Option<ModelInfo>,
    palette: Option<std::sync::Arc<Palette>>,
    pub doc: Option<Document>,
    /// The accepted document that a discarded candidate returns to.
    accepted: Option<Document>,
    pub mask: MaskDocument,
    pub class: usize,
    class_names: Vec<String>,
    /// Other names of each class that the picker's search matches (ImageNet synonyms).
    class_synonyms: Vec<Vec<String>>,
    running: Option<Running>,
    queued: Vec<Job>,
    next_id: u64,
    /// Last generate job that can be forked: its id and the class it ran with (a fork continues
    /// that class, whatever the picker shows now).
    forkable: Option<(u64, Option<usize>)>,
    /// The paused generation (a stopped one that Resume continues).
    pub paused: Option<u64>,
    /// Commands fired this frame (buttons, menus, shortcuts, panels), run once per frame.
    commands: Vec<UiCommand>,
    view: CanvasView,
    /// The canvas image and its pending uploads to the GPU.
    image: CanvasImage,
    /// Uploads handed to the paint callback and not yet applied.
    gpu_uploads: super::gpu::PendingUploads,
    has_gpu: bool,
    pub class_panel: ClassPanel,
    pub settings: SettingsPanel,
    pub tools: ToolsPanel,
    pub history: HistoryPanel,
    pub status: StatusBar,
    pub errors: Vec<String>,
    show_shortcuts: bool,
    /// The seeds the app proposes ([`stream::NEXT_SEED`], seeded from the clock at start).
    seeds: Rng,
    /// Screen rectangle of the canvas widget in the last frame.
    pub canvas_widget: Option<egui::Rect>,
    /// Probability and step of each cell the latest run decided (the confidence and order maps).
    pub cell_map: CellMap,
    /// The priority brush's levels over the canvas' cells (the next run's order).
    pub priority: PriorityMap,
    /// A rectangle or lasso being dragged: its points in canvas pixels.
    shape: Option<Vec<egui::Pos2>>,
    /// A cell-picker drag: whether it masks (`true`) or unmasks the cells it crosses.
    picking: Option<bool>,
    /// The replay step the state texture shows (`None`: the document).
    shown_replay: Option<usize>,
    /// The cells the next inpaint regenerates, `[r0, c0, r1, c1]` (ends exclusive).
    pub regenerate_box: Option<[usize; 4]>,
    /// Live preview decodes painted on the canvas so far.
    pub previews_shown: usize,
    /// The Outpaint button under the pointer: its side, `[left, right, top, bottom]` as 0/1.
    outpaint_hover: Option<[usize; 4]>,
    /// The mask threshold and dilation the regenerated cells were last computed with.
    mask_selection: (f32, usize),
}

impl StudioApp {
    /// Creates the app and asks the worker to load `model_args` (the shipped model by default).
    pub fn new(cc: &eframe::CreationContext<'_>, model_args: ModelSpec) -> Self {
        let has_gpu = match cc.wgpu_render_state.as_ref() {
            Some(rs) => {
                CanvasResources::install(rs);
                true
            }
            None => false,
        };
        let ctx = cc.egui_ctx.clone();
        let repaint = ctx.clone();
        let worker = WorkerHandle::spawn(move || repaint.request_repaint());
        let mut app = Self {
            worker,
            repaint: ctx,
            model_args: model_args.clone(),
            loading: Some(model_args.clone()),
            keep_full_size: false,
            downloads: Default::default(),
            remember: None,
            model: None,
            palette: None,
            doc: None,
            accepted: None,
            mask: MaskDocument::new(1, 1),
            class: 0,
            class_names: Vec::new(),
            class_synonyms: Vec::new(),
            running: None,
            queued: Vec::new(),
            next_id: 1,
            forkable: None,
            paused: None,
            commands: Vec::new(),
            view: CanvasView::default(),
            image: CanvasImage::default(),
            has_gpu,
            class_panel: ClassPanel::default(),
            settings: SettingsPanel::default(),
            tools: ToolsPanel::default(),
            history: HistoryPanel::default(),
            status: StatusBar::default(),
            errors: Vec::new(),
            show_shortcuts: false,
            seeds: Rng::stream(clock_seed(), stream::NEXT_SEED, 0),
            canvas_widget: None,
            cell_map: CellMap::default(),
            priority: PriorityMap::default(),
            shape: None,
            picking: None,
            shown_replay: None,
            regenerate_box: None,
            previews_shown: 0,
            outpaint_hover: None,
            mask_selection: (f32::NAN, 0),
            gpu_uploads: Default::default(),
        };
        app.send(WorkerCommand::LoadModels(model_args));
        app.status.message = "Loading model…".into();
        app
    }

    fn send(&mut self, cmd: WorkerCommand) {
        if let Err(e) = self.worker.send(cmd) {
            self.errors.push(e);
        }
    }

    /// Screen rectangle the canvas pixels occupy (for tests and tools).
    pub fn canvas_screen_rect(&self) -> Option<egui::Rect> {
        let rect = self.canvas_widget?;
        let extent = self.image.extent();
        Some(
            self.view
                .canvas_rect(rect, egui::vec2(extent.width as f32, extent.height as f32)),
        )
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some() || !self.queued.is_empty()
    }

    /// A fresh seed to propose (six digits, easy to read and type).
    fn new_seed(&mut self) -> u64 {
        self.seeds.next_u64() % 1_000_000
    }

    /// Pixels per token side of the loaded tokenizer.
    fn patch(&self) -> usize {
        self.model.as_ref().map_or(16, |m| m.patch)
    }

    // ---- Commands -------------------------------------------------------------------------

    pub fn execute(&mut self, cmd: UiCommand) {
        match cmd {
            UiCommand::Generate => self.start_generate(),
            UiCommand::Inpaint => self.start_inpaint(),
            UiCommand::OutpaintLeft => self.start_outpaint([1, 0, 0, 0]),
            UiCommand::OutpaintRight => self.start_outpaint([0, 1, 0, 0]),
            UiCommand::OutpaintTop => self.start_outpaint([0, 0, 1, 0]),
            UiCommand::OutpaintBottom => self.start_outpaint([0, 0, 0, 1]),
            UiCommand::Expand => self.start_expand(),
            UiCommand::Cancel => self.cancel(),
            UiCommand::Fork => self.fork(),
            UiCommand::Pause => self.pause(),
            UiCommand::Resume => self.resume(),
            UiCommand::Undo => {
                self.mask.undo();
            }
            UiCommand::Redo => {
                self.mask.redo();
            }
            UiCommand::Brush => self.tools.tool = Tool::Brush,
            UiCommand::Eraser => self.tools.tool = Tool::Eraser,
            UiCommand::CellPicker => self.tools.tool = Tool::Cells,
            UiCommand::RectangleMask => self.tools.tool = Tool::Rectangle,
            UiCommand::LassoMask => self.tools.tool = Tool::Lasso,
            UiCommand::PriorityBrush => self.tools.tool = Tool::Priority,
            UiCommand::ClearPriority => {
                self.priority = PriorityMap::new(self.priority.rows, self.priority.cols);
            }
            UiCommand::BrushSmaller => self.tools.resize(false, false),
            UiCommand::BrushLarger => self.tools.resize(true, false),
            UiCommand::BrushMuchSmaller => self.tools.resize(false, true),
            UiCommand::BrushMuchLarger => self.tools.resize(true, true),
            UiCommand::InvertMask => self.mask.invert(),
            UiCommand::ClearMask => self.mask.clear(),
            UiCommand::FillMask => self.mask.fill(),
            UiCommand::RandomClass => {
                self.class = self.seeds.below(self.class_names.len().max(1));
            }
            UiCommand::OpenImage => {
                if let Some(path) = rfd::FileDialog::new()
                    .add_filter("Images", &["png", "jpg", "jpeg", "webp"])
                    .pick_file()
                {
                    self.send(WorkerCommand::OpenImage {
                        path,
                        full_size: self.keep_full_size,
                    });
                }
            }
            UiCommand::SavePng => self.save_dialog(),
            UiCommand::OpenModel => self.open_model_dialog(),
            UiCommand::ToggleGrid => self.tools.show_grid = !self.tools.show_grid,
            UiCommand::ToggleConfidence => self.toggle_overlay(Overlay::Confidence),
            UiCommand::ToggleOrderMap => self.toggle_overlay(Overlay::Order),
            UiCommand::RerollLeastConfident => self.start_reroll(),
            UiCommand::RerollMasked => self.start_reroll_masked(),
            UiCommand::ReplayBack | UiCommand::ReplayForward if self.running.is_none() => {
                let last = self.cell_map.last_step();
                self.tools
                    .step_replay(cmd == UiCommand::ReplayForward, last);
            }
            UiCommand::ReplayBack | UiCommand::ReplayForward => {}
            UiCommand::ZoomToFit => self.view = CanvasView::default(),
            UiCommand::ShowShortcuts => self.show_shortcuts = !self.show_shortcuts,
        }
    }

    fn new_job(&mut self, kind: JobKind, label: &str, settings: Settings, order: Order) -> Job {
        let id = self.next_id;
        self.next_id += 1;
        Job {
            id,
            kind,
            class: Some(self.class),
            settings,
            order,
            priority: None,
            resumed: false,
            live_decode: self.live_decode(),
            label: label.into(),
            step_delay_ms: self.settings.step_delay_ms,
        }
    }

    fn submit(&mut self, jobs: Vec<Job>) {
        if self.model.is_none() {
            self.errors.push(
                "No model is loaded yet: wait for it, or open checkpoints from the Model menu."
                    .into(),
            );
            return;
        }
        if self.is_running() {
            self.errors
                .push("A generation is running: cancel it first (Esc).".into());
            return;
        }
        // The run takes the panel's seed; the panel moves on to the next run's.
        if !self.settings.lock_seed {
            self.settings.settings.seed = self.new_seed();
        }
        self.queued = jobs;
        self.queued.reverse();
        self.run_next();
    }

    fn run_next(&mut self) {
        if let Some(job) = self.queued.pop() {
            self.paused = None;
            self.worker
                .cancel
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.running = Some(Running::new(
                job.id,
                job.run_kind(),
                job.label.clone(),
                job.class,
            ));
            self.status.message = format!("{}…", job.label);
            self.send(WorkerCommand::Run(job));
        }
    }

    fn start_generate(&mut self) {
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
    fn start_edit(&mut self, edit: Edit, label: &str) {
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
    fn painted_priority(&self, grid: usize) -> Option<Vec<u8>> {
        self.priority.for_canvas(grid, grid)
    }

    fn start_inpaint(&mut self) {
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

    fn toggle_overlay(&mut self, overlay: Overlay) {
        self.tools.overlay = if self.tools.overlay == overlay {
            Overlay::None
        } else {
            overlay
        };
    }

    /// Draws again the least confident share of the cells the latest run decided, with every
    /// other token as context: an inpaint whose mask is exactly those cells.
    fn start_reroll(&mut self) {
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
    fn start_reroll_masked(&mut self) {
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
    fn reroll_cells(&mut self, cells: &[(usize, usize)], label: &str) {
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

    fn start_outpaint(&mut self, sides: [usize; 4]) {
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

    fn start_expand(&mut self) {
        self.start_edit(Edit::Expand, "Expand");
    }

    fn cancel(&mut self) {
        // Queued jobs never outlive a cancel, even with nothing running.
        self.queued.clear();
        if self.running.is_some() {
            self.worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.status.message = "Cancelling…".into();
        }
    }

    fn fork(&mut self) {
        let seed = self.new_seed();
        if let Some(run) = self.running.as_mut() {
            if !run.is_generation() {
                self.errors.push(
                    "Fork continues a generation; an inpaint, outpaint or expand cannot be forked."
                        .into(),
                );
                return;
            }
            run.fork_after = true;
            self.worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        match self.forkable {
            Some((id, class)) => self.start_fork(id, class, seed),
            None => self.errors.push(
                "Fork continues a stopped generation: generate, cancel mid-way, then fork.".into(),
            ),
        }
    }

    /// Stops the running generation after its current step and keeps it to resume.
    fn pause(&mut self) {
        match self.running.as_mut() {
            Some(run) if run.is_generation() => {
                run.pause_after = true;
                // A batch's later candidates are dropped: the paused one waits alone.
                self.queued.clear();
                self.worker
                    .cancel
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.status.message = "Pausing…".into();
            }
            Some(_) => self.errors.push(
                "Pause works on generations; an edit can be cancelled (Esc), which keeps its \
                 partial image."
                    .into(),
            ),
            None => self.errors.push("Nothing is running to pause.".into()),
        }
    }

    /// Continues the paused generation: the cells the mask covers more than half of are erased
    /// and decided again, every other decided token is kept as context.
    fn resume(&mut self) {
        let (Some(id), Some(doc)) = (self.paused, self.doc.as_ref()) else {
            self.errors
                .push("Resume continues a paused generation: pause one first (Ctrl+P).".into());
            return;
        };
        if self.running.is_some() {
            return self
                .errors
                .push("A run is in progress: wait for it, or cancel it (Esc).".into());
        }
        let (rows, cols, class) = (doc.canvas.rows, doc.canvas.cols, doc.class);
        let erase: Vec<usize> = canvas::token_mask(
            &self.mask.pixels,
            self.mask.width,
            self.mask.height,
            self.patch(),
            0.5,
            0,
        )
        .ok()
        .filter(|m| m.len() == rows * cols)
        .map(|m| {
            (0..m.len())
                .filter(|&i| m[i] && doc.canvas.cells[i].is_some())
                .collect()
        })
        .unwrap_or_default();
        let new_id = self.next_id;
        self.next_id += 1;
        // `paused` stays until the resumed run starts: a refused resume can be tried again.
        self.queued.clear();
        self.running = Some(Running::new(
            new_id,
            RunKind::Resume,
            "Resume".into(),
            class,
        ));
        self.worker
            .cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.status.message = format!("Resuming ({} cells erased)…", erase.len());
        self.send(WorkerCommand::Resume { id, new_id, erase });
    }

    /// Forks the stopped generation `id`, which ran with `class`: the worker continues its
    /// state, so the fork's record must carry the same class.
    fn start_fork(&mut self, id: u64, class: Option<usize>, seed: u64) {
        let new_id = self.next_id;
        self.next_id += 1;
        let label = format!("Fork (seed {seed})");
        self.running = Some(Running::new(new_id, RunKind::Fork, label, class));
        self.worker
            .cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.send(WorkerCommand::Fork { id, new_id, seed });
    }

    fn save_dialog(&mut self) {
        let Some(doc) = self.doc.clone() else {
            self.errors.push("Nothing to save yet.".into());
            return;
        };
        let Some(path) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name("arpg.png")
            .save_file()
        else {
            return;
        };
        if let Err(e) = self.save_png(&path, &doc) {
            self.errors.push(format!("{e:#}"));
        }
    }

    /// Writes the document as a PNG with its tokens and settings.
    pub fn save_png(&self, path: &std::path::Path, doc: &Document) -> anyhow::Result<()> {
        let p = self.patch();
        let model = self.model.as_ref().map_or("", |m| m.name.as_str());
        let mut meta = crate::document::Metadata::new(
            &doc.canvas,
            doc.class,
            doc.settings.as_ref(),
            p,
            model,
        )?;
        meta.provenance = doc.provenance.clone();
        meta.tokenizer = self.model.as_ref().map(|m| m.tokenizer.clone());
        // The user's size, as the CLI writes it: the padding to whole tokens is not the image.
        let (pw, ph) = (doc.canvas.cols * p, doc.canvas.rows * p);
        let [w, h] = doc.size;
        let rgb = if [w, h] == [pw, ph] {
            std::borrow::Cow::Borrowed(&doc.rgb)
        } else {
            std::borrow::Cow::Owned(arpg_core::pixels::crop(&doc.rgb, pw, 3, (0, 0), (w, h)))
        };
        crate::document::write_png(path, w, h, &rgb, Some(&meta))?;
        Ok(())
    }

    fn open_model_dialog(&mut self) {
        let Some(gpt) = rfd::FileDialog::new()
            .set_title("ARPG checkpoint")
            .add_filter("Checkpoints", &["pt", "pth", "safetensors", "gguf"])
            .pick_file()
        else {
            return;
        };
        let Some(vq) = rfd::FileDialog::new()
            .set_title("VQ tokenizer checkpoint")
            .add_filter("Checkpoints", &["pt", "pth", "safetensors"])
            .pick_file()
        else {
            return;
        };
        self.load_models(ModelSpec {
            gpt: Some(gpt),
            vq: Some(vq),
            ..self.model_args.clone()
        });
    }

    /// Loads an official checkpoint with the official tokenizer (both downloaded).
    pub fn load_official(&mut self, gpt: std::path::PathBuf, vq: std::path::PathBuf) {
        let args = ModelSpec {
            gpt: Some(gpt),
            vq: Some(vq),
            config: None,
            ..self.model_args.clone()
        };
        self.load_models(args);
    }

    pub fn load_models(&mut self, args: ModelSpec) {
        self.loading = Some(args.clone());
        self.status.message = "Loading model…".into();
        self.send(WorkerCommand::LoadModels(args));
    }
}

/// Display names when no `classes.txt` is beside the checkpoint: ImageNet's for a 1000-class
/// model (the official checkpoints), the shipped dataset's for a 10-class one, else indices.
fn class_names(n: usize) -> Vec<String> {
    if n == 1000 {
        return arpg_core::imagenet::class_names()
            .into_iter()
            .map(str::to_string)
            .collect();
    }
    if n == arpg_core::dataset::CLASS_NAMES.len() {
        arpg_core::dataset::CLASS_NAMES
            .iter()
            .map(|s| s.replace('_', " "))
            .collect()
    } else {
        (0..n).map(|i| format!("class {i}")).collect()
    }
}

/// A seed from the clock, so each session proposes other seeds.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
