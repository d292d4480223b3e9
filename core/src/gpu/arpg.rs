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

use std::borrow::Cow;

use candle_core::{DType, Tensor};
use wgpu::util::DeviceExt;

use super::{Gpu, SHADERS};
use crate::backend::{Ids, Logits};
use crate::config::ArpgConfig;
use crate::error::{Error, Result};
use crate::model::Arpg;

/// "No such part" for the RoPE kernel's column parameters.
const NONE: u32 = u32::MAX;
/// Bytes between two dispatches' parameters in the one parameter buffer (the largest uniform
/// offset alignment wgpu allows a device to ask).
const PARAM_STRIDE: u64 = 256;
const PARAM_BYTES: u64 = 48;
/// The attention kernel keeps a query and four outputs an invocation in workgroup memory.
const MAX_HEAD_DIM: usize = 256;

/// How the weights are stored on the GPU (the dtype the model was loaded in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
}

impl WeightFormat {
    fn of(dtype: DType) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(Self::F32),
            DType::F16 => Ok(Self::F16),
            DType::BF16 => Ok(Self::Bf16),
            d => Err(Error::InvalidRequest(format!(
                "wgpu takes f32, f16 or bf16 weights, not {d:?}"
            ))),
        }
    }

    /// Bytes of one element (of the weights, and of the KV cache, which takes their format).
    fn bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The `WEIGHT` and `KV` override constants of `arpg_weights.wgsl` and `arpg_kv.wgsl`.
    fn code(self) -> f64 {
        match self {
            Self::F32 => 0.0,
            Self::F16 => 1.0,
            Self::Bf16 => 2.0,
        }
    }
}

/// `t` as the 32-bit words the shaders read: f32 bits, or two 16-bit values a word (element 2i
/// in the low half).
fn words(t: &Tensor, format: WeightFormat) -> Result<Vec<u32>> {
    let flat = t.flatten_all()?;
    let pack = |halves: Vec<u16>| -> Vec<u32> {
        halves
            .chunks(2)
            .map(|c| u32::from(c[0]) | (u32::from(c.get(1).copied().unwrap_or(0)) << 16))
            .collect()
    };
    Ok(match format {
        WeightFormat::F32 => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect(),
        WeightFormat::F16 => pack(
            flat.to_dtype(DType::F16)?
                .to_vec1::<half::f16>()?
                .into_iter()
                .map(half::f16::to_bits)
                .collect(),
        ),
        WeightFormat::Bf16 => pack(
            flat.to_dtype(DType::BF16)?
                .to_vec1::<half::bf16>()?
                .into_iter()
                .map(half::bf16::to_bits)
                .collect(),
        ),
    })
}

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

/// Where a dispatch runs: over the fed tokens, or over the query rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Feed,
    Query,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Embed,
    Norm,
    Matmul {
        n: usize,
        k: usize,
        accumulate: bool,
        y_stride: usize,
    },
    /// Columns of q, k and v in the source rows (`NONE`: absent) and the source's row stride.
    Rope {
        q: u32,
        k: u32,
        v: u32,
        stride: usize,
    },
    Attention {
        q_stride: usize,
    },
    Swiglu,
}

struct Op {
    stage: Stage,
    kind: Kind,
    pipe: Pipe,
    bind: wgpu::BindGroup,
}

/// What one dispatch's parameters depend on: `b` batch rows, `per` tokens (feed) or queries
/// of one batch row, `r` the scratch's rows, `cap` the cache's capacity, `len` slots filled
/// before this call, `m` tokens this call feeds, and this stage's causal flag and offset.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    b: usize,
    per: usize,
    r: usize,
    cap: usize,
    len: usize,
    m: usize,
    causal: bool,
    offset: usize,
}

/// Scratch buffers for `rows` rows and the dispatches bound to them.
struct Scratch {
    rows: usize,
    /// `[ids | RoPE rows | query RoPE rows | query ids]`, `rows` u32 each.
    index: wgpu::Buffer,
    params: wgpu::Buffer,
    logits: wgpu::Buffer,
    staging: wgpu::Buffer,
    ops: Vec<Op>,
    /// The residual stream, its norm, the projections, the attention output and the gate
    /// (bound in `ops`).
    _activations: [wgpu::Buffer; 5],
}

