//! Zero-shot editing on token canvases: inpainting, outpainting / canvas extension and
//! resolution expansion. None of these exists in the reference code; the paper shows them as
//! figures. They all reduce to one mechanism: known tokens are context, fed with the class token
//! in one prefill pass, and only unknown cells are sampled.
//!
//! A [`TokenCanvas`] may be larger than the model's grid. A [`CanvasJob`] fills its unknown cells
//! window by window: each window is a grid-sized crop, prefilled with every known token inside it
//! (RoPE positions are window-local, so every window looks like an ordinary image to the model).
//! The next window is the one that overlaps known content most usefully (see
//! [`CanvasJob::next_window`]). Inpainting on the model grid is a single window.

use serde::{Deserialize, Serialize};

use crate::backend::Transformer;
use crate::error::{Error, Result};
use crate::generator::{Generation, KnownCells, OrderMode, Request, Settings};

/// A grid of tokens in raster order; `None` marks a cell still to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCanvas {
    pub rows: usize,
    pub cols: usize,
    pub cells: Vec<Option<u32>>,
}

impl TokenCanvas {
    pub fn empty(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            cells: vec![None; rows * cols],
        }
    }

    pub fn from_tokens(rows: usize, cols: usize, tokens: &[u32]) -> Result<Self> {
        if rows.checked_mul(cols) != Some(tokens.len()) {
            return Err(Error::InvalidRequest(format!(
                "{} tokens do not fill a {rows}x{cols} grid",
                tokens.len()
            )));
        }
        Ok(Self {
            rows,
            cols,
            cells: tokens.iter().copied().map(Some).collect(),
        })
    }

    pub fn get(&self, r: usize, c: usize) -> Option<u32> {
        self.cells[r * self.cols + c]
    }

    pub fn unknown_count(&self) -> usize {
        self.cells.iter().filter(|c| c.is_none()).count()
    }

    /// Every cell, or an error naming how many are missing.
    pub fn tokens(&self) -> Result<Vec<u32>> {
        let missing = self.unknown_count();
        if missing > 0 {
            return Err(Error::InvalidRequest(format!(
                "{missing} cells are not generated yet"
            )));
        }
        Ok(self.cells.iter().flatten().copied().collect())
    }

    /// Forgets the cells where `mask` is true (inpainting).
    pub fn with_unknown(&self, mask: &[bool]) -> Result<Self> {
        if mask.len() != self.cells.len() {
            return Err(Error::InvalidRequest(format!(
                "mask has {} cells, the canvas {}x{}",
                mask.len(),
                self.rows,
                self.cols
            )));
        }
        let mut out = self.clone();
        for (c, &m) in out.cells.iter_mut().zip(mask) {
            if m {
                *c = None;
            }
        }
        Ok(out)
    }

    /// A larger canvas with this one at its centre-offset and unknown cells around it.
    pub fn extended(&self, left: usize, right: usize, top: usize, bottom: usize) -> Self {
        let (rows, cols) = (self.rows + top + bottom, self.cols + left + right);
        let mut out = Self::empty(rows, cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.cells[(r + top) * cols + c + left] = self.get(r, c);
            }
        }
        out
    }

    /// The top-left `rows x cols` cells (at most this canvas's).
    pub fn cropped(&self, rows: usize, cols: usize) -> Self {
        let (rows, cols) = (rows.min(self.rows), cols.min(self.cols));
        let mut out = Self::empty(rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                out.cells[r * cols + c] = self.get(r, c);
            }
        }
        out
    }

    /// Where `inner` sits inside this canvas as an exact sub-grid (every cell equal, unknown
    /// cells included), if it does: its top-left `(row, col)`, the first found in raster order.
    pub fn locate(&self, inner: &TokenCanvas) -> Option<(usize, usize)> {
        if inner.rows > self.rows || inner.cols > self.cols {
            return None;
        }
        (0..=self.rows - inner.rows)
            .flat_map(|r0| (0..=self.cols - inner.cols).map(move |c0| (r0, c0)))
            .find(|&(r0, c0)| {
                (0..inner.rows)
                    .all(|r| (0..inner.cols).all(|c| self.get(r0 + r, c0 + c) == inner.get(r, c)))
            })
    }

    /// Resolution expansion: a canvas with `factor` times the cells per side, the existing
    /// tokens placed on its lattice (cell (y, x) at (factor·y, factor·x)) and the rest unknown.
    pub fn spread(&self, factor: usize) -> Self {
        let (rows, cols) = (self.rows * factor, self.cols * factor);
        let mut out = Self::empty(rows, cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.cells[(r * factor) * cols + c * factor] = self.get(r, c);
            }
        }
        out
    }

    /// The canvas with every unknown cell given the token of its nearest known cell (4-neighbour
    /// steps; among equally near ones, the first reached scanning up, left, right, down), so a
    /// partial canvas can be decoded as a whole: the live preview decodes the decided cells in
    /// the context of their neighbours. `None` when no cell is known.
    pub fn filled_nearest(&self) -> Option<TokenCanvas> {
        let mut cells = self.cells.clone();
        let mut frontier: Vec<usize> = (0..cells.len()).filter(|&i| cells[i].is_some()).collect();
        if frontier.is_empty() {
            return None;
        }
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for &i in &frontier {
                let (r, c) = (i / self.cols, i % self.cols);
                let near = [
                    (r > 0).then(|| i - self.cols),
                    (c > 0).then(|| i - 1),
                    (c + 1 < self.cols).then(|| i + 1),
                    (r + 1 < self.rows).then(|| i + self.cols),
                ];
                for j in near.into_iter().flatten() {
                    if cells[j].is_none() {
                        cells[j] = cells[i];
                        next.push(j);
                    }
                }
            }
            frontier = next;
        }
        Some(TokenCanvas {
            rows: self.rows,
            cols: self.cols,
            cells,
        })
    }
}

