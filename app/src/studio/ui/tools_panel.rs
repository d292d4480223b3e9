//! Canvas tools: the mask (brush, eraser, cell picker, rectangle, lasso; size, hardness, invert /
//! clear / fill, undo / redo), the cell maps and re-rolls, the priority brush and the replay
//! timeline.

use eframe::egui;

use crate::studio::commands::UiCommand;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Brush,
    Eraser,
    /// Click a cell to mask it whole (click a masked cell to clear it); drag to pick several.
    Cells,
    /// Drag a rectangle to mask it.
    Rectangle,
    /// Draw a closed outline to mask what it encloses.
    Lasso,
    /// Paint where generation should start.
    Priority,
}

impl Tool {
    /// Whether the tool paints the mask (the priority brush paints its own map).
    pub fn edits_mask(self) -> bool {
        self != Tool::Priority
    }
}

/// What the canvas shows for cells decided while a job runs (View menu).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LivePreview {
    /// Decoded when one decode of the model's grid takes at most [`AUTO_DECODE_MS`], else tiles.
    #[default]
    Auto,
    /// Each code's preview tile only (no decode until the end).
    Tiles,
    /// The partial canvas decoded in context on the preview thread, tiles until it lands.
    Decoded,
}

/// The decode time (ms, timed by the preview thread after each load) up to which Auto decodes
/// live.
pub const AUTO_DECODE_MS: f64 = 50.0;

impl LivePreview {
    pub const ALL: [LivePreview; 3] = [LivePreview::Auto, LivePreview::Tiles, LivePreview::Decoded];

    pub fn label(self) -> &'static str {
        match self {
            LivePreview::Auto => "Auto (decoded when the decoder is fast)",
            LivePreview::Tiles => "Tiles (each code alone)",
            LivePreview::Decoded => "Decoded in context",
        }
    }

    /// Whether jobs decode their partial canvas, for a decoder that takes `decode_ms`.
    pub fn decodes(self, decode_ms: f64) -> bool {
        match self {
            LivePreview::Auto => decode_ms <= AUTO_DECODE_MS,
            LivePreview::Tiles => false,
            LivePreview::Decoded => true,
        }
    }
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
    /// The replay timeline: the step of the latest run shown (`None`: the result).
    pub replay: Option<usize>,
    /// The live preview while a job runs (View menu).
    pub live_preview: LivePreview,
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
            replay: None,
            live_preview: LivePreview::Auto,
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

    /// Steps the replay timeline by one step (`forward`) over a run whose last step is `last`;
    /// stepping forward from the last step shows the result again.
    pub fn step_replay(&mut self, forward: bool, last: Option<usize>) {
        let Some(last) = last else {
            self.replay = None;
            return;
        };
        self.replay = match (self.replay, forward) {
            (None, false) => Some(last.saturating_sub(1)),
            (None, true) => None,
            (Some(k), true) if k + 1 >= last => None,
            (Some(k), true) => Some(k + 1),
            (Some(k), false) => Some(k.saturating_sub(1)),
        };
    }

    /// Draws the tools; returns the commands clicked. `last_step`: the last step the latest
    /// run recorded (the replay timeline's end), `priority_painted`: whether the priority map
    /// has painted cells.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        can_undo: bool,
        can_redo: bool,
        last_step: Option<usize>,
        priority_painted: bool,
        out: &mut Vec<UiCommand>,
    ) {
        let tool = |ui: &mut egui::Ui, current: &mut Tool, t: Tool, cmd: UiCommand, hint: &str| {
            let key = cmd
                .shortcut()
                .map(|s| ui.ctx().format_shortcut(&s))
                .unwrap_or_default();
            ui.selectable_value(current, t, cmd.label().replace(" mask", ""))
                .on_hover_text(format!("{hint} ({key})"));
        };
        ui.heading("Mask");
        ui.horizontal_wrapped(|ui| {
            let t = &mut self.tool;
            tool(
                ui,
                t,
                Tool::Brush,
                UiCommand::Brush,
                "Paint what to regenerate",
            );
            tool(ui, t, Tool::Eraser, UiCommand::Eraser, "Unpaint");
            tool(
                ui,
                t,
                Tool::Cells,
                UiCommand::CellPicker,
                "Click token cells to mask them whole; click again to unmask",
            );
            tool(
                ui,
                t,
                Tool::Rectangle,
                UiCommand::RectangleMask,
                "Drag a rectangle to mask",
            );
            tool(
                ui,
                t,
                Tool::Lasso,
                UiCommand::LassoMask,
                "Draw around what to mask",
            );
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
        if ui
            .button(UiCommand::RerollMasked.label())
            .on_hover_text(
                "Draw again exactly the cells the mask covers more than half of (pick them with \
                 the cell picker, K), everything else as context (Shift+K)",
            )
            .clicked()
        {
            out.push(UiCommand::RerollMasked);
        }
        ui.separator();
        ui.heading("Order");
        ui.horizontal(|ui| {
            tool(
                ui,
                &mut self.tool,
                Tool::Priority,
                UiCommand::PriorityBrush,
                "Paint where generation should start; paint again to start there earlier",
            );
            if ui
                .add_enabled(priority_painted, egui::Button::new("Clear"))
                .on_hover_text("Clear priority (Shift+P)")
                .clicked()
            {
                out.push(UiCommand::ClearPriority);
            }
        });
        match last_step {
            Some(last) => {
                let mut k = self.replay.unwrap_or(last);
                let slider = egui::Slider::new(&mut k, 0..=last)
                    .text("Replay step")
                    .custom_formatter(|v, _| format!("{}", v as usize + 1));
                if ui
                    .add(slider)
                    .on_hover_text(
                        "The latest run step by step from its recorded tokens (, and .); \
                         the last step shows the result",
                    )
                    .changed()
                {
                    self.replay = (k < last).then_some(k);
                }
            }
            None => {
                ui.weak("Replay: generate here to record the steps");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_steps_stop_at_both_ends() {
        let mut t = ToolsPanel::default();
        t.step_replay(false, Some(2));
        assert_eq!(t.replay, Some(1), "one step before the result");
        t.step_replay(false, Some(2));
        t.step_replay(false, Some(2));
        assert_eq!(t.replay, Some(0));
        t.step_replay(true, Some(2));
        assert_eq!(t.replay, Some(1));
        t.step_replay(true, Some(2));
        assert_eq!(t.replay, None, "the last step: the result");
        t.step_replay(false, None);
        assert_eq!(t.replay, None, "nothing recorded");
    }
}
