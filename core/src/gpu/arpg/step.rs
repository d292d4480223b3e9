//! One call of the GPU transformer: the dispatch list bound to a cache's scratch buffers, each
//! dispatch's parameters, and the one command buffer that runs them.

use super::{Feed, GpuArpg, GpuCache, Pipe, Query};
use crate::error::{Error, Result};

/// "No such part" for the RoPE kernel's column parameters.
const NONE: u32 = u32::MAX;
/// Bytes between two dispatches' parameters in the one parameter buffer (the largest uniform
/// offset alignment wgpu allows a device to ask).
const PARAM_STRIDE: u64 = 256;
const PARAM_BYTES: u64 = 48;

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
pub(super) struct Scratch {
    pub(super) rows: usize,
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

impl GpuArpg {
    /// Scratch buffers for `rows` rows and every dispatch bound to them and to `cache` (built
    /// when a cache first needs more rows than it has).
    pub(super) fn scratch(&self, cache: &GpuCache, rows: usize) -> Result<Scratch> {
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

    /// One call: the feed's dispatches, then the queries', in one command buffer; the query
    /// rows' logits `(B, n, V)` read back.
    pub(super) fn run(
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
            if let Some(f) = &feed {
                q.write_buffer(&s.index, 0, bytemuck::cast_slice(f.ids));
                q.write_buffer(&s.index, (r * 4) as u64, bytemuck::cast_slice(f.rows));
            }
            if let Some(qu) = &query {
                q.write_buffer(&s.index, (2 * r * 4) as u64, bytemuck::cast_slice(qu.rows));
                let mask = vec![self.cfg.mask_token_id(); b * n];
                q.write_buffer(&s.index, (3 * r * 4) as u64, bytemuck::cast_slice(&mask));
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
