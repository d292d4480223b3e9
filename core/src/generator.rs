//! The randomized parallel decoder as a step machine (the loop of `Transformer.generate` in
//! hp-l33/ARPG `models/arpg.py`, turned inside out).
//!
//! A [`Generation`] is built from a [`Request`]; each [`Generation::step`] runs one parallel step
//! and returns the cells it decided with their tokens and probabilities. Callers stream it, stop
//! between steps (the decided tokens are the result), fork it into another seed, or run it to
//! the end. Known tokens (inpainting, outpainting) are read before the first step's queries,
//! causally in raster order as training reads a sequence, and never resampled; only the unknown
//! cells are scheduled. Two optional revisits of decided cells, not in the reference, are steps
//! of the same machine: settling the first cells ([`Settings::settle`]) and polishing the
//! finished image ([`Settings::polish`]).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Arpg, KvCache};
use crate::sampler::{self, stream, DrawSettings, Rng};
use crate::schedule::{self, CfgSchedule, Schedule};

/// Sampler settings of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Parallel steps T (clamped to the number of unknown tokens).
    pub steps: usize,
    pub schedule: Schedule,
    /// Classifier-free guidance scale; 1 disables guidance and its unconditional half.
    pub cfg_scale: f64,
    pub cfg_schedule: CfgSchedule,
    pub temperature: f64,
    /// 0: off.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f64,
    pub seed: u64,
    /// Settling (not in the reference; 0 = off): once at least this many cells are decided (at
    /// the end of the step that reaches it), each decided cell is drawn again given all the
    /// others, [`SETTLE_SWEEPS`] times over, before generation goes on. The first cells of a generation are drawn with little or no context, and the very
    /// first step cannot tell its cells apart at all: its queries attend to the class token
    /// alone, so every position gets the same distribution. Settling lets those early tokens
    /// see each other, so the image's layout (where a horizon lies, which way stripes run) is
    /// decided by tokens that agree with their positions.
    #[serde(default)]
    pub settle: usize,
    /// Polishing passes after the last step (not in the reference; 0 = off). Each pass splits
    /// the generated cells into [`POLISH_GROUPS`] random groups; for each group the model reads
    /// every other cell and draws again each token that has become improbable there (below
    /// [`POLISH_BELOW`] under the sampling distribution). Stray tokens that disagree with the
    /// finished image are replaced; tokens it agrees with stay.
    #[serde(default)]
    pub polish: usize,
}

/// Sweeps over the early cells when settling.
pub const SETTLE_SWEEPS: usize = 4;
/// Groups (and so steps) per polishing pass.
pub const POLISH_GROUPS: usize = 4;
/// A polished token is drawn again when its probability given the rest is below this.
pub const POLISH_BELOW: f64 = 0.1;
/// Upper bounds that keep a request's work finite.
const MAX_SETTLE: usize = 256;
const MAX_POLISH: usize = 16;

impl Default for Settings {
    fn default() -> Self {
        Self {
            steps: 64,
            schedule: Schedule::Arccos,
            cfg_scale: 4.0,
            cfg_schedule: CfgSchedule::Linear,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            settle: 0,
            polish: 0,
        }
    }
}

/// Sampler settings a model recommends, read from a `"sampling"` object in the JSON config
/// beside its weights (the idea of a `generation_config.json`): a small model trained here may
/// want other settings than the reference's defaults. Every field is optional; what is absent
/// keeps the caller's default, and an explicit user choice always wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polish: Option<usize>,
}

impl SamplingDefaults {
    /// True when the model recommends nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with every recommended field applied; the result is validated.
    pub fn apply(&self, base: &Settings) -> Result<Settings> {
        let mut s = base.clone();
        if let Some(v) = self.steps {
            s.steps = v;
        }
        if let Some(v) = &self.schedule {
            s.schedule = v.parse()?;
        }
        if let Some(v) = self.cfg_scale {
            s.cfg_scale = v;
        }
        if let Some(v) = &self.cfg_schedule {
            s.cfg_schedule = v.parse()?;
        }
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(v) = self.settle {
            s.settle = v;
        }
        if let Some(v) = self.polish {
            s.polish = v;
        }
        s.validate()?;
        Ok(s)
    }
}

