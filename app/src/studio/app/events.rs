//! Worker events → the document, the history and the canvas image.

use std::time::Instant;

use arpg_core::canvas::TokenCanvas;
use arpg_core::generator::Settings;

use super::{class_names, Document, StudioApp};
use crate::studio::canvas::cell_map::CellMap;
use crate::studio::canvas::mask::MaskDocument;
use crate::studio::canvas::priority::PriorityMap;
use crate::studio::commands::HistoryAction;
use crate::studio::messages::{
    ImageOpened, ModelInfo, RunFinished, RunStarted, RunStep, WorkerCommand, WorkerEvent,
};
use crate::studio::ui::history_panel::HistoryItem;
use crate::studio::worker::WorkerHandle;

impl StudioApp {
    // ---- Events ---------------------------------------------------------------------------

    /// Drains worker events (never blocks).
    pub fn poll_worker(&mut self) {
        if self.worker.is_dead() {
            self.errors
                .push("The worker stopped unexpectedly and was restarted.".into());
            let ctx = self.repaint.clone();
            self.worker = WorkerHandle::spawn(
                move || ctx.request_repaint(),
                self.gpu.clone(),
                self.gpu_canvas.clone(),
            );
            self.running = None;
            self.queued.clear();
            let args = self.model_args.clone();
            self.send(WorkerCommand::LoadModels(args));
        }
        while let Ok(ev) = self.worker.events.try_recv() {
            self.on_event(ev);
        }
        let errors = self.downloads.poll();
        if !errors.is_empty() {
            self.downloads.load_when_ready = None;
            self.errors.extend(errors);
        }
        if let Some(name) = self.downloads.load_when_ready {
            let vq = crate::hub::TOKENIZER.name;
            if let (Some(gpt), Some(tok)) = (self.downloads.ready(name), self.downloads.ready(vq)) {
                self.downloads.load_when_ready = None;
                self.load_official(gpt, tok);
            }
        }
    }

