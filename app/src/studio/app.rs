//! The app: routes commands to the worker and events to the document, the canvas textures and
//! the panels. It owns no model and runs no model code.

use std::time::Instant;

use arpg_core::edit::{Edit, Order, Source};
use arpg_core::generator::Settings;
use arpg_core::pair::ModelSpec;
use arpg_core::provenance::{BatchPlace, Provenance};
use arpg_core::sampler::{self, stream, Rng};
use arpg_core::tasks::{self, TokenCanvas};
use arpg_core::vq::Palette;
use eframe::egui;
use eframe::egui_wgpu;

use super::canvas::mask::MaskDocument;
use super::canvas::view::CanvasView;
use super::commands::UiCommand;
use super::gpu::{CanvasCallback, CanvasResources, Extent, Target, Upload, ViewUniform};
use super::ui::class_panel::ClassPanel;
use super::ui::history_panel::{HistoryAction, HistoryItem, HistoryPanel};
use super::ui::settings_panel::SettingsPanel;
use super::ui::status_bar::StatusBar;
use super::ui::tools_panel::{Tool, ToolsPanel};
use super::worker::{Job, JobKind, ModelInfo, WorkerCommand, WorkerEvent, WorkerHandle};

/// The document on the canvas: tokens are the source of truth, pixels what is shown.
#[derive(Clone)]
pub struct Document {
    pub canvas: TokenCanvas,
    /// RGB8 pixels, `cols*patch x rows*patch`.
    pub rgb: Vec<u8>,
    pub class: Option<usize>,
    /// The settings and provenance that made it (`None` for an image opened without them).
    pub settings: Option<Settings>,
    pub provenance: Option<Provenance>,
}

