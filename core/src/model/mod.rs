//! The ARPG transformer (Li et al., "Autoregressive Image Generation with Randomized Parallel
//! Decoding", arXiv 2503.10568), ported from hp-l33/ARPG `models/arpg.py` (`Transformer`).
//!
//! A two-pass decoder: self-decoder blocks turn the tokens generated so far into one shared K/V
//! (content), and cross-decoder blocks run mask-token queries that carry the RoPE of the cells to
//! predict (position) against it. Five entry points:
//! - [`Arpg::forward`]: teacher-forced over whole sequences of embedding ids with per-sample
//!   RoPE rows, causal (training) or unmasked (the reference's eval-mode `forward`);
//! - [`Arpg::forward_teacher`]: the same laid out as the reference's `Transformer.forward`
//!   (raster tokens, a class, one order per sample): the parity checks and the trainer;
//! - [`Arpg::step`]: one incremental step on a [`KvCache`] allocated once ([`Arpg::new_cache`]):
//!   the sampler's primitive, as the reference's `generate` runs it;
//! - [`Arpg::prefill`]: feeds a cache causally, as training reads a sequence (known cells before
//!   the first step, rebuilding a restored or revisited generation's cache);
//! - [`Arpg::predict`]: queries after a causally read context, without a cache (the sampler's
//!   revisits: settling and polishing).

mod cache;
mod dense;
#[cfg(feature = "wgpu")]
mod export;
mod heads;
pub mod rope;

pub use cache::KvCache;
#[cfg(feature = "wgpu")]
pub(crate) use export::{ArpgWeights, BlockWeights};

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use dense::Dense;
use heads::{attend, causal_mask, rope_heads, to_heads};

use crate::config::ArpgConfig;
use rope::RopeTable;

/// `RMSNorm`: statistics in f32, cast back, then scaled.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb
                .get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?
                .to_dtype(compute_dtype(&vb))?,
            eps,
        })
    }

    /// Mirrors `RMSNorm.forward`: `_norm(x.float()).type_as(x) * weight`. Plain ops, so it has a
    /// backward pass.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if crate::kernels::fuses(x) && !self.weight.track_op() {
            return x
                .contiguous()?
                .apply_op2_no_bwd(&self.weight, &crate::kernels::RmsNorm(self.eps as f32));
        }
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

/// The dtype activations and norms (and, but for [`Arpg::kv_dtype`]'s bf16 case, the KV cache)
/// use for weights of `vb`'s dtype: f32 on the CPU
/// (the kernels widen f16/bf16 weights in registers, so reduced precision only shrinks what is
/// read), the weights' own dtype on GPUs.
fn compute_dtype(vb: &VarBuilder) -> DType {
    if vb.device().is_cpu() {
        DType::F32
    } else {
        vb.dtype()
    }
}

/// Weight init used when a `VarBuilder` creates variables (training from scratch): the
/// reference's `normal(0, 0.02)` for every linear and embedding.
const INIT_LINEAR: candle_nn::Init = candle_nn::Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// Several `(out, in)` linear maps applied to the same input (q/k/v, w1/w3, to_k/to_v).
///
/// For inference they are stacked into one weight so one matmul reads them all; the parts are
/// dropped as soon as they are stacked. For training they stay separate, because a stacked copy
/// would not follow the optimizer's in-place updates of the parts.
#[derive(Debug, Clone)]
struct Projection {
    parts: Vec<Dense>,
    fused: bool,
}

impl Projection {
    fn new(vb: &VarBuilder, names: &[&str], out: usize, inp: usize, fuse: bool) -> Result<Self> {
        let weights = names
            .iter()
            .map(|n| vb.get_with_hints((out, inp), &format!("{n}.weight"), INIT_LINEAR))
            .collect::<Result<Vec<_>>>()?;
        if fuse && weights.len() > 1 {
            Ok(Self {
                parts: vec![Dense::new(Tensor::cat(&weights, 0)?, false)],
                fused: true,
            })
        } else {
            Ok(Self {
                parts: weights.into_iter().map(|w| Dense::new(w, !fuse)).collect(),
                fused: false,
            })
        }
    }

