//! The randomized parallel decoder as a step machine (the loop of `Transformer.generate` in
//! hp-l33/ARPG `models/arpg.py`, turned inside out).
//!
//! A [`Generation`] is built from a [`Request`]; each [`Generation::step`] runs one parallel step
//! and returns the cells it decided with their tokens and probabilities. Callers stream it, stop
//! between steps (the decided tokens are the result), fork it into another seed, or run it to
//! the end. Known tokens (inpainting, outpainting) are read before the first step's queries,
//! causally in raster order as training reads a sequence, and never resampled; only the unknown
//! cells are scheduled.
//!
//! - this file: the request, the reference's step and the context it reads;
//! - [`settings`]: [`Settings`] and the settings a model recommends;
//! - [`revisit`]: settling the first cells and polishing the finished image (not in the
//!   reference; steps of the same machine);
//! - [`lifecycle`]: the serialisable [`State`], snapshot / restore and fork.
//!
//! Every random draw comes from the named streams of [`crate::sampler::stream`]: image `i` of a
//! request with seed `s` is sampled exactly as a single image with seed
//! [`sampler::image_seed`]`(s, i)`.

use serde::{Deserialize, Serialize};

use crate::backend::{Cache, Ids, Logits, Transformer};
use crate::error::{Error, Result};
use crate::sampler::{self, stream, Rng};
use crate::schedule;

pub mod lifecycle;
pub mod revisit;
pub mod settings;

pub use lifecycle::State;
pub use settings::{
    SamplingDefaults, Settings, DEFAULT_STEPS, POLISH_BELOW, POLISH_GROUPS, SETTLE_SWEEPS,
};

/// The order in which unknown cells are generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum OrderMode {
    /// A fresh random permutation per image (what the model was trained on).
    #[default]
    Random,
    /// Row by row.
    Raster,
    /// An explicit order of raster cells (unknown cells only are used, in this order).
    Fixed(Vec<usize>),
    /// Per-cell priority (higher first), random inside each level.
    Priority(Vec<u8>),
    /// One order per image (a batch of canvas windows, each with its own priority map).
    PerImage(Vec<OrderMode>),
}

/// The cells known before the first step (context, never resampled), raster order on the
/// model grid, `None` = generate.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum KnownCells {
    /// Nothing known: plain generation.
    #[default]
    Nothing,
    /// The same known cells for every image (inpainting one image several times).
    Shared(Vec<Option<u32>>),
    /// Known cells per image (a batch of canvas windows). Every image must have the same number
    /// of unknown cells: the batch shares one schedule.
    PerImage(Vec<Vec<Option<u32>>>),
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// One class label per image; `None` generates unconditionally (null class, no guidance).
    pub classes: Vec<Option<usize>>,
    pub settings: Settings,
    pub order: OrderMode,
    /// Known tokens on the model grid (see [`KnownCells`]).
    pub known: KnownCells,
}

impl Request {
    pub fn new(classes: Vec<usize>, settings: Settings) -> Self {
        Self {
            classes: classes.into_iter().map(Some).collect(),
            settings,
            order: OrderMode::Random,
            known: KnownCells::Nothing,
        }
    }
}

/// What one step decided.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// 0-based index of this step.
    pub step: usize,
    pub total_steps: usize,
    /// Raster cells decided in this step (the same for every image when orders are shared).
    pub cells: Vec<Vec<usize>>,
    /// `tokens[image][j]` decided at `cells[image][j]`.
    pub tokens: Vec<Vec<u32>>,
    /// Probability of each drawn token under the processed distribution.
    pub probs: Vec<Vec<f32>>,
    /// CFG scale used.
    pub cfg_scale: f64,
    /// Raw head output `(rows, n, V)` of the step's new cells (of the polished group in a
    /// polishing step), rows `0..B` conditional then `B..2B` unconditional when guidance is on.
    pub logits: Logits,
    /// `revised[image]`: cells decided before and drawn again in this step (settling or
    /// polishing), as `(cell, token, probability)`; empty in the reference's steps.
    pub revised: Vec<Vec<(usize, u32, f32)>>,
}

/// A generation in progress: its [`State`], the model and the KV cache of what it has read.
#[derive(Debug)]
pub struct Generation {
    model: Transformer,
    /// Whether classifier-free guidance runs (an unconditional half of the batch rows).
    guided: bool,
    cache: Cache,
    state: State,
}