/// A run in progress.
struct Running {
    id: u64,
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
    pub model: Option<ModelInfo>,
    palette: Option<std::sync::Arc<Palette>>,
    pub doc: Option<Document>,
    /// The accepted document that a discarded candidate returns to.
    accepted: Option<Document>,
    pub mask: MaskDocument,
    pub class: usize,
    class_names: Vec<String>,
    running: Option<Running>,
    queued: Vec<Job>,
    next_id: u64,
    /// Last generate job that can be forked.
    forkable: Option<u64>,
    view: CanvasView,
    /// Canvas image as RGBA8, mirrored on the GPU.
    image_rgba: Vec<u8>,
    uploads: Vec<Upload>,
    extent: Extent,
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
            model: None,
            palette: None,
            doc: None,
            accepted: None,
            mask: MaskDocument::new(1, 1),
            class: 0,
            class_names: Vec::new(),
            running: None,
            queued: Vec::new(),
            next_id: 1,
            forkable: None,
            view: CanvasView::default(),
            image_rgba: vec![0, 0, 0, 255],
            uploads: Vec::new(),
            extent: Extent {
                width: 1,
                height: 1,
                rows: 1,
                cols: 1,
            },
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
        Some(self.view.canvas_rect(
            rect,
            egui::vec2(self.extent.width as f32, self.extent.height as f32),
        ))
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
            UiCommand::Undo => {
                self.mask.undo();
            }
            UiCommand::Redo => {
                self.mask.redo();
            }
            UiCommand::Brush => self.tools.tool = Tool::Brush,
            UiCommand::Eraser => self.tools.tool = Tool::Eraser,
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
                    .add_filter("Images", &["png", "jpg", "jpeg"])
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
            self.worker
                .cancel
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.running = Some(Running {
                id: job.id,
                label: job.label.clone(),
                class: job.class,
                started: Instant::now(),
                canvas: TokenCanvas::empty(1, 1),
                latest: Vec::new(),
                last_step_at: Instant::now(),
                fork_after: false,
            });
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
                self.new_job(JobKind::Generate { batch: place }, "Generate", s, order)
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
            size: [doc.canvas.cols * p, doc.canvas.rows * p],
            patch: p,
        };
        let plan = match edit.plan(source) {
            Ok(plan) => plan,
            Err(e) => return self.errors.push(e.to_string()),
        };
        let settings = self.settings.settings.clone();
        let order = self.settings.order;
        let job = self.new_job(JobKind::Edit(Box::new(plan)), label, settings, order);
        self.submit(vec![job]);
    }

    fn start_inpaint(&mut self) {
        if !self.mask.pixels.iter().any(|&m| m > 127) {
            self.errors
                .push("Paint the area to regenerate first (the mask is empty).".into());
            return;
        }
        let edit = Edit::Inpaint {
            mask: self.mask.pixels.clone(),
            options: self.settings.mask,
        };
        self.start_edit(edit, "Inpaint");
    }

    fn start_outpaint(&mut self, sides: [usize; 4]) {
        let cells = self.settings.extend_px.div_ceil(self.patch()).max(1);
        let label = match sides {
            [1, ..] => "Extend left",
            [_, 1, ..] => "Extend right",
            [_, _, 1, _] => "Extend top",
            _ => "Extend bottom",
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
        if self.running.is_some() {
            self.queued.clear();
            self.worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.status.message = "Cancelling…".into();
        }
    }

    fn fork(&mut self) {
        let seed = self.new_seed();
        if let Some(run) = self.running.as_mut() {
            run.fork_after = true;
            self.worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        match self.forkable {
            Some(id) => self.start_fork(id, seed),
            None => self.errors.push(
                "Fork continues a stopped generation: generate, cancel mid-way, then fork.".into(),
            ),
        }
    }

    fn start_fork(&mut self, id: u64, seed: u64) {
        self.running = Some(Running {
            id: id + 1_000_000,
            label: format!("Fork (seed {seed})"),
            class: Some(self.class),
            started: Instant::now(),
            canvas: TokenCanvas::empty(1, 1),
            latest: Vec::new(),
            last_step_at: Instant::now(),
            fork_after: false,
        });
        self.worker
            .cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.send(WorkerCommand::Fork { id, seed });
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
        crate::document::write_png(
            path,
            doc.canvas.cols * p,
            doc.canvas.rows * p,
            &doc.rgb,
            Some(&meta),
        )?;
        Ok(())
    }

    fn open_model_dialog(&mut self) {
        let Some(gpt) = rfd::FileDialog::new()
            .set_title("ARPG checkpoint")
            .add_filter("Checkpoints", &["pt", "pth", "safetensors"])
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

    pub fn load_models(&mut self, args: ModelSpec) {
        self.loading = Some(args.clone());
        self.status.message = "Loading model…".into();
        self.send(WorkerCommand::LoadModels(args));
    }

    // ---- Events ---------------------------------------------------------------------------

    /// Drains worker events (never blocks).
    pub fn poll_worker(&mut self) {
        if self.worker.is_dead() {
            self.errors
                .push("The worker stopped unexpectedly and was restarted.".into());
            let ctx = self.repaint.clone();
            self.worker = WorkerHandle::spawn(move || ctx.request_repaint());
            self.running = None;
            self.queued.clear();
            let args = self.model_args.clone();
            self.send(WorkerCommand::LoadModels(args));
        }
        while let Ok(ev) = self.worker.events.try_recv() {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::ModelsLoaded { info, palette } => {
                if let Some(args) = self.loading.take() {
                    self.model_args = args;
                }
                self.class_names = info
                    .class_names
                    .clone()
                    .unwrap_or_else(|| class_names(info.num_classes));
                self.class = self.class.min(info.num_classes.saturating_sub(1));
                // A model brings its recommended sampler settings (or the defaults, so that a
                // previous model's recommendation does not linger); the seed stays.
                let seed = self.settings.settings.seed;
                let recommended = !info.sampling.is_empty();
                if let Ok(s) = info.sampling.apply(&Settings::default()) {
                    self.settings.settings = s;
                }
                self.settings.settings.seed = seed;
                self.settings.settings.steps =
                    self.settings.settings.steps.min(info.grid * info.grid);
                self.status.device = info.device.clone();
                self.status.model = format!(
                    "{} ({:.1}M, {}x{} tokens)",
                    info.name,
                    info.params as f64 / 1e6,
                    info.grid,
                    info.grid
                );
                self.status.message = if recommended {
                    "Ready (sampler set to the model's recommended settings)".into()
                } else {
                    "Ready".into()
                };
                self.palette = Some(palette);
                self.model = Some(info);
            }
            WorkerEvent::Started {
                id,
                rows,
                cols,
                canvas,
                ..
            } => {
                if let Some(run) = self.running.as_mut().filter(|r| r.id == id) {
                    run.canvas = canvas.clone();
                    run.started = Instant::now();
                    let p = self.patch();
                    // Keep the known cells' pixels when the canvas only grew around them.
                    let base = self.doc.clone();
                    self.set_extent(rows, cols);
                    self.paint_known(&canvas, base.as_ref(), p);
                    self.upload_state(&canvas, &[]);
                    self.status.step = Some((0, 0));
                    self.status.decided = 0;
                }
            }
            WorkerEvent::Step {
                id,
                cells,
                step,
                total_steps,
                decided,
                elapsed,
            } => {
                if self.running.as_ref().is_some_and(|r| r.id == id) {
                    let previous: Vec<(usize, usize)> = self
                        .running
                        .as_ref()
                        .map(|r| r.latest.clone())
                        .unwrap_or_default();
                    for &(r, c, t, _) in &cells {
                        if let Some(run) = self.running.as_mut() {
                            let cols = run.canvas.cols;
                            run.canvas.cells[r * cols + c] = Some(t);
                        }
                        self.paint_cell(r, c, t);
                    }
                    let latest: Vec<(usize, usize)> =
                        cells.iter().map(|&(r, c, _, _)| (r, c)).collect();
                    for &(r, c) in previous.iter().chain(&latest) {
                        self.upload_cell_state(r, c, latest.contains(&(r, c)));
                    }
                    if let Some(run) = self.running.as_mut() {
                        run.latest = latest;
                        run.last_step_at = Instant::now();
                    }
                    self.status.step = Some((step + 1, total_steps));
                    self.status.decided = decided;
                    self.status.elapsed = elapsed;
                }
            }
            WorkerEvent::Finished {
                id,
                canvas,
                rgb,
                cancelled,
                elapsed,
                settings,
                provenance,
            } => {
                let Some(run) = self.running.take().filter(|r| r.id == id) else {
                    return;
                };
                self.status.elapsed = elapsed;
                self.status.step = None;
                let complete = canvas.unknown_count() == 0 && !rgb.is_empty();
                let p = self.patch();
                let rgb = if complete {
                    rgb
                } else {
                    self.preview_rgb(&canvas)
                };
                let doc = Document {
                    canvas: canvas.clone(),
                    rgb: rgb.clone(),
                    class: run.class,
                    settings: Some(settings.clone()),
                    provenance: Some(provenance.clone()),
                };
                self.show_document(&doc);
                if run.label == "Generate" || run.label.starts_with("Fork") {
                    self.forkable = Some(id);
                }
                self.history.items.push(HistoryItem {
                    label: run.label.clone(),
                    width: canvas.cols * p,
                    height: canvas.rows * p,
                    canvas,
                    rgb,
                    class: run.class,
                    settings,
                    provenance,
                    partial: !complete,
                    thumbnail: None,
                });
                if complete {
                    self.history.staged = Some(self.history.items.len() - 1);
                }
                self.doc = Some(doc);
                self.status.message = if cancelled {
                    format!("{} cancelled; the partial image is kept", run.label)
                } else {
                    format!("{} done", run.label)
                };
                if run.fork_after {
                    let seed = self.new_seed();
                    self.start_fork(id, seed);
                } else if !cancelled {
                    self.run_next();
                }
            }
            WorkerEvent::ImageOpened {
                path,
                canvas,
                rgb,
                class,
                settings,
                provenance,
                notices,
            } => {
                // Shown like errors, as one message: the user must see them, and nothing was lost.
                if !notices.is_empty() {
                    self.errors.push(notices.join(" "));
                }
                if let Some(c) = class {
                    self.class = c;
                }
                self.status.message = format!("Opened {}", path.display());
                // The image's own settings become the next run's (Generate reproduces it).
                if let Some(s) = &settings {
                    self.settings.settings = s.clone();
                    if let Some(p) = &provenance {
                        self.settings.order = p.order;
                    }
                    self.status.message += &format!(
                        "; its settings are restored (seed {}, {} steps, CFG {})",
                        s.seed, s.steps, s.cfg_scale
                    );
                }
                let doc = Document {
                    canvas,
                    rgb,
                    class,
                    settings,
                    provenance,
                };
                self.show_document(&doc);
                self.accepted = Some(doc.clone());
                self.doc = Some(doc);
            }
            WorkerEvent::Error(e) => {
                self.errors.push(e);
                if self.loading.take().is_some() {
                    self.status.message = match &self.model {
                        Some(m) => format!("Model not loaded; still using {}", m.name),
                        None => "No model".into(),
                    };
                }
                if let Some(run) = self.running.take() {
                    self.status.message = format!("{} failed", run.label);
                    self.status.step = None;
                }
                self.queued.clear();
                if self.model.is_none() {
                    self.status.message = "No model".into();
                }
            }
        }
    }

    fn apply_history(&mut self, action: HistoryAction) {
        match action {
            HistoryAction::Accept => {
                self.history.staged = None;
                self.accepted = self.doc.clone();
            }
            HistoryAction::Restore(i) => {
                if let Some(item) = self.history.items.get(i) {
                    let doc = Document {
                        canvas: item.canvas.clone(),
                        rgb: item.rgb.clone(),
                        class: item.class,
                        settings: Some(item.settings.clone()),
                        provenance: Some(item.provenance.clone()),
                    };
                    self.settings.settings = item.settings.clone();
                    self.settings.order = item.provenance.order;
                    if let Some(c) = item.class {
                        self.class = c;
                    }
                    self.show_document(&doc);
                    self.doc = Some(doc);
                    self.history.staged = None;
                }
            }
            HistoryAction::Discard(i) => {
                if i < self.history.items.len() {
                    self.history.items.remove(i);
                }
                if self.history.staged == Some(i) {
                    self.history.staged = None;
                    if let Some(doc) = self.accepted.clone() {
                        self.show_document(&doc);
                        self.doc = Some(doc);
                    }
                }
            }
        }
    }

    // ---- Canvas textures --------------------------------------------------------------------

    fn set_extent(&mut self, rows: usize, cols: usize) {
        let p = self.patch();
        let extent = Extent {
            width: (cols * p) as u32,
            height: (rows * p) as u32,
            rows: rows as u32,
            cols: cols as u32,
        };
        if extent != self.extent {
            self.extent = extent;
            self.image_rgba = vec![0; cols * p * rows * p * 4];
            self.mask = MaskDocument::new(cols * p, rows * p);
            self.uploads.clear();
        }
    }

    /// Shows a finished or opened document: full image upload, no undecided cells.
    fn show_document(&mut self, doc: &Document) {
        let p = self.patch();
        self.set_extent(doc.canvas.rows, doc.canvas.cols);
        let (w, h) = (doc.canvas.cols * p, doc.canvas.rows * p);
        if doc.rgb.len() == w * h * 3 {
            for (dst, src) in self
                .image_rgba
                .chunks_exact_mut(4)
                .zip(doc.rgb.chunks_exact(3))
            {
                dst.copy_from_slice(&[src[0], src[1], src[2], 255]);
            }
        }
        self.uploads.push(Upload {
            target: Target::Image,
            x: 0,
            y: 0,
            w: w as u32,
            h: h as u32,
            bytes: self.image_rgba.clone(),
        });
        self.upload_state(&doc.canvas, &[]);
    }

    /// Before the first step: known cells from the previous document's pixels where they line
    /// up, otherwise from the palette.
    fn paint_known(&mut self, canvas: &TokenCanvas, base: Option<&Document>, p: usize) {
        let w = canvas.cols * p;
        for r in 0..canvas.rows {
            for c in 0..canvas.cols {
                match canvas.get(r, c) {
                    Some(t) => self.paint_cell(r, c, t),
                    None => self.fill_cell(r, c, [20, 22, 26]),
                }
            }
        }
        // Pixel-exact known region when the canvas is the base document or contains it.
        if let Some(doc) = base {
            if let Some((r0, c0)) = locate(&doc.canvas, canvas) {
                let bw = doc.canvas.cols * p;
                for y in 0..doc.canvas.rows * p {
                    for x in 0..bw {
                        let (r, c) = (r0 + y / p, c0 + x / p);
                        if canvas.get(r, c).is_some() && doc.rgb.len() >= (y * bw + x + 1) * 3 {
                            let s = &doc.rgb[(y * bw + x) * 3..(y * bw + x) * 3 + 3];
                            let d = ((r0 * p + y) * w + c0 * p + x) * 4;
                            self.image_rgba[d..d + 4].copy_from_slice(&[s[0], s[1], s[2], 255]);
                        }
                    }
                }
            }
        }
        self.uploads.push(Upload {
            target: Target::Image,
            x: 0,
            y: 0,
            w: w as u32,
            h: (canvas.rows * p) as u32,
            bytes: self.image_rgba.clone(),
        });
    }

    fn fill_cell(&mut self, r: usize, c: usize, rgb: [u8; 3]) {
        let p = self.patch();
        let w = self.extent.width as usize;
        for y in 0..p {
            for x in 0..p {
                let d = ((r * p + y) * w + c * p + x) * 4;
                if d + 4 <= self.image_rgba.len() {
                    self.image_rgba[d..d + 4].copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
                }
            }
        }
    }

    /// Pastes a code's preview tile into the canvas image and queues that cell's upload.
    fn paint_cell(&mut self, r: usize, c: usize, token: u32) {
        let Some(palette) = self.palette.clone() else {
            return;
        };
        let p = self.patch();
        if palette.patch != p {
            return;
        }
        let w = self.extent.width as usize;
        let tile = palette.tile(token);
        let mut bytes = Vec::with_capacity(p * p * 4);
        for y in 0..p {
            for x in 0..p {
                let s = &tile[(y * p + x) * 3..(y * p + x) * 3 + 3];
                let px = [s[0], s[1], s[2], 255];
                let d = ((r * p + y) * w + c * p + x) * 4;
                if d + 4 <= self.image_rgba.len() {
                    self.image_rgba[d..d + 4].copy_from_slice(&px);
                }
                bytes.extend_from_slice(&px);
            }
        }
        self.uploads.push(Upload {
            target: Target::Image,
            x: (c * p) as u32,
            y: (r * p) as u32,
            w: p as u32,
            h: p as u32,
            bytes,
        });
    }

    fn upload_state(&mut self, canvas: &TokenCanvas, latest: &[(usize, usize)]) {
        let mut bytes = Vec::with_capacity(canvas.cells.len() * 4);
        for r in 0..canvas.rows {
            for c in 0..canvas.cols {
                let undecided = if canvas.get(r, c).is_none() { 255 } else { 0 };
                let fresh = if latest.contains(&(r, c)) { 255 } else { 0 };
                bytes.extend_from_slice(&[undecided, fresh, 0, 255]);
            }
        }
        self.uploads.push(Upload {
            target: Target::State,
            x: 0,
            y: 0,
            w: canvas.cols as u32,
            h: canvas.rows as u32,
            bytes,
        });
    }

    fn upload_cell_state(&mut self, r: usize, c: usize, fresh: bool) {
        self.uploads.push(Upload {
            target: Target::State,
            x: c as u32,
            y: r as u32,
            w: 1,
            h: 1,
            bytes: vec![0, if fresh { 255 } else { 0 }, 0, 255],
        });
    }

    /// The palette preview of a (possibly partial) canvas.
    fn preview_rgb(&self, canvas: &TokenCanvas) -> Vec<u8> {
        match &self.palette {
            Some(p) => p.render(&canvas.cells, canvas.rows, canvas.cols),
            None => vec![0; canvas.rows * canvas.cols * self.patch() * self.patch() * 3],
        }
    }

    // ---- UI ---------------------------------------------------------------------------------

    fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let mut fired = Vec::new();
        ctx.input_mut(|i| {
            for cmd in UiCommand::ALL {
                if let Some(sc) = cmd.shortcut() {
                    if i.consume_shortcut(&sc) {
                        fired.push(cmd);
                    }
                }
            }
        });
        for cmd in fired {
            self.execute(cmd);
        }
        // Drag and drop of image files.
        let dropped: Vec<std::path::PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            self.send(WorkerCommand::OpenImage {
                path,
                full_size: self.keep_full_size,
            });
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        let mut fired = None;
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                ui.checkbox(&mut self.keep_full_size, "Keep full size on open")
                    .on_hover_text(
                        "Open large images at their full resolution instead of scaling them \
                         down to the working size (4x the model's image side); slower",
                    );
                for cmd in [UiCommand::OpenImage, UiCommand::SavePng] {
                    if ui
                        .add(
                            egui::Button::new(cmd.label()).shortcut_text(
                                cmd.shortcut()
                                    .map(|s| ui.ctx().format_shortcut(&s))
                                    .unwrap_or_default(),
                            ),
                        )
                        .clicked()
                    {
                        fired = Some(cmd);
                    }
                }
            });
            ui.menu_button("Model", |ui| {
                if let Some(m) = &self.model {
                    ui.label(format!(
                        "{} · {} classes · {}x{} grid · {} px tokens",
                        m.name, m.num_classes, m.grid, m.grid, m.patch
                    ));
                    ui.separator();
                }
                if ui
                    .button(UiCommand::OpenModel.label())
                    .on_hover_text("Official ARPG (.pt / .safetensors) and VQ checkpoints")
                    .clicked()
                {
                    fired = Some(UiCommand::OpenModel);
                }
                if ui.button("Shipped model").clicked() {
                    let args = ModelSpec {
                        gpt: None,
                        vq: None,
                        config: None,
                        ..self.model_args.clone()
                    };
                    self.load_models(args);
                }
            });
            ui.menu_button("View", |ui| {
                for cmd in [UiCommand::ToggleGrid, UiCommand::ZoomToFit] {
                    if ui.button(cmd.label()).clicked() {
                        fired = Some(cmd);
                    }
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button(UiCommand::ShowShortcuts.label()).clicked() {
                    fired = Some(UiCommand::ShowShortcuts);
                }
            });
        });
        if let Some(cmd) = fired {
            self.execute(cmd);
        }
    }

    fn actions(&mut self, ui: &mut egui::Ui) {
        let running = self.is_running();
        let has_doc = self.doc.is_some();
        let mut fired = None;
        ui.heading("Actions");
        let button = |ui: &mut egui::Ui, cmd: UiCommand, enabled: bool| -> bool {
            let sc = cmd.shortcut().map(|s| ui.ctx().format_shortcut(&s));
            let mut b = ui.add_enabled(
                enabled,
                egui::Button::new(cmd.label()).min_size(egui::vec2(120.0, 0.0)),
            );
            if let Some(sc) = sc {
                b = b.on_hover_text(sc);
            }
            b.clicked()
        };
        ui.horizontal_wrapped(|ui| {
            if button(ui, UiCommand::Generate, !running) {
                fired = Some(UiCommand::Generate);
            }
            if button(ui, UiCommand::Cancel, running) {
                fired = Some(UiCommand::Cancel);
            }
            if button(ui, UiCommand::Fork, running || self.forkable.is_some()) {
                fired = Some(UiCommand::Fork);
            }
            if button(ui, UiCommand::Inpaint, !running && has_doc) {
                fired = Some(UiCommand::Inpaint);
            }
            if button(ui, UiCommand::Expand, !running && has_doc) {
                fired = Some(UiCommand::Expand);
            }
        });
        ui.horizontal_wrapped(|ui| {
            for cmd in [
                UiCommand::OutpaintLeft,
                UiCommand::OutpaintRight,
                UiCommand::OutpaintTop,
                UiCommand::OutpaintBottom,
            ] {
                if ui
                    .add_enabled(!running && has_doc, egui::Button::new(cmd.label()))
                    .clicked()
                {
                    fired = Some(cmd);
                }
            }
        });
        if let Some(cmd) = fired {
            self.execute(cmd);
        }
    }

    fn canvas_ui(&mut self, ui: &mut egui::Ui) {
        let avail = ui.available_rect_before_wrap();
        let (rect, response) = ui.allocate_exact_size(avail.size(), egui::Sense::click_and_drag());
        self.canvas_widget = Some(rect);
        let size = egui::vec2(self.extent.width as f32, self.extent.height as f32);
        if self.doc.is_none() && self.running.is_none() {
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Pick a class and press Generate (Ctrl+Enter)",
                egui::FontId::proportional(16.0),
                ui.visuals().weak_text_color(),
            );
            return;
        }
        // Zoom with the wheel, pan with middle drag or space + drag.
        if let Some(pos) = response.hover_pos() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.view.zoom_at(rect, size, pos, (scroll * 0.0025).exp());
            }
        }
        let panning = response.dragged_by(egui::PointerButton::Middle)
            || (response.dragged() && ui.input(|i| i.key_down(egui::Key::Space)));
        if panning {
            self.view.pan += response.drag_delta();
        } else if self.running.is_none() {
            self.paint_mask(&response, rect, size);
        }
        let canvas_rect = self.view.canvas_rect(rect, size);
        let to_clip = |p: egui::Pos2| {
            [
                (p.x - rect.left()) / rect.width() * 2.0 - 1.0,
                1.0 - (p.y - rect.top()) / rect.height() * 2.0,
            ]
        };
        let (tl, br) = (
            to_clip(canvas_rect.left_top()),
            to_clip(canvas_rect.right_bottom()),
        );
        let highlight = self.running.as_ref().map_or(0.0, |r| {
            (1.0 - r.last_step_at.elapsed().as_secs_f32() / 0.6).max(0.0)
        });
        if highlight > 0.0 {
            ui.ctx().request_repaint();
        }
        if let Some((x, y, w, h, bytes)) = self.mask.take_dirty() {
            self.uploads.push(Upload {
                target: Target::Mask,
                x: x as u32,
                y: y as u32,
                w: w as u32,
                h: h as u32,
                bytes,
            });
            let p = self.patch();
            if let Ok(cells) = tasks::token_mask(
                &self.mask.pixels,
                self.mask.width,
                self.mask.height,
                p,
                self.settings.mask.threshold,
                self.settings.mask.dilate,
            ) {
                let bytes = cells.iter().map(|&c| if c { 255 } else { 0 }).collect();
                self.uploads.push(Upload {
                    target: Target::MaskCells,
                    x: 0,
                    y: 0,
                    w: self.extent.cols,
                    h: self.extent.rows,
                    bytes,
                });
            }
        }
        let callback = CanvasCallback {
            view: ViewUniform {
                rect: [tl[0], tl[1], br[0], br[1]],
                size: [
                    size.x,
                    size.y,
                    self.extent.cols as f32,
                    self.extent.rows as f32,
                ],
                params: [
                    ui.input(|i| i.time) as f32,
                    highlight,
                    if self.tools.show_grid { 1.0 } else { 0.0 },
                    0.0,
                ],
            },
            extent: self.extent,
            uploads: std::mem::take(&mut self.uploads),
            show_mask: self.tools.show_mask,
            show_generation: self.running.is_some() || self.tools.show_grid,
        };
        if self.has_gpu {
            ui.painter()
                .with_clip_rect(rect)
                .add(egui_wgpu::Callback::new_paint_callback(rect, callback));
        } else {
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "No wgpu device: the canvas cannot be drawn",
                egui::FontId::proportional(14.0),
                ui.visuals().error_fg_color,
            );
        }
        // Brush outline.
        if let Some(pos) = response.hover_pos() {
            let s = self.view.scale(rect, size);
            ui.painter().circle_stroke(
                pos,
                self.tools.radius * s,
                egui::Stroke::new(1.0, egui::Color32::from_white_alpha(160)),
            );
        }
    }

    fn paint_mask(&mut self, response: &egui::Response, rect: egui::Rect, size: egui::Vec2) {
        if response.drag_started_by(egui::PointerButton::Primary)
            || (response.clicked() && !self.mask.is_painting())
        {
            self.mask.begin_stroke(
                self.tools.tool == Tool::Eraser,
                self.tools.radius,
                self.tools.hardness,
            );
        }
        if self.mask.is_painting() {
            if let Some(pos) = response.interact_pointer_pos() {
                let p = self.view.to_canvas(rect, size, pos);
                self.mask.extend_stroke(p.x, p.y);
            }
        }
        if response.drag_stopped() || response.clicked() {
            self.mask.end_stroke();
        }
    }

    /// One frame of the whole UI (public so tests can drive it).
    pub fn frame(&mut self, ui: &mut egui::Ui) {
        self.poll_worker();
        let ctx = ui.ctx().clone();
        self.handle_shortcuts(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| {
            let s = &self.status;
            s.ui(ui);
        });
        egui::Panel::bottom("history")
            .resizable(false)
            .show(ui, |ui| {
                if let Some(action) = self.history.ui(ui) {
                    self.apply_history(action);
                }
            });
        egui::Panel::left("controls")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    self.actions(ui);
                    ui.separator();
                    let mut random = false;
                    let names = self.class_names.clone();
                    self.class_panel
                        .ui(ui, &names, &mut self.class, &mut random);
                    if random {
                        self.execute(UiCommand::RandomClass);
                    }
                    ui.separator();
                    let max_steps = self.model.as_ref().map_or(256, |m| m.grid * m.grid);
                    self.settings.ui(ui, max_steps);
                    ui.separator();
                    let (u, r) = (self.mask.can_undo(), self.mask.can_redo());
                    for cmd in self.tools.ui(ui, u, r) {
                        self.execute(cmd);
                    }
                });
            });
        egui::CentralPanel::default().show(ui, |ui| {
            if !self.errors.is_empty() {
                let mut dismiss = false;
                egui::Frame::new()
                    .fill(ui.visuals().error_fg_color.gamma_multiply(0.15))
                    .inner_margin(6.0)
                    .show(ui, |ui| {
                        ui.horizontal(|ui| {
                            ui.colored_label(
                                ui.visuals().error_fg_color,
                                self.errors.last().map_or("", String::as_str),
                            );
                            if ui.small_button("Dismiss").clicked() {
                                dismiss = true;
                            }
                        });
                    });
                if dismiss {
                    self.errors.clear();
                }
            }
            self.canvas_ui(ui);
        });
        let mut open = self.show_shortcuts;
        super::ui::shortcuts_window::show(&ctx, &mut open);
        self.show_shortcuts = open;
        if self.running.is_some() {
            ctx.request_repaint_after(std::time::Duration::from_millis(50));
        }
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame(ui);
    }
}

/// Where `inner` sits inside `outer` (as an exact sub-grid of known tokens), if it does.
fn locate(inner: &TokenCanvas, outer: &TokenCanvas) -> Option<(usize, usize)> {
    if inner.rows > outer.rows || inner.cols > outer.cols {
        return None;
    }
    for r0 in 0..=outer.rows - inner.rows {
        for c0 in 0..=outer.cols - inner.cols {
            let fits = (0..inner.rows)
                .all(|r| (0..inner.cols).all(|c| outer.get(r0 + r, c0 + c) == inner.get(r, c)));
            if fits {
                return Some((r0, c0));
            }
        }
    }
    None
}

/// Display names when no `classes.txt` is beside the checkpoint: the shipped dataset's names for
/// a 10-class model, otherwise indices.
fn class_names(n: usize) -> Vec<String> {
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
