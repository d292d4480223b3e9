//! Token sampling: CFG combination, temperature, top-k, top-p, and the seeded RNG.
//!
//! Everything here runs on the host in a fixed order, so a seed gives the same tokens whatever
//! the thread count.

use serde::{Deserialize, Serialize};

/// A small, fast, seedable generator (xoshiro256**, seeded through SplitMix64). Owned by each
/// generation; its state can be saved and restored for deterministic replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The named random streams. Every random draw of the product comes from one of them, so a seed
/// means the same thing in the CLI, the app and the evaluation.
///
/// A stream is `Rng::stream(seed, KIND, index)`. The sampler of one image with seed `s` uses
/// `(s, ORDER, 0)` to shuffle its cells, `(s, TOKENS, 0)` to draw its tokens and `(s, POLISH,
/// pass)` to split its cells into groups for a polishing pass. Image `i` of a batch with seed `s`
/// is sampled exactly as the single image with seed [`image_seed`]`(s, i)` (image 0 with `s`
/// itself), so a batch image regenerates alone from the seed its PNG records. A canvas job runs
/// its windows in waves (non-overlapping windows generated as one batch); wave `w` is sampled as
/// a batch with seed [`window_seed`]`(s, w)` (wave 0 with `s` itself, so an edit that fits one
/// window is the plain image of its seed).
pub mod stream {
    pub const ORDER: u64 = 1;
    pub const TOKENS: u64 = 2;
    /// Index: the polishing pass.
    pub const POLISH: u64 = 3;
    /// Index: the image's place in its batch (see [`super::image_seed`]).
    pub const IMAGE: u64 = 4;
    /// Index: the wave's place in its canvas job (see [`super::window_seed`]).
    pub const WINDOW: u64 = 5;
    /// Index: the class whose images `arpg eval` generates.
    pub const EVAL_CLASS: u64 = 6;
    /// Index: the evaluated image `arpg eval` inpaints and outpaints (its mask, then its seed).
    pub const EVAL_EDIT: u64 = 300;
    /// Index: the evaluated image `arpg eval` expands (its seed).
    pub const EVAL_EXPAND: u64 = 9;
    /// Index: the how-many-th seed the app proposes for the next run (seeded from the clock).
    pub const NEXT_SEED: u64 = 8;
    /// `arpg eval --agreement`: the orders the exact and quantized models are compared on.
    pub const EVAL_AGREE: u64 = 10;
    /// Training: index = optimiser step (mask ratios and orders of a batch).
    pub const TRAIN_STEP: u64 = 200;
    /// Training: index = optimiser step (mosaic batches of the tokenizer).
    pub const TRAIN_MOSAIC: u64 = 500;
    /// Evaluation's classifier: index = variable (initial weights).
    pub const JUDGE_INIT: u64 = 400;
    /// Evaluation's classifier: index = training step (dropout and noise).
    pub const JUDGE_STEP: u64 = 401;
    /// The procedural dataset: `DATASET + class` (classes below 100), index = sample.
    pub const DATASET: u64 = 100;
}

/// The seed of image `index` of a batch sampled with `seed` (see [`stream`]).
pub fn image_seed(seed: u64, index: u64) -> u64 {
    sub_seed(seed, stream::IMAGE, index)
}

/// The seed of window `index` of a canvas job sampled with `seed` (see [`stream`]).
pub fn window_seed(seed: u64, index: u64) -> u64 {
    sub_seed(seed, stream::WINDOW, index)
}