impl Generation {
    /// Validates a request and prepares its first step (nothing runs yet).
    pub fn new(model: impl Into<Transformer>, request: &Request) -> Result<Self> {
        let model: Transformer = model.into();
        let cfg = model.config();
        let n = cfg.block_size;
        let settings = request.settings.clone();
        settings.validate()?;
        let b = request.classes.len();
        if b == 0 {
            return Err(Error::InvalidRequest("at least one class is needed".into()));
        }
        if let Some(c) = request
            .classes
            .iter()
            .flatten()
            .find(|&&c| c >= cfg.num_classes)
        {
            return Err(Error::InvalidRequest(format!(
                "class {c} is out of range: this model has classes 0..{}",
                cfg.num_classes - 1
            )));
        }
        let known: Vec<Vec<Option<u32>>> = match &request.known {
            KnownCells::Nothing => vec![vec![None; n]; b],
            KnownCells::Shared(k) => vec![k.clone(); b],
            KnownCells::PerImage(k) if k.len() != b => {
                return Err(Error::InvalidRequest(format!(
                    "known cells given for {} images, classes for {b}",
                    k.len()
                )))
            }
            KnownCells::PerImage(k) => k.clone(),
        };
        if let Some(k) = known.iter().find(|k| k.len() != n) {
            return Err(Error::InvalidRequest(format!(
                "{} known cells given for a grid of {n}",
                k.len()
            )));
        }
        if let Some(t) = known
            .iter()
            .flatten()
            .flatten()
            .find(|&&t| t as usize >= cfg.vocab_size)
        {
            return Err(Error::InvalidRequest(format!(
                "known token {t} is outside the codebook (size {})",
                cfg.vocab_size
            )));
        }
        let unknown: Vec<Vec<usize>> = known
            .iter()
            .map(|k| (0..n).filter(|&c| k[c].is_none()).collect())
            .collect();
        let u = unknown[0].len();
        if unknown.iter().any(|cells| cells.len() != u) {
            return Err(Error::InvalidRequest(
                "the images of a batch must have the same number of unknown cells".into(),
            ));
        }
        if u == 0 {
            return Err(Error::InvalidRequest(
                "nothing to generate: every cell is known".into(),
            ));
        }
        let steps = settings.steps.min(u);
        let counts = schedule::num_pred(settings.schedule, u, steps)?;
        let scales = schedule::cfg_scales(settings.cfg_schedule, settings.cfg_scale, &counts);
        let seeds: Vec<u64> = (0..b as u64)
            .map(|i| sampler::image_seed(settings.seed, i))
            .collect();
        let orders = (0..b)
            .map(|i| order_cells(&request.order, i, &unknown[i], n, seeds[i]))
            .collect::<Result<Vec<_>>>()?;
        // Guidance needs a condition; unconditional images use the null class throughout.
        let guided = settings.cfg_scale != 1.0 && request.classes.iter().any(Option::is_some);
        let batch_rows = if guided { 2 * b } else { b };
        let pending: Vec<Vec<(u32, u32)>> = known
            .iter()
            .map(|k| {
                k.iter()
                    .enumerate()
                    .filter_map(|(c, t)| t.map(|t| (t, c as u32 + 1)))
                    .collect()
            })
            .collect();
        let cache = model.new_cache(batch_rows, 1 + n)?;
        Ok(Self {
            model: model.clone(),
            guided,
            cache,
            state: State {
                classes: request.classes.clone(),
                orders,
                tokens_per_step: counts,
                cfg_scales: scales,
                step: 0,
                tokens: known,
                probs: vec![vec![0.0; n]; b],
                pending,
                pending_has_class: true,
                token_rngs: seeds
                    .iter()
                    .map(|&seed| Rng::stream(seed, stream::TOKENS, 0))
                    .collect(),
                settled: false,
                polish_seed: settings.seed,
                forked_from: Vec::new(),
                settings,
            },
        })
    }

    /// Rows of every batched tensor: the images, then their unconditional copies when guided.
    fn batch_rows(&self) -> usize {
        let b = self.state.classes.len();
        if self.guided {
            2 * b
        } else {
            b
        }
    }

    /// Parallel steps plus polishing steps.
    pub fn total_steps(&self) -> usize {
        self.state.tokens_per_step.len() + self.state.settings.polish * self.polish_groups()
    }

