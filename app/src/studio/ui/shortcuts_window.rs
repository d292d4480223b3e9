//! The keyboard shortcut list (F1), generated from the command registry.

use eframe::egui;

use crate::studio::commands::UiCommand;

pub fn show(ctx: &egui::Context, open: &mut bool) {
    egui::Window::new("Keyboard shortcuts")
        .open(open)
        .resizable(false)
        .show(ctx, |ui| {
            egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                for cmd in UiCommand::ALL {
                    if let Some(sc) = cmd.shortcut() {
                        ui.label(cmd.label());
                        ui.monospace(ctx.format_shortcut(&sc));
                        ui.end_row();
                    }
                }
                ui.label("Pan");
                ui.monospace("Middle drag / Space + drag");
                ui.end_row();
                ui.label("Zoom");
                ui.monospace("Scroll over the canvas");
                ui.end_row();
            });
        });
}
