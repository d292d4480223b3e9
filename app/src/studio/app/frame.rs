//! One frame of the UI: menus, actions, panels, the canvas widget and its paint callback. What
//! the user fires is queued as commands and run once at the end of the frame.

use arpg_core::pair::ModelSpec;
use eframe::egui;

use super::StudioApp;
use crate::studio::commands::UiCommand;
use crate::studio::downloads::Status;
use crate::studio::messages::WorkerCommand;
use crate::studio::ui::tools_panel::LivePreview;

impl StudioApp {
    // ---- UI ---------------------------------------------------------------------------------

    pub(super) fn handle_shortcuts(&mut self, ctx: &egui::Context) {
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
            self.commands.push(cmd);
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

    pub(super) fn menu_bar(&mut self, ui: &mut egui::Ui) {
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
                ui.separator();
                self.weights_menu(ui);
                ui.separator();
                self.device_menu(ui);
                ui.separator();
                ui.label("Official models (ImageNet 256x256, from the model hub)");
                for o in &crate::hub::OFFICIAL[..3] {
                    self.official_model_row(ui, *o);
                }
            });
            ui.menu_button("View", |ui| {
                for cmd in [
                    UiCommand::ToggleGrid,
                    UiCommand::ToggleConfidence,
                    UiCommand::ToggleOrderMap,
                    UiCommand::ReplayBack,
                    UiCommand::ReplayForward,
                    UiCommand::ZoomToFit,
                ] {
                    if ui.button(cmd.label()).clicked() {
                        fired = Some(cmd);
                    }
                }
                ui.separator();
                ui.label("Live preview");
                let decode_ms = self.model.as_ref().and_then(|m| m.decode_ms);
                for mode in LivePreview::ALL {
                    let hint = match decode_ms {
                        Some(ms) => format!("One decode of this model's grid took {ms:.0} ms"),
                        None => "No model loaded yet".into(),
                    };
                    ui.radio_value(&mut self.tools.live_preview, mode, mode.label())
                        .on_hover_text(hint);
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button(UiCommand::ShowShortcuts.label()).clicked() {
                    fired = Some(UiCommand::ShowShortcuts);
                }
            });
        });
        if let Some(cmd) = fired {
            self.commands.push(cmd);
        }
    }

    /// How the transformer's weights are held: exact f32, bf16 (half the memory; on CPUs with
    /// AVX512-BF16 bf16 products, KV cache and decoder), or quantized (faster on the CPU,
    /// slightly different images).
    /// Choosing one reloads the current model with it.
    /// Model → Device: the CPU, or the window's own GPU (by its adapter's name) for the
    /// tokenizer's decoder, so the live preview decodes every step; the transformer stays on
    /// the CPU. Choosing reloads the models.
    fn device_menu(&mut self, ui: &mut egui::Ui) {
        ui.label("Device");
        let mut choices = vec![(
            "cpu".to_string(),
            "CPU".to_string(),
            "The transformer and the tokenizer on the CPU".to_string(),
        )];
        if let Some(gpu) = &self.gpu {
            let a = gpu.adapter();
            let software = if a.software {
                " (software renderer: slower than the CPU)"
            } else {
                ""
            };
            choices.push((
                "wgpu".into(),
                format!("GPU: {}{software}", a.name),
                format!(
                    "The transformer and the tokenizer's decoder on this GPU ({}, the window's \
                     own device): every step computes there, and the live preview decodes the \
                     canvas at every step. The encoder stays on the CPU.",
                    a.backend
                ),
            ));
        }
        for (device, label, hover) in choices {
            let current = self.model_args.device == device;
            if ui.radio(current, label).on_hover_text(hover).clicked() && !current {
                let args = ModelSpec {
                    device,
                    ..self.model_args.clone()
                };
                self.load_models(args);
            }
        }
    }

    fn weights_menu(&mut self, ui: &mut egui::Ui) {
        ui.label("Weights");
        // A quantized GGUF file fixes its own weights: nothing to choose.
        let from_gguf = self
            .model_args
            .gpt
            .as_deref()
            .is_some_and(arpg_core::loader::gguf::is_gguf);
        if from_gguf {
            ui.label("Quantized, as its GGUF file stores them");
            return;
        }
        let choices: [(&str, Option<&str>, &str, &str); 4] = [
            ("f32", None, "Exact (f32)", "The reference's arithmetic"),
            (
                "bf16",
                None,
                "bf16",
                "Half the memory; on CPUs with AVX512-BF16 bf16 products with f32 sums, the \
                 tokenizer's decoder too (images differ slightly from f32)",
            ),
            (
                "f32",
                Some("q8_0"),
                "Quantized q8_0 (fast)",
                "8-bit linear layers: faster, slightly different images",
            ),
            (
                "f32",
                Some("q4k"),
                "Quantized q4k (smallest)",
                "4-bit linear layers: smallest, images differ more",
            ),
        ];
        for (dtype, quant, label, hover) in choices {
            let current =
                self.model_args.dtype == dtype && self.model_args.quant.as_deref() == quant;
            if ui.radio(current, label).on_hover_text(hover).clicked() && !current {
                let args = ModelSpec {
                    dtype: dtype.into(),
                    quant: quant.map(str::to_string),
                    ..self.model_args.clone()
                };
                self.load_models(args);
            }
        }
    }

    /// One official checkpoint in the Model menu: its state, and Download / Cancel / Load.
    /// Loading needs the official tokenizer too; Download fetches both, then loads.
    pub(super) fn official_model_row(&mut self, ui: &mut egui::Ui, o: crate::hub::Official) {
        let vq = crate::hub::TOKENIZER;
        let (status, vq_status) = (
            self.downloads.status(o.name),
            self.downloads.status(vq.name),
        );
        ui.horizontal(|ui| {
            let state = match (&status, &vq_status) {
                (Status::Ready(_), Status::Ready(_)) => "ready".to_string(),
                (Status::Ready(_), other) => format!("tokenizer {}", other.label()),
                (s, _) => s.label(),
            };
            ui.label(format!("{} · {state}", o.what));
            let pending = self.downloads.load_when_ready == Some(o.name);
            let running = self.downloads.is_running(o.name)
                || (pending && self.downloads.is_running(vq.name));
            if running {
                if ui.button("Cancel").clicked() {
                    self.downloads.cancel(o.name);
                    if pending {
                        self.downloads.cancel(vq.name);
                        self.downloads.load_when_ready = None;
                    }
                }
            } else if let (Some(gpt), Some(tok)) =
                (self.downloads.ready(o.name), self.downloads.ready(vq.name))
            {
                if ui.button("Load").clicked() {
                    self.load_official(gpt, tok);
                }
            } else if ui
                .button("Download")
                .on_hover_text(format!("{}/{} and {}/{}", o.repo, o.file, vq.repo, vq.file))
                .clicked()
            {
                for x in [o, vq] {
                    let ctx = self.repaint.clone();
                    self.downloads.start(x, move || ctx.request_repaint());
                }
                self.downloads.load_when_ready = Some(o.name);
            }
        });
    }

    pub(super) fn actions(&mut self, ui: &mut egui::Ui) {
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
            let generating = self.running.as_ref().is_some_and(|r| r.is_generation());
            if button(ui, UiCommand::Fork, generating || self.forkable.is_some()) {
                fired = Some(UiCommand::Fork);
            }
            if button(ui, UiCommand::Pause, generating) {
                fired = Some(UiCommand::Pause);
            }
            if button(ui, UiCommand::Resume, !running && self.paused.is_some()) {
                fired = Some(UiCommand::Resume);
            }
            if button(ui, UiCommand::Inpaint, !running && has_doc) {
                fired = Some(UiCommand::Inpaint);
            }
            if button(ui, UiCommand::Expand, !running && has_doc) {
                fired = Some(UiCommand::Expand);
            }
        });
        self.outpaint_hover = None;
        ui.horizontal_wrapped(|ui| {
            for (cmd, side) in [
                (UiCommand::OutpaintLeft, [1, 0, 0, 0]),
                (UiCommand::OutpaintRight, [0, 1, 0, 0]),
                (UiCommand::OutpaintTop, [0, 0, 1, 0]),
                (UiCommand::OutpaintBottom, [0, 0, 0, 1]),
            ] {
                let b = ui.add_enabled(!running && has_doc, egui::Button::new(cmd.label()));
                if b.hovered() {
                    self.outpaint_hover = Some(side);
                }
                if b.clicked() {
                    fired = Some(cmd);
                }
            }
        });
        if let Some(cmd) = fired {
            self.commands.push(cmd);
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
                self.history.ui(ui, &mut self.commands);
            });
        egui::Panel::left("controls")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    self.actions(ui);
                    ui.separator();
                    let names = self.class_names.clone();
                    let synonyms = std::mem::take(&mut self.class_synonyms);
                    self.class_panel
                        .ui(ui, &names, &synonyms, &mut self.class, &mut self.commands);
                    self.class_synonyms = synonyms;
                    ui.separator();
                    let max_steps = self.model.as_ref().map_or(256, |m| m.grid * m.grid);
                    self.settings.ui(ui, max_steps);
                    ui.separator();
                    let (u, r) = (self.mask.can_undo(), self.mask.can_redo());
                    let last = self.cell_map.last_step().filter(|_| self.running.is_none());
                    let painted = !self.priority.is_empty();
                    self.tools.ui(ui, u, r, last, painted, &mut self.commands);
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
        crate::studio::ui::shortcuts_window::show(&ctx, &mut open);
        self.show_shortcuts = open;
        for cmd in std::mem::take(&mut self.commands) {
            self.execute(cmd);
        }
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
