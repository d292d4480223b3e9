//! A generation's lifecycle beyond stepping: its serialisable [`State`], [`Generation::snapshot`]
//! and [`Generation::restore`] (pause in one process, resume in another; a tested API with no
//! caller in the front ends yet), and [`Generation::fork`] (the app's "fork with new seed").

use serde::{Deserialize, Serialize};

use super::{Generation, KnownCells, OrderMode, Request, Settings, POLISH_GROUPS};
use crate::backend::Transformer;
use crate::error::{Error, Result};
use crate::sampler::{self, stream, Rng};

/// Everything that defines a generation's future except its KV cache. A [`Generation`] holds
/// it; it is serialisable, so a generation can be paused, saved, edited and resumed
/// ([`Generation::restore`] rebuilds the cache with one prefill pass).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The settings in use; `seed` is the seed of the token draws (a fork's new seed).
    pub settings: Settings,
    /// One class per image (`None`: unconditional).
    pub classes: Vec<Option<usize>>,
    /// Unknown cells of each image in generation order.
    pub orders: Vec<Vec<usize>>,
    /// Tokens decided per parallel step.
    #[serde(alias = "counts")]
    pub tokens_per_step: Vec<usize>,
    /// CFG scale of each parallel step.
    #[serde(alias = "scales")]
    pub cfg_scales: Vec<f64>,
    /// Steps run so far (parallel steps, then polishing steps).
    pub step: usize,
    /// Known and decided tokens of each image, raster order.
    pub tokens: Vec<Vec<Option<u32>>>,
    /// Probability each decided token was drawn with.
    pub probs: Vec<Vec<f32>>,
    /// Pending tokens: `(token, RoPE row)` decided but not yet read into the KV cache, per
    /// image (shared by both CFG halves); the next step reads them before its queries.
    #[serde(alias = "feed")]
    pub pending: Vec<Vec<(u32, u32)>>,
    /// Whether the pending tokens start with the class slot (first step only).
    #[serde(alias = "feed_has_class")]
    pub pending_has_class: bool,
    /// Each image's token stream (see [`crate::sampler::stream`]).
    pub token_rngs: Vec<Rng>,
    /// Whether the early cells were settled (see [`Settings::settle`]).
    #[serde(default)]
    pub settled: bool,
    /// Seed the generation started from: its orders and polishing groups come from it (image
    /// `i`'s from [`sampler::image_seed`]`(polish_seed, i)`), and forks keep it, so a fork taken
    /// during a polishing pass finishes that pass's partition.
    #[serde(default)]
    pub polish_seed: u64,
    /// The forks that led here, oldest first (empty for a generation that was never forked).
    #[serde(default)]
    pub forked_from: Vec<ForkPoint>,
}

/// Where a generation was forked: the seed its tokens were drawn with until then, and the
/// number of steps it had run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    pub seed: u64,
    pub step: usize,
}

impl Generation {
    /// The request that resumes a paused single-image generation with the decided cells `erase`
    /// (raster; cells it had as context count too) erased: every other decided token is known
    /// context (never resampled, so settling and polishing leave it alone); the erased cells come
    /// first in raster order, then the cells the generation had not reached, in its order, over as
    /// many steps as it had left (at least one). The schedule and the CFG ramp start again over those
    /// steps.
    pub fn resume_request(&self, erase: &[usize]) -> Result<Request> {
        let state = self.snapshot();
        let (Some(order), Some(tokens), [class]) = (
            state.orders.first(),
            state.tokens.first(),
            state.classes.as_slice(),
        ) else {
            return Err(Error::InvalidRequest(
                "only a single image can be resumed".into(),
            ));
        };
        let parallel = state.tokens_per_step.len();
        let done = state.step.min(parallel);
        let decided: usize = state.tokens_per_step[..done].iter().sum();
        let mut erased: Vec<usize> = erase
            .iter()
            .copied()
            .filter(|&c| tokens.get(c).is_some_and(Option::is_some))
            .collect();
        erased.sort_unstable();
        erased.dedup();
        let mut known = tokens.clone();
        for &c in &erased {
            known[c] = None;
        }
        let rest: Vec<usize> = erased
            .iter()
            .chain(
                order
                    .iter()
                    .skip(decided)
                    .filter(|&&c| tokens.get(c).is_some_and(Option::is_none)),
            )
            .copied()
            .collect();
        if rest.is_empty() {
            return Err(Error::InvalidRequest(
                "every cell is decided: erase some (paint over them, or pick them with K) before \
                 resuming"
                    .into(),
            ));
        }
        let mut settings = self.settings().clone();
        settings.steps = (parallel - done).max(1).min(rest.len());
        Ok(Request {
            classes: vec![*class],
            settings,
            order: OrderMode::Fixed(rest),
            known: KnownCells::Shared(known),
        })
    }