    fn single(vb: &VarBuilder, name: &str, out: usize, inp: usize, fuse: bool) -> Result<Dense> {
        Ok(Dense::new(
            vb.get_with_hints((out, inp), &format!("{name}.weight"), INIT_LINEAR)?,
            !fuse,
        ))
    }

    /// One output per part.
    fn forward(&self, x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
        if self.fused {
            split_last(&self.parts[0].forward(x)?, n)
        } else {
            self.parts.iter().map(|p| p.forward(x)).collect()
        }
    }
}

/// Splits the last dim of `x` into `n` equal parts.
fn split_last(x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let w = x.dim(D::Minus1)? / n;
    (0..n).map(|i| x.narrow(D::Minus1, i * w, w)).collect()
}

/// `FeedForward`: `w2(silu(w1 x) * w3 x)`, with w1/w3 fused.
#[derive(Debug, Clone)]
struct FeedForward {
    w13: Projection,
    w2: Dense,
}

impl FeedForward {
    fn new(cfg: &ArpgConfig, vb: VarBuilder, fuse: bool) -> Result<Self> {
        let (d, h) = (cfg.dim, cfg.ffn_hidden_dim());
        Ok(Self {
            w13: Projection::new(&vb, &["w1", "w3"], h, d, fuse)?,
            w2: Projection::single(&vb, "w2", d, h, fuse)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.w13.fused {
            let h = self.w13.parts[0].forward(x)?;
            if crate::kernels::fuses(&h) {
                let gated = h.contiguous()?.apply_op1_no_bwd(&crate::kernels::SwiGlu)?;
                return self.w2.forward(&gated);
            }
        }
        let h = self.w13.forward(x, 2)?;
        self.w2.forward(&(candle_nn::ops::silu(&h[0])? * &h[1])?)
    }
}

/// `Attention` of a self-decoder block (q/k/v fused).
#[derive(Debug, Clone)]
struct SelfAttention {
    qkv: Projection,
    proj: Dense,
    n_head: usize,
}

impl SelfAttention {
    fn new(cfg: &ArpgConfig, vb: VarBuilder, fuse: bool) -> Result<Self> {
        let d = cfg.dim;
        Ok(Self {
            qkv: Projection::new(&vb, &["to_q", "to_k", "to_v"], d, d, fuse)?,
            proj: Projection::single(&vb, "proj", d, d, fuse)?,
            n_head: cfg.n_head,
        })
    }

    /// Projects `x` to rotated q, k and plain v, each `(B, H, T, D)`.
    fn qkv(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let parts = self.qkv.forward(x, 3)?;
        let q = rope_heads(&parts[0], self.n_head, cos, sin)?;
        let k = rope_heads(&parts[1], self.n_head, cos, sin)?;
        let v = to_heads(&parts[2], self.n_head)?;
        Ok((q, k, v))
    }
}

/// `CrossAttention`: owns only `to_q` and `proj`; K/V come from the shared projection.
#[derive(Debug, Clone)]
struct CrossAttention {
    to_q: Dense,
    proj: Dense,
    n_head: usize,
}

impl CrossAttention {
    fn new(cfg: &ArpgConfig, vb: VarBuilder, fuse: bool) -> Result<Self> {
        let d = cfg.dim;
        Ok(Self {
            to_q: Projection::single(&vb, "to_q", d, d, fuse)?,
            proj: Projection::single(&vb, "proj", d, d, fuse)?,
            n_head: cfg.n_head,
        })
    }
}

/// `SelfDecoder` block: pre-norm attention and SwiGLU, both residual.
#[derive(Debug, Clone)]
struct SelfDecoderBlock {
    attn: SelfAttention,
    ffn: FeedForward,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

impl SelfDecoderBlock {
    fn new(cfg: &ArpgConfig, vb: VarBuilder, fuse: bool) -> Result<Self> {
        Ok(Self {
            attn: SelfAttention::new(cfg, vb.pp("attn"), fuse)?,
            ffn: FeedForward::new(cfg, vb.pp("ffn"), fuse)?,
            attn_norm: RmsNorm::new(cfg.dim, cfg.norm_eps, vb.pp("attn_norm"))?,
            ffn_norm: RmsNorm::new(cfg.dim, cfg.norm_eps, vb.pp("ffn_norm"))?,
        })
    }

    /// Mirrors `SelfDecoder.forward`. With `cache`, the new k/v are written at slot `len` and the
    /// attention runs over every cached slot (no mask: one inference step is block-wise).
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<(&(Tensor, Tensor), usize)>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.attn.qkv(&self.attn_norm.forward(x)?, cos, sin)?;
        let (k, v) = match cache {
            Some((pair, len)) => KvCache::append(pair, len, &k, &v)?,
            None => (k, v),
        };
        let a = attend(&q, &k, &v, mask, cache.is_some())?;
        let h = crate::kernels::add(x, &self.attn.proj.forward(&a)?)?;
        crate::kernels::add(&h, &self.ffn.forward(&self.ffn_norm.forward(&h)?)?)
    }
}

/// `CrossDecoder` block: the query stream attends to the shared K/V.
#[derive(Debug, Clone)]
struct CrossDecoderBlock {
    attn: CrossAttention,
    ffn: FeedForward,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

impl CrossDecoderBlock {
    fn new(cfg: &ArpgConfig, vb: VarBuilder, fuse: bool) -> Result<Self> {
        Ok(Self {
            attn: CrossAttention::new(cfg, vb.pp("attn"), fuse)?,
            ffn: FeedForward::new(cfg, vb.pp("ffn"), fuse)?,
            attn_norm: RmsNorm::new(cfg.dim, cfg.norm_eps, vb.pp("attn_norm"))?,
            ffn_norm: RmsNorm::new(cfg.dim, cfg.norm_eps, vb.pp("ffn_norm"))?,
        })
    }

    /// Mirrors `CrossDecoder.forward`; the query RoPE (target cells) is re-applied in every block.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let q = self.attn.to_q.forward(&self.attn_norm.forward(x)?)?;
        let q = rope_heads(&q, self.attn.n_head, cos, sin)?;
        let a = attend(&q, k, v, mask, mask.is_none())?;
        let h = crate::kernels::add(x, &self.attn.proj.forward(&a)?)?;
        crate::kernels::add(&h, &self.ffn.forward(&self.ffn_norm.forward(&h)?)?)
    }
}

/// The ARPG transformer.
#[derive(Debug, Clone)]
pub struct Arpg {
    cfg: ArpgConfig,
    embeddings: Embedding,
    self_dec: Vec<SelfDecoderBlock>,
    cross_dec: Vec<CrossDecoderBlock>,
    /// `layers.norm` + fused `layers.to_k`/`layers.to_v`: the shared cross K/V.
    kv_norm: RmsNorm,
    to_kv: Projection,
    norm: RmsNorm,
    head: Dense,
    rope: RopeTable,
    device: Device,
    dtype: DType,
    /// The weights' dtype as loaded (see [`Arpg::kv_dtype`]).
    weights_dtype: DType,
}

impl Arpg {
    /// Builds the model for inference from `vb` (keys as in the reference state dict), with
    /// fused projections. The dtype of `vb` is the compute dtype of every weight; RoPE and norm
    /// statistics stay in f32.
    pub fn new(cfg: &ArpgConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, vb, true)
    }

    /// Builds the model for training: projections stay separate so that optimizer updates of the
    /// variables are seen by every forward. Variables created by `vb` get the reference init.
    pub fn new_for_training(cfg: &ArpgConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, vb, false)
    }

