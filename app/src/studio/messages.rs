//! The messages between the UI and the worker thread: what to run ([`Job`], [`WorkerCommand`])
//! and what happened ([`WorkerEvent`]). Both sides (the app, the worker and the preview thread)
//! import them from here, so no thread's module imports another's.

use std::path::PathBuf;
use std::sync::Arc;

use arpg_core::canvas::TokenCanvas;
use arpg_core::edit::{EditPlan, MaskOptions};
use arpg_core::generator::Settings;
use arpg_core::order::Order;
use arpg_core::pair::ModelSpec;
use arpg_core::provenance::{BatchPlace, Provenance};
use arpg_core::run::Decided;
use arpg_core::vq::Palette;

/// What a run is. The app's record of a running job and the worker agree on it: whether a run
/// can be forked or paused follows from its kind, never from its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Generate,
    /// Inpaint, outpaint or expand of the document (the edit pipeline).
    Edit,
    /// Inpainting of a large document by region.
    Region,
    /// A stopped generation continued with another seed.
    Fork,
    /// A paused generation resumed with cells erased.
    Resume,
}

impl RunKind {
    /// A generation (or its fork or resumption): what Fork and Pause continue.
    pub fn is_generation(self) -> bool {
        matches!(self, RunKind::Generate | RunKind::Fork | RunKind::Resume)
    }
}

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

impl Job {
    /// The kind of run this job is.
    pub fn run_kind(&self) -> RunKind {
        match self.kind {
            JobKind::Generate { .. } => RunKind::Generate,
            JobKind::Edit(_) => RunKind::Edit,
            JobKind::InpaintRegion { .. } => RunKind::Region,
        }
    }

    /// The painted priority map, when it covers `canvas` cell for cell.
    pub(crate) fn painted(&self, canvas: &TokenCanvas) -> Option<&Vec<u8>> {
        self.priority
            .as_ref()
            .filter(|p| p.len() == canvas.cells.len())
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
        /// The fork's own run id (from the app's one id counter).
        new_id: u64,
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
    /// Where the models run, for the status bar (e.g. `CPU`, or the GPU that decodes).
    pub device: String,
    /// What the user should know about where they run (a GPU that could not be used).
    pub notices: Vec<String>,
    /// The tokenizer decodes on the window's own GPU: live previews are written into the canvas
    /// texture there (per-code tiles are not painted meanwhile).
    pub gpu_preview: bool,
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
    /// The transformer's identity (see [`arpg_core::loader::transformer_identity`]).
    pub transformer: String,
    /// Codes in the tokenizer's codebook.
    pub codebook_size: usize,
    /// Milliseconds one decode of the model's grid takes (what a decoded live preview costs),
    /// once the preview thread has measured it after the load (`None` until then).
    pub decode_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// The models are loaded and usable. `palette`: the preview palette when it was cached or
    /// cheap; otherwise it follows in `PaletteReady` (see [`crate::studio::palette`]).
    ModelsLoaded {
        info: ModelInfo,
        palette: Option<Arc<Palette>>,
    },
    /// The background palette of tokenizer `tokenizer` has `done` of `total` codes.
    PaletteProgress {
        tokenizer: String,
        done: usize,
        total: usize,
    },
    /// The background palette of tokenizer `tokenizer` is ready.
    PaletteReady {
        tokenizer: String,
        palette: Arc<Palette>,
    },
    Started(RunStarted),
    Step(RunStep),
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
    /// A live decode of the run's partial canvas written straight into the canvas texture's
    /// cells the run decided (on the window's GPU; nothing read back). `canvas`: the cells it
    /// had.
    PreviewOnGpu {
        id: u64,
        canvas: TokenCanvas,
    },
    Finished(RunFinished),
    ImageOpened(ImageOpened),
    Error(String),
}

/// A run started: its canvas (known cells set) and how many cells it decides.
#[derive(Debug, Clone)]
pub struct RunStarted {
    pub id: u64,
    pub rows: usize,
    pub cols: usize,
    pub unknown: usize,
    pub canvas: TokenCanvas,
}

/// Cells decided (or drawn again: settling, polishing) since the last event.
#[derive(Debug, Clone)]
pub struct RunStep {
    pub id: u64,
    /// Each cell with its token, probability, step and whether it was drawn again.
    pub cells: Vec<Decided>,
    pub step: usize,
    pub total_steps: usize,
    pub decided: usize,
    pub elapsed: f64,
}

/// A run ended (done, cancelled or paused) with its canvas and what made it.
#[derive(Debug, Clone)]
pub struct RunFinished {
    pub id: u64,
    pub canvas: TokenCanvas,
    pub rgb: Vec<u8>,
    /// `[width, height]` of the image the canvas stands for: at most its pixels (a source
    /// that is not a whole number of tokens keeps its own size; the rest is padding).
    pub size: [usize; 2],
    pub cancelled: bool,
    pub elapsed: f64,
    /// The settings the job actually ran with (a fork's: its own seed) and how it was made:
    /// what the document records.
    pub settings: Settings,
    pub provenance: Provenance,
}

/// A picture became the document.
#[derive(Debug, Clone)]
pub struct ImageOpened {
    /// What the user calls it: the file's path, or "the open image".
    pub name: String,
    pub canvas: TokenCanvas,
    pub rgb: Vec<u8>,
    /// The image's own `[width, height]` (the canvas is padded to whole tokens).
    pub size: [usize; 2],
    pub class: Option<usize>,
    /// The settings and provenance its PNG records, if any.
    pub settings: Option<Settings>,
    pub provenance: Option<Provenance>,
    /// What the user should know about the import (stale metadata, padding, transparency).
    pub notices: Vec<String>,
    /// The image's wholly transparent pixels as a mask of the canvas's size (255 = fill),
    /// when it has any.
    pub fill: Option<Vec<u8>>,
}