    pub(super) fn on_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::ModelsLoaded { info, palette } => self.on_models_loaded(info, palette),
            WorkerEvent::PaletteProgress {
                tokenizer,
                done,
                total,
            } => {
                if self
                    .model
                    .as_ref()
                    .is_some_and(|m| m.tokenizer == tokenizer)
                {
                    self.status.palette = Some((done, total));
                }
            }
            WorkerEvent::PaletteReady { tokenizer, palette } => {
                if self
                    .model
                    .as_ref()
                    .is_some_and(|m| m.tokenizer == tokenizer)
                {
                    self.palette = Some(palette);
                    self.status.palette = None;
                }
            }
            WorkerEvent::Started(ev) => self.on_started(ev),
            WorkerEvent::Step(ev) => self.on_step(ev),
            WorkerEvent::DecodeTimed { ms } => self.on_decode_timed(ms),
            WorkerEvent::Preview { id, canvas, rgb } => self.on_preview(id, canvas, rgb),
            WorkerEvent::PreviewOnGpu { id, canvas } => {
                // Already in the texture; the CPU mirror catches up when the run finishes.
                if self.running.as_ref().is_some_and(|r| r.id == id) {
                    self.previews_shown += 1;
                    self.gpu_previews += 1;
                    self.last_gpu_preview = Some(canvas);
                }
            }
            WorkerEvent::Finished(ev) => self.on_finished(ev),
            WorkerEvent::ImageOpened(ev) => self.on_image_opened(ev),
            WorkerEvent::Error(e) => self.on_error(e),
        }
    }

    fn on_models_loaded(
        &mut self,
        info: ModelInfo,
        palette: Option<std::sync::Arc<arpg_core::vq::Palette>>,
    ) {
        if let Some(args) = self.loading.take() {
            self.model_args = args;
        }
        if let Some(path) = &self.remember {
            // Not being able to remember is only a default lost next time.
            if let Ok(json) = serde_json::to_vec_pretty(&self.model_args) {
                let _ = std::fs::create_dir_all(path.parent().unwrap_or(path))
                    .map_err(anyhow::Error::from)
                    .and_then(|_| Ok(arpg_core::document::write_atomic(path, &json)?));
            }
        }
        self.class_names = info
            .class_names
            .clone()
            .unwrap_or_else(|| class_names(info.num_classes));
        self.class_synonyms = if info.num_classes == 1000 {
            arpg_core::imagenet::classes()
                .into_iter()
                .map(|c| c.into_iter().map(str::to_string).collect())
                .collect()
        } else {
            Vec::new()
        };
        self.class = self.class.min(info.num_classes.saturating_sub(1));
        // A model brings its recommended sampler settings (or the defaults, so that a
        // previous model's recommendation does not linger); the seed stays.
        let seed = self.settings.settings.seed;
        let recommended = !info.sampling.is_empty();
        if let Ok(s) = info.sampling.apply(&Settings::default()) {
            self.settings.settings = s;
        }
        self.settings.settings.seed = seed;
        self.settings.settings.steps = self.settings.settings.steps.min(info.grid * info.grid);
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
        if !info.notices.is_empty() {
            self.status.message = format!("{} · {}", self.status.message, info.notices.join("; "));
        }
        self.status.palette = palette.is_none().then_some((0, info.codebook_size));
        self.palette = palette;
        // The open image's tokens are the previous tokenizer's codes: keep its pixels and
        // encode them again, never decode them with this one.
        let changed = self
            .model
            .as_ref()
            .is_some_and(|m| m.tokenizer != info.tokenizer);
        let reencode = self.doc.as_ref().filter(|_| changed).map(|doc| {
            let p = self.patch();
            let [w, h] = doc.size;
            let pw = doc.canvas.cols * p;
            WorkerCommand::Reencode {
                rgb: arpg_core::pixels::crop(&doc.rgb, pw, 3, (0, 0), (w, h)),
                size: doc.size,
                class: doc.class,
                settings: doc.settings.clone(),
                provenance: doc.provenance.clone(),
            }
        });
        self.model = Some(info);
        if let Some(cmd) = reencode {
            self.doc = None;
            self.accepted = None;
            self.send(cmd);
        }
    }

    fn on_started(&mut self, ev: RunStarted) {
        let RunStarted {
            id,
            rows,
            cols,
            canvas,
            ..
        } = ev;
        if let Some(run) = self.running.as_mut().filter(|r| r.id == id) {
            run.canvas = canvas.clone();
            run.to_decide = canvas.cells.iter().map(Option::is_none).collect();
            run.started = Instant::now();
            // Keep the known cells' pixels when the canvas only grew around them.
            let base = self.doc.take();
            self.set_extent(rows, cols);
            let base_px = base.as_ref().map(|d| (&d.canvas, d.rgb.as_slice()));
            self.image
                .paint_known(&canvas, base_px, self.palette.as_deref());
            // Known cells keep what an earlier run recorded about them (a re-roll's
            // context keeps its confidences); the cells to decide start blank.
            if (self.cell_map.rows, self.cell_map.cols) != (rows, cols) {
                self.cell_map = CellMap::new(rows, cols);
            }
            self.cell_map.begin_run(id);
            // A run started: a paused generation is no longer what the canvas shows.
            if self.paused.take().is_some() && !self.mask.is_empty() {
                // The mask said what to erase and is done with (undo brings it back).
                self.mask.clear();
            }
            for (i, cell) in canvas.cells.iter().enumerate() {
                if cell.is_none() {
                    self.cell_map.cells[i] = None;
                }
            }
            self.image.upload_state(&canvas, &[], &self.cell_map);
            self.tools.replay = None;
            self.shown_replay = None;
            self.doc = base;
            self.status.step = Some((0, 0));
            self.status.decided = 0;
        }
    }

    fn on_step(&mut self, ev: RunStep) {
        let RunStep {
            id,
            cells,
            step,
            total_steps,
            decided,
            elapsed,
        } = ev;
        if self.running.as_ref().is_some_and(|r| r.id == id) {
            // The window's GPU writes each step's decode into the texture: no tiles meanwhile.
            let gpu_paints =
                self.live_decode() && self.model.as_ref().is_some_and(|m| m.gpu_preview);
            let previous: Vec<(usize, usize)> = self
                .running
                .as_ref()
                .map(|r| r.latest.clone())
                .unwrap_or_default();
            for d in &cells {
                // Merged steps keep each cell's own step.
                self.cell_map
                    .record(d.row, d.col, d.token, d.probability, d.step, total_steps);
                if let Some(run) = self.running.as_mut() {
                    let cols = run.canvas.cols;
                    run.canvas.cells[d.row * cols + d.col] = Some(d.token);
                }
                if let Some(palette) = self.palette.as_ref().filter(|_| !gpu_paints) {
                    self.image.paint_cell(d.row, d.col, d.token, palette);
                }
            }
            let latest: Vec<(usize, usize)> = cells.iter().map(|d| (d.row, d.col)).collect();
            for &(r, c) in previous.iter().chain(&latest) {
                let texel = self.cell_map.texel(r, c);
                self.image
                    .upload_cell_state(r, c, latest.contains(&(r, c)), texel);
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

    fn on_decode_timed(&mut self, ms: f64) {
        if let Some(m) = self.model.as_mut() {
            m.decode_ms = Some(ms);
        }
    }

    fn on_preview(&mut self, id: u64, canvas: TokenCanvas, rgb: Vec<u8>) {
        let extent = self.image.extent();
        let fits = (canvas.rows, canvas.cols) == (extent.rows as usize, extent.cols as usize);
        if let Some(run) = self.running.as_ref().filter(|r| r.id == id && fits) {
            // Only cells this run decided whose token is still the one decoded.
            let cells: Vec<(usize, usize)> = (0..canvas.cells.len())
                .filter(|&i| {
                    run.to_decide.get(i) == Some(&true)
                        && canvas.cells[i].is_some()
                        && run.canvas.cells.get(i) == Some(&canvas.cells[i])
                })
                .map(|i| (i / canvas.cols, i % canvas.cols))
                .collect();
            if self.image.paint_decoded(&cells, &rgb) {
                self.previews_shown += 1;
                self.last_preview = Some((canvas, rgb));
            }
        }
    }

    fn on_finished(&mut self, ev: RunFinished) {
        let RunFinished {
            id,
            canvas,
            rgb,
            size,
            cancelled,
            elapsed,
            settings,
            provenance,
        } = ev;
        let Some(run) = self.running.take().filter(|r| r.id == id) else {
            return;
        };
        let total_steps = settings.steps;
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
            size,
            class: run.class,
            settings: Some(settings.clone()),
            provenance: Some(provenance.clone()),
        };
        self.show_document(&doc);
        // Only a generation stopped before its end can be forked (a finished one would
        // fork into itself); a later run replaces it in the worker.
        self.forkable = (run.is_generation() && cancelled).then_some((id, run.class));
        self.history.items.push(HistoryItem {
            label: run.label.clone(),
            width: canvas.cols * p,
            height: canvas.rows * p,
            size,
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
        self.status.message = if cancelled && run.pause_after {
            self.paused = Some(id);
            format!(
                "Paused at step {} of {}: mask cells to erase (brush, or pick them \
                 with K), then Resume (Ctrl+Shift+P)",
                self.cell_map.last_step().map_or(0, |s| s + 1),
                total_steps
            )
        } else if cancelled {
            format!("{} cancelled; the partial image is kept", run.label)
        } else {
            format!("{} done", run.label)
        };
        if run.fork_after {
            let seed = self.new_seed();
            self.start_fork(id, run.class, seed);
        } else if !cancelled {
            self.run_next();
        }
    }

    fn on_image_opened(&mut self, ev: ImageOpened) {
        let ImageOpened {
            name,
            canvas,
            rgb,
            size,
            class,
            settings,
            provenance,
            notices,
            fill,
        } = ev;
        // Shown like errors, as one message: the user must see them, and nothing was lost.
        if !notices.is_empty() {
            self.errors.push(notices.join(" "));
        }
        let classes = self.model.as_ref().map_or(0, |m| m.num_classes);
        match class {
            Some(c) if c < classes => self.class = c,
            Some(c) => self.errors.push(format!(
                "The image was made with class {c}, which this model does not have \
                 (classes 0..{}); the class picker is unchanged.",
                classes.saturating_sub(1)
            )),
            None => {}
        }
        self.status.message = format!("Opened {name}");
        // The image's own settings become the next run's: Generate makes a generated
        // image again (a fork needs `arpg generate --from`; an edit, its source image).
        if let Some(s) = &settings {
            self.settings.settings = s.clone();
            if let Some(p) = &provenance {
                self.settings.order = p.order;
            }
            let how = match &provenance {
                Some(p) if p.task == arpg_core::provenance::Task::Resume => {
                    " (paused and resumed: its metadata cannot make it again)".into()
                }
                Some(p) if p.task != arpg_core::provenance::Task::Generate => {
                    format!(" (made by {:?}: rerun it on its source)", p.task).to_lowercase()
                }
                Some(p) if !p.forked_from.is_empty() => {
                    " (a fork: `arpg generate --from` makes it again)".into()
                }
                _ => String::new(),
            };
            self.status.message += &format!(
                "; its settings are restored (seed {}, {} steps, CFG {}){how}",
                s.seed, s.steps, s.cfg_scale
            );
        }
        let doc = Document {
            canvas,
            rgb,
            size,
            class,
            settings,
            provenance,
        };
        self.cell_map = CellMap::default();
        self.paused = None;
        self.show_document(&doc);
        self.restore_priority(doc.provenance.as_ref());
        self.accepted = Some(doc.clone());
        self.doc = Some(doc);
        if let Some(fill) = fill {
            self.mask.replace(fill);
        }
    }

    fn on_error(&mut self, e: String) {
        self.errors.push(e);
        // A failed run's draws describe no document.
        if let Some(doc) = &self.doc {
            let c = &doc.canvas;
            self.cell_map.keep_matching(c.rows, c.cols, &c.cells);
        }
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

    pub(super) fn apply_history(&mut self, action: HistoryAction) {
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
                        size: item.size,
                        class: item.class,
                        settings: Some(item.settings.clone()),
                        provenance: Some(item.provenance.clone()),
                    };
                    self.settings.settings = item.settings.clone();
                    self.settings.order = item.provenance.order;
                    if let Some(c) = item.class {
                        self.class = c;
                    }
                    self.cell_map = CellMap::default();
                    self.paused = None;
                    self.show_document(&doc);
                    self.restore_priority(doc.provenance.as_ref());
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
                        self.cell_map = CellMap::default();
                        self.show_document(&doc);
                        self.doc = Some(doc);
                    }
                }
            }
        }
    }

    // ---- Canvas textures --------------------------------------------------------------------

    /// Resizes the canvas image (and the mask with it) to `rows x cols` cells.
    pub(super) fn set_extent(&mut self, rows: usize, cols: usize) {
        let p = self.patch();
        if self.image.set_extent(rows, cols, p) {
            self.mask = MaskDocument::new(cols * p, rows * p);
            self.priority = PriorityMap::new(rows, cols);
        }
    }

    /// Shows a finished or opened document: full image upload, no undecided cells.
    /// The cell map is drawn as far as it matches the document (a map of another size is
    /// dropped).
    pub(super) fn show_document(&mut self, doc: &Document) {
        self.set_extent(doc.canvas.rows, doc.canvas.cols);
        let c = &doc.canvas;
        self.cell_map.keep_matching(c.rows, c.cols, &c.cells);
        self.image.show(&doc.canvas, &doc.rgb, &self.cell_map);
        self.tools.replay = None;
        self.shown_replay = None;
    }

    /// A document's painted priorities come back with it (the next Generate makes it again),
    /// when they cover its canvas; otherwise the map is cleared.
    fn restore_priority(&mut self, provenance: Option<&arpg_core::provenance::Provenance>) {
        let (rows, cols) = (self.priority.rows, self.priority.cols);
        self.priority = PriorityMap::new(rows, cols);
        if let Some(levels) = provenance.and_then(|p| p.priority.as_ref()) {
            if levels.len() == rows * cols {
                self.priority.levels.clone_from(levels);
            }
        }
    }

    /// Brings the state texture to the replay timeline's step when it moved (the document's
    /// own state when it is back at the result).
    pub(super) fn sync_replay(&mut self) {
        if self.running.is_some() || self.tools.replay == self.shown_replay {
            return;
        }
        self.shown_replay = self.tools.replay;
        let Some(doc) = self.doc.as_ref() else {
            return;
        };
        let c = &doc.canvas;
        self.cell_map.keep_matching(c.rows, c.cols, &c.cells);
        match self.tools.replay {
            Some(k) => self.image.upload_replay(&doc.canvas, &self.cell_map, k),
            None => self.image.upload_state(&doc.canvas, &[], &self.cell_map),
        }
    }

    /// The palette preview of a (possibly partial) canvas.
    pub(super) fn preview_rgb(&self, canvas: &TokenCanvas) -> Vec<u8> {
        match &self.palette {
            Some(p) => p.render(&canvas.cells, canvas.rows, canvas.cols),
            None => vec![0; canvas.rows * canvas.cols * self.patch() * self.patch() * 3],
        }
    }
}