    /// Steps run so far.
    pub fn steps_done(&self) -> usize {
        self.state.step
    }

    pub fn is_done(&self) -> bool {
        self.state.step >= self.total_steps()
    }

    /// Tokens decided per parallel step (polishing steps decide none).
    pub fn tokens_per_step(&self) -> &[usize] {
        &self.state.tokens_per_step
    }

    pub fn settings(&self) -> &Settings {
        &self.state.settings
    }

    /// Unknown cells of each image in generation order.
    pub fn orders(&self) -> &[Vec<usize>] {
        &self.state.orders
    }

    /// The grid of each image: known and decided tokens, `None` where not decided yet.
    pub fn tokens(&self) -> &[Vec<Option<u32>>] {
        &self.state.tokens
    }

    /// Probability each decided token was drawn with (0 for known and undecided cells).
    pub fn probs(&self) -> &[Vec<f32>] {
        &self.state.probs
    }

    /// Runs one parallel step; `None` once every cell is decided.
    pub fn step(&mut self) -> Result<Option<StepOutput>> {
        if self.is_done() {
            return Ok(None);
        }
        if self.state.step >= self.state.tokens_per_step.len() {
            return self.polish_step().map(Some);
        }
        self.read_known_cells()?;
        let revised = self.settle_if_due()?;
        let cfg = self.model.config().clone();
        let b = self.state.classes.len();
        let batch_rows = self.batch_rows();
        let count = self.state.tokens_per_step[self.state.step];
        let start: usize = self.state.tokens_per_step[..self.state.step].iter().sum();
        let targets: Vec<Vec<usize>> = self
            .state
            .orders
            .iter()
            .map(|o| o[start..start + count].to_vec())
            .collect();

        // 1. What to pending: the class (or null class) at RoPE row 0 on the first step, then the
        //    previous step's tokens at their cells; both CFG halves get the same image tokens.
        let m = self.state.pending[0].len() + usize::from(self.state.pending_has_class);
        let mut ids = Vec::with_capacity(batch_rows * m);
        let mut pos = Vec::with_capacity(batch_rows * m);
        for r in 0..batch_rows {
            let i = r % b;
            if self.state.pending_has_class {
                ids.push(match self.state.classes[i] {
                    Some(c) if r < b => cfg.class_token_id(c),
                    _ => cfg.null_class_id(),
                });
                pos.push(0);
            }
            for &(t, p) in &self.state.pending[i] {
                ids.push(t);
                pos.push(p);
            }
        }
        let query: Vec<u32> = (0..batch_rows)
            .flat_map(|r| targets[r % b].iter().map(|&c| c as u32 + 1))
            .collect();
        let ids = Ids::new(ids, batch_rows)?;
        let pos = Ids::new(pos, batch_rows)?;
        let query = Ids::new(query, batch_rows)?;

        // 2. One forward over the new tokens and the queries of the cells to decide.
        let host = self.model.step(&mut self.cache, &ids, &pos, &query)?;
        ensure_finite(&host, self.state.step)?;

        // 3. Combine the CFG halves and draw one token per target cell.
        let scale = self.state.cfg_scales[self.state.step];
        let draw = self.state.settings.draw();
        let mut tokens = vec![Vec::with_capacity(count); b];
        let mut probs = vec![Vec::with_capacity(count); b];
        for i in 0..b {
            for (j, &cell) in targets[i].iter().enumerate() {
                let combined = if self.guided {
                    sampler::cfg_combine(host.row(i, j), host.row(b + i, j), scale as f32)
                } else {
                    host.row(i, j).to_vec()
                };
                let d = sampler::draw(&combined, &draw, &mut self.state.token_rngs[i]);
                self.state.tokens[i][cell] = Some(d.token);
                self.state.probs[i][cell] = d.prob;
                tokens[i].push(d.token);
                probs[i].push(d.prob);
            }
        }

        // 4. The decided tokens are fed at the next step.
        self.state.pending = (0..b)
            .map(|i| {
                targets[i]
                    .iter()
                    .zip(&tokens[i])
                    .map(|(&c, &t)| (t, c as u32 + 1))
                    .collect()
            })
            .collect();
        self.state.pending_has_class = false;
        let out = StepOutput {
            step: self.state.step,
            total_steps: self.total_steps(),
            cells: targets,
            tokens,
            probs,
            cfg_scale: scale,
            logits: host,
            revised,
        };
        self.state.step += 1;
        Ok(Some(out))
    }

