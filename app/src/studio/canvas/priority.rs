//! The priority brush's map: where generation should start. One level per token cell (0 = not
//! painted); each stroke raises the cells it touches by one level, so painting a place again
//! moves it earlier still. The sampler takes the levels as [`arpg_core::OrderMode::Priority`]:
//! higher levels are decided first, in random order inside each level.

/// Painted priority levels over a `rows x cols` canvas (raster order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriorityMap {
    pub rows: usize,
    pub cols: usize,
    pub levels: Vec<u8>,
    /// The cells the stroke in progress has raised already (each once per stroke).
    stroke: Option<Vec<bool>>,
}

impl PriorityMap {
    /// An unpainted map of `rows x cols` cells.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            levels: vec![0; rows * cols],
            stroke: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(|&l| l == 0)
    }

    pub fn begin_stroke(&mut self) {
        self.stroke = Some(vec![false; self.levels.len()]);
    }

    pub fn end_stroke(&mut self) {
        self.stroke = None;
    }

    pub fn is_painting(&self) -> bool {
        self.stroke.is_some()
    }

    /// Raises the cells within `radius` canvas pixels of `(x, y)` (cells of `patch` pixels) by
    /// one level, each at most once per stroke; returns whether any level changed.
    pub fn paint(&mut self, x: f32, y: f32, radius: f32, patch: usize) -> bool {
        let Some(seen) = self.stroke.as_mut() else {
            return false;
        };
        let p = patch.max(1) as f32;
        let mut changed = false;
        for r in 0..self.rows {
            for c in 0..self.cols {
                // Distance from the brush centre to the nearest point of the cell.
                let dx = (x - x.clamp(c as f32 * p, (c + 1) as f32 * p)).abs();
                let dy = (y - y.clamp(r as f32 * p, (r + 1) as f32 * p)).abs();
                let i = r * self.cols + c;
                if dx * dx + dy * dy <= radius * radius && !seen[i] {
                    seen[i] = true;
                    self.levels[i] = self.levels[i].saturating_add(1);
                    changed = true;
                }
            }
        }
        changed
    }

    /// The levels when any cell is painted and the map covers `rows x cols` (`None`: generate
    /// in the chosen order).
    pub fn for_canvas(&self, rows: usize, cols: usize) -> Option<Vec<u8>> {
        ((self.rows, self.cols) == (rows, cols) && !self.is_empty()).then(|| self.levels.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stroke_raises_the_cells_it_touches_once() {
        let mut m = PriorityMap::new(2, 3);
        assert!(!m.paint(1.0, 1.0, 1.0, 4), "no stroke, no paint");
        m.begin_stroke();
        assert!(m.paint(2.0, 2.0, 1.0, 4));
        assert!(
            !m.paint(2.5, 2.0, 1.0, 4),
            "the same cell twice in one stroke"
        );
        m.end_stroke();
        assert_eq!(m.levels, vec![1, 0, 0, 0, 0, 0]);
        m.begin_stroke();
        // On the border between (0, 0) and (0, 1): both.
        m.paint(4.0, 1.0, 0.5, 4);
        m.end_stroke();
        assert_eq!(m.levels, vec![2, 1, 0, 0, 0, 0]);
        assert_eq!(m.for_canvas(2, 3), Some(m.levels.clone()));
        assert_eq!(m.for_canvas(3, 3), None);
        assert_eq!(PriorityMap::new(2, 3).for_canvas(2, 3), None);
    }
}