    /// The state of this generation (see [`State`]).
    pub fn snapshot(&self) -> State {
        self.state.clone()
    }

    /// Resumes a snapshot: the KV cache is rebuilt by one causal prefill pass over the class
    /// token and every token the cache held (the known cells, then the decided cells in
    /// generation order, except those still to be fed), read as training reads a sequence. An
    /// uninterrupted run reads each step's tokens together, so the continuation is a valid
    /// sample but not bit-identical to it; two restores of the same snapshot are identical.
    pub fn restore(model: impl Into<Transformer>, snap: &State) -> Result<Self> {
        let model: Transformer = model.into();
        let cfg = model.config();
        let n = cfg.block_size;
        let b = snap.classes.len();
        snap.settings.validate()?;
        let scheduled: usize = snap.tokens_per_step.iter().sum();
        let vocab = cfg.vocab_size as u32;
        let pending = snap.pending.first().map_or(0, Vec::len);
        let consistent = b > 0
            && snap.tokens.len() == b
            && snap.orders.len() == b
            && snap
                .orders
                .iter()
                .all(|o| o.len() == scheduled && o.iter().all(|&c| c < n))
            && snap.pending.len() == b
            && snap.pending.iter().all(|f| {
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
            && snap.step <= snap.tokens_per_step.len() + snap.settings.polish * POLISH_GROUPS
            && snap.cfg_scales.len() == snap.tokens_per_step.len();
        if !consistent {
            return Err(Error::InvalidRequest(
                "the snapshot does not fit this model".into(),
            ));
        }
        let guided = snap.settings.cfg_scale != 1.0 && snap.classes.iter().any(Option::is_some);
        let batch_rows = if guided { 2 * b } else { b };
        let cache = model.new_cache(batch_rows, 1 + n)?;
        let mut gen = Self {
            model,
            guided,
            cache,
            state: snap.clone(),
        };
        if snap.step == 0 && !snap.pending_has_class {
            // Taken between reading the known cells and the first step: read them again.
            gen.state.pending = (0..b)
                .map(|i| {
                    gen.known_cells(i)
                        .iter()
                        .map(|&c| Ok((gen.token_of(i, c)?, c as u32 + 1)))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?;
            gen.state.pending_has_class = true;
        } else if !snap.pending_has_class {
            // Cached: the cells decided before the pending tokens, the same for every image.
            let decided: usize = snap.tokens_per_step[..snap.step.min(snap.tokens_per_step.len())]
                .iter()
                .sum();
            if pending > decided {
                return Err(Error::InvalidRequest(
                    "the snapshot holds more pending cells than it has decided".into(),
                ));
            }
            gen.rebuild_cache(decided - pending)?;
        }
        Ok(gen)
    }

    /// A copy that continues from this exact state with another seed for its token draws: same
    /// composition so far, different future (image `i` draws from the token stream of
    /// [`sampler::image_seed`]`(seed, i)`). The KV cache is copied, not recomputed. The fork
    /// point is recorded in [`State::forked_from`].
    pub fn fork(&self, seed: u64) -> Result<Self> {
        let mut state = self.state.clone();
        state.forked_from.push(ForkPoint {
            seed: state.settings.seed,
            step: state.step,
        });
        state.settings.seed = seed;
        state.token_rngs = (0..state.classes.len())
            .map(|i| Rng::stream(sampler::image_seed(seed, i as u64), stream::TOKENS, 0))
            .collect();
        Ok(Self {
            model: self.model.clone(),
            guided: self.guided,
            cache: self.cache.deep_clone()?,
            state,
        })
    }
}
