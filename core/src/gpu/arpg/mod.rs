//! The ARPG transformer as wgpu compute shaders, on a [`Gpu`]: the same forwards as
//! [`crate::model::Arpg`] (ported from `Transformer.forward_shared` and the attention, RMSNorm,
//! SwiGLU and RoPE of hp-l33/ARPG `models/arpg.py`), for any GPU wgpu drives.
//!
//! - Weights are uploaded once, in the dtype the model was loaded in (f32, f16 or bf16, read as
//!   32-bit words and widened exactly in the shaders, see `shaders/arpg_weights.wgsl`);
//!   activations, norms, softmax and accumulation are f32.
//! - The KV cache lives on the GPU ([`GpuCache`], `(B, H, capacity, head_dim)` per self-decoder
//!   layer plus the shared cross K/V), in the weights' format (f32, or f16/bf16 for 16-bit
//!   weights, as candle's GPU path keeps it; `shaders/arpg_kv.wgsl`); each cache owns scratch buffers sized for the largest
//!   call it has seen, with every dispatch's bind group built with them, so a step allocates
//!   nothing.
//! - `predict` and teacher forcing read their context into one cache kept between calls.
//! - One call (a parallel step, a prefill chunk, a query chunk) writes its ids and every
//!   dispatch's parameters, records **one command buffer** (one compute pass) and reads back the
//!   logits of the query rows only. The host samples them with the generation's streams.
//!
//! Faults (device lost, out of memory, limits too small) are [`Error::Gpu`].
//!
//! Rooms: `weights` (how weights are stored and uploaded), `cache` ([`GpuCache`]), `step` (the
//! dispatch list of one call, its parameters and its command buffer).

mod cache;
mod step;
mod weights;

use std::borrow::Cow;

use candle_core::{DType, Tensor};
use wgpu::util::DeviceExt;

pub use cache::GpuCache;
pub use weights::WeightFormat;

use super::{Gpu, SHADERS};
use crate::config::ArpgConfig;
use crate::error::{Error, Result};
use crate::host::{Ids, Logits};
use crate::model::Arpg;
use weights::words;

/// The attention kernel keeps a query and four outputs an invocation in workgroup memory.
const MAX_HEAD_DIM: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipe {
    Matmul,
    Embed,
    Norm,
    Swiglu,
    Rope,
    Attention,
}

/// `(pipe, shader name in SHADERS, its format constant: `WEIGHT` for the kernels that read
/// weights, `KV` for those that write or read the cache; both take the weights' format code)`.
const PIPES: [(Pipe, &str, Option<&str>); 6] = [
    (Pipe::Matmul, "arpg_matmul", Some("WEIGHT")),
    (Pipe::Embed, "arpg_embed", Some("WEIGHT")),
    (Pipe::Norm, "arpg_rms_norm", None),
    (Pipe::Swiglu, "arpg_swiglu", None),
    (Pipe::Rope, "arpg_rope", Some("KV")),
    (Pipe::Attention, "arpg_attention", Some("KV")),
];

/// One decoder block's weights on the GPU (see [`crate::model::BlockWeights`]).
struct Block {
    attn_norm: wgpu::Buffer,
    qkv: wgpu::Buffer,
    proj: wgpu::Buffer,
    ffn_norm: wgpu::Buffer,
    w13: wgpu::Buffer,
    w2: wgpu::Buffer,
}

/// The transformer on a GPU (see the module docs).
pub struct GpuArpg {
    gpu: Gpu,
    cfg: ArpgConfig,
    format: WeightFormat,
    pipes: Vec<(Pipe, wgpu::ComputePipeline)>,
    embeddings: wgpu::Buffer,
    self_dec: Vec<Block>,
    cross_dec: Vec<Block>,
    kv_norm: wgpu::Buffer,
    to_kv: wgpu::Buffer,
    norm: wgpu::Buffer,
    head: wgpu::Buffer,
    rope_cos: wgpu::Buffer,
    rope_sin: wgpu::Buffer,
    /// Most rows (batch x tokens) one call may carry: the widest scratch row (logits, q/k/v,
    /// w1/w3) times this fits one storage binding.
    max_rows: usize,
    /// Largest bytes of one storage binding (a KV cache layer must fit it).
    max_binding: u64,
    /// The cache `predict` and teacher forcing read their context into, kept between calls so
    /// that settling and polishing allocate nothing after their first call.
    context: std::sync::Mutex<Option<GpuCache>>,
}

