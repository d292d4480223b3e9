//! Status bar: device, model, step k/T, tokens/s, elapsed time, and the last message.

use eframe::egui;

#[derive(Default)]
pub struct StatusBar {
    pub device: String,
    pub model: String,
    pub step: Option<(usize, usize)>,
    pub decided: usize,
    pub elapsed: f64,
    pub message: String,
    /// The preview palette being computed in the background: codes done of all.
    pub palette: Option<(usize, usize)>,
}

impl StatusBar {
    pub fn ui(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label(format!(
                "Device: {}",
                if self.device.is_empty() {
                    "—"
                } else {
                    &self.device
                }
            ));
            ui.separator();
            ui.label(format!(
                "Model: {}",
                if self.model.is_empty() {
                    "none"
                } else {
                    &self.model
                }
            ));
            ui.separator();
            match self.step {
                Some((k, t)) => ui.label(format!("Step {k}/{t}")),
                None => ui.label("Idle"),
            };
            ui.separator();
            let rate = if self.elapsed > 0.0 {
                self.decided as f64 / self.elapsed
            } else {
                0.0
            };
            ui.label(format!("{rate:.0} tokens/s"));
            ui.separator();
            ui.label(format!("{:.2} s", self.elapsed));
            if let Some((done, total)) = self.palette {
                ui.separator();
                ui.label(format!(
                    "Preview palette {}% (previews show plain cells until then)",
                    done * 100 / total.max(1)
                ))
                .on_hover_text(
                    "Each code's preview tile is decoded once per tokenizer while the app is \
                     idle, then cached; generating does not wait for it.",
                );
            }
            if !self.message.is_empty() {
                ui.separator();
                ui.label(&self.message);
            }
        });
    }
}