fn sub_seed(seed: u64, kind: u64, index: u64) -> u64 {
    if index == 0 {
        seed
    } else {
        Rng::stream(seed, kind, index).next_u64()
    }
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// The generator of stream `kind` for item `index` under `seed`.
    pub fn stream(seed: u64, kind: u64, index: u64) -> Self {
        let mut sm = seed ^ kind.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let a = splitmix64(&mut sm);
        let mut sm2 = a ^ index.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
        Self::new(splitmix64(&mut sm2))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Logit processing settings of one draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawSettings {
    pub temperature: f64,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f64,
}

/// One drawn token and its probability under the processed distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub token: u32,
    pub prob: f32,
}

/// `uncond + (cond - uncond) * scale`, in f32 as the reference does it.
pub fn cfg_combine(cond: &[f32], uncond: &[f32], scale: f32) -> Vec<f32> {
    cond.iter()
        .zip(uncond)
        .map(|(&c, &u)| u + (c - u) * scale)
        .collect()
}

/// Draws one token from `logits` (mirrors the tail of `generate`: temperature, then
/// `top_k_top_p_filtering`, softmax, multinomial). Exactly one uniform number is consumed per
/// draw.
pub fn draw(logits: &[f32], settings: &DrawSettings, rng: &mut Rng) -> Draw {
    let u = rng.next_f64();
    let probs = processed(logits, settings);
    // Inverse CDF; the argmax when only one token survives.
    let mut acc = 0.0;
    let mut chosen = None;
    for (i, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        acc += p;
        chosen = Some(i);
        if u < acc {
            break;
        }
    }
    let token = chosen.unwrap_or(0);
    Draw {
        token: token as u32,
        prob: probs.get(token).copied().unwrap_or(0.0) as f32,
    }
}

/// The distribution [`draw`] samples from: softmax of `logits / temperature` after top-k
/// (keeps every logit tied with the k-th) and top-p (keeps the smallest prefix, by descending
/// probability, whose mass reaches `top_p`, at least one token).
pub fn processed(logits: &[f32], settings: &DrawSettings) -> Vec<f64> {
    let t = settings.temperature.max(1e-5) as f32;
    let scaled: Vec<f32> = logits.iter().map(|&l| l / t).collect();
    let mut keep = vec![true; scaled.len()];
    if settings.top_k > 0 && settings.top_k < scaled.len() {
        let mut sorted = scaled.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let kth = sorted[settings.top_k - 1];
        for (k, &l) in keep.iter_mut().zip(&scaled) {
            *k = l >= kth;
        }
    }
    let max = scaled
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(&l, _)| l)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = scaled
        .iter()
        .zip(&keep)
        .map(|(&l, &k)| if k { ((l - max) as f64).exp() } else { 0.0 })
        .collect();
    normalize(&mut probs);
    if settings.top_p < 1.0 {
        let mut idx: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > 0.0).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let mut mass = 0.0;
        let mut cut = idx.len();
        for (rank, &i) in idx.iter().enumerate() {
            mass += probs[i];
            if mass >= settings.top_p {
                cut = rank + 1;
                break;
            }
        }
        for &i in &idx[cut..] {
            probs[i] = 0.0;
        }
        normalize(&mut probs);
    }
    probs
}

fn normalize(p: &mut [f64]) {
    let sum: f64 = p.iter().sum();
    if sum > 0.0 {
        p.iter_mut().for_each(|v| *v /= sum);
    }
}

/// Index of the first maximum.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::stream(7, stream::ORDER, 0).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::stream(7, stream::ORDER, 0).next_u64(),
            Rng::stream(7, stream::TOKENS, 0).next_u64()
        );
        assert_ne!(
            Rng::stream(7, stream::ORDER, 0).next_u64(),
            Rng::stream(7, stream::ORDER, 1).next_u64()
        );
    }

    #[test]
    fn top_k_one_is_argmax() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let s = DrawSettings {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
        };
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            assert_eq!(draw(&logits, &s, &mut rng).token, 1);
        }
    }

    #[test]
    fn top_p_removes_the_tail() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let s = DrawSettings {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.8,
        };
        let mut rng = Rng::new(11);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[draw(&logits, &s, &mut rng).token as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[0] > 0 && seen[1] > 0);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()];
        let s = DrawSettings {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        };
        let mut rng = Rng::new(5);
        let ones = (0..4000)
            .filter(|_| draw(&logits, &s, &mut rng).token == 1)
            .count();
        assert!((2800..3200).contains(&ones), "{ones}");
    }
}