impl Settings {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !(self.cfg_scale.is_finite() && (0.0..=100.0).contains(&self.cfg_scale)) {
            return bad(format!(
                "CFG scale {} must be within [0, 100]",
                self.cfg_scale
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= 100.0) {
            return bad(format!(
                "temperature {} must be within (0, 100]",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be within (0, 1]", self.top_p));
        }
        if self.settle > MAX_SETTLE {
            return bad(format!(
                "settle {} must be at most {MAX_SETTLE} cells",
                self.settle
            ));
        }
        if self.polish > MAX_POLISH {
            return bad(format!(
                "polish {} must be at most {MAX_POLISH} passes",
                self.polish
            ));
        }
        Ok(())
    }

    fn draw(&self) -> DrawSettings {
        DrawSettings {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }
}

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
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// One class label per image; `None` generates unconditionally (null class, no guidance).
    pub classes: Vec<Option<usize>>,
    pub settings: Settings,
    pub order: OrderMode,
    /// Known tokens on the model grid (raster order, `None` = generate), shared by every image.
    pub known: Option<Vec<Option<u32>>>,
}

impl Request {
    pub fn new(classes: Vec<usize>, settings: Settings) -> Self {
        Self {
            classes: classes.into_iter().map(Some).collect(),
            settings,
            order: OrderMode::Random,
            known: None,
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
    pub logits: Tensor,
    /// `revised[image]`: cells decided before and drawn again in this step (settling or
    /// polishing), as `(cell, token, probability)`; empty in the reference's steps.
    pub revised: Vec<Vec<(usize, u32, f32)>>,
}

/// Everything that defines a generation's future except its KV cache: serialisable, so a
/// generation can be paused, saved, edited and resumed. [`Generation::restore`] rebuilds the cache
/// with one prefill pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub settings: Settings,
    pub classes: Vec<Option<usize>>,
    pub orders: Vec<Vec<usize>>,
    pub counts: Vec<usize>,
    pub scales: Vec<f64>,
    pub step: usize,
    pub tokens: Vec<Vec<Option<u32>>>,
    pub probs: Vec<Vec<f32>>,
    pub feed: Vec<Vec<(u32, u32)>>,
    pub feed_has_class: bool,
    pub token_rngs: Vec<Rng>,
    #[serde(default)]
    pub settled: bool,
    #[serde(default)]
    pub polish_seed: u64,
}

/// A generation in progress.
#[derive(Debug)]
pub struct Generation {
    model: Arpg,
    settings: Settings,
    classes: Vec<Option<usize>>,
    guided: bool,
    /// Unknown cells of each image in generation order.
    orders: Vec<Vec<usize>>,
    counts: Vec<usize>,
    scales: Vec<f64>,
    step: usize,
    tokens: Vec<Vec<Option<u32>>>,
    probs: Vec<Vec<f32>>,
    /// Tokens and RoPE rows to feed at the next step, per image (shared by both CFG halves
    /// except for the class slot).
    feed: Vec<Vec<(u32, u32)>>,
    /// Whether the next feed starts with the class slot (first step only).
    feed_has_class: bool,
    cache: KvCache,
    token_rngs: Vec<Rng>,
    /// Whether the early cells were settled (see [`Settings::settle`]).
    settled: bool,
    /// Seed of the polishing groups: the request's, kept by forks, so that a fork taken during
    /// a pass finishes that pass's partition (every cell polished once per pass).
    polish_seed: u64,
}

impl Generation {
    /// Validates a request and prepares its first step (nothing runs yet).
    pub fn new(model: &Arpg, request: &Request) -> Result<Self> {
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
        let known = match &request.known {
            Some(k) if k.len() != n => {
                return Err(Error::InvalidRequest(format!(
                    "{} known cells given for a grid of {n}",
                    k.len()
                )))
            }
            Some(k) => k.clone(),
            None => vec![None; n],
        };
        if let Some(t) = known
            .iter()
            .flatten()
            .find(|&&t| t as usize >= cfg.vocab_size)
        {
            return Err(Error::InvalidRequest(format!(
                "known token {t} is outside the codebook (size {})",
                cfg.vocab_size
            )));
        }
        let unknown: Vec<usize> = (0..n).filter(|&c| known[c].is_none()).collect();
        if unknown.is_empty() {
            return Err(Error::InvalidRequest(
                "nothing to generate: every cell is known".into(),
            ));
        }
        let steps = settings.steps.min(unknown.len());
        let counts = schedule::num_pred(settings.schedule, unknown.len(), steps)?;
        let scales = schedule::cfg_scales(settings.cfg_schedule, settings.cfg_scale, &counts);
        let orders = (0..b)
            .map(|i| order_cells(&request.order, &unknown, n, settings.seed, i as u64))
            .collect::<Result<Vec<_>>>()?;
        // Guidance needs a condition; unconditional images use the null class throughout.
        let guided = settings.cfg_scale != 1.0 && request.classes.iter().any(Option::is_some);
        let rows = if guided { 2 * b } else { b };
        let known_feed: Vec<(u32, u32)> = known
            .iter()
            .enumerate()
            .filter_map(|(c, t)| t.map(|t| (t, c as u32 + 1)))
            .collect();
        let cache = model.new_cache(rows, 1 + n)?;
        Ok(Self {
            model: model.clone(),
            guided,
            classes: request.classes.clone(),
            orders,
            scales,
            step: 0,
            tokens: vec![known; b],
            probs: vec![vec![0.0; n]; b],
            feed: vec![known_feed; b],
            feed_has_class: true,
            cache,
            token_rngs: (0..b)
                .map(|i| Rng::stream(settings.seed, stream::TOKENS, i as u64))
                .collect(),
            counts,
            polish_seed: settings.seed,
            settings,
            settled: false,
        })
    }

    /// Parallel steps plus polishing steps.
    pub fn total_steps(&self) -> usize {
        self.counts.len() + self.settings.polish * self.polish_groups()
    }

    /// Groups per polishing pass: [`POLISH_GROUPS`], fewer when fewer cells are generated.
    fn polish_groups(&self) -> usize {
        POLISH_GROUPS.min(self.orders.first().map_or(0, Vec::len))
    }

    /// Steps run so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.total_steps()
    }

    /// Tokens decided per parallel step (polishing steps decide none).
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Unknown cells of each image in generation order.
    pub fn orders(&self) -> &[Vec<usize>] {
        &self.orders
    }

    /// The grid of each image: known and decided tokens, `None` where not decided yet.
    pub fn tokens(&self) -> &[Vec<Option<u32>>] {
        &self.tokens
    }

    /// Probability each decided token was drawn with (0 for known and undecided cells).
    pub fn probs(&self) -> &[Vec<f32>] {
        &self.probs
    }

    /// Runs one parallel step; `None` once every cell is decided.
    pub fn step(&mut self) -> Result<Option<StepOutput>> {
        if self.is_done() {
            return Ok(None);
        }
        if self.step >= self.counts.len() {
            return self.polish_step().map(Some);
        }
        self.read_known_cells()?;
        let revised = self.settle_if_due()?;
        let cfg = self.model.config().clone();
        let b = self.classes.len();
        let rows = if self.guided { 2 * b } else { b };
        let count = self.counts[self.step];
        let start: usize = self.counts[..self.step].iter().sum();
        let targets: Vec<Vec<usize>> = self
            .orders
            .iter()
            .map(|o| o[start..start + count].to_vec())
            .collect();

        // 1. What to feed: the class (or null class) at RoPE row 0 on the first step, then the
        //    previous step's tokens at their cells; both CFG halves get the same image tokens.
        let m = self.feed[0].len() + usize::from(self.feed_has_class);
        let mut ids = Vec::with_capacity(rows * m);
        let mut pos = Vec::with_capacity(rows * m);
        for r in 0..rows {
            let i = r % b;
            if self.feed_has_class {
                ids.push(match self.classes[i] {
                    Some(c) if r < b => cfg.class_token_id(c),
                    _ => cfg.null_class_id(),
                });
                pos.push(0);
            }
            for &(t, p) in &self.feed[i] {
                ids.push(t);
                pos.push(p);
            }
        }
        let query: Vec<u32> = (0..rows)
            .flat_map(|r| targets[r % b].iter().map(|&c| c as u32 + 1))
            .collect();
        let dev = self.model.device().clone();
        let ids = Tensor::from_vec(ids, (rows, m), &dev)?;
        let pos = Tensor::from_vec(pos, (rows, m), &dev)?;
        let query = Tensor::from_vec(query, (rows, count), &dev)?;

        // 2. One forward over the new tokens and the queries of the cells to decide.
        let logits = self
            .model
            .step(&mut self.cache, &ids, &pos, &query)?
            .ok_or_else(|| Error::InvalidRequest("no query in step".into()))?;
        let host = logits.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        ensure_finite(&host, self.step)?;

        // 3. Combine the CFG halves and draw one token per target cell.
        let scale = self.scales[self.step];
        let draw = self.settings.draw();
        let mut tokens = vec![Vec::with_capacity(count); b];
        let mut probs = vec![Vec::with_capacity(count); b];
        for i in 0..b {
            for (j, &cell) in targets[i].iter().enumerate() {
                let combined = if self.guided {
                    sampler::cfg_combine(&host[i][j], &host[b + i][j], scale as f32)
                } else {
                    host[i][j].clone()
                };
                let d = sampler::draw(&combined, &draw, &mut self.token_rngs[i]);
                self.tokens[i][cell] = Some(d.token);
                self.probs[i][cell] = d.prob;
                tokens[i].push(d.token);
                probs[i].push(d.prob);
            }
        }

        // 4. The decided tokens are fed at the next step.
        self.feed = (0..b)
            .map(|i| {
                targets[i]
                    .iter()
                    .zip(&tokens[i])
                    .map(|(&c, &t)| (t, c as u32 + 1))
                    .collect()
            })
            .collect();
        self.feed_has_class = false;
        let out = StepOutput {
            step: self.step,
            total_steps: self.total_steps(),
            cells: targets,
            tokens,
            probs,
            cfg_scale: scale,
            logits,
            revised,
        };
        self.step += 1;
        Ok(Some(out))
    }

    /// Cells known from the start (not generated), in raster order.
    fn known_cells(&self) -> Vec<usize> {
        let n = self.model.config().block_size;
        let mut generated = vec![false; n];
        if let Some(order) = self.orders.first() {
            order.iter().for_each(|&c| generated[c] = true);
        }
        (0..n).filter(|&c| !generated[c]).collect()
    }

    /// Embedding ids and RoPE rows `(rows, 1 + m)`: the class slot (null class in the
    /// unconditional half), then `cells[image]` (all of length m) with their tokens.
    fn context(&self, cells: &[Vec<usize>]) -> Result<(Tensor, Tensor)> {
        let cfg = self.model.config();
        let b = self.classes.len();
        let rows = if self.guided { 2 * b } else { b };
        let m = 1 + cells.first().map_or(0, Vec::len);
        let mut ids = Vec::with_capacity(rows * m);
        let mut pos = Vec::with_capacity(rows * m);
        for r in 0..rows {
            let i = r % b;
            ids.push(match self.classes[i] {
                Some(c) if r < b => cfg.class_token_id(c),
                _ => cfg.null_class_id(),
            });
            pos.push(0);
            for &c in &cells[i] {
                let t = self.tokens[i][c].ok_or_else(|| {
                    Error::InvalidRequest(format!("cell {c} has no token to read"))
                })?;
                ids.push(t);
                pos.push(c as u32 + 1);
            }
        }
        let dev = self.model.device();
        Ok((
            Tensor::from_vec(ids, (rows, m), dev)?,
            Tensor::from_vec(pos, (rows, m), dev)?,
        ))
    }

    /// Guided logits `[image][query]` for `queries[image]` after reading `cells[image]` (see
    /// [`Arpg::predict`]), and the raw head output.
    fn predict(
        &self,
        cells: &[Vec<usize>],
        queries: &[Vec<usize>],
        scale: f32,
    ) -> Result<(Vec<Vec<Vec<f32>>>, Tensor)> {
        let b = self.classes.len();
        let (ids, pos) = self.context(cells)?;
        let rows = ids.dim(0)?;
        let nq = queries.first().map_or(0, Vec::len);
        let query: Vec<u32> = (0..rows)
            .flat_map(|r| queries[r % b].iter().map(|&c| c as u32 + 1))
            .collect();
        let query = Tensor::from_vec(query, (rows, nq), self.model.device())?;
        let logits = self.model.predict(&ids, &pos, &query)?;
        let host = logits.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        ensure_finite(&host, self.step)?;
        let combined = (0..b)
            .map(|i| {
                (0..nq)
                    .map(|j| {
                        if self.guided {
                            sampler::cfg_combine(&host[i][j], &host[b + i][j], scale)
                        } else {
                            host[i][j].clone()
                        }
                    })
                    .collect()
            })
            .collect();
        Ok((combined, logits))
    }

    /// Settles the early cells when it is time (see [`Settings::settle`]): at the first step
    /// that finds at least `settle` cells decided (or at the last step, when fewer ever are).
    /// Each decided cell is drawn again given the known cells and every other decided cell, in
    /// generation order; then the KV cache is rebuilt from the new tokens. Returns the revised
    /// cells of each image.
    fn settle_if_due(&mut self) -> Result<Vec<Vec<(usize, u32, f32)>>> {
        let b = self.classes.len();
        let decided: usize = self.counts[..self.step].iter().sum();
        let last = self.step + 1 == self.counts.len();
        if self.settled
            || self.settings.settle == 0
            || decided == 0
            || (decided < self.settings.settle && !last)
        {
            return Ok(vec![Vec::new(); b]);
        }
        self.settled = true;
        let known = self.known_cells();
        let scale = self.scales[self.step] as f32;
        let draw = self.settings.draw();
        for _ in 0..SETTLE_SWEEPS {
            for k in 0..decided {
                let cells: Vec<Vec<usize>> = self
                    .orders
                    .iter()
                    .map(|o| known_then(&known, o[..k].iter().chain(&o[k + 1..decided])))
                    .collect();
                let queries: Vec<Vec<usize>> = self.orders.iter().map(|o| vec![o[k]]).collect();
                let (logits, _) = self.predict(&cells, &queries, scale)?;
                for i in 0..b {
                    let d = sampler::draw(&logits[i][0], &draw, &mut self.token_rngs[i]);
                    self.tokens[i][queries[i][0]] = Some(d.token);
                    self.probs[i][queries[i][0]] = d.prob;
                }
            }
        }
        // Rebuild the cache from everything but the pending feed (the previous step's cells,
        // fed by this step as usual, with their new tokens).
        let pending = self.counts[self.step - 1];
        self.rebuild_cache(decided - pending)?;
        self.feed = (0..b)
            .map(|i| {
                self.orders[i][decided - pending..decided]
                    .iter()
                    .map(|&c| Ok((self.token_of(i, c)?, c as u32 + 1)))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        (0..b)
            .map(|i| {
                self.orders[i][..decided]
                    .iter()
                    .map(|&c| Ok((c, self.token_of(i, c)?, self.probs[i][c])))
                    .collect()
            })
            .collect()
    }

    /// Rebuilds the KV cache from the class slot, the known cells and the first `cached` cells
    /// of each image's order, read causally in that order (as training reads a sequence).
    fn rebuild_cache(&mut self, cached: usize) -> Result<()> {
        let known = self.known_cells();
        let cells: Vec<Vec<usize>> = self
            .orders
            .iter()
            .map(|o| known_then(&known, &o[..cached.min(o.len())]))
            .collect();
        self.prefill_fresh(&cells)
    }

    /// Before the first step, when cells are known: the class slot and every known cell but the
    /// last are prefilled causally, and the last is fed with the first step's queries, so the
    /// known cells are read as training reads a sequence (raster order; the class slot sees none
    /// of them), not all at once both ways. The reference has no known cells; this does not
    /// change its steps.
    fn read_known_cells(&mut self) -> Result<()> {
        let k = self.feed.first().map_or(0, Vec::len);
        if !self.feed_has_class || k == 0 {
            return Ok(());
        }
        let head: Vec<Vec<usize>> = self
            .feed
            .iter()
            .map(|f| {
                f[..k - 1]
                    .iter()
                    .map(|&(_, row)| row as usize - 1)
                    .collect()
            })
            .collect();
        self.prefill_fresh(&head)?;
        self.feed.iter_mut().for_each(|f| {
            f.drain(..k - 1);
        });
        self.feed_has_class = false;
        Ok(())
    }

    /// Replaces the KV cache with a causal prefill of the class slot and `cells[image]`.
    fn prefill_fresh(&mut self, cells: &[Vec<usize>]) -> Result<()> {
        let (ids, pos) = self.context(cells)?;
        let mut cache = self
            .model
            .new_cache(ids.dim(0)?, 1 + self.model.config().block_size)?;
        self.model.prefill(&mut cache, &ids, &pos)?;
        self.cache = cache;
        Ok(())
    }

    fn token_of(&self, image: usize, cell: usize) -> Result<u32> {
        self.tokens[image][cell]
            .ok_or_else(|| Error::InvalidRequest(format!("cell {cell} has no token yet")))
    }

    /// One polishing step (see [`Settings::polish`]): the cells of one group are read against
    /// all the others, and each whose token has become improbable is drawn again.
    fn polish_step(&mut self) -> Result<StepOutput> {
        let b = self.classes.len();
        let groups = self.polish_groups();
        let round = self.step - self.counts.len();
        let (pass, group) = (round / groups, round % groups);
        let known = self.known_cells();
        let mut queries = Vec::with_capacity(b);
        let mut cells = Vec::with_capacity(b);
        for (i, order) in self.orders.iter().enumerate() {
            let mut shuffled = order.clone();
            Rng::stream(self.polish_seed, stream::POLISH, (pass * b + i) as u64)
                .shuffle(&mut shuffled);
            let u = shuffled.len();
            let chosen = shuffled[group * u / groups..(group + 1) * u / groups].to_vec();
            let rest = known_then(&known, order.iter().filter(|c| !chosen.contains(c)));
            queries.push(chosen);
            cells.push(rest);
        }
        let scale = self.scales.last().copied().unwrap_or(1.0);
        let (combined, logits) = self.predict(&cells, &queries, scale as f32)?;
        let draw = self.settings.draw();
        let mut revised = vec![Vec::new(); b];
        for i in 0..b {
            for (j, &cell) in queries[i].iter().enumerate() {
                let current = self.token_of(i, cell)? as usize;
                let probs = sampler::processed(&combined[i][j], &draw);
                if probs.get(current).copied().unwrap_or(0.0) < POLISH_BELOW {
                    let d = sampler::draw(&combined[i][j], &draw, &mut self.token_rngs[i]);
                    self.tokens[i][cell] = Some(d.token);
                    self.probs[i][cell] = d.prob;
                    revised[i].push((cell, d.token, d.prob));
                }
            }
        }
        let out = StepOutput {
            step: self.step,
            total_steps: self.total_steps(),
            cells: vec![Vec::new(); b],
            tokens: vec![Vec::new(); b],
            probs: vec![Vec::new(); b],
            cfg_scale: scale,
            logits,
            revised,
        };
        self.step += 1;
        Ok(out)
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
        self.tokens
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

    /// The state of this generation (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            settings: self.settings.clone(),
            classes: self.classes.clone(),
            orders: self.orders.clone(),
            counts: self.counts.clone(),
            scales: self.scales.clone(),
            step: self.step,
            tokens: self.tokens.clone(),
            probs: self.probs.clone(),
            feed: self.feed.clone(),
            feed_has_class: self.feed_has_class,
            token_rngs: self.token_rngs.clone(),
            settled: self.settled,
            polish_seed: self.polish_seed,
        }
    }

    /// Resumes a snapshot: the KV cache is rebuilt by one causal prefill pass over the class
    /// token and every token the cache held (the known cells, then the decided cells in
    /// generation order, except those still to be fed), read as training reads a sequence. An
    /// uninterrupted run reads each step's tokens together, so the continuation is a valid
    /// sample but not bit-identical to it; two restores of the same snapshot are identical.
    pub fn restore(model: &Arpg, snap: &Snapshot) -> Result<Self> {
        let cfg = model.config();
        let n = cfg.block_size;
        let b = snap.classes.len();
        snap.settings.validate()?;
        let scheduled: usize = snap.counts.iter().sum();
        let vocab = cfg.vocab_size as u32;
        let pending = snap.feed.first().map_or(0, Vec::len);
        let consistent = b > 0
            && snap.tokens.len() == b
            && snap.orders.len() == b
            && snap
                .orders
                .iter()
                .all(|o| o.len() == scheduled && o.iter().all(|&c| c < n))
            && snap.feed.len() == b
            && snap.feed.iter().all(|f| {
                f.len() == pending
                    && f.iter()
                        .all(|&(t, row)| t < vocab && (1..=n as u32).contains(&row))
            })
            && snap.token_rngs.len() == b
            && snap.tokens.iter().all(|t| t.len() == n)
            && snap
                .tokens
                .iter()
                .all(|t| t.iter().flatten().all(|&t| t < vocab))
            && snap.probs.len() == b
            && snap.probs.iter().all(|p| p.len() == n)
            && snap.step <= snap.counts.len() + snap.settings.polish * POLISH_GROUPS
            && snap.scales.len() == snap.counts.len();
        if !consistent {
            return Err(Error::InvalidRequest(
                "the snapshot does not fit this model".into(),
            ));
        }
        let guided = snap.settings.cfg_scale != 1.0 && snap.classes.iter().any(Option::is_some);
        let rows = if guided { 2 * b } else { b };
        let cache = model.new_cache(rows, 1 + n)?;
        let mut gen = Self {
            model: model.clone(),
            settings: snap.settings.clone(),
            classes: snap.classes.clone(),
            guided,
            orders: snap.orders.clone(),
            counts: snap.counts.clone(),
            scales: snap.scales.clone(),
            step: snap.step,
            tokens: snap.tokens.clone(),
            probs: snap.probs.clone(),
            feed: snap.feed.clone(),
            feed_has_class: snap.feed_has_class,
            cache,
            token_rngs: snap.token_rngs.clone(),
            settled: snap.settled,
            polish_seed: snap.polish_seed,
        };
        if snap.step == 0 && !snap.feed_has_class {
            // Taken between reading the known cells and the first step: read them again.
            let known = gen.known_cells();
            gen.feed = (0..b)
                .map(|i| {
                    known
                        .iter()
                        .map(|&c| Ok((gen.token_of(i, c)?, c as u32 + 1)))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?;
            gen.feed_has_class = true;
        } else if !snap.feed_has_class {
            // Cached: the cells decided before the pending feed, the same for every image.
            let decided: usize = snap.counts[..snap.step.min(snap.counts.len())].iter().sum();
            if pending > decided {
                return Err(Error::InvalidRequest(
                    "the snapshot feeds more cells than it has decided".into(),
                ));
            }
            gen.rebuild_cache(decided - pending)?;
        }
        Ok(gen)
    }

    /// A copy that continues from this exact state with another seed for its token draws: same
    /// composition so far, different future. The KV cache is copied, not recomputed.
    pub fn fork(&self, seed: u64) -> Result<Self> {
        let mut settings = self.settings.clone();
        settings.seed = seed;
        Ok(Self {
            model: self.model.clone(),
            guided: self.guided,
            classes: self.classes.clone(),
            orders: self.orders.clone(),
            counts: self.counts.clone(),
            scales: self.scales.clone(),
            step: self.step,
            tokens: self.tokens.clone(),
            probs: self.probs.clone(),
            feed: self.feed.clone(),
            feed_has_class: self.feed_has_class,
            cache: self.cache.deep_clone()?,
            token_rngs: (0..self.classes.len())
                .map(|i| Rng::stream(seed, stream::TOKENS, i as u64))
                .collect(),
            settings,
            settled: self.settled,
            polish_seed: self.polish_seed,
        })
    }
}

/// The context a revisit reads: the known cells (raster order), then `cells` in their order.
fn known_then<'a>(known: &'a [usize], cells: impl IntoIterator<Item = &'a usize>) -> Vec<usize> {
    known.iter().chain(cells).copied().collect()
}

/// The generation order of the unknown cells of image `index`.
fn order_cells(
    mode: &OrderMode,
    unknown: &[usize],
    n: usize,
    seed: u64,
    index: u64,
) -> Result<Vec<usize>> {
    let mut rng = Rng::stream(seed, stream::ORDER, index);
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
    })
}

/// Stops a generation whose logits are not finite: drawing from them would pick the last code
/// every time and produce a flat image with no error.
fn ensure_finite(logits: &[Vec<Vec<f32>>], step: usize) -> Result<()> {
    let bad = logits.iter().flatten().flatten().any(|l| !l.is_finite());
    if bad {
        return Err(Error::NonFinite(format!(
            "step {}: the model's logits are not finite (NaN or infinity); its weights or \
             dtype are broken (try --dtype f32, or another copy of the checkpoint)",
            step + 1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_sampling_overrides_only_what_it_names() {
        let base = Settings::default();
        let rec: SamplingDefaults =
            serde_json::from_str(r#"{"cfg_schedule": "constant", "temperature": 0.8}"#)
                .expect("test");
        let s = rec.apply(&base).expect("test");
        assert_eq!(s.cfg_schedule, CfgSchedule::Constant);
        assert_eq!(s.temperature, 0.8);
        assert_eq!(
            (s.steps, s.cfg_scale, s.top_k),
            (base.steps, base.cfg_scale, base.top_k)
        );
        assert!(SamplingDefaults::default().is_empty() && !rec.is_empty());
        let bad: SamplingDefaults =
            serde_json::from_str(r#"{"schedule": "zigzag"}"#).expect("test");
        assert!(bad.apply(&base).is_err());
        let absurd: SamplingDefaults =
            serde_json::from_str(r#"{"temperature": -1}"#).expect("test");
        assert!(absurd.apply(&base).is_err());
    }
}