    fn build(cfg: &ArpgConfig, vb: VarBuilder, fuse: bool) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let d = cfg.dim;
        let embeddings = Embedding::new(
            vb.get_with_hints((cfg.embedding_rows(), d), "embeddings.weight", INIT_LINEAR)?,
            d,
        );
        let layers = vb.pp("layers");
        let self_dec = (0..cfg.n_self_layers())
            .map(|i| SelfDecoderBlock::new(cfg, layers.pp(format!("self_dec.{i}")), fuse))
            .collect::<Result<Vec<_>>>()?;
        let cross_dec = (0..cfg.n_cross_layers())
            .map(|i| CrossDecoderBlock::new(cfg, layers.pp(format!("cross_dec.{i}")), fuse))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            embeddings,
            self_dec,
            cross_dec,
            kv_norm: RmsNorm::new(d, cfg.norm_eps, layers.pp("norm"))?,
            to_kv: Projection::new(&layers, &["to_k", "to_v"], d, d, fuse)?,
            norm: RmsNorm::new(d, cfg.norm_eps, vb.pp("norm"))?,
            // The reference zero-initialises the head.
            head: Dense::new(
                vb.get_with_hints(
                    (cfg.vocab_size, d),
                    "head.weight",
                    candle_nn::Init::Const(0.0),
                )?,
                !fuse,
            ),
            rope: RopeTable::new(cfg.grid_size(), cfg.head_dim(), cfg.rope_base, vb.device())?,
            device: vb.device().clone(),
            dtype: compute_dtype(&vb),
            weights_dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &ArpgConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every linear layer, for quantizing or writing them.
    fn dense_mut(&mut self) -> Vec<(String, &mut Dense)> {
        let mut out: Vec<(String, &mut Dense)> = Vec::new();
        for (i, b) in self.self_dec.iter_mut().enumerate() {
            let p = format!("layers.self_dec.{i}");
            for (j, d) in b.attn.qkv.parts.iter_mut().enumerate() {
                out.push((format!("{p}.attn.qkv{j}"), d));
            }
            out.push((format!("{p}.attn.proj"), &mut b.attn.proj));
            for (j, d) in b.ffn.w13.parts.iter_mut().enumerate() {
                out.push((format!("{p}.ffn.w13{j}"), d));
            }
            out.push((format!("{p}.ffn.w2"), &mut b.ffn.w2));
        }
        for (i, b) in self.cross_dec.iter_mut().enumerate() {
            let p = format!("layers.cross_dec.{i}");
            out.push((format!("{p}.attn.to_q"), &mut b.attn.to_q));
            out.push((format!("{p}.attn.proj"), &mut b.attn.proj));
            for (j, d) in b.ffn.w13.parts.iter_mut().enumerate() {
                out.push((format!("{p}.ffn.w13{j}"), d));
            }
            out.push((format!("{p}.ffn.w2"), &mut b.ffn.w2));
        }
        for (j, d) in self.to_kv.parts.iter_mut().enumerate() {
            out.push((format!("layers.to_kv{j}"), d));
        }
        out.push(("head".into(), &mut self.head));
        out
    }