/// Pixel mask → token mask. A token is unknown when the masked share of its `patch x patch`
/// pixels exceeds `threshold` (0: any masked pixel), then the token mask is grown by `dilate`
/// cells. `mask` holds one byte per pixel, `> 127` = regenerate.
pub fn token_mask(
    mask: &[u8],
    width: usize,
    height: usize,
    patch: usize,
    threshold: f32,
    dilate: usize,
) -> Result<Vec<bool>> {
    if mask.len() != width * height {
        return Err(Error::InvalidRequest(format!(
            "mask has {} pixels, expected {width}x{height}",
            mask.len()
        )));
    }
    if patch == 0 || !width.is_multiple_of(patch) || !height.is_multiple_of(patch) {
        return Err(Error::InvalidRequest(format!(
            "a {width}x{height} mask does not divide into {patch}px tokens"
        )));
    }
    let (rows, cols) = (height / patch, width / patch);
    let mut cells = vec![false; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let mut covered = 0usize;
            for y in r * patch..(r + 1) * patch {
                covered += mask[y * width + c * patch..y * width + (c + 1) * patch]
                    .iter()
                    .filter(|&&v| v > 127)
                    .count();
            }
            let share = covered as f32 / (patch * patch) as f32;
            cells[r * cols + c] = covered > 0 && share > threshold.min(0.999);
        }
    }
    for _ in 0..dilate {
        let prev = cells.clone();
        for r in 0..rows {
            for c in 0..cols {
                let near = |dr: isize, dc: isize| {
                    let (rr, cc) = (r as isize + dr, c as isize + dc);
                    rr >= 0
                        && cc >= 0
                        && (rr as usize) < rows
                        && (cc as usize) < cols
                        && prev[rr as usize * cols + cc as usize]
                };
                if near(0, 0) || near(-1, 0) || near(1, 0) || near(0, -1) || near(0, 1) {
                    cells[r * cols + c] = true;
                }
            }
        }
    }
    Ok(cells)
}

/// What one step of a [`CanvasJob`] decided, in canvas coordinates.
#[derive(Debug, Clone)]
pub struct CanvasStep {
    /// `(row, col, token, probability)` of every cell decided in this step (every window of
    /// the wave).
    pub cells: Vec<(usize, usize, u32, f32)>,
    /// Cells of the wave's windows decided before and drawn again in this step (settling,
    /// polishing).
    pub revised: Vec<(usize, usize, u32, f32)>,
    /// Origins `(row, col)` of the windows of this wave (generated together as one batch).
    pub windows: Vec<(usize, usize)>,
    /// Index of the wave's first window among all the job's windows (windows are numbered in
    /// the order they start).
    pub window_index: usize,
    /// Step within the wave, and the wave's step count.
    pub step: usize,
    pub window_steps: usize,
    /// Unknown cells left on the whole canvas.
    pub remaining: usize,
}

/// Largest number of windows generated together in one wave (one batch).
pub const MAX_WAVE: usize = 16;

/// Fills the unknown cells of a canvas with grid-sized windows (see the module docs).
#[derive(Debug)]
pub struct CanvasJob {
    model: Transformer,
    canvas: TokenCanvas,
    class: Option<usize>,
    settings: Settings,
    order: OrderMode,
    /// The wave in progress: its windows' origins and their batched generation.
    current: Option<(Vec<(usize, usize)>, Generation)>,
    windows_done: usize,
    waves_done: usize,
    max_wave: usize,
}

