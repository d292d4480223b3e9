//! The app: the document and the routing of commands to jobs ([`StudioApp::execute`]: a
//! command becomes a job of the core's edit pipeline or a generation, sent to the worker). It
//! owns no model and runs no model code. Worker events update the document in [`events`]; the
//! frame's panels and canvas are laid out in [`frame`].

mod canvas_ui;
mod edits;
mod events;
mod files;
mod frame;
mod runs;

use runs::Running;

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
use super::gpu::{CanvasResources, GpuCanvas};
use super::messages::{Job, JobKind, ModelInfo, RunKind, WorkerCommand};
use super::ui::class_panel::ClassPanel;
use super::ui::history_panel::HistoryPanel;
use super::ui::settings_panel::SettingsPanel;
use super::ui::status_bar::StatusBar;
use super::ui::tools_panel::{Tool, ToolsPanel};
use super::worker::WorkerHandle;

/// The device the app chooses itself (`arpg-studio` without `--device`): the window's GPU when
/// it is a hardware one, else the CPU.
pub const AUTO_DEVICE: &str = "auto";

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
    /// The window's own GPU device, shared with the engine (see [`WorkerHandle::spawn`]).
    pub gpu: Option<arpg_core::gpu::Gpu>,
    /// The canvas texture the live preview writes on that device (see [`GpuCanvas`]).
    pub gpu_canvas: GpuCanvas,
    /// Live decodes written straight into the canvas texture, and the partial canvas of the
    /// last one.
    pub gpu_previews: usize,
    pub last_gpu_preview: Option<TokenCanvas>,
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
    /// The last live decode painted: the partial canvas it was for and its pixels.
    pub last_preview: Option<(TokenCanvas, Vec<u8>)>,
    /// The Outpaint button under the pointer: its side, `[left, right, top, bottom]` as 0/1.
    outpaint_hover: Option<[usize; 4]>,
    /// The mask threshold and dilation the regenerated cells were last computed with.
    mask_selection: (f32, usize),
}

impl StudioApp {
    /// Creates the app and asks the worker to load `model_args` (the shipped model by default).
    pub fn new(cc: &eframe::CreationContext<'_>, model_args: ModelSpec) -> Self {
        let gpu_canvas = GpuCanvas::default();
        let has_gpu = match cc.wgpu_render_state.as_ref() {
            Some(rs) => {
                CanvasResources::install(rs, &gpu_canvas);
                true
            }
            None => false,
        };
        // The window's own device computes the engine's GPU work (`wgpu` in the Model menu).
        let gpu = cc.wgpu_render_state.as_ref().map(|rs| {
            arpg_core::gpu::Gpu::shared(
                rs.device.clone(),
                rs.queue.clone(),
                arpg_core::gpu::describe(&rs.adapter.get_info()),
            )
        });
        // `auto`: the window's GPU when it is a hardware one (a software renderer decodes
        // slower than the CPU), else the CPU.
        let mut model_args = model_args;
        if model_args.device == AUTO_DEVICE {
            let hardware = gpu.as_ref().is_some_and(|g| !g.adapter().software);
            model_args.device = if hardware { "wgpu" } else { "cpu" }.into();
        }
        let ctx = cc.egui_ctx.clone();
        let repaint = ctx.clone();
        let worker = WorkerHandle::spawn(
            move || repaint.request_repaint(),
            gpu.clone(),
            gpu_canvas.clone(),
        );
        let mut app = Self {
            gpu,
            gpu_canvas,
            gpu_previews: 0,
            last_gpu_preview: None,
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
            last_preview: None,
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
            UiCommand::History(action) => self.apply_history(action),
        }
    }

    fn toggle_overlay(&mut self, overlay: Overlay) {
        self.tools.overlay = if self.tools.overlay == overlay {
            Overlay::None
        } else {
            overlay
        };
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