    /// Quantizes every linear layer's weight (`q8_0`: 8-bit blocks of 32; `q4k`: 4-bit
    /// super-blocks of 256) for candle's quantized matmul; embeddings and norms stay as they are.
    /// Layers whose input size the block does not divide stay unquantized. Returns how many of
    /// the layers were quantized, out of how many. Inference only: training needs plain weights.
    pub fn quantize(&mut self, dtype: candle_core::quantized::GgmlDType) -> Result<(usize, usize)> {
        let mut done = 0;
        let layers = self.dense_mut();
        let total = layers.len();
        for (_, d) in layers {
            done += usize::from(d.quantize(dtype)?);
        }
        Ok((done, total))
    }

    /// The compute dtype of activations: f32 on the CPU, the weights' dtype elsewhere (for the
    /// KV cache see [`Arpg::kv_dtype`]).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn rope(&self) -> &RopeTable {
        &self.rope
    }

    /// `(B, n, dim)` copies of the mask-token embedding: the initial query stream.
    fn mask_queries(&self, b: usize, n: usize) -> Result<Tensor> {
        let id = Tensor::new(&[self.cfg.mask_token_id()], &self.device)?;
        self.embeddings
            .forward(&id)?
            .to_dtype(self.dtype)?
            .reshape((1, 1, self.cfg.dim))?
            .broadcast_as((b, n, self.cfg.dim))?
            .contiguous()
    }

    /// Shared K/V of the cross decoder from the self-decoder output: `to_k/to_v(norm(x))`, RoPE on
    /// k only (mirrors the middle of `Decoder_Decoder.forward`).
    fn shared_kv(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
        let parts = self.to_kv.forward(&self.kv_norm.forward(x)?, 2)?;
        let k = rope_heads(&parts[0], self.cfg.n_head, cos, sin)?;
        let v = to_heads(&parts[1], self.cfg.n_head)?;
        Ok((k, v))
    }

    /// Final norm and head; logits in f32.
    fn logits(&self, q: &Tensor) -> Result<Tensor> {
        self.head
            .forward(&self.norm.forward(q)?)?
            .to_dtype(DType::F32)
    }

    /// Teacher-forced forward (mirrors `forward_shared`). `input_ids` `(B, T)` are embedding ids
    /// (class id first), `ctx_rows` `(B, T)` their RoPE rows, `query_rows` `(B, Tq)` the RoPE rows
    /// of the cells to predict. `causal`: context slot k sees slots `0..=k` and query k sees context
    /// `0..=k` (training); otherwise unmasked (the reference's eval-mode `forward`).
    /// Returns `(B, Tq, V)` f32 logits.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        ctx_rows: &Tensor,
        query_rows: &Tensor,
        causal: bool,
    ) -> Result<Tensor> {
        self.forward_masked(input_ids, ctx_rows, query_rows, causal, causal)
    }

    /// What the model predicts at `query_rows` after reading the context in the given order, as
    /// training shows it: each context slot sees only the slots before it (causal self decoder),
    /// and every query sees the whole context. This is the distribution of the cell that comes
    /// next in a random order, whatever the number of queries; the sampler's revisits (settling,
    /// polishing) ask it. Shapes as in [`Arpg::forward`].
    pub fn predict(
        &self,
        input_ids: &Tensor,
        ctx_rows: &Tensor,
        query_rows: &Tensor,
    ) -> Result<Tensor> {
        self.forward_masked(input_ids, ctx_rows, query_rows, true, false)
    }

    fn forward_masked(
        &self,
        input_ids: &Tensor,
        ctx_rows: &Tensor,
        query_rows: &Tensor,
        self_causal: bool,
        cross_causal: bool,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let tq = query_rows.dim(1)?;
        let (cos, sin) = self.rope.gather(ctx_rows)?;
        let (qcos, qsin) = self.rope.gather(query_rows)?;
        let self_mask = self_causal
            .then(|| causal_mask(t, t, 0, &self.device))
            .transpose()?;
        let cross_mask = cross_causal
            .then(|| causal_mask(tq, t, 0, &self.device))
            .transpose()?;
        let mut x = self.embeddings.forward(input_ids)?.to_dtype(self.dtype)?;
        for block in &self.self_dec {
            x = block.forward(&x, &cos, &sin, self_mask.as_ref(), None)?;
        }
        let (k, v) = self.shared_kv(&x, &cos, &sin)?;
        let mut q = self.mask_queries(b, tq)?;
        for block in &self.cross_dec {
            q = block.forward(&q, &k, &v, &qcos, &qsin, cross_mask.as_ref())?;
        }
        self.logits(&q)
    }

    /// Teacher-forced forward as the reference `Transformer.forward` lays it out: `ids` `(B, N)`
    /// raster tokens, `class_ids` `(B,)` embedding ids of the condition, `orders` `(B, N)` one
    /// permutation of cells per sample. Logits `(B, N, V)` come in shuffled order: row k predicts
    /// cell `orders[b, k]`.
    pub fn forward_teacher(
        &self,
        ids: &Tensor,
        class_ids: &Tensor,
        orders: &Tensor,
        causal: bool,
    ) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let shuffled = ids
            .to_dtype(DType::U32)?
            .gather(&orders.to_dtype(DType::U32)?, 1)?;
        let input = Tensor::cat(
            &[
                class_ids.to_dtype(DType::U32)?.reshape((b, 1))?,
                shuffled.narrow(1, 0, n - 1)?,
            ],
            1,
        )?;
        let orders = orders.to_dtype(DType::U32)?;
        let rows = orders.broadcast_add(&Tensor::ones((), DType::U32, &self.device)?)?;
        let ctx_rows = Tensor::cat(
            &[
                Tensor::zeros((b, 1), rows.dtype(), &self.device)?,
                rows.narrow(1, 0, n - 1)?,
            ],
            1,
        )?;
        self.forward(
            &input.to_dtype(DType::U32)?,
            &ctx_rows.to_dtype(DType::U32)?,
            &rows.to_dtype(DType::U32)?,
            causal,
        )
    }

    /// A KV cache for `batch` rows and `capacity` fed tokens (class slot included), in
    /// [`Arpg::kv_dtype`].
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        let shape = (batch, self.cfg.n_head, capacity, self.cfg.head_dim());
        KvCache::new(self.self_dec.len(), shape, self.kv_dtype(), &self.device)
    }

    /// The dtype the weights were loaded in (before any quantization).
    pub fn weights_dtype(&self) -> DType {
        self.weights_dtype
    }

    /// The KV cache's dtype: bf16 for bf16 weights (also when quantized after loading in bf16)
    /// on the CPU's `avx512-bf16` tier (keys and values rounded to bf16 as the reference's bf16
    /// run keeps them: half the bytes attention reads, the largest share of its time at batch
    /// 16), else the compute dtype ([`Arpg::dtype`]). Attention widens bf16 keys and values
    /// exactly to f32.
    pub fn kv_dtype(&self) -> DType {
        let bf16_tier = crate::kernels::choice()
            == crate::kernels::Choice::Kernel(crate::kernels::Tier::Avx512Bf16);
        if self.device.is_cpu() && self.weights_dtype == DType::BF16 && bf16_tier {
            DType::BF16
        } else {
            self.dtype
        }
    }

    /// One incremental step (mirrors one iteration of `generate` around `forward_shared` with the
    /// KV cache on). Feeds `ids` `(B, m)` at RoPE rows `rows` `(B, m)` into the cache, then asks
    /// for logits at `query_rows` `(B, n)`. Within the step, fed tokens see each other in both
    /// directions and every query sees the whole cache. `n = 0` only fills the cache (prefill)
    /// and returns `None`.
    pub fn step(
        &self,
        cache: &mut KvCache,
        ids: &Tensor,
        rows: &Tensor,
        query_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        self.feed(cache, ids, rows, Some(query_rows))
    }

    /// Feeds `ids` `(B, m)` at RoPE rows `rows` into the cache as training reads a sequence: each
    /// new slot sees the cached slots and the new ones before it (where [`Arpg::step`] lets the
    /// tokens of one step see each other both ways, as the reference's inference does). Used to
    /// rebuild a cache from tokens decided over many steps.
    pub fn prefill(&self, cache: &mut KvCache, ids: &Tensor, rows: &Tensor) -> Result<()> {
        self.feed(cache, ids, rows, None).map(|_| ())
    }

    /// [`Arpg::step`] (`query_rows` given) or [`Arpg::prefill`] (`None`: causal, no query).
    fn feed(
        &self,
        cache: &mut KvCache,
        ids: &Tensor,
        rows: &Tensor,
        query_rows: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let (b, m) = ids.dims2()?;
        let len = cache.len();
        if b != cache.batch() || len + m > cache.capacity() {
            candle_core::bail!(
                "cache holds batch {} and {} of {} slots; cannot feed ({b}, {m})",
                cache.batch(),
                len,
                cache.capacity()
            );
        }
        let (cos, sin) = self.rope.gather(rows)?;
        let mask = match query_rows {
            None if m > 1 => Some(causal_mask(m, len + m, len, &self.device)?),
            _ => None,
        };
        let mut x = self.embeddings.forward(ids)?.to_dtype(self.dtype)?;
        for (block, pair) in self.self_dec.iter().zip(&cache.self_kv) {
            x = block.forward(&x, &cos, &sin, mask.as_ref(), Some((pair, len)))?;
        }
        let (k, v) = self.shared_kv(&x, &cos, &sin)?;
        let (k, v) = KvCache::append(&cache.cross_kv, len, &k, &v)?;
        cache.set_len(len + m);
        let Some(query_rows) = query_rows.filter(|q| q.dim(1).is_ok_and(|n| n > 0)) else {
            return Ok(None);
        };
        let n = query_rows.dim(1)?;
        let (qcos, qsin) = self.rope.gather(query_rows)?;
        let mut q = self.mask_queries(b, n)?;
        for block in &self.cross_dec {
            q = block.forward(&q, &k, &v, &qcos, &qsin, None)?;
        }
        self.logits(&q).map(Some)
    }
}