    /// Cells known from the start (not generated), in raster order.
    fn known_cells(&self, image: usize) -> Vec<usize> {
        let n = self.model.config().block_size;
        let mut generated = vec![false; n];
        if let Some(order) = self.state.orders.get(image) {
            order.iter().for_each(|&c| generated[c] = true);
        }
        (0..n).filter(|&c| !generated[c]).collect()
    }

    /// Embedding ids and RoPE rows `(rows, 1 + m)`: the class slot (null class in the
    /// unconditional half), then `cells[image]` (all of length m) with their tokens.
    fn context(&self, cells: &[Vec<usize>]) -> Result<(Ids, Ids)> {
        let cfg = self.model.config();
        let b = self.state.classes.len();
        let batch_rows = self.batch_rows();
        let m = 1 + cells.first().map_or(0, Vec::len);
        let mut ids = Vec::with_capacity(batch_rows * m);
        let mut pos = Vec::with_capacity(batch_rows * m);
        for r in 0..batch_rows {
            let i = r % b;
            ids.push(match self.state.classes[i] {
                Some(c) if r < b => cfg.class_token_id(c),
                _ => cfg.null_class_id(),
            });
            pos.push(0);
            for &c in &cells[i] {
                let t = self.state.tokens[i][c]
                    .ok_or_else(|| Error::Internal(format!("cell {c} has no token to read")))?;
                ids.push(t);
                pos.push(c as u32 + 1);
            }
        }
        Ok((Ids::new(ids, batch_rows)?, Ids::new(pos, batch_rows)?))
    }

    /// Guided logits `[image][query]` for `queries[image]` after reading `cells[image]` (see
    /// [`Transformer::predict`]), and the raw head output.
    fn predict(
        &self,
        cells: &[Vec<usize>],
        queries: &[Vec<usize>],
        scale: f32,
    ) -> Result<(Vec<Vec<Vec<f32>>>, Logits)> {
        let b = self.state.classes.len();
        let (ids, pos) = self.context(cells)?;
        let batch_rows = ids.batch;
        let nq = queries.first().map_or(0, Vec::len);
        let query: Vec<u32> = (0..batch_rows)
            .flat_map(|r| queries[r % b].iter().map(|&c| c as u32 + 1))
            .collect();
        let query = Ids::new(query, batch_rows)?;
        let host = self.model.predict(&ids, &pos, &query)?;
        ensure_finite(&host, self.state.step)?;
        let combined = (0..b)
            .map(|i| {
                (0..nq)
                    .map(|j| {
                        if self.guided {
                            sampler::cfg_combine(host.row(i, j), host.row(b + i, j), scale)
                        } else {
                            host.row(i, j).to_vec()
                        }
                    })
                    .collect()
            })
            .collect();
        Ok((combined, host))
    }

    /// Rebuilds the KV cache from the class slot, the known cells and the first `cached` cells
    /// of each image's order, read causally in that order (as training reads a sequence).
    fn rebuild_cache(&mut self, cached: usize) -> Result<()> {
        let cells: Vec<Vec<usize>> = (0..self.state.orders.len())
            .map(|i| {
                let o = &self.state.orders[i];
                known_then(&self.known_cells(i), &o[..cached.min(o.len())])
            })
            .collect();
        self.prefill_fresh(&cells)
    }

    /// Before the first step, when cells are known: the class slot and every known cell but the
    /// last are prefilled causally, and the last is fed with the first step's queries, so the
    /// known cells are read as training reads a sequence (raster order; the class slot sees none
    /// of them), not all at once both ways. The reference has no known cells; this does not
    /// change its steps.
    fn read_known_cells(&mut self) -> Result<()> {
        let k = self.state.pending.first().map_or(0, Vec::len);
        if !self.state.pending_has_class || k == 0 {
            return Ok(());
        }
        let head: Vec<Vec<usize>> = self
            .state
            .pending
            .iter()
            .map(|f| {
                f[..k - 1]
                    .iter()
                    .map(|&(_, row)| row as usize - 1)
                    .collect()
            })
            .collect();
        self.prefill_fresh(&head)?;
        self.state.pending.iter_mut().for_each(|f| {
            f.drain(..k - 1);
        });
        self.state.pending_has_class = false;
        Ok(())
    }

