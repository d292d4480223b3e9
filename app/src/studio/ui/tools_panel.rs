//! Mask tools: brush, eraser, size, hardness, invert / clear / fill, undo / redo.

use eframe::egui;

use crate::studio::commands::UiCommand;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Brush,
    Eraser,
}

pub struct ToolsPanel {
    pub tool: Tool,
    /// Brush radius in canvas pixels.
    pub radius: f32,
    pub hardness: f32,
    pub show_mask: bool,
    pub show_grid: bool,
    /// The per-cell map drawn over the image (View menu).
    pub overlay: crate::studio::canvas::cell_map::Overlay,
    /// Share of the decided cells "Re-roll least confident" draws again.
    pub reroll_share: f32,
}

impl Default for ToolsPanel {
    fn default() -> Self {
        Self {
            tool: Tool::Brush,
            radius: 3.0,
            hardness: 0.8,
            show_mask: true,
            show_grid: false,
            overlay: Default::default(),
            reroll_share: 0.1,
        }
    }
}

impl ToolsPanel {
    /// Changes the brush radius by one step (or eight with `large`).
    pub fn resize(&mut self, grow: bool, large: bool) {
        let factor: f32 = if large { 2.0 } else { 1.25 };
        self.radius = if grow {
            self.radius * factor
        } else {
            self.radius / factor
        }
        .clamp(0.5, 256.0);
    }

    /// Draws the tools; returns the commands clicked.
    pub fn ui(&mut self, ui: &mut egui::Ui, can_undo: bool, can_redo: bool) -> Vec<UiCommand> {
        let mut out = Vec::new();
        ui.heading("Mask");
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tool, Tool::Brush, "Brush")
                .on_hover_text("B");
            ui.selectable_value(&mut self.tool, Tool::Eraser, "Eraser")
                .on_hover_text("E");
        });
        ui.add(
            egui::Slider::new(&mut self.radius, 0.5..=64.0)
                .logarithmic(true)
                .text("Size"),
        )
        .on_hover_text("[ and ] (Shift for large steps)");
        ui.add(egui::Slider::new(&mut self.hardness, 0.0..=1.0).text("Hardness"));
        ui.horizontal(|ui| {
            for cmd in [
                UiCommand::InvertMask,
                UiCommand::ClearMask,
                UiCommand::FillMask,
            ] {
                if ui.button(cmd.label().replace(" mask", "")).clicked() {
                    out.push(cmd);
                }
            }
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(can_undo, egui::Button::new("Undo"))
                .clicked()
            {
                out.push(UiCommand::Undo);
            }
            if ui
                .add_enabled(can_redo, egui::Button::new("Redo"))
                .clicked()
            {
                out.push(UiCommand::Redo);
            }
        });
        ui.checkbox(&mut self.show_mask, "Show mask");
        ui.checkbox(&mut self.show_grid, "Token grid (G)");
        ui.separator();
        ui.heading("Cells");
        use crate::studio::canvas::cell_map::Overlay;
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.overlay, Overlay::None, "Image");
            ui.selectable_value(&mut self.overlay, Overlay::Confidence, "Confidence")
                .on_hover_text("Each decided token's probability: red unlikely, green likely (C)");
            ui.selectable_value(&mut self.overlay, Overlay::Order, "Order")
                .on_hover_text("The step each cell was decided at: blue first, yellow last (O)");
        });
        let mut percent = self.reroll_share * 100.0;
        ui.add(
            egui::Slider::new(&mut percent, 1.0..=50.0)
                .suffix("%")
                .text("Least confident"),
        );
        self.reroll_share = percent / 100.0;
        if ui
            .button(UiCommand::RerollLeastConfident.label())
            .on_hover_text("Draw those cells again with everything else as context (Shift+R)")
            .clicked()
        {
            out.push(UiCommand::RerollLeastConfident);
        }
        out
    }
}