impl CanvasJob {
    /// `class`: `None` generates unconditionally. `order` applies inside each window
    /// (`Priority` maps are given over the whole canvas).
    pub fn new(
        model: impl Into<Transformer>,
        canvas: TokenCanvas,
        class: Option<usize>,
        settings: Settings,
        order: OrderMode,
    ) -> Result<Self> {
        let model: Transformer = model.into();
        let g = model.config().grid_size();
        if canvas.rows < g || canvas.cols < g {
            return Err(Error::InvalidRequest(format!(
                "the canvas ({}x{} tokens) is smaller than the model's {g}x{g} grid",
                canvas.rows, canvas.cols
            )));
        }
        if canvas.unknown_count() == 0 {
            return Err(Error::InvalidRequest(
                "nothing to generate: no unknown cell".into(),
            ));
        }
        match &order {
            OrderMode::Priority(p) if p.len() != canvas.cells.len() => {
                return Err(Error::InvalidRequest(
                    "priority map does not match the canvas".into(),
                ));
            }
            OrderMode::PerImage(_) => {
                return Err(Error::InvalidRequest(
                    "a canvas job takes one order for the whole canvas".into(),
                ));
            }
            _ => {}
        }
        settings.validate()?;
        Ok(Self {
            model,
            canvas,
            class,
            settings,
            order,
            current: None,
            windows_done: 0,
            waves_done: 0,
            max_wave: MAX_WAVE,
        })
    }

    /// At most `n` windows per wave (1: one window at a time, as before waves existed).
    pub fn with_max_wave(mut self, n: usize) -> Self {
        self.max_wave = n.max(1);
        self
    }