impl std::fmt::Debug for GpuArpg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuArpg")
            .field("adapter", &self.gpu.adapter().name)
            .field("weights", &self.format)
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

/// The fed part of one call: `b x m` ids at RoPE rows, causal or seeing each other both ways.
struct Feed<'a> {
    ids: &'a [u32],
    rows: &'a [u32],
    m: usize,
    causal: bool,
}

/// The query part of one call: `b x n` RoPE rows; with `causal`, query i sees cache slots
/// `0..=i + offset` only.
struct Query<'a> {
    rows: &'a [u32],
    n: usize,
    causal: bool,
    offset: usize,
}

impl GpuArpg {
    /// Uploads `model`'s weights to `gpu` and builds the pipelines. Errors: a quantized model
    /// (wgpu multiplies f32, f16 and bf16 weights), a head dimension above 256, a device whose
    /// limits cannot hold one row of activations, or a device fault.
    pub fn new(model: &Arpg, gpu: &Gpu) -> Result<Self> {
        let w = model.weights().map_err(|_| {
            Error::InvalidRequest(
                "a quantized transformer (--quant) cannot run on wgpu: load it in f32, f16 or \
                 bf16 (--dtype) there, or run it on the CPU"
                    .into(),
            )
        })?;
        let cfg = model.config().clone();
        if cfg.head_dim() > MAX_HEAD_DIM || !cfg.head_dim().is_multiple_of(2) {
            return Err(Error::InvalidRequest(format!(
                "wgpu's attention takes even head dimensions up to {MAX_HEAD_DIM}; this model has \
                 {}",
                cfg.head_dim()
            )));
        }
        let format = WeightFormat::of(w.head.dtype())?;
        gpu.scoped("uploading the transformer", || {
            Self::build(gpu, cfg, format, &w)
        })
    }

