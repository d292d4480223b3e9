//! Zoom and pan: where the canvas's pixels land on screen.

use eframe::egui::{Pos2, Rect, Vec2};

/// Maps canvas pixels to screen points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanvasView {
    /// Screen points per canvas pixel; `None` fits the canvas into the available rect.
    pub zoom: Option<f32>,
    /// Offset of the canvas centre from the rect centre, in points.
    pub pan: Vec2,
}

impl Default for CanvasView {
    fn default() -> Self {
        Self {
            zoom: None,
            pan: Vec2::ZERO,
        }
    }
}

impl CanvasView {
    /// Points per pixel when fitting `size` pixels into `avail`.
    pub fn fit_scale(avail: Rect, size: Vec2) -> f32 {
        (avail.width() / size.x)
            .min(avail.height() / size.y)
            .max(0.01)
    }

    pub fn scale(&self, avail: Rect, size: Vec2) -> f32 {
        self.zoom
            .unwrap_or_else(|| Self::fit_scale(avail, size) * 0.95)
    }

    /// Screen rectangle of a canvas of `size` pixels inside `avail`.
    pub fn canvas_rect(&self, avail: Rect, size: Vec2) -> Rect {
        let s = self.scale(avail, size);
        Rect::from_center_size(avail.center() + self.pan, size * s)
    }

    /// Canvas pixel coordinates (fractional) of a screen position.
    pub fn to_canvas(&self, avail: Rect, size: Vec2, pos: Pos2) -> Pos2 {
        let r = self.canvas_rect(avail, size);
        let s = self.scale(avail, size);
        Pos2::new((pos.x - r.left()) / s, (pos.y - r.top()) / s)
    }

    /// Zooms by `factor` keeping the canvas point under `anchor` fixed.
    pub fn zoom_at(&mut self, avail: Rect, size: Vec2, anchor: Pos2, factor: f32) {
        let old = self.scale(avail, size);
        let new = (old * factor).clamp(0.25, 64.0);
        let c = avail.center() + self.pan;
        let rel = anchor - c;
        self.pan += rel - rel * (new / old);
        self.zoom = Some(new);
    }
}
