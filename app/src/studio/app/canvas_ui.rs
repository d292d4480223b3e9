//! The canvas: drawing the document and its overlays, and the tools that act on it (brush,
//! rectangle and lasso masks, the cell picker, the priority brush).

use arpg_core::canvas;
use eframe::egui;
use eframe::egui_wgpu;

use super::StudioApp;
use crate::studio::canvas::cell_map::Overlay;
use crate::studio::gpu::{CanvasCallback, Target, Upload, ViewUniform};
use crate::studio::ui::tools_panel::Tool;

impl StudioApp {
    pub(super) fn canvas_ui(&mut self, ui: &mut egui::Ui) {
        let avail = ui.available_rect_before_wrap();
        let (rect, response) = ui.allocate_exact_size(avail.size(), egui::Sense::click_and_drag());
        self.canvas_widget = Some(rect);
        let extent = self.image.extent();
        let size = egui::vec2(extent.width as f32, extent.height as f32);
        if self.doc.is_none() && self.running.is_none() {
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Pick a class and press Generate (Ctrl+Enter)",
                egui::FontId::proportional(16.0),
                ui.visuals().weak_text_color(),
            );
            return;
        }
        // Zoom with the wheel, pan with middle drag or space + drag.
        if let Some(pos) = response.hover_pos() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.view.zoom_at(rect, size, pos, (scroll * 0.0025).exp());
            }
        }
        let panning = response.dragged_by(egui::PointerButton::Middle)
            || (response.dragged() && ui.input(|i| i.key_down(egui::Key::Space)));
        if panning || self.running.is_some() {
            // A rectangle or lasso cut short is dropped, not left drawn.
            self.shape = None;
        }
        if panning {
            self.view.pan += response.drag_delta();
        } else if self.running.is_none() {
            self.use_tool(ui, &response, rect, size);
        }
        self.sync_replay();
        let canvas_rect = self.view.canvas_rect(rect, size);
        let to_clip = |p: egui::Pos2| {
            [
                (p.x - rect.left()) / rect.width() * 2.0 - 1.0,
                1.0 - (p.y - rect.top()) / rect.height() * 2.0,
            ]
        };
        let (tl, br) = (
            to_clip(canvas_rect.left_top()),
            to_clip(canvas_rect.right_bottom()),
        );
        // The replayed step's cells stay highlighted.
        let highlight = match (&self.running, self.tools.replay) {
            (Some(r), _) => (1.0 - r.last_step_at.elapsed().as_secs_f32() / 0.6).max(0.0),
            (None, Some(_)) => 1.0,
            (None, None) => 0.0,
        };
        if highlight > 0.0 && self.running.is_some() {
            ui.ctx().request_repaint();
        }
        // The cells the mask selects depend on the threshold and dilation too.
        let selection = (self.settings.mask.threshold, self.settings.mask.dilate);
        if self.mask_selection != selection {
            self.mask_selection = selection;
            self.mask.mark_dirty();
        }
        if let Some((x, y, w, h, bytes)) = self.mask.take_dirty() {
            self.image.push(Upload {
                target: Target::Mask,
                x: x as u32,
                y: y as u32,
                w: w as u32,
                h: h as u32,
                bytes,
            });
            let p = self.patch();
            if let Ok(cells) = canvas::token_mask(
                &self.mask.pixels,
                self.mask.width,
                self.mask.height,
                p,
                self.settings.mask.threshold,
                self.settings.mask.dilate,
            ) {
                self.regenerate_box = cell_box(&cells, extent.cols as usize);
                let bytes = cells.iter().map(|&c| if c { 255 } else { 0 }).collect();
                self.image.push(Upload {
                    target: Target::MaskCells,
                    x: 0,
                    y: 0,
                    w: extent.cols,
                    h: extent.rows,
                    bytes,
                });
            }
        }
        let callback = CanvasCallback {
            view: ViewUniform {
                rect: [tl[0], tl[1], br[0], br[1]],
                size: [size.x, size.y, extent.cols as f32, extent.rows as f32],
                params: [
                    ui.input(|i| i.time) as f32,
                    highlight,
                    if self.tools.show_grid { 1.0 } else { 0.0 },
                    self.tools.overlay.mode(),
                ],
            },
            extent,
            uploads: {
                // Without a GPU nothing applies them: they are dropped, not queued forever.
                let uploads = self.image.take_uploads();
                if self.has_gpu {
                    self.gpu_uploads.extend(uploads);
                }
                self.gpu_uploads.clone()
            },
            show_mask: self.tools.show_mask,
            show_generation: self.running.is_some()
                || self.tools.replay.is_some()
                || self.tools.show_grid
                || self.tools.overlay != Overlay::None,
        };
        if self.has_gpu {
            ui.painter()
                .with_clip_rect(rect)
                .add(egui_wgpu::Callback::new_paint_callback(rect, callback));
        } else {
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "No wgpu device: the canvas cannot be drawn",
                egui::FontId::proportional(14.0),
                ui.visuals().error_fg_color,
            );
        }
        self.draw_tool_overlays(ui, rect, size, response.hover_pos());
    }

    /// What the tools draw over the canvas: the brush outline, the rectangle or lasso being
    /// dragged, the painted priorities, and the box of cells the next inpaint regenerates.
    pub(super) fn draw_tool_overlays(
        &self,
        ui: &egui::Ui,
        rect: egui::Rect,
        size: egui::Vec2,
        hover: Option<egui::Pos2>,
    ) {
        let painter = ui.painter().with_clip_rect(rect);
        let s = self.view.scale(rect, size);
        let canvas = self.view.canvas_rect(rect, size);
        let to_screen = |p: egui::Pos2| canvas.min + p.to_vec2() * s;
        let white = egui::Stroke::new(1.0, egui::Color32::from_white_alpha(200));
        let p = self.patch() as f32;
        let cell_rect = |r0: usize, c0: usize, r1: usize, c1: usize| {
            egui::Rect::from_min_max(
                to_screen(egui::pos2(c0 as f32 * p, r0 as f32 * p)),
                to_screen(egui::pos2(c1 as f32 * p, r1 as f32 * p)),
            )
        };
        if self.tools.tool == Tool::Priority {
            // Warm fill, stronger for higher levels.
            let top = self
                .priority
                .levels
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .max(1) as f32;
            for (i, &l) in self.priority.levels.iter().enumerate() {
                if l > 0 {
                    let (r, c) = (i / self.priority.cols, i % self.priority.cols);
                    let a = (70.0 + 110.0 * l as f32 / top) as u8;
                    let fill = egui::Color32::from_rgba_unmultiplied(255, 150, 30, a);
                    painter.rect_filled(cell_rect(r, c, r + 1, c + 1), 0.0, fill);
                }
            }
        }
        if self.tools.tool.edits_mask() && self.tools.show_mask && self.running.is_none() {
            if let Some([r0, c0, r1, c1]) = self.regenerate_box {
                let b = cell_rect(r0, c0, r1, c1);
                let stroke = egui::Stroke::new(1.5, egui::Color32::from_rgb(255, 90, 140));
                painter.rect_stroke(b, 0.0, stroke, egui::StrokeKind::Outside);
                painter.text(
                    b.left_top() + egui::vec2(2.0, -2.0),
                    egui::Align2::LEFT_BOTTOM,
                    format!("Inpaint regenerates {}x{} cells", c1 - c0, r1 - r0),
                    egui::FontId::proportional(12.0),
                    egui::Color32::from_rgb(255, 170, 200),
                );
            }
        }
        if let Some([l, r, t, b]) = self.outpaint_cells() {
            // What the hovered Outpaint button adds, outside the canvas.
            let (w, h) = (
                self.image.extent().cols as usize,
                self.image.extent().rows as usize,
            );
            let (r0, c0) = (-(t as isize), -(l as isize));
            let (r1, c1) = ((h + b) as isize, (w + r) as isize);
            let at = |r: isize, c: isize| to_screen(egui::pos2(c as f32 * p, r as f32 * p));
            let added = egui::Rect::from_min_max(at(r0, c0), at(r1, c1));
            let stroke = egui::Stroke::new(1.5, egui::Color32::from_rgb(120, 200, 255));
            painter.rect_stroke(added, 0.0, stroke, egui::StrokeKind::Outside);
            painter.text(
                added.left_top() + egui::vec2(2.0, -2.0),
                egui::Align2::LEFT_BOTTOM,
                format!("Outpaint grows the canvas to {}x{} cells", c1 - c0, r1 - r0),
                egui::FontId::proportional(12.0),
                egui::Color32::from_rgb(170, 220, 255),
            );
        }
        if let Some(points) = &self.shape {
            let screen: Vec<egui::Pos2> = points.iter().map(|&q| to_screen(q)).collect();
            match self.tools.tool {
                Tool::Rectangle if screen.len() >= 2 => {
                    let b = egui::Rect::from_two_pos(screen[0], screen[screen.len() - 1]);
                    painter.rect_stroke(b, 0.0, white, egui::StrokeKind::Middle);
                }
                _ => {
                    painter.add(egui::Shape::closed_line(screen, white));
                }
            }
        }
        let round = matches!(self.tools.tool, Tool::Brush | Tool::Eraser | Tool::Priority);
        if let (Some(pos), true) = (hover, round) {
            painter.circle_stroke(pos, self.tools.radius * s, white);
        }
    }

    /// The chosen tool's reaction to the pointer on the canvas.
    pub(super) fn use_tool(
        &mut self,
        ui: &egui::Ui,
        response: &egui::Response,
        rect: egui::Rect,
        size: egui::Vec2,
    ) {
        let start = response.drag_started_by(egui::PointerButton::Primary) || response.clicked();
        let stop = response.drag_stopped() || response.clicked();
        // Where the press began (a drag is recognised only after the pointer moved).
        let origin = ui
            .input(|i| i.pointer.press_origin())
            .or(response.interact_pointer_pos())
            .map(|q| self.view.to_canvas(rect, size, q));
        let here = response
            .interact_pointer_pos()
            .map(|q| self.view.to_canvas(rect, size, q));
        match self.tools.tool {
            Tool::Brush | Tool::Eraser => self.paint_mask(response, rect, size),
            Tool::Priority => {
                if start && !self.priority.is_painting() {
                    self.priority.begin_stroke();
                }
                if let (Some(q), true) = (here, self.priority.is_painting()) {
                    let p = self.patch();
                    self.priority.paint(q.x, q.y, self.tools.radius, p);
                }
                if stop {
                    self.priority.end_stroke();
                }
            }
            Tool::Cells => {
                let p = self.patch();
                let (mw, mh) = (self.mask.width, self.mask.height);
                let cell = move |q: egui::Pos2| {
                    (q.x >= 0.0 && q.y >= 0.0)
                        .then(|| ((q.y as usize) / p, (q.x as usize) / p))
                        .filter(|&(r, c)| r * p < mh && c * p < mw)
                };
                if start && self.picking.is_none() {
                    if let Some((r, c)) = origin.and_then(cell) {
                        let full = (r * p..(r + 1) * p).all(|y| {
                            self.mask.pixels[y * self.mask.width + c * p..][..p]
                                .iter()
                                .all(|&m| m == 255)
                        });
                        self.mask.begin_edit();
                        self.picking = Some(!full);
                        self.mask
                            .set_rect(c * p, r * p, (c + 1) * p, (r + 1) * p, !full);
                    }
                }
                if let (Some(on), Some((r, c))) = (self.picking, here.and_then(cell)) {
                    self.mask
                        .set_rect(c * p, r * p, (c + 1) * p, (r + 1) * p, on);
                }
                if stop {
                    self.picking = None;
                }
            }
            Tool::Rectangle | Tool::Lasso => {
                if response.drag_started_by(egui::PointerButton::Primary) {
                    self.shape = origin.map(|q| vec![q]);
                }
                if let (Some(points), Some(q)) = (self.shape.as_mut(), here) {
                    if points.last().is_none_or(|l| l.distance(q) >= 1.0) {
                        points.push(q);
                    }
                }
                if response.drag_stopped() {
                    if let Some(points) = self.shape.take() {
                        self.apply_shape(&points);
                    }
                }
            }
        }
    }

    /// Masks what a finished rectangle (its first and last points are corners) or lasso
    /// encloses: one undo step.
    pub(super) fn apply_shape(&mut self, points: &[egui::Pos2]) {
        let (Some(a), Some(b)) = (points.first(), points.last()) else {
            return;
        };
        self.mask.begin_edit();
        if self.tools.tool == Tool::Rectangle {
            let r = egui::Rect::from_two_pos(*a, *b);
            let px = |v: f32| v.round().max(0.0) as usize;
            self.mask.set_rect(
                px(r.left()),
                px(r.top()),
                px(r.right()),
                px(r.bottom()),
                true,
            );
        } else {
            let pts: Vec<(f32, f32)> = points.iter().map(|q| (q.x, q.y)).collect();
            self.mask.fill_polygon(&pts);
        }
    }

    pub(super) fn paint_mask(
        &mut self,
        response: &egui::Response,
        rect: egui::Rect,
        size: egui::Vec2,
    ) {
        if response.drag_started_by(egui::PointerButton::Primary)
            || (response.clicked() && !self.mask.is_painting())
        {
            self.mask.begin_stroke(
                self.tools.tool == Tool::Eraser,
                self.tools.radius,
                self.tools.hardness,
            );
        }
        if self.mask.is_painting() {
            if let Some(pos) = response.interact_pointer_pos() {
                let p = self.view.to_canvas(rect, size, pos);
                self.mask.extend_stroke(p.x, p.y);
            }
        }
        if response.drag_stopped() || response.clicked() {
            self.mask.end_stroke();
        }
    }
}

/// The bounding box `[r0, c0, r1, c1]` (ends exclusive) of the set cells of a raster cell mask
/// `cols` wide; `None` when none is set.
fn cell_box(cells: &[bool], cols: usize) -> Option<[usize; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for (i, _) in cells.iter().enumerate().filter(|(_, &on)| on) {
        let (r, c) = (i / cols.max(1), i % cols.max(1));
        b = Some(match b {
            None => [r, c, r + 1, c + 1],
            Some([r0, c0, r1, c1]) => [r0.min(r), c0.min(c), r1.max(r + 1), c1.max(c + 1)],
        });
    }
    b
}