/// The KV cache of a [`GpuArpg`] (mirrors [`crate::model::KvCache`]): keys and values of every
/// self-decoder layer and the shared cross K/V, each `(B, H, capacity, head_dim)` on the GPU,
/// in the weights' format.
/// Not `Clone`: use [`GpuCache::deep_clone`].
pub struct GpuCache {
    gpu: Gpu,
    self_kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    cross_kv: (wgpu::Buffer, wgpu::Buffer),
    batch: usize,
    capacity: usize,
    len: usize,
    scratch: Option<Scratch>,
}

impl std::fmt::Debug for GpuCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuCache")
            .field("batch", &self.batch)
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl GpuCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// An independent copy (forking a generation): new buffers, filled on the GPU.
    pub fn deep_clone(&self) -> Result<Self> {
        self.gpu.scoped("copying the KV cache", || {
            let device = &self.gpu.device;
            let mut encoder = device.create_command_encoder(&Default::default());
            let mut copy = |b: &wgpu::Buffer| {
                let c = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("arpg kv cache"),
                    size: b.size(),
                    usage: b.usage(),
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(b, 0, &c, 0, b.size());
                c
            };
            let self_kv = self
                .self_kv
                .iter()
                .map(|(k, v)| (copy(k), copy(v)))
                .collect();
            let cross_kv = (copy(&self.cross_kv.0), copy(&self.cross_kv.1));
            self.gpu.queue.submit([encoder.finish()]);
            Ok(Self {
                gpu: self.gpu.clone(),
                self_kv,
                cross_kv,
                batch: self.batch,
                capacity: self.capacity,
                len: self.len,
                scratch: None,
            })
        })
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
        let feeds = if ids.len == 0 {
            Vec::new()
        } else {
            chunks(ids.len, per)
        };
        let queries = chunks(n, per);
        let mut out = vec![0f32; b * n * self.cfg.vocab_size];
        let v = self.cfg.vocab_size;
        let mut fed = 0;
        for (fi, &(c0, c1)) in feeds.iter().enumerate() {
            let last = fi + 1 == feeds.len();
            if !last {
                let (i, r) = (slice(ids, c0, c1), slice(rows, c0, c1));
                self.run(
                    cache,
                    Some(Feed {
                        ids: &i,
                        rows: &r,
                        m: c1 - c0,
                        causal,
                    }),
                    None,
                )?;
            }
            fed = c0;
        }
        for (qi, &(q0, q1)) in queries.iter().enumerate() {
            let (i, r) = if qi == 0 && !feeds.is_empty() {
                let c1 = ids.len;
                (slice(ids, fed, c1), slice(rows, fed, c1))
            } else {
                (Vec::new(), Vec::new())
            };
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

    /// Scratch buffers for `rows` rows and every dispatch bound to them and to `cache` (built
    /// when a cache first needs more rows than it has).
    fn scratch(&self, cache: &GpuCache, rows: usize) -> Result<Scratch> {
        use wgpu::BufferUsages as U;
        let device = &self.gpu.device;
        let cfg = &self.cfg;
        let (d, h, v) = (cfg.dim, cfg.ffn_hidden_dim(), cfg.vocab_size);
        let buf = |label: &str, floats: usize, usage: U| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (floats.max(1) * 4) as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        let x = buf("arpg residual stream", rows * d, U::STORAGE);
        let y = buf("arpg normed", rows * d, U::STORAGE);
        let big = buf("arpg projections", rows * (3 * d).max(2 * h), U::STORAGE);
        let a = buf("arpg attention", rows * d, U::STORAGE);
        let g = buf("arpg gate", rows * h, U::STORAGE);
        let logits = buf("arpg logits", rows * v, U::STORAGE | U::COPY_SRC);
        let index = buf("arpg ids", 4 * rows, U::STORAGE | U::COPY_DST);
        let staging = buf("arpg logits read-back", rows * v, U::MAP_READ | U::COPY_DST);

        type Planned<'a> = (Stage, Kind, Pipe, Vec<&'a wgpu::Buffer>);
        let mm = |n: usize, k: usize, accumulate: bool, y_stride: usize| Kind::Matmul {
            n,
            k,
            accumulate,
            y_stride,
        };
        let mut plan: Vec<Planned> = Vec::new();
        let (cross_k, cross_v) = (&cache.cross_kv.0, &cache.cross_kv.1);
        let rope = |q: u32, k: u32, v: u32, stride: usize| Kind::Rope { q, k, v, stride };
        let (du, none) = (d as u32, NONE);
        plan.push((
            Stage::Feed,
            Kind::Embed,
            Pipe::Embed,
            vec![&index, &self.embeddings, &x],
        ));
        for (stage, blocks) in [
            (Stage::Feed, &self.self_dec),
            (Stage::Query, &self.cross_dec),
        ] {
            if stage == Stage::Query {
                plan.push((
                    stage,
                    Kind::Embed,
                    Pipe::Embed,
                    vec![&index, &self.embeddings, &x],
                ));
            }
            for (i, blk) in blocks.iter().enumerate() {
                plan.push((stage, Kind::Norm, Pipe::Norm, vec![&x, &blk.attn_norm, &y]));
                let (ck, cv) = match stage {
                    Stage::Feed => (&cache.self_kv[i].0, &cache.self_kv[i].1),
                    Stage::Query => (cross_k, cross_v),
                };
                let (width, part) = match stage {
                    Stage::Feed => (3 * d, rope(0, du, 2 * du, 3 * d)),
                    Stage::Query => (d, rope(0, none, none, d)),
                };
                plan.push((
                    stage,
                    mm(width, d, false, width),
                    Pipe::Matmul,
                    vec![&y, &blk.qkv, &big],
                ));
                plan.push((
                    stage,
                    part,
                    Pipe::Rope,
                    vec![&big, &self.rope_cos, &self.rope_sin, &index, ck, cv],
                ));
                plan.push((
                    stage,
                    Kind::Attention { q_stride: width },
                    Pipe::Attention,
                    vec![&big, ck, cv, &a],
                ));
                plan.push((
                    stage,
                    mm(d, d, true, d),
                    Pipe::Matmul,
                    vec![&a, &blk.proj, &x],
                ));
                plan.push((stage, Kind::Norm, Pipe::Norm, vec![&x, &blk.ffn_norm, &y]));
                plan.push((
                    stage,
                    mm(2 * h, d, false, 2 * h),
                    Pipe::Matmul,
                    vec![&y, &blk.w13, &big],
                ));
                plan.push((stage, Kind::Swiglu, Pipe::Swiglu, vec![&big, &g]));
                plan.push((
                    stage,
                    mm(d, h, true, d),
                    Pipe::Matmul,
                    vec![&g, &blk.w2, &x],
                ));
            }
            if stage == Stage::Feed {
                plan.push((stage, Kind::Norm, Pipe::Norm, vec![&x, &self.kv_norm, &y]));
                plan.push((
                    stage,
                    mm(2 * d, d, false, 2 * d),
                    Pipe::Matmul,
                    vec![&y, &self.to_kv, &big],
                ));
                plan.push((
                    stage,
                    rope(none, 0, du, 2 * d),
                    Pipe::Rope,
                    vec![
                        &big,
                        &self.rope_cos,
                        &self.rope_sin,
                        &index,
                        cross_k,
                        cross_v,
                    ],
                ));
            }
        }
        plan.push((
            Stage::Query,
            Kind::Norm,
            Pipe::Norm,
            vec![&x, &self.norm, &y],
        ));
        plan.push((
            Stage::Query,
            mm(v, d, false, v),
            Pipe::Matmul,
            vec![&y, &self.head, &logits],
        ));

        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("arpg dispatch parameters"),
            size: PARAM_STRIDE * plan.len() as u64,
            usage: U::UNIFORM | U::COPY_DST,
            mapped_at_creation: false,
        });
        let ops = plan
            .into_iter()
            .enumerate()
            .map(|(i, (stage, kind, pipe, bufs))| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: i as u64 * PARAM_STRIDE,
                        size: wgpu::BufferSize::new(PARAM_BYTES),
                    }),
                }];
                entries.extend(bufs.iter().enumerate().map(|(j, b)| wgpu::BindGroupEntry {
                    binding: j as u32 + 1,
                    resource: b.as_entire_binding(),
                }));
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &self.pipeline(pipe).get_bind_group_layout(0),
                    entries: &entries,
                });
                Op {
                    stage,
                    kind,
                    pipe,
                    bind,
                }
            })
            .collect();
        Ok(Scratch {
            rows,
            index,
            params,
            logits,
            staging,
            ops,
            _activations: [x, y, big, a, g],
        })
    }

    fn pipeline(&self, pipe: Pipe) -> &wgpu::ComputePipeline {
        &self.pipes[PIPES.iter().position(|(p, ..)| *p == pipe).unwrap_or(0)].1
    }

    /// One call: the feed's dispatches, then the queries', in one command buffer; the query
    /// rows' logits `(B, n, V)` read back.
    fn run(
        &self,
        cache: &mut GpuCache,
        feed: Option<Feed>,
        query: Option<Query>,
    ) -> Result<Option<Vec<f32>>> {
        let b = cache.batch;
        let m = feed.as_ref().map_or(0, |f| f.m);
        let n = query.as_ref().map_or(0, |q| q.n);
        self.gpu.scoped("running a transformer step", || {
            let rows_needed = b * m.max(n);
            if cache.scratch.as_ref().is_none_or(|s| s.rows < rows_needed) {
                let rows = rows_needed.next_power_of_two().max(64).min(self.max_rows);
                cache.scratch = None;
                cache.scratch = Some(self.scratch(cache, rows)?);
            }
            let Some(s) = cache.scratch.as_ref() else {
                return Err(Error::Internal("no scratch buffers".into()));
            };
            let r = s.rows;
            let q = &self.gpu.queue;
            let u32s = |v: &[u32]| bytemuck::cast_slice::<u32, u8>(v).to_vec();
            if let Some(f) = &feed {
                q.write_buffer(&s.index, 0, &u32s(f.ids));
                q.write_buffer(&s.index, (r * 4) as u64, &u32s(f.rows));
            }
            if let Some(qu) = &query {
                q.write_buffer(&s.index, (2 * r * 4) as u64, &u32s(qu.rows));
                let mask = vec![self.cfg.mask_token_id(); b * n];
                q.write_buffer(&s.index, (3 * r * 4) as u64, &u32s(&mask));
            }
            let len = cache.len;
            let mut params = vec![0u8; s.ops.len() * PARAM_STRIDE as usize];
            let mut dispatches = Vec::new();
            for (i, op) in s.ops.iter().enumerate() {
                let ctx = match (op.stage, &feed, &query) {
                    (Stage::Feed, Some(f), _) => Ctx {
                        b,
                        per: f.m,
                        r,
                        cap: cache.capacity,
                        len,
                        m,
                        causal: f.causal,
                        offset: len,
                    },
                    (Stage::Query, _, Some(qu)) => Ctx {
                        b,
                        per: qu.n,
                        r,
                        cap: cache.capacity,
                        len,
                        m,
                        causal: qu.causal,
                        offset: qu.offset,
                    },
                    _ => continue,
                };
                let (words, groups) = self.params(op.kind, op.stage, ctx);
                let at = i * PARAM_STRIDE as usize;
                params[at..at + 48].copy_from_slice(bytemuck::cast_slice(&words));
                dispatches.push((op, groups));
            }
            q.write_buffer(&s.params, 0, &params);
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("arpg step"),
                    timestamp_writes: None,
                });
                for (op, [x, y, z]) in dispatches {
                    pass.set_pipeline(self.pipeline(op.pipe));
                    pass.set_bind_group(0, &op.bind, &[]);
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            let bytes = (b * n * self.cfg.vocab_size * 4) as u64;
            if n > 0 {
                encoder.copy_buffer_to_buffer(&s.logits, 0, &s.staging, 0, bytes);
            }
            q.submit([encoder.finish()]);
            cache.len += m;
            if n == 0 {
                return Ok(None);
            }
            let slice = s.staging.slice(..bytes);
            let (tx, rx) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            self.gpu.wait()?;
            rx.recv()
                .map_err(|_| Error::Gpu("the logits' read-back never completed".into()))?
                .map_err(|e| Error::Gpu(format!("reading the logits back: {e}")))?;
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading the logits back: {e}")))?;
            let logits: Vec<f32> = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
            drop(view);
            s.staging.unmap();
            Ok(Some(logits))
        })
    }

    /// One dispatch's parameters (12 words) and workgroup counts.
    fn params(&self, kind: Kind, stage: Stage, c: Ctx) -> ([u32; 12], [u32; 3]) {
        let Ctx {
            b,
            per,
            r,
            cap,
            len,
            m,
            causal,
            offset,
        } = c;
        let cfg = &self.cfg;
        let rows = b * per;
        let u = |v: usize| v as u32;
        let wg = |v: usize, d: usize| v.div_ceil(d) as u32;
        let (d, hd, heads) = (cfg.dim, cfg.head_dim(), cfg.n_head);
        match kind {
            Kind::Embed => {
                let id_offset = if stage == Stage::Feed { 0 } else { 3 * r };
                (
                    [u(rows), u(d), u(id_offset), 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    [wg(d, 64), u(rows), 1],
                )
            }
            Kind::Norm => (
                [
                    u(d),
                    (cfg.norm_eps as f32).to_bits(),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                [u(rows), 1, 1],
            ),
            Kind::Matmul {
                n,
                k,
                accumulate,
                y_stride,
            } => (
                [
                    u(rows),
                    u(n),
                    u(k),
                    u32::from(accumulate),
                    u(k),
                    u(y_stride),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                [wg(n, 32), wg(rows, 32), 1],
            ),
            Kind::Rope { q, k, v, stride } => {
                let row_offset = if stage == Stage::Feed { r } else { 2 * r };
                (
                    [
                        u(rows),
                        u(per),
                        u(stride),
                        q,
                        k,
                        v,
                        u(heads),
                        u(hd),
                        u(cap),
                        u(len),
                        u(row_offset),
                        0,
                    ],
                    [wg(heads * hd / 2, 64), u(rows), 1],
                )
            }
            Kind::Attention { q_stride } => {
                let scale = (1.0 / (hd as f64).sqrt()) as f32;
                (
                    [
                        u(rows),
                        u(per),
                        u(q_stride),
                        u(heads),
                        u(hd),
                        u(cap),
                        u(len + m),
                        u32::from(causal),
                        u(offset),
                        scale.to_bits(),
                        0,
                        0,
                    ],
                    [u(rows), u(heads), 1],
                )
            }
            Kind::Swiglu => {
                let h = cfg.ffn_hidden_dim();
                (
                    [u(rows), u(h), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    [wg(h, 64), u(rows), 1],
                )
            }
        }
    }
}

/// `[c0, c1)` ranges of at most `per` covering `0..n` (at least one range).
fn chunks(n: usize, per: usize) -> Vec<(usize, usize)> {
    let per = per.max(1);
    let mut out: Vec<(usize, usize)> = (0..n.div_ceil(per))
        .map(|i| (i * per, ((i + 1) * per).min(n)))
        .collect();
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}

/// Columns `c0..c1` of every batch row of `ids`, row-major.
fn slice(ids: &Ids, c0: usize, c1: usize) -> Vec<u32> {
    (0..ids.batch)
        .flat_map(|b| ids.data[b * ids.len + c0..b * ids.len + c1].iter().copied())
        .collect()
}
