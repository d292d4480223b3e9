//! The history / staging strip: every result with its settings; the newest candidate can be
//! accepted or discarded in place, any entry restored.

use arpg_core::canvas::TokenCanvas;
use arpg_core::generator::Settings;
use arpg_core::provenance::Provenance;
use eframe::egui;

use crate::studio::commands::{HistoryAction, UiCommand};

/// One result.
pub struct HistoryItem {
    pub label: String,
    pub canvas: TokenCanvas,
    pub rgb: Vec<u8>,
    /// The canvas's pixels (what `rgb` holds).
    pub width: usize,
    pub height: usize,
    /// The image's own `[width, height]` (at most the canvas's pixels).
    pub size: [usize; 2],
    pub class: Option<usize>,
    /// What the worker reports it ran with.
    pub settings: Settings,
    pub provenance: Provenance,
    pub partial: bool,
    pub thumbnail: Option<egui::TextureHandle>,
}

#[derive(Default)]
pub struct HistoryPanel {
    pub items: Vec<HistoryItem>,
    /// Index of an item shown on the canvas but not accepted yet.
    pub staged: Option<usize>,
}

impl HistoryPanel {
    /// Draws the strip; what the user asks goes into `commands` (run at the end of the frame).
    pub fn ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<UiCommand>) {
        let mut action = None;
        ui.horizontal(|ui| {
            ui.strong("History");
            if let Some(i) = self.staged {
                ui.separator();
                ui.label(format!(
                    "Candidate: {}",
                    self.items.get(i).map_or("", |it| it.label.as_str())
                ));
                if ui.button("Accept").clicked() {
                    action = Some(HistoryAction::Accept);
                }
                if ui.button("Discard").clicked() {
                    action = Some(HistoryAction::Discard(i));
                }
            }
        });
        egui::ScrollArea::horizontal()
            .id_salt("history")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (i, item) in self.items.iter_mut().enumerate().rev() {
                        ui.vertical(|ui| {
                            if item.thumbnail.is_none() && !item.rgb.is_empty() {
                                let img = egui::ColorImage::from_rgb(
                                    [item.width, item.height],
                                    &item.rgb,
                                );
                                item.thumbnail = Some(ui.ctx().load_texture(
                                    format!("history-{i}"),
                                    img,
                                    egui::TextureOptions::NEAREST,
                                ));
                            }
                            let mut tip = format!(
                                "{}\nclass {}\nseed {} · {} steps · CFG {} · {} order",
                                item.label,
                                item.class.map_or("none".into(), |c| c.to_string()),
                                item.settings.seed,
                                item.settings.steps,
                                item.settings.cfg_scale,
                                item.provenance.order
                            );
                            if let Some(b) = item.provenance.batch {
                                tip += &format!("\nbatch of seed {}, image {}", b.seed, b.index);
                            }
                            for f in &item.provenance.forked_from {
                                tip += &format!("\nforked from seed {} at step {}", f.seed, f.step);
                            }
                            let resp = match &item.thumbnail {
                                Some(t) => ui.add(egui::Button::image(
                                    egui::Image::new(t).fit_to_exact_size(egui::vec2(
                                        64.0,
                                        64.0 * item.height as f32 / item.width.max(1) as f32,
                                    )),
                                )),
                                None => ui.button(if item.partial { "partial" } else { "…" }),
                            };
                            if resp.on_hover_text(tip).clicked() {
                                action = Some(HistoryAction::Restore(i));
                            }
                            ui.small(format!(
                                "{}{}",
                                item.label,
                                if item.partial { " (partial)" } else { "" }
                            ));
                        });
                    }
                });
            });
        commands.extend(action.map(UiCommand::History));
    }
}
