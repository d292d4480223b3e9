//! The inpainting mask: painted in canvas pixels with a round brush (hardness = feathered rim),
//! one undo point per stroke (never merged by time).

/// A brush stroke being painted or already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Stroke {
    pub erase: bool,
    pub radius: f32,
    /// 0 = soft edge, 1 = hard edge.
    pub hardness: f32,
    /// Canvas pixel positions.
    pub points: Vec<(f32, f32)>,
}

/// Mask pixels, one byte each (255 = regenerate), with per-stroke undo/redo.
#[derive(Debug, Clone)]
pub struct MaskDocument {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
    undo: Vec<Vec<u8>>,
    redo: Vec<Vec<u8>>,
    /// The stroke in progress (its undo point is taken at its first dab).
    active: Option<Stroke>,
    /// Dirty rectangle since the last upload: (x0, y0, x1, y1) exclusive.
    dirty: Option<(usize, usize, usize, usize)>,
}

const UNDO_DEPTH: usize = 64;

impl MaskDocument {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width * height],
            undo: Vec::new(),
            redo: Vec::new(),
            active: None,
            dirty: Some((0, 0, width, height)),
        }
    }

    /// Replaces the whole mask (one undo point); pixels of another size are ignored.
    pub fn replace(&mut self, pixels: Vec<u8>) {
        if pixels.len() != self.width * self.height {
            return;
        }
        self.checkpoint();
        self.pixels = pixels;
        self.touch_all();
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.iter().all(|&p| p == 0)
    }

    fn checkpoint(&mut self) {
        self.undo.push(self.pixels.clone());
        if self.undo.len() > UNDO_DEPTH {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    /// Marks the whole mask for upload again (what it selects changed without an edit).
    pub fn mark_dirty(&mut self) {
        self.touch_all();
    }

    fn touch_all(&mut self) {
        self.dirty = Some((0, 0, self.width, self.height));
    }

    /// Starts a stroke (one undo point).
    pub fn begin_stroke(&mut self, erase: bool, radius: f32, hardness: f32) {
        self.checkpoint();
        self.active = Some(Stroke {
            erase,
            radius: radius.max(0.5),
            hardness: hardness.clamp(0.0, 1.0),
            points: Vec::new(),
        });
    }

    /// Adds a point to the active stroke, stamping dabs along the segment from the last point.
    pub fn extend_stroke(&mut self, x: f32, y: f32) {
        let Some(mut s) = self.active.take() else {
            return;
        };
        let from = s.points.last().copied().unwrap_or((x, y));
        let dist = ((x - from.0).powi(2) + (y - from.1).powi(2)).sqrt();
        let spacing = (s.radius * 0.3).max(0.3);
        let n = (dist / spacing).ceil().max(1.0) as usize;
        for i in 1..=n {
            let t = i as f32 / n as f32;
            self.dab(from.0 + (x - from.0) * t, from.1 + (y - from.1) * t, &s);
        }
        s.points.push((x, y));
        self.active = Some(s);
    }

    pub fn end_stroke(&mut self) {
        if let Some(s) = self.active.take() {
            if s.points.is_empty() {
                // A click without movement never painted: drop its undo point.
                self.undo.pop();
            }
        }
    }

    pub fn is_painting(&self) -> bool {
        self.active.is_some()
    }

    fn dab(&mut self, cx: f32, cy: f32, s: &Stroke) {
        let r = s.radius;
        let x0 = (cx - r).floor().max(0.0) as usize;
        let y0 = (cy - r).floor().max(0.0) as usize;
        let x1 = ((cx + r).ceil() as usize + 1).min(self.width);
        let y1 = ((cy + r).ceil() as usize + 1).min(self.height);
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                // Full strength inside `hardness * r`, fading to 0 at `r`.
                let inner = r * s.hardness;
                let a = if d <= inner {
                    1.0
                } else if d >= r {
                    0.0
                } else {
                    1.0 - (d - inner) / (r - inner).max(1e-3)
                };
                if a <= 0.0 {
                    continue;
                }
                let p = &mut self.pixels[y * self.width + x];
                let v = (a * 255.0) as u8;
                *p = if s.erase {
                    p.saturating_sub(v)
                } else {
                    (*p).max(v)
                };
            }
        }
        if x0 < x1 && y0 < y1 {
            self.touch(x0, y0, x1, y1);
        }
    }

    /// Starts an edit that is not a brush stroke (a cell pick, a rectangle, a lasso): one undo
    /// point.
    pub fn begin_edit(&mut self) {
        self.checkpoint();
    }

    /// Sets (`on`) or clears the pixels of `[x0, x1) x [y0, y1)`, clipped to the mask.
    pub fn set_rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, on: bool) {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let v = if on { 255 } else { 0 };
        for y in y0..y1 {
            self.pixels[y * self.width + x0..y * self.width + x1].fill(v);
        }
        self.touch(x0, y0, x1, y1);
    }

    /// Sets every pixel whose centre is inside the closed polygon `points` (canvas pixels; the
    /// even-odd rule, so a lasso that crosses itself leaves its loops' overlaps out).
    pub fn fill_polygon(&mut self, points: &[(f32, f32)]) {
        if points.len() < 3 {
            return;
        }
        let (mut y_min, mut y_max) = (f32::MAX, f32::MIN);
        for &(_, y) in points {
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        let y0 = y_min.floor().max(0.0) as usize;
        let y1 = (y_max.ceil().max(0.0) as usize).min(self.height);
        let (mut bx0, mut bx1) = (self.width, 0);
        let mut xs = Vec::new();
        for y in y0..y1 {
            let yc = y as f32 + 0.5;
            xs.clear();
            for (i, &(ax, ay)) in points.iter().enumerate() {
                let (bx, by) = points[(i + 1) % points.len()];
                if (ay <= yc) != (by <= yc) {
                    xs.push(ax + (yc - ay) / (by - ay) * (bx - ax));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                // Pixels whose centre x + 0.5 lies in [pair[0], pair[1]).
                let xa = (pair[0] - 0.5).ceil().max(0.0) as usize;
                let xb = ((pair[1] - 0.5).ceil().max(0.0) as usize).min(self.width);
                if xa < xb {
                    self.pixels[y * self.width + xa..y * self.width + xb].fill(255);
                    (bx0, bx1) = (bx0.min(xa), bx1.max(xb));
                }
            }
        }
        if bx0 < bx1 {
            self.touch(bx0, y0, bx1, y1);
        }
    }

    fn touch(&mut self, x0: usize, y0: usize, x1: usize, y1: usize) {
        self.dirty = Some(match self.dirty {
            Some((a, b, c, d)) => (a.min(x0), b.min(y0), c.max(x1), d.max(y1)),
            None => (x0, y0, x1, y1),
        });
    }

    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(std::mem::replace(&mut self.pixels, prev));
                self.touch_all();
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(&mut self.pixels, next));
                self.touch_all();
                true
            }
            None => false,
        }
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn clear(&mut self) {
        self.checkpoint();
        self.pixels.iter_mut().for_each(|p| *p = 0);
        self.touch_all();
    }

    pub fn fill(&mut self) {
        self.checkpoint();
        self.pixels.iter_mut().for_each(|p| *p = 255);
        self.touch_all();
    }

    pub fn invert(&mut self) {
        self.checkpoint();
        self.pixels.iter_mut().for_each(|p| *p = 255 - *p);
        self.touch_all();
    }

    /// Takes the dirty rectangle and its bytes for upload.
    pub fn take_dirty(&mut self) -> Option<(usize, usize, usize, usize, Vec<u8>)> {
        let (x0, y0, x1, y1) = self.dirty.take()?;
        let bytes = (y0..y1)
            .flat_map(|y| {
                self.pixels[y * self.width + x0..y * self.width + x1]
                    .iter()
                    .copied()
            })
            .collect();
        Some((x0, y0, x1 - x0, y1 - y0, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stroke_is_one_undo_step() {
        let mut m = MaskDocument::new(32, 32);
        for x in [5.0, 20.0] {
            m.begin_stroke(false, 3.0, 1.0);
            m.extend_stroke(x, 5.0);
            m.extend_stroke(x, 25.0);
            m.end_stroke();
        }
        let two = m.pixels.clone();
        assert!(m.undo());
        assert!(
            m.pixels.iter().filter(|&&p| p > 0).count() > 0,
            "first stroke survives"
        );
        assert!(m.undo());
        assert!(m.is_empty());
        assert!(m.redo() && m.redo());
        assert_eq!(m.pixels, two);
    }

    #[test]
    fn rectangles_and_lassos_fill_what_they_enclose() {
        let mut m = MaskDocument::new(16, 16);
        m.begin_edit();
        m.set_rect(2, 3, 6, 5, true);
        assert_eq!(m.pixels.iter().filter(|&&p| p == 255).count(), 8);
        assert_eq!(m.pixels[3 * 16 + 2], 255);
        assert_eq!(m.pixels[5 * 16 + 2], 0);
        m.set_rect(0, 0, 99, 99, false);
        assert!(m.is_empty());
        // A right triangle over the square (0,0)-(10,10): about half its 100 pixels.
        m.fill_polygon(&[(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)]);
        let n = m.pixels.iter().filter(|&&p| p == 255).count();
        assert!((40..=60).contains(&n), "{n} pixels");
        assert_eq!(m.pixels[0], 255);
        assert_eq!(m.pixels[9 * 16 + 9], 0);
        // A lasso past the edges is clipped, and one edit is one undo step.
        m.fill_polygon(&[(-5.0, -5.0), (30.0, -5.0), (30.0, 30.0), (-5.0, 30.0)]);
        assert!(m.pixels.iter().all(|&p| p == 255));
        assert!(m.undo());
        assert!(m.is_empty());
    }

    #[test]
    fn one_pixel_brush_and_eraser() {
        let mut m = MaskDocument::new(8, 8);
        m.begin_stroke(false, 0.5, 1.0);
        m.extend_stroke(3.5, 3.5);
        m.end_stroke();
        assert_eq!(m.pixels.iter().filter(|&&p| p == 255).count(), 1);
        m.begin_stroke(true, 2.0, 1.0);
        m.extend_stroke(3.5, 3.5);
        m.end_stroke();
        assert!(m.is_empty());
    }
}