    fn build(
        gpu: &Gpu,
        cfg: ArpgConfig,
        format: WeightFormat,
        w: &crate::model::ArpgWeights,
    ) -> Result<Self> {
        let device = &gpu.device;
        let pipes = PIPES
            .iter()
            .map(|(pipe, name, constant)| {
                let src = SHADERS
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| Error::Internal(format!("no shader {name}")))?
                    .1;
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(src)),
                });
                let constants: Vec<(&str, f64)> =
                    constant.iter().map(|c| (*c, format.code())).collect();
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        ..Default::default()
                    },
                    cache: None,
                });
                Ok((*pipe, pipeline))
            })
            .collect::<Result<Vec<_>>>()?;
        let limits = device.limits();
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let weight = |label: &str, t: &Tensor, f: WeightFormat| -> Result<wgpu::Buffer> {
            let data = words(t, f)?;
            if (data.len() * 4) as u64 > max_binding {
                return Err(Error::Gpu(format!(
                    "{}: {label} takes {} MiB; one storage buffer may hold {} MiB on this device",
                    gpu.adapter().name,
                    (data.len() * 4) >> 20,
                    max_binding >> 20
                )));
            }
            Ok(
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(&data),
                    usage: wgpu::BufferUsages::STORAGE,
                }),
            )
        };
        let f32w = |label: &str, t: &Tensor| weight(label, t, WeightFormat::F32);
        let block = |b: &crate::model::BlockWeights| -> Result<Block> {
            Ok(Block {
                attn_norm: f32w("arpg attn_norm", &b.attn_norm)?,
                qkv: weight("arpg q/k/v", &b.qkv, format)?,
                proj: weight("arpg proj", &b.proj, format)?,
                ffn_norm: f32w("arpg ffn_norm", &b.ffn_norm)?,
                w13: weight("arpg w1/w3", &b.w13, format)?,
                w2: weight("arpg w2", &b.w2, format)?,
            })
        };
        let widest = cfg
            .vocab_size
            .max(3 * cfg.dim)
            .max(2 * cfg.ffn_hidden_dim());
        let max_rows = ((max_binding / 4) as usize / widest)
            .min(limits.max_compute_workgroups_per_dimension as usize);
        if max_rows == 0 {
            return Err(Error::Gpu(format!(
                "{}: one storage buffer may hold {max_binding} bytes; one row of activations \
                 needs {}",
                gpu.adapter().name,
                widest * 4
            )));
        }
        Ok(Self {
            embeddings: weight("arpg embeddings", &w.embeddings, format)?,
            self_dec: w.self_dec.iter().map(block).collect::<Result<_>>()?,
            cross_dec: w.cross_dec.iter().map(block).collect::<Result<_>>()?,
            kv_norm: f32w("arpg kv norm", &w.kv_norm)?,
            to_kv: weight("arpg to_k/to_v", &w.to_kv, format)?,
            norm: f32w("arpg norm", &w.norm)?,
            head: weight("arpg head", &w.head, format)?,
            rope_cos: f32w("arpg rope cos", &w.rope_cos)?,
            rope_sin: f32w("arpg rope sin", &w.rope_sin)?,
            gpu: gpu.clone(),
            cfg,
            format,
            pipes,
            max_rows,
            max_binding,
            context: std::sync::Mutex::new(None),
        })
    }

    /// Runs `f` on an empty cache of `batch` rows holding at least `capacity` tokens: the kept
    /// one when it fits, else a new one (kept for the next call).
    fn with_context<T>(
        &self,
        batch: usize,
        capacity: usize,
        f: impl FnOnce(&mut GpuCache) -> Result<T>,
    ) -> Result<T> {
        let mut kept = self.context.lock().unwrap_or_else(|e| e.into_inner());
        let fits = kept
            .as_ref()
            .is_some_and(|c| c.batch == batch && c.capacity >= capacity);
        if !fits {
            *kept = None;
            *kept = Some(self.new_cache(batch, capacity)?);
        }
        let cache = kept
            .as_mut()
            .ok_or_else(|| Error::Internal("no context cache".into()))?;
        cache.len = 0;
        f(cache)
    }

    pub fn config(&self) -> &ArpgConfig {
        &self.cfg
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The dtype the weights are stored in.
    pub fn weight_dtype(&self) -> DType {
        match self.format {
            WeightFormat::F32 => DType::F32,
            WeightFormat::F16 => DType::F16,
            WeightFormat::Bf16 => DType::BF16,
        }
    }

    /// A KV cache for `batch` rows and `capacity` fed tokens. Errors: one layer would not fit a
    /// storage buffer of this device, or the device fails.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<GpuCache> {
        let bytes = (batch * self.cfg.n_head * capacity.max(1) * self.cfg.head_dim()) as u64
            * self.format.bytes();
        if bytes > self.max_binding {
            return Err(Error::Gpu(format!(
                "{}: a KV cache layer for batch {batch} and {capacity} tokens takes {} MiB; one \
                 storage buffer may hold {} MiB on this device (use a smaller batch)",
                self.gpu.adapter().name,
                bytes >> 20,
                self.max_binding >> 20
            )));
        }
        self.gpu.scoped("allocating the KV cache", || {
            let pair = || {
                let b = || {
                    self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("arpg kv cache"),
                        size: bytes,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_SRC
                            | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                };
                (b(), b())
            };
            Ok(GpuCache {
                gpu: self.gpu.clone(),
                self_kv: (0..self.self_dec.len()).map(|_| pair()).collect(),
                cross_kv: pair(),
                batch,
                capacity: capacity.max(1),
                len: 0,
                scratch: None,
            })
        })
    }

    /// One parallel step (mirrors [`Arpg::step`]): feeds `ids` at `rows` (`(B, m)`, seeing
    /// each other both ways) and returns the logits `(B, n, V)` at `query_rows`.
    pub fn step(
        &self,
        cache: &mut GpuCache,
        ids: &Ids,
        rows: &Ids,
        query_rows: &Ids,
    ) -> Result<Logits> {
        self.feed_and_query(cache, ids, rows, false, query_rows, false, 0)
    }

    /// Feeds `ids` at `rows` causally (mirrors [`Arpg::prefill`]), in chunks the device's
    /// buffers hold.
    pub fn prefill(&self, cache: &mut GpuCache, ids: &Ids, rows: &Ids) -> Result<()> {
        self.check_feed(cache, ids, rows)?;
        let per = self.per_call(cache.batch)?;
        for (c0, c1) in chunks(ids.len, per) {
            let (i, r) = (slice(ids, c0, c1), slice(rows, c0, c1));
            self.run(
                cache,
                Some(Feed {
                    ids: &i,
                    rows: &r,
                    m: c1 - c0,
                    causal: true,
                }),
                None,
            )?;
        }
        Ok(())
    }

    /// Mirrors [`Arpg::predict`]: a causal read of the context, every query seeing all of it.
    pub fn predict(&self, ids: &Ids, ctx_rows: &Ids, query_rows: &Ids) -> Result<Logits> {
        self.with_context(ids.batch, ids.len, |cache| {
            self.feed_and_query(cache, ids, ctx_rows, true, query_rows, false, 0)
        })
    }

    /// Mirrors [`Arpg::forward_teacher`]: `ids` `(B, N)` raster tokens, `class_ids` the `B`
    /// embedding ids of the condition, `orders` `(B, N)`; logits `(B, N, V)` in shuffled order.
    pub fn forward_teacher(
        &self,
        ids: &Ids,
        class_ids: &[u32],
        orders: &Ids,
        causal: bool,
    ) -> Result<Logits> {
        let (b, n) = (ids.batch, ids.len);
        if orders.batch != b || orders.len != n || class_ids.len() != b || n == 0 {
            return Err(Error::Internal(
                "teacher forcing takes (B, N) tokens and orders and B classes".into(),
            ));
        }
        let mut input = Vec::with_capacity(b * n);
        let mut ctx = Vec::with_capacity(b * n);
        let mut query = Vec::with_capacity(b * n);
        for (r, &class) in class_ids.iter().enumerate() {
            let order = &orders.data[r * n..(r + 1) * n];
            let tokens = &ids.data[r * n..(r + 1) * n];
            input.push(class);
            ctx.push(0);
            for (k, &cell) in order.iter().enumerate() {
                let cell_tokens = tokens.get(cell as usize).copied().ok_or_else(|| {
                    Error::InvalidRequest(format!("order names cell {cell} of {n}"))
                })?;
                query.push(cell + 1);
                if k + 1 < n {
                    input.push(cell_tokens);
                    ctx.push(cell + 1);
                }
            }
        }
        let (input, ctx, query) = (Ids::new(input, b)?, Ids::new(ctx, b)?, Ids::new(query, b)?);
        self.with_context(b, n, |cache| {
            self.feed_and_query(cache, &input, &ctx, causal, &query, causal, 0)
        })
    }

    /// Feeds (in causal chunks where allowed) then asks the queries (in chunks), the last feed
    /// and the first queries in one command buffer.
    #[allow(clippy::too_many_arguments)]
    fn feed_and_query(
        &self,
        cache: &mut GpuCache,
        ids: &Ids,
        rows: &Ids,
        causal: bool,
        query_rows: &Ids,
        query_causal: bool,
        offset: usize,
    ) -> Result<Logits> {
        self.check_feed(cache, ids, rows)?;
        let (b, n) = (cache.batch, query_rows.len);
        let table = self.cfg.grid_size() * self.cfg.grid_size() + 1;
        if query_rows.batch != b || n == 0 {
            return Err(Error::Internal(format!(
                "queries ({}, {n}) for a cache of batch {b}",
                query_rows.batch
            )));
        }
        if let Some(r) = query_rows.data.iter().find(|&&r| r as usize >= table) {
            return Err(Error::InvalidRequest(format!(
                "query RoPE row {r} is outside the table of {table} rows"
            )));
        }
        let per = self.per_call(b)?;
        if !causal && ids.len > per {
            return Err(Error::Gpu(format!(
                "{}: {} tokens seeing each other at batch {b} exceed what one call holds on this \
                 device ({per}); use a smaller batch",
                self.gpu.adapter().name,
                ids.len
            )));
        }
        let v = self.cfg.vocab_size;
        let mut out = vec![0f32; b * n * v];
        // Every feed chunk but the last alone; the last goes with the first queries.
        let last = ids.len - ids.len.min(per);
        for (c0, c1) in chunks(last, per) {
            let (i, r) = (slice(ids, c0, c1), slice(rows, c0, c1));
            let feed = Feed {
                ids: &i,
                rows: &r,
                m: c1 - c0,
                causal,
            };
            self.run(cache, Some(feed), None)?;
        }
        let (mut i, mut r) = (slice(ids, last, ids.len), slice(rows, last, ids.len));
        for (q0, q1) in chunks(n, per) {
            let qr = slice(query_rows, q0, q1);
            let feed = (!i.is_empty()).then(|| Feed {
                ids: &i,
                rows: &r,
                m: i.len() / b,
                causal,
            });
            let logits = self
                .run(
                    cache,
                    feed,
                    Some(Query {
                        rows: &qr,
                        n: q1 - q0,
                        causal: query_causal,
                        offset: offset + q0,
                    }),
                )?
                .ok_or_else(|| Error::Internal("queries returned no logits".into()))?;
            // Later query chunks feed nothing.
            (i, r) = (Vec::new(), Vec::new());
            let nq = q1 - q0;
            for row in 0..b {
                let dst = (row * n + q0) * v;
                out[dst..dst + nq * v].copy_from_slice(&logits[row * nq * v..(row + 1) * nq * v]);
            }
        }
        Ok(Logits {
            data: out,
            batch: b,
            queries: n,
            vocab: v,
        })
    }

    /// Tokens of one batch row one call may carry.
    fn per_call(&self, batch: usize) -> Result<usize> {
        let per = self.max_rows / batch.max(1);
        if per == 0 {
            return Err(Error::Gpu(format!(
                "{}: batch {batch} exceeds the {} rows one call holds on this device",
                self.gpu.adapter().name,
                self.max_rows
            )));
        }
        Ok(per)
    }

    fn check_feed(&self, cache: &GpuCache, ids: &Ids, rows: &Ids) -> Result<()> {
        if ids.batch != cache.batch || rows.batch != ids.batch || rows.len != ids.len {
            return Err(Error::Internal(format!(
                "feeding ({}, {}) ids at ({}, {}) rows into a cache of batch {}",
                ids.batch, ids.len, rows.batch, rows.len, cache.batch
            )));
        }
        if cache.len + ids.len > cache.capacity {
            return Err(Error::Internal(format!(
                "the cache holds {} of {} slots; cannot feed {} more",
                cache.len, cache.capacity, ids.len
            )));
        }
        let (emb, table) = (
            self.cfg.embedding_rows(),
            self.cfg.grid_size() * self.cfg.grid_size() + 1,
        );
        if let Some(id) = ids.data.iter().find(|&&i| i as usize >= emb) {
            return Err(Error::InvalidRequest(format!(
                "token id {id} is outside the embedding table of {emb} rows"
            )));
        }
        if let Some(r) = rows.data.iter().find(|&&r| r as usize >= table) {
            return Err(Error::InvalidRequest(format!(
                "RoPE row {r} is outside the table of {table} rows"
            )));
        }
        Ok(())
    }

    /// The compute pipeline of a kernel.
    fn pipeline(&self, pipe: Pipe) -> &wgpu::ComputePipeline {
        &self.pipes[PIPES.iter().position(|(p, ..)| *p == pipe).unwrap_or(0)].1
    }
}

/// `[c0, c1)` ranges of at most `per` covering `0..n` (none for `n = 0`).
fn chunks(n: usize, per: usize) -> Vec<(usize, usize)> {
    let per = per.max(1);
    (0..n.div_ceil(per))
        .map(|i| (i * per, ((i + 1) * per).min(n)))
        .collect()
}

/// Columns `c0..c1` of every batch row of `ids`, row-major.
fn slice(ids: &Ids, c0: usize, c1: usize) -> Vec<u32> {
    (0..ids.batch)
        .flat_map(|b| ids.data[b * ids.len + c0..b * ids.len + c1].iter().copied())
        .collect()
}
