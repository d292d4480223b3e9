//! The randomized parallel decoder as a step machine (the loop of `Transformer.generate` in
//! hp-l33/ARPG `models/arpg.py`, turned inside out).
//!
//! A [`Generation`] is built from a [`Request`]; each [`Generation::step`] runs one parallel step
//! and returns the cells it decided with their tokens and probabilities. Callers stream it, stop
//! between steps (the decided tokens are the result), fork it into another seed, or run it to
//! the end. Known tokens (inpainting, outpainting) are fed with the class token in the first
//! pass and never resampled; only the unknown cells are scheduled.

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
}

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
        Ok(())
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
    /// Raw head output `(rows, n, V)`, rows `0..B` conditional then `B..2B` unconditional when
    /// guidance is on.
    pub logits: Tensor,
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
            settings,
        })
    }

    pub fn total_steps(&self) -> usize {
        self.counts.len()
    }

    /// Steps run so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step == self.counts.len()
    }

    /// Tokens decided per step.
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

        // 3. Combine the CFG halves and draw one token per target cell.
        let scale = self.scales[self.step];
        let draw = DrawSettings {
            temperature: self.settings.temperature,
            top_k: self.settings.top_k,
            top_p: self.settings.top_p,
        };
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
            total_steps: self.counts.len(),
            cells: targets,
            tokens,
            probs,
            cfg_scale: scale,
            logits,
        };
        self.step += 1;
        Ok(Some(out))
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
        }
    }

    /// Resumes a snapshot: the KV cache is rebuilt by one prefill pass over the class token and
    /// every token the cache held (all decided or known tokens except those still to be fed).
    /// Tokens prefilled together attend to each other in both directions, as inside any step,
    /// so the continuation is a valid sample but not bit-identical to an uninterrupted run; two
    /// restores of the same snapshot are identical.
    pub fn restore(model: &Arpg, snap: &Snapshot) -> Result<Self> {
        let cfg = model.config();
        let n = cfg.block_size;
        let b = snap.classes.len();
        let consistent = b > 0
            && snap.tokens.len() == b
            && snap.orders.len() == b
            && snap.feed.len() == b
            && snap.token_rngs.len() == b
            && snap.tokens.iter().all(|t| t.len() == n)
            && snap.step <= snap.counts.len()
            && snap.scales.len() == snap.counts.len();
        if !consistent {
            return Err(Error::InvalidRequest(
                "the snapshot does not fit this model".into(),
            ));
        }
        let guided = snap.settings.cfg_scale != 1.0 && snap.classes.iter().any(Option::is_some);
        let rows = if guided { 2 * b } else { b };
        let mut cache = model.new_cache(rows, 1 + n)?;
        if !snap.feed_has_class {
            // Cached = decided/known cells minus the pending feed (same count for every image).
            let cached: Vec<Vec<(u32, u32)>> = (0..b)
                .map(|i| {
                    let pending: std::collections::HashSet<u32> =
                        snap.feed[i].iter().map(|&(_, p)| p).collect();
                    snap.tokens[i]
                        .iter()
                        .enumerate()
                        .filter_map(|(c, t)| t.map(|t| (t, c as u32 + 1)))
                        .filter(|(_, p)| !pending.contains(p))
                        .collect()
                })
                .collect();
            let m = 1 + cached[0].len();
            if cached.iter().any(|c| c.len() + 1 != m) {
                return Err(Error::InvalidRequest(
                    "images of a snapshot must have equal token counts".into(),
                ));
            }
            let mut ids = Vec::with_capacity(rows * m);
            let mut pos = Vec::with_capacity(rows * m);
            for r in 0..rows {
                let i = r % b;
                ids.push(match snap.classes[i] {
                    Some(c) if r < b => cfg.class_token_id(c),
                    _ => cfg.null_class_id(),
                });
                pos.push(0);
                for &(t, p) in &cached[i] {
                    ids.push(t);
                    pos.push(p);
                }
            }
            let dev = model.device();
            let empty = Tensor::zeros((rows, 0), DType::U32, dev)?;
            model.step(
                &mut cache,
                &Tensor::from_vec(ids, (rows, m), dev)?,
                &Tensor::from_vec(pos, (rows, m), dev)?,
                &empty,
            )?;
        }
        Ok(Self {
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
        })
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
        })
    }
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
