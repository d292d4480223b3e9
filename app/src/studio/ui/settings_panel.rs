//! Sampler settings: steps, schedules, guidance, temperature, top-k/p, settling, polishing,
//! seed, batch, order, and the mask options of inpainting.

use arpg_core::edit::MaskOptions;
use arpg_core::generator::Settings;
use arpg_core::order::Order;
use arpg_core::schedule::{CfgSchedule, Schedule};
use eframe::egui;

pub struct SettingsPanel {
    pub settings: Settings,
    pub lock_seed: bool,
    pub batch: usize,
    pub order: Order,
    /// How the painted mask becomes cells to regenerate, and the blend at its edge.
    pub mask: MaskOptions,
    /// Pixels added by the outpaint buttons (snapped to whole tokens).
    pub outpaint_px: usize,
    /// Slow motion: pause after each step (ms).
    pub step_delay_ms: u64,
}

impl Default for SettingsPanel {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            lock_seed: false,
            batch: 1,
            order: Order::Random,
            mask: MaskOptions::default(),
            outpaint_px: 32,
            step_delay_ms: 0,
        }
    }
}

impl SettingsPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, max_steps: usize) {
        ui.heading("Settings");
        let s = &mut self.settings;
        egui::Grid::new("settings")
            .num_columns(2)
            .spacing([8.0, 4.0])
            .show(ui, |ui| {
                let l = ui.label("Steps");
                ui.add(egui::DragValue::new(&mut s.steps).range(1..=max_steps.max(1)))
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Schedule");
                egui::ComboBox::from_id_salt("schedule")
                    .selected_text(format!("{:?}", s.schedule))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut s.schedule, Schedule::Arccos, "Arccos");
                        ui.selectable_value(&mut s.schedule, Schedule::Cosine, "Cosine");
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("CFG scale");
                ui.add(
                    egui::DragValue::new(&mut s.cfg_scale)
                        .range(1.0..=20.0)
                        .speed(0.05),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("CFG schedule");
                egui::ComboBox::from_id_salt("cfg_schedule")
                    .selected_text(format!("{:?}", s.cfg_schedule))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut s.cfg_schedule, CfgSchedule::Linear, "Linear");
                        ui.selectable_value(&mut s.cfg_schedule, CfgSchedule::Constant, "Constant");
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Temperature");
                ui.add(
                    egui::DragValue::new(&mut s.temperature)
                        .range(0.05..=5.0)
                        .speed(0.01),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Top-k");
                ui.add(egui::DragValue::new(&mut s.top_k).range(0..=100_000))
                    .labelled_by(l.id)
                    .on_hover_text("0 = off");
                ui.end_row();
                let l = ui.label("Top-p");
                ui.add(
                    egui::DragValue::new(&mut s.top_p)
                        .range(0.01..=1.0)
                        .speed(0.005),
                )
                .labelled_by(l.id)
                .on_hover_text("1 = off");
                ui.end_row();
                let l = ui.label("Settle");
                ui.add(
                    egui::DragValue::new(&mut s.settle)
                        .range(0..=64)
                        .suffix(" cells"),
                )
                .labelled_by(l.id)
                .on_hover_text(
                    "Once this many cells are decided, draw each again given the others, \
                         so the first tokens agree with their places (0 = off)",
                );
                ui.end_row();
                let l = ui.label("Polish");
                ui.add(
                    egui::DragValue::new(&mut s.polish)
                        .range(0..=8)
                        .suffix(" passes"),
                )
                .labelled_by(l.id)
                .on_hover_text(
                    "After the last step, draw again the tokens the finished image makes \
                         improbable (0 = off)",
                );
                ui.end_row();
                let l = ui.label("Seed");
                ui.horizontal(|ui| {
                    ui.add(egui::DragValue::new(&mut s.seed)).labelled_by(l.id);
                    ui.checkbox(&mut self.lock_seed, "Lock").on_hover_text(
                        "The seed the next run uses. Unlocked, a new one is drawn after each \
                         run; locked, every run uses this one",
                    );
                });
                ui.end_row();
                let l = ui.label("Batch");
                ui.add(egui::DragValue::new(&mut self.batch).range(1..=16))
                    .labelled_by(l.id)
                    .on_hover_text(
                        "Candidates per Generate: candidate i is the single image of the \
                         i-th seed derived from the seed (candidate 0 of the seed itself)",
                    );
                ui.end_row();
                let l = ui.label("Order");
                egui::ComboBox::from_id_salt("order")
                    .selected_text(order_label(self.order))
                    .show_ui(ui, |ui| {
                        for o in Order::ALL {
                            ui.selectable_value(&mut self.order, o, order_label(o));
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                let m = &mut self.mask;
                let l = ui.label("Mask threshold");
                ui.add(
                    egui::DragValue::new(&mut m.threshold)
                        .range(0.0..=0.95)
                        .speed(0.01),
                )
                .labelled_by(l.id)
                .on_hover_text(
                    "Share of a token's pixels that must be painted for it to be regenerated \
                     (0 = any painted pixel)",
                );
                ui.end_row();
                let l = ui.label("Mask dilation");
                ui.add(
                    egui::DragValue::new(&mut m.dilate)
                        .range(0..=8)
                        .suffix(" cells"),
                )
                .labelled_by(l.id)
                .on_hover_text("Grow the regenerated cells by this many around the mask");
                ui.end_row();
                let l = ui.label("Mask feather");
                ui.add(
                    egui::DragValue::new(&mut m.feather)
                        .range(0..=64)
                        .suffix(" px"),
                )
                .labelled_by(l.id)
                .on_hover_text("Width of the blended band inside the mask edge");
                ui.end_row();
                let l = ui.label("Slow motion");
                ui.add(
                    egui::DragValue::new(&mut self.step_delay_ms)
                        .range(0..=2000)
                        .suffix(" ms/step"),
                )
                .labelled_by(l.id)
                .on_hover_text("Pause after each step to watch the image form");
                ui.end_row();
                let l = ui.label("Outpaint by");
                ui.add(
                    egui::DragValue::new(&mut self.outpaint_px)
                        .range(1..=1024)
                        .suffix(" px"),
                )
                .labelled_by(l.id);
                ui.end_row();
            });
    }
}

fn order_label(order: Order) -> &'static str {
    match order {
        Order::Random => "Random",
        Order::Raster => "Raster",
        Order::NearKnown => "Near known first",
    }
}
