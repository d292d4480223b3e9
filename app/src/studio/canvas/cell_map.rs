//! What the latest generation recorded about each cell it decided: the probability of the token
//! it drew and the step it was decided at. The confidence map and the order heat map draw it;
//! "Re-roll least confident" reads it.

/// Which per-cell map the canvas shows over the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlay {
    #[default]
    None,
    /// Each decided token's probability: red (unlikely) to green (likely).
    Confidence,
    /// The step each cell was decided at: blue (first) to yellow (last).
    Order,
}

impl Overlay {
    /// The shader's mode (`view.params.w`).
    pub fn mode(self) -> f32 {
        match self {
            Overlay::None => 0.0,
            Overlay::Confidence => 1.0,
            Overlay::Order => 2.0,
        }
    }
}

/// What one draw recorded about its cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellRecord {
    /// Probability of the drawn token.
    pub prob: f32,
    /// The step it was drawn at, and that step's place in its run (0 first, 1 last).
    pub step: usize,
    pub order: f32,
    /// The drawn token: a record whose token is no longer the cell's is stale.
    pub token: u32,
    /// The run that drew it ([`CellMap::begin_run`]).
    pub run: u64,
}

/// Per cell: the draw that decided it, or `None` (known context, an opened image, or not
/// decided yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellMap {
    pub rows: usize,
    pub cols: usize,
    pub cells: Vec<Option<CellRecord>>,
    /// The latest run: the replay timeline and [`CellMap::last_step`] read only its records
    /// (the others are context it kept from earlier runs).
    pub latest: u64,
}

impl CellMap {
    /// An empty map of `rows x cols` cells.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            cells: vec![None; rows * cols],
            latest: 0,
        }
    }

    /// Starts recording the draws of run `id`.
    pub fn begin_run(&mut self, id: u64) {
        self.latest = id;
    }

    /// The record of cell `(r, c)` when the latest run drew it.
    pub fn latest_run(&self, r: usize, c: usize) -> Option<CellRecord> {
        self.get(r, c).filter(|rec| rec.run == self.latest)
    }

    /// Records a draw of `token` at `step` of `total_steps`; cells outside the map are ignored.
    /// Settling and polishing draw a cell again: the last draw is the one the image shows.
    pub fn record(
        &mut self,
        r: usize,
        c: usize,
        token: u32,
        prob: f32,
        step: usize,
        total_steps: usize,
    ) {
        if r < self.rows && c < self.cols {
            let last = total_steps.saturating_sub(1).max(1) as f32;
            self.cells[r * self.cols + c] = Some(CellRecord {
                prob,
                step,
                order: (step as f32 / last).clamp(0.0, 1.0),
                token,
                run: self.latest,
            });
        }
    }

    /// Keeps only the records whose token is still the cell's in `cells` (a canvas of the map's
    /// size, raster order); a canvas of another size clears the map.
    pub fn keep_matching(&mut self, rows: usize, cols: usize, cells: &[Option<u32>]) {
        if (rows, cols) != (self.rows, self.cols) || cells.len() != self.cells.len() {
            *self = CellMap::new(rows, cols);
            return;
        }
        for (rec, tok) in self.cells.iter_mut().zip(cells) {
            if rec.is_some_and(|r| Some(r.token) != *tok) {
                *rec = None;
            }
        }
    }

    /// The record of cell `(r, c)`, if any.
    pub fn get(&self, r: usize, c: usize) -> Option<CellRecord> {
        (r < self.rows && c < self.cols)
            .then(|| self.cells[r * self.cols + c])
            .flatten()
    }

    /// The last step the latest run drew a cell at (`None`: it drew nothing).
    pub fn last_step(&self) -> Option<usize> {
        self.cells
            .iter()
            .flatten()
            .filter(|rec| rec.run == self.latest)
            .map(|rec| rec.step)
            .max()
    }

    /// The state texture's blue and alpha bytes of cell `(r, c)`: probability, and 1 + the
    /// step scaled to 1..=255 (0: nothing recorded).
    pub fn texel(&self, r: usize, c: usize) -> [u8; 2] {
        match self.cells.get(r * self.cols + c).copied().flatten() {
            Some(rec) if r < self.rows && c < self.cols => [
                (rec.prob.clamp(0.0, 1.0) * 255.0).round() as u8,
                (1.0 + 254.0 * rec.order).round() as u8,
            ],
            _ => [0, 0],
        }
    }

    /// The `share` (0..1) of recorded cells with the lowest probabilities (at least one when
    /// anything is recorded), least confident first; ties in raster order.
    pub fn least_confident(&self, share: f32) -> Vec<(usize, usize)> {
        let mut recorded: Vec<(f32, usize)> = self
            .cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|rec| (rec.prob, i)))
            .collect();
        recorded.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = ((recorded.len() as f32 * share.clamp(0.0, 1.0)).round() as usize)
            .clamp(usize::from(!recorded.is_empty()), recorded.len());
        recorded[..n]
            .iter()
            .map(|&(_, i)| (i / self.cols, i % self.cols))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_confident_takes_the_lowest_probabilities() {
        let mut m = CellMap::new(2, 2);
        m.record(0, 0, 7, 1.0, 0, 4);
        m.record(0, 1, 8, 0.1, 1, 4);
        m.record(1, 0, 9, 0.5, 2, 4);
        assert_eq!(m.least_confident(0.3), vec![(0, 1)]);
        assert_eq!(m.least_confident(0.7), vec![(0, 1), (1, 0)]);
        // Unrecorded cells are never picked.
        assert_eq!(m.least_confident(1.0).len(), 3);
        assert_eq!(m.texel(1, 1), [0, 0]);
        assert_eq!(m.texel(0, 0), [255, 1]);
        assert_eq!(m.texel(1, 0)[1], 170);
        // Replay reads the latest run only: the others' records are its context.
        assert_eq!(m.last_step(), Some(2));
        m.begin_run(1);
        m.record(1, 1, 3, 0.9, 0, 4);
        assert_eq!(m.last_step(), Some(0));
        assert!(m.latest_run(0, 0).is_none() && m.latest_run(1, 1).is_some());
        assert!(m.get(0, 0).is_some());
        // A cell whose token changed loses its record.
        m.keep_matching(2, 2, &[Some(7), Some(5), Some(9), None]);
        assert!(m.cells[0].is_some() && m.cells[1].is_none() && m.cells[2].is_some());
        m.keep_matching(3, 2, &[None; 6]);
        assert!(m.cells.iter().all(Option::is_none));
    }
}