    /// Replaces the KV cache with a causal prefill of the class slot and `cells[image]`.
    fn prefill_fresh(&mut self, cells: &[Vec<usize>]) -> Result<()> {
        let (ids, pos) = self.context(cells)?;
        let mut cache = self
            .model
            .new_cache(ids.batch, 1 + self.model.config().block_size)?;
        self.model.prefill(&mut cache, &ids, &pos)?;
        self.cache = cache;
        Ok(())
    }

    fn token_of(&self, image: usize, cell: usize) -> Result<u32> {
        self.state.tokens[image][cell]
            .ok_or_else(|| Error::Internal(format!("cell {cell} has no token yet")))
    }

    /// Runs steps until done or until `cancel` is set; `cancel` is checked between steps, so a
    /// cancel lands within one step and keeps every token decided so far. Returns whether the
    /// generation finished.
    pub fn run_until(
        &mut self,
        cancel: &std::sync::atomic::AtomicBool,
        mut on_step: impl FnMut(&StepOutput),
    ) -> Result<bool> {
        while !cancel.load(std::sync::atomic::Ordering::Relaxed) {
            match self.step()? {
                Some(out) => on_step(&out),
                None => return Ok(true),
            }
        }
        Ok(self.is_done())
    }

    /// Runs the remaining steps and returns the finished grids.
    pub fn run(mut self) -> Result<Vec<Vec<u32>>> {
        while self.step()?.is_some() {}
        self.finished_tokens()
    }

    /// The grids once done (every cell decided).
    pub fn finished_tokens(&self) -> Result<Vec<Vec<u32>>> {
        self.state
            .tokens
            .iter()
            .map(|g| {
                g.iter()
                    .map(|t| {
                        t.ok_or_else(|| Error::InvalidRequest("generation is not finished".into()))
                    })
                    .collect()
            })
            .collect()
    }
}

/// The context a revisit reads: the known cells (raster order), then `cells` in their order.
fn known_then<'a>(known: &'a [usize], cells: impl IntoIterator<Item = &'a usize>) -> Vec<usize> {
    known.iter().chain(cells).copied().collect()
}

/// The generation order of the unknown cells of image `image`, whose seed is `seed`.
fn order_cells(
    mode: &OrderMode,
    image: usize,
    unknown: &[usize],
    n: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let mut rng = Rng::stream(seed, stream::ORDER, 0);
    Ok(match mode {
        OrderMode::Random => {
            let mut cells = unknown.to_vec();
            rng.shuffle(&mut cells);
            cells
        }
        OrderMode::Raster => unknown.to_vec(),
        OrderMode::Fixed(order) => {
            let mut is_unknown = vec![false; n];
            unknown.iter().for_each(|&c| is_unknown[c] = true);
            let cells: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&c| c < n && is_unknown[c])
                .collect();
            let mut seen = vec![false; n];
            if cells.len() != unknown.len()
                || cells.iter().any(|&c| std::mem::replace(&mut seen[c], true))
            {
                return Err(Error::InvalidRequest(
                    "a fixed order must list every unknown cell exactly once".into(),
                ));
            }
            cells
        }
        OrderMode::Priority(levels) => {
            if levels.len() != n {
                return Err(Error::InvalidRequest(format!(
                    "priority map has {} cells for a grid of {n}",
                    levels.len()
                )));
            }
            let mut cells = unknown.to_vec();
            rng.shuffle(&mut cells);
            // Stable sort keeps the random order inside each level.
            cells.sort_by_key(|&c| std::cmp::Reverse(levels[c]));
            cells
        }
        OrderMode::PerImage(modes) => match modes.get(image) {
            Some(OrderMode::PerImage(_)) | None => {
                return Err(Error::InvalidRequest(
                    "a per-image order needs one plain order for each image".into(),
                ))
            }
            Some(mode) => order_cells(mode, image, unknown, n, seed)?,
        },
    })
}

/// Stops a generation whose logits are not finite: drawing from them would pick the last code
/// every time and produce a flat image with no error.
fn ensure_finite(logits: &Logits, step: usize) -> Result<()> {
    let bad = !logits.all_finite();
    if bad {
        return Err(Error::NonFinite(format!(
            "step {}: the model's logits are not finite (NaN or infinity); its weights or \
             dtype are broken (try --dtype f32, or another copy of the checkpoint)",
            step + 1
        )));
    }
    Ok(())
}