    /// The settings the job was asked to run with (each wave draws from its own window seed).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn canvas(&self) -> &TokenCanvas {
        &self.canvas
    }

    pub fn is_done(&self) -> bool {
        self.current.is_none() && self.canvas.unknown_count() == 0
    }

    /// Windows finished so far.
    pub fn windows_done(&self) -> usize {
        self.windows_done
    }

    /// Known cells of every grid-sized window, `[r0][c0]` (one pass of 2-D prefix sums).
    fn known_counts(&self) -> Vec<Vec<usize>> {
        let g = self.model.config().grid_size();
        let c = &self.canvas;
        let mut sums = vec![vec![0usize; c.cols + 1]; c.rows + 1];
        for r in 0..c.rows {
            for col in 0..c.cols {
                sums[r + 1][col + 1] = sums[r][col + 1] + sums[r + 1][col] - sums[r][col]
                    + usize::from(c.get(r, col).is_some());
            }
        }
        (0..=c.rows - g)
            .map(|r0| {
                (0..=c.cols - g)
                    .map(|c0| {
                        sums[r0 + g][c0 + g] + sums[r0][c0] - sums[r0][c0 + g] - sums[r0 + g][c0]
                    })
                    .collect()
            })
            .collect()
    }

    /// The next window: among grid-sized windows holding unknown cells, those with at least
    /// half of their cells known are preferred (enough context; they step by about half a
    /// window), and among them the one with the most unknown cells; otherwise the one with the
    /// most known cells. Ties go to the top-left-most.
    pub fn next_window(&self) -> Option<(usize, usize)> {
        self.next_wave().first().copied()
    }

    /// The next wave: the [next window](Self::next_window), then, when it has enough context,
    /// other windows with as many known cells (so one schedule fits them all) and enough
    /// context too that overlap none of the wave's, in raster order, up to the wave limit.
    /// Windows of a wave do not overlap, so none reads another's new cells: they are generated
    /// together as one batch.
    pub fn next_wave(&self) -> Vec<(usize, usize)> {
        let g = self.model.config().grid_size();
        let counts = self.known_counts();
        let mut best: Option<((bool, usize), (usize, usize))> = None;
        for (r0, row) in counts.iter().enumerate() {
            for (c0, &known) in row.iter().enumerate() {
                if known == g * g {
                    continue;
                }
                let unknown = g * g - known;
                let enough = 2 * known >= g * g;
                let key = (enough, if enough { unknown } else { known });
                if best.as_ref().is_none_or(|(k, _)| key > *k) {
                    best = Some((key, (r0, c0)));
                }
            }
        }
        let Some(((enough, _), first)) = best else {
            return Vec::new();
        };
        let mut wave = vec![first];
        if !enough {
            return wave;
        }
        let known = counts[first.0][first.1];
        let overlaps = |a: (usize, usize), b: (usize, usize)| {
            a.0 < b.0 + g && b.0 < a.0 + g && a.1 < b.1 + g && b.1 < a.1 + g
        };
        for (r0, row) in counts.iter().enumerate() {
            for (c0, &k) in row.iter().enumerate() {
                if wave.len() >= self.max_wave {
                    return wave;
                }
                if k == known && !wave.iter().any(|&w| overlaps(w, (r0, c0))) {
                    wave.push((r0, c0));
                }
            }
        }
        wave
    }

    fn start_wave(&mut self, wave: Vec<(usize, usize)>) -> Result<()> {
        let g = self.model.config().grid_size();
        let cols = self.canvas.cols;
        let known = wave
            .iter()
            .map(|&(r0, c0)| {
                (0..g * g)
                    .map(|i| self.canvas.get(r0 + i / g, c0 + i % g))
                    .collect()
            })
            .collect();
        let orders = wave
            .iter()
            .map(|&(r0, c0)| match &self.order {
                OrderMode::Priority(p) => OrderMode::Priority(
                    (0..g * g)
                        .map(|i| p[(r0 + i / g) * cols + c0 + i % g])
                        .collect(),
                ),
                OrderMode::Fixed(_) => OrderMode::Random,
                other => other.clone(),
            })
            .collect();
        let mut settings = self.settings.clone();
        // Each wave draws from its own streams (wave 0 from the job's seed itself); window i
        // of the wave is image i of its batch.
        settings.seed = crate::sampler::window_seed(self.settings.seed, self.waves_done as u64);
        let request = Request {
            classes: vec![self.class; wave.len()],
            settings,
            order: OrderMode::PerImage(orders),
            known: KnownCells::PerImage(known),
        };
        self.current = Some((wave, Generation::new(&self.model, &request)?));
        Ok(())
    }

    /// One parallel step of the current wave (starting the next wave when needed); `None`
    /// once the canvas is full.
    pub fn step(&mut self) -> Result<Option<CanvasStep>> {
        loop {
            if self.current.is_none() {
                let wave = self.next_wave();
                if wave.is_empty() {
                    return Ok(None);
                }
                self.start_wave(wave)?;
            }
            let Some((wave, gen)) = self.current.as_mut() else {
                return Ok(None);
            };
            let Some(out) = gen.step()? else {
                self.current = None;
                continue;
            };
            let g = self.model.config().grid_size();
            let cols = self.canvas.cols;
            let window_steps = gen.total_steps();
            let finished = gen.is_done();
            let wave = wave.clone();
            let mut cells = Vec::new();
            let mut revised = Vec::new();
            for (i, &(r0, c0)) in wave.iter().enumerate() {
                let mut place = |cell: usize, token: u32, prob: f32| {
                    let (r, c) = (r0 + cell / g, c0 + cell % g);
                    self.canvas.cells[r * cols + c] = Some(token);
                    (r, c, token, prob)
                };
                for ((&cell, &token), &prob) in
                    out.cells[i].iter().zip(&out.tokens[i]).zip(&out.probs[i])
                {
                    cells.push(place(cell, token, prob));
                }
                for &(cell, token, prob) in &out.revised[i] {
                    revised.push(place(cell, token, prob));
                }
            }
            let index = self.windows_done;
            if finished {
                self.current = None;
                self.windows_done += wave.len();
                self.waves_done += 1;
            }
            return Ok(Some(CanvasStep {
                cells,
                revised,
                windows: wave,
                window_index: index,
                step: out.step,
                window_steps,
                remaining: self.canvas.unknown_count(),
            }));
        }
    }

    /// Runs to the end and returns the full canvas.
    pub fn run(mut self) -> Result<TokenCanvas> {
        while self.step()?.is_some() {}
        Ok(self.canvas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_canvas_fills_from_its_nearest_known_cells() {
        let mut canvas = TokenCanvas::empty(2, 3);
        assert!(canvas.filled_nearest().is_none());
        canvas.cells[0] = Some(7);
        canvas.cells[5] = Some(9);
        let filled = canvas.filled_nearest().expect("filled");
        assert_eq!(
            filled.cells,
            vec![Some(7), Some(7), Some(9), Some(7), Some(9), Some(9)]
        );
        // Known cells are never changed.
        let full = TokenCanvas::from_tokens(1, 2, &[1, 2]).expect("test");
        assert_eq!(full.filled_nearest(), Some(full));
    }
}
