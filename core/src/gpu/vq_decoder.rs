//! The VQ tokenizer's decoder as wgpu compute shaders (mirrors `VQModel.decode_code`: codebook
//! lookup, `post_quant_conv`, `Decoder.forward`), on a [`Gpu`].
//!
//! Built once per tokenizer and device: weights uploaded once (f32), pipelines built once, the
//! sequence of dispatches and their bind groups recorded once over five activation buffers
//! sized for the largest tile the device's limits allow. A decode writes the tokens and each
//! dispatch's parameters, records **one command buffer** (one compute pass), and reads back the
//! `3 x H x W` image: no allocation per decode. Canvases larger than [`VqDecoder::max_tile`]
//! cells per side are decoded in overlapping tiles by the caller ([`crate::vq::Tiling`]).

use std::borrow::Cow;

use candle_core::{DType, Tensor};
use wgpu::util::DeviceExt;

use super::{Gpu, SHADERS};
use crate::config::{VQ_GROUPNORM_EPS, VQ_GROUPS};
use crate::error::{Error, Result};
use crate::vq::{AttnBlock, Conv, Norm, ResnetBlock, VqModel};

/// Activation buffers: enough for the attention block (input, q, k, v, output).
const SLOTS: usize = 5;
/// Largest activation buffer asked of a device, whatever its limits (bytes).
const MAX_SLOT_BYTES: u64 = 256 << 20;
/// Floats of one block of attention scores.
const SCORE_FLOATS: usize = 4 << 20;
/// Widest tile decoded in one pass (cells per side).
const MAX_TILE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pipe {
    Conv,
    Norm,
    Lookup,
    Scores,
    Softmax,
    Weighted,
    ToTexture,
}

const PIPES: [(Pipe, &str, &str); 7] = [
    (Pipe::Conv, "vq_conv", "main"),
    (Pipe::Norm, "vq_group_norm", "main"),
    (Pipe::Lookup, "vq_lookup", "main"),
    (Pipe::Scores, "vq_attention", "scores"),
    (Pipe::Softmax, "vq_attention", "softmax"),
    (Pipe::Weighted, "vq_attention", "weighted"),
    (Pipe::ToTexture, "vq_to_texture", "main"),
];

/// A buffer an op binds: an activation slot, an uploaded weight, or a fixed buffer.
#[derive(Clone, Copy, Debug)]
enum Buf {
    Slot(usize),
    Weight(usize),
    Scores,
    Tokens,
}

/// One dispatch: what it computes (sizes relative to the tile) and what it binds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Lookup {
        e: usize,
    },
    Conv {
        cin: usize,
        cout: usize,
        k: usize,
        pad: usize,
        /// Output resolution in multiples of the latent grid.
        scale: usize,
        upsample: bool,
        residual: bool,
    },
    Norm {
        c: usize,
        scale: usize,
        silu: bool,
    },
    /// One block of query rows of an attention at the latent resolution.
    Scores {
        c: usize,
        block: usize,
    },
    Softmax {
        block: usize,
    },
    Weighted {
        c: usize,
        block: usize,
    },
}

struct Planned {
    kind: Kind,
    pipe: Pipe,
    binds: Vec<(u32, Buf)>,
}

struct Op {
    kind: Kind,
    pipe: Pipe,
    params: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

/// The decoder on a GPU (see the module docs).
pub struct VqDecoder {
    gpu: Gpu,
    pipelines: Vec<(Pipe, wgpu::ComputePipeline)>,
    ops: Vec<Op>,
    tokens: wgpu::Buffer,
    staging: wgpu::Buffer,
    out_slot: usize,
    slots: Vec<wgpu::Buffer>,
    max_tile: usize,
    rows_per_block: usize,
    codebook_size: usize,
    patch: usize,
    /// [`VqDecoder::decode_to_texture`]'s cell mask and parameters, and its bind group for the
    /// last texture written (rebuilt when the texture changes).
    cells: wgpu::Buffer,
    texture_params: wgpu::Buffer,
    texture_bind: std::sync::Mutex<Option<(wgpu::Texture, wgpu::BindGroup)>>,
}

impl std::fmt::Debug for VqDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VqDecoder")
            .field("adapter", &self.gpu.adapter().name)
            .field("dispatches", &self.ops.len())
            .field("max_tile", &self.max_tile)
            .finish()
    }
}

/// Records the decoder as a list of dispatches over activation slots.
struct Planner {
    plan: Vec<Planned>,
    weights: Vec<Vec<f32>>,
    live: [bool; SLOTS],
    /// Largest `channels x scale²` of any activation (floats per latent cell).
    per_cell: usize,
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Planner {
    fn take(&mut self, c: usize, scale: usize) -> Result<usize> {
        self.per_cell = self.per_cell.max(c * scale * scale);
        let i =
            self.live.iter().position(|l| !l).ok_or_else(|| {
                Error::Internal("the GPU decoder ran out of activation slots".into())
            })?;
        self.live[i] = true;
        Ok(i)
    }

    fn release(&mut self, slot: usize) {
        self.live[slot] = false;
    }

    fn weight(&mut self, t: &Tensor) -> Result<Buf> {
        self.weights.push(host(t)?);
        Ok(Buf::Weight(self.weights.len() - 1))
    }

    /// `conv(x)` (+ `res`) into a new slot; `scale` is the output resolution.
    fn conv(
        &mut self,
        conv: &Conv,
        x: usize,
        scale: usize,
        upsample: bool,
        res: Option<usize>,
    ) -> Result<usize> {
        let (w, b, pad) = conv
            .parts()
            .ok_or_else(|| Error::Internal("a decoder convolution with stride 2".into()))?;
        let (cout, cin, k, _) = w.dims4()?;
        // [cout][cin][k][k] → [cin][k][k][cout rounded up to 4] (the shader's vec4 loads).
        let quads = cout.div_ceil(4) * 4;
        let taps = cin * k * k;
        let src = host(w)?;
        let mut packed = vec![0f32; taps * quads];
        for co in 0..cout {
            for t in 0..taps {
                packed[t * quads + co] = src[co * taps + t];
            }
        }
        self.weights.push(packed);
        let w = Buf::Weight(self.weights.len() - 1);
        let b = self.weight(b)?;
        let out = self.take(cout, scale)?;
        self.plan.push(Planned {
            kind: Kind::Conv {
                cin,
                cout,
                k,
                pad,
                scale,
                upsample,
                residual: res.is_some(),
            },
            pipe: Pipe::Conv,
            binds: vec![
                (1, Buf::Slot(x)),
                (2, w),
                (3, b),
                (4, Buf::Slot(res.unwrap_or(x))),
                (5, Buf::Slot(out)),
            ],
        });
        Ok(out)
    }

    fn norm(&mut self, norm: &Norm, x: usize, scale: usize, silu: bool) -> Result<usize> {
        let c = norm.weight.dim(0)?;
        let (g, b) = (self.weight(&norm.weight)?, self.weight(&norm.bias)?);
        let out = self.take(c, scale)?;
        self.plan.push(Planned {
            kind: Kind::Norm { c, scale, silu },
            pipe: Pipe::Norm,
            binds: vec![(1, Buf::Slot(x)), (2, g), (3, b), (4, Buf::Slot(out))],
        });
        Ok(out)
    }

    /// Mirrors `ResnetBlock.forward`; consumes `x`.
    fn resnet(&mut self, block: &ResnetBlock, x: usize, scale: usize) -> Result<usize> {
        let t1 = self.norm(&block.norm1, x, scale, true)?;
        let t2 = self.conv(&block.conv1, t1, scale, false, None)?;
        self.release(t1);
        let t1 = self.norm(&block.norm2, t2, scale, true)?;
        self.release(t2);
        let shortcut = match &block.nin_shortcut {
            Some(s) => Some(self.conv(s, x, scale, false, None)?),
            None => None,
        };
        let out = self.conv(&block.conv2, t1, scale, false, Some(shortcut.unwrap_or(x)))?;
        self.release(t1);
        if let Some(s) = shortcut {
            self.release(s);
        }
        self.release(x);
        Ok(out)
    }

    /// Mirrors `AttnBlock.forward` (at the latent resolution, where the decoder has its
    /// attention); consumes `x`. `blocks` blocks of query rows.
    fn attention(&mut self, block: &AttnBlock, x: usize, blocks: usize) -> Result<usize> {
        let h = self.norm(&block.norm, x, 1, false)?;
        let q = self.conv(&block.q, h, 1, false, None)?;
        let k = self.conv(&block.k, h, 1, false, None)?;
        let v = self.conv(&block.v, h, 1, false, None)?;
        self.release(h);
        let c = block.norm.weight.dim(0)?;
        let o = self.take(c, 1)?;
        for b in 0..blocks {
            self.plan.push(Planned {
                kind: Kind::Scores { c, block: b },
                pipe: Pipe::Scores,
                binds: vec![(1, Buf::Slot(q)), (2, Buf::Slot(k)), (4, Buf::Scores)],
            });
            self.plan.push(Planned {
                kind: Kind::Softmax { block: b },
                pipe: Pipe::Softmax,
                binds: vec![(4, Buf::Scores)],
            });
            self.plan.push(Planned {
                kind: Kind::Weighted { c, block: b },
                pipe: Pipe::Weighted,
                binds: vec![(3, Buf::Slot(v)), (4, Buf::Scores), (5, Buf::Slot(o))],
            });
        }
        for s in [q, k, v] {
            self.release(s);
        }
        let out = self.conv(&block.proj_out, o, 1, false, Some(x))?;
        self.release(o);
        self.release(x);
        Ok(out)
    }
}

impl VqDecoder {
    /// Uploads `vq`'s decoder to `gpu` and records its dispatches. Errors: the device's limits
    /// cannot hold one token's activations, or the device fails.
    pub fn new(vq: &VqModel, gpu: &Gpu) -> Result<Self> {
        gpu.scoped("building the VQ decoder", || Self::build(vq, gpu))
    }

    fn build(vq: &VqModel, gpu: &Gpu) -> Result<Self> {
        let cfg = vq.config();
        // The tile follows from the largest activation the limits allow; attention blocks from
        // the tile. A first pass with one block finds the activation sizes.
        let limits = gpu.device.limits();
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(MAX_SLOT_BYTES);
        let per_cell = Self::plan(vq, 1)?.per_cell;
        let max_tile = (((binding / 4) as f64 / per_cell as f64).sqrt() as usize).min(MAX_TILE);
        if max_tile == 0 {
            return Err(Error::Gpu(format!(
                "{}: one storage buffer may hold {binding} bytes; the decoder needs {} per token",
                gpu.adapter().name,
                per_cell * 4
            )));
        }
        let n_max = max_tile * max_tile;
        let rows_per_block = (SCORE_FLOATS / n_max).clamp(1, n_max);
        let blocks = n_max.div_ceil(rows_per_block);
        let planner = Self::plan(vq, blocks)?;

        let device = &gpu.device;
        let modules: Vec<(&str, wgpu::ShaderModule)> = SHADERS
            .iter()
            .map(|(name, src)| {
                (
                    *name,
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(name),
                        source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(src)),
                    }),
                )
            })
            .collect();
        let pipelines: Vec<(Pipe, wgpu::ComputePipeline)> = PIPES
            .iter()
            .map(|(pipe, module, entry)| {
                let module = &modules
                    .iter()
                    .find(|(n, _)| n == module)
                    .ok_or_else(|| Error::Internal(format!("no shader {module}")))?
                    .1;
                Ok((
                    *pipe,
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: None,
                        module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    }),
                ))
            })
            .collect::<Result<_>>()?;

        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let weights: Vec<wgpu::Buffer> = planner
            .weights
            .iter()
            .map(|w| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("vq weight"),
                    contents: bytemuck::cast_slice(w),
                    usage: storage,
                })
            })
            .collect();
        let slot_bytes = (planner.per_cell * n_max * 4) as u64;
        let slots: Vec<wgpu::Buffer> = (0..SLOTS)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("vq activations"),
                    size: slot_bytes,
                    usage: storage | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let scores = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("vq attention scores"),
            size: (rows_per_block * n_max * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let tokens = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("vq tokens"),
            size: (n_max * 4) as u64,
            usage: storage,
            mapped_at_creation: false,
        });
        let p = cfg.downsample();
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("vq image read-back"),
            size: (3 * n_max * p * p * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let resolve = |b: Buf| -> &wgpu::Buffer {
            match b {
                Buf::Slot(i) => &slots[i],
                Buf::Weight(i) => &weights[i],
                Buf::Scores => &scores,
                Buf::Tokens => &tokens,
            }
        };
        let ops = planner
            .plan
            .iter()
            .map(|op| {
                let pipeline = &pipelines
                    .iter()
                    .find(|(p, _)| *p == op.pipe)
                    .ok_or_else(|| Error::Internal("a pipeline is missing".into()))?
                    .1;
                let params = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("vq op parameters"),
                    size: 32,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                }];
                entries.extend(op.binds.iter().map(|(binding, b)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: resolve(*b).as_entire_binding(),
                }));
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                Ok(Op {
                    kind: op.kind,
                    pipe: op.pipe,
                    params,
                    bind,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let out_slot = match planner.plan.last().and_then(|op| op.binds.last()) {
            Some((_, Buf::Slot(s))) => *s,
            _ => return Err(Error::Internal("the decoder ends without an output".into())),
        };
        let cells = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("vq preview cells"),
            size: (n_max * 4) as u64,
            usage: storage,
            mapped_at_creation: false,
        });
        let texture_params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("vq preview parameters"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            cells,
            texture_params,
            texture_bind: std::sync::Mutex::new(None),
            gpu: gpu.clone(),
            pipelines,
            ops,
            tokens,
            staging,
            out_slot,
            slots,
            max_tile,
            rows_per_block,
            codebook_size: cfg.codebook_size,
            patch: p,
        })
    }

    /// The dispatches of `decode_code` (mirrors `VQModel.decode_code` and `Decoder.forward`).
    fn plan(vq: &VqModel, blocks: usize) -> Result<Planner> {
        let dec = &vq.decoder;
        let mut pl = Planner {
            plan: Vec::new(),
            weights: Vec::new(),
            live: [false; SLOTS],
            per_cell: 0,
        };
        let e = vq.config().codebook_embed_dim;
        let codebook = pl.weight(vq.codebook_normed())?;
        let z = pl.take(e, 1)?;
        pl.plan.push(Planned {
            kind: Kind::Lookup { e },
            pipe: Pipe::Lookup,
            binds: vec![(1, Buf::Tokens), (2, codebook), (3, Buf::Slot(z))],
        });
        let h = pl.conv(&vq.post_quant_conv, z, 1, false, None)?;
        pl.release(z);
        let mut x = pl.conv(&dec.conv_in, h, 1, false, None)?;
        pl.release(h);
        x = pl.resnet(&dec.mid.0, x, 1)?;
        x = pl.attention(&dec.mid.1, x, blocks)?;
        x = pl.resnet(&dec.mid.2, x, 1)?;
        let mut scale = 1;
        for level in &dec.levels {
            for (i, res) in level.res.iter().enumerate() {
                x = pl.resnet(res, x, scale)?;
                if let Some(attn) = level.attn.get(i) {
                    if scale != 1 {
                        return Err(Error::Internal(
                            "decoder attention above the latent resolution".into(),
                        ));
                    }
                    x = pl.attention(attn, x, blocks)?;
                }
            }
            if let Some(up) = &level.upsample {
                scale *= 2;
                let y = pl.conv(&up.conv, x, scale, true, None)?;
                pl.release(x);
                x = y;
            }
        }
        let t = pl.norm(&dec.norm_out, x, scale, true)?;
        pl.release(x);
        let out = pl.conv(&dec.conv_out, t, scale, false, None)?;
        pl.release(t);
        let _ = out;
        Ok(pl)
    }

    /// The largest canvas side (cells) decoded in one pass.
    pub fn max_tile(&self) -> usize {
        self.max_tile
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Parameters `[u32; 8]` of one op for a `rows x cols` tile (`None`: the op is not needed,
    /// an attention block past the last query row).
    fn params(&self, kind: Kind, rows: usize, cols: usize) -> Option<([u32; 8], [u32; 3])> {
        let n = rows * cols;
        let u = |v: usize| v as u32;
        let wg = |v: usize, d: usize| v.div_ceil(d) as u32;
        Some(match kind {
            Kind::Lookup { e } => ([u(n), u(e), 0, 0, 0, 0, 0, 0], [wg(n, 64), u(e), 1]),
            Kind::Conv {
                cin,
                cout,
                k,
                pad,
                scale,
                upsample,
                residual,
            } => {
                let (h, w) = (rows * scale, cols * scale);
                (
                    [
                        u(cin),
                        u(cout),
                        u(h),
                        u(w),
                        u(k),
                        u(pad),
                        u32::from(upsample),
                        u32::from(residual),
                    ],
                    [wg(w, 8), wg(h, 8), wg(cout, 4)],
                )
            }
            Kind::Norm { c, scale, silu } => (
                [
                    u(c),
                    u(n * scale * scale),
                    u(VQ_GROUPS),
                    u32::from(silu),
                    (VQ_GROUPNORM_EPS as f32).to_bits(),
                    0,
                    0,
                    0,
                ],
                [u(VQ_GROUPS), 1, 1],
            ),
            Kind::Scores { c, block } | Kind::Weighted { c, block } => {
                let row0 = block * self.rows_per_block;
                if row0 >= n {
                    return None;
                }
                let rows = self.rows_per_block.min(n - row0);
                let scale = (1.0 / (c as f64).sqrt()) as f32;
                let params = [u(c), u(n), u(row0), u(rows), scale.to_bits(), 0, 0, 0];
                match kind {
                    Kind::Scores { .. } => (params, [wg(n, 64), wg(rows, 4), 1]),
                    _ => (params, [wg(rows, 64), wg(c, 4), 1]),
                }
            }
            Kind::Softmax { block } => {
                let row0 = block * self.rows_per_block;
                if row0 >= n {
                    return None;
                }
                let rows = self.rows_per_block.min(n - row0);
                ([0, u(n), u(row0), u(rows), 0, 0, 0, 0], [u(rows), 1, 1])
            }
        })
    }

    /// Tokens `rows x cols` (raster order, each below the codebook size; both sides at most
    /// [`VqDecoder::max_tile`]) → RGB8 pixels `cols·p x rows·p`, converted as the official
    /// sampler converts them (see [`crate::vq::to_rgb8`]).
    pub fn decode_rgb8(&self, tokens: &[u32], rows: usize, cols: usize) -> Result<Vec<u8>> {
        let planes = self.decode_planes(tokens, rows, cols)?;
        Ok(crate::vq::rgb8_from_planes(
            &planes,
            rows * self.patch,
            cols * self.patch,
        )?)
    }

    /// [`VqDecoder::decode_rgb8`] before the conversion: the decoder's output `[3][H][W]`, f32.
    pub fn decode_planes(&self, tokens: &[u32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.check(tokens, rows, cols)?;
        let (h, w) = (rows * self.patch, cols * self.patch);
        let bytes = (3 * h * w * 4) as u64;
        self.gpu.scoped("decoding", || {
            let mut encoder = self.record(tokens, rows, cols)?;
            encoder.copy_buffer_to_buffer(&self.slots[self.out_slot], 0, &self.staging, 0, bytes);
            self.gpu.queue.submit([encoder.finish()]);
            let slice = self.staging.slice(..bytes);
            let (tx, rx) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            self.gpu.wait()?;
            rx.recv()
                .map_err(|_| Error::Gpu("the read-back never completed".into()))?
                .map_err(|e| Error::Gpu(format!("reading the image back: {e}")))?;
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading the image back: {e}")))?;
            let values: Vec<f32> = view
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            drop(view);
            self.staging.unmap();
            Ok(values)
        })
    }

    /// Decodes and writes the pixels of the cells `cells` marks (`rows x cols`, raster order)
    /// into `texture` (RGBA8 unorm with storage binding, on this decoder's device, at least the
    /// decoded size) with the conversion of [`crate::vq::rgb8_from_planes`]: one command buffer,
    /// nothing read back. Returns when the GPU has run it.
    pub fn decode_to_texture(
        &self,
        tokens: &[u32],
        rows: usize,
        cols: usize,
        cells: &[bool],
        texture: &wgpu::Texture,
    ) -> Result<()> {
        self.check(tokens, rows, cols)?;
        let (h, w) = (rows * self.patch, cols * self.patch);
        let size = texture.size();
        if cells.len() != rows * cols
            || (size.width as usize) < w
            || (size.height as usize) < h
            || texture.format() != wgpu::TextureFormat::Rgba8Unorm
            || !texture
                .usage()
                .contains(wgpu::TextureUsages::STORAGE_BINDING)
        {
            return Err(Error::InvalidRequest(
                "the texture does not fit this decode (RGBA8 storage of the decoded size)".into(),
            ));
        }
        self.gpu.scoped("writing the preview", || {
            let mask: Vec<u32> = cells.iter().map(|&c| u32::from(c)).collect();
            let queue = &self.gpu.queue;
            queue.write_buffer(&self.cells, 0, bytemuck::cast_slice(&mask));
            let params = [h as u32, w as u32, cols as u32, self.patch as u32];
            queue.write_buffer(&self.texture_params, 0, bytemuck::cast_slice(&params));
            let mut encoder = self.record(tokens, rows, cols)?;
            {
                let mut bound = self
                    .texture_bind
                    .lock()
                    .map_err(|_| Error::Internal("the preview bind group lock".into()))?;
                if bound.as_ref().is_none_or(|(t, _)| t != texture) {
                    let view = texture.create_view(&Default::default());
                    let bind = self
                        .gpu
                        .device
                        .create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("vq preview"),
                            layout: &self.pipeline(Pipe::ToTexture)?.get_bind_group_layout(0),
                            entries: &[
                                wgpu::BindGroupEntry {
                                    binding: 0,
                                    resource: self.texture_params.as_entire_binding(),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 1,
                                    resource: self.slots[self.out_slot].as_entire_binding(),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 2,
                                    resource: self.cells.as_entire_binding(),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 3,
                                    resource: wgpu::BindingResource::TextureView(&view),
                                },
                            ],
                        });
                    *bound = Some((texture.clone(), bind));
                }
                let bind = &bound
                    .as_ref()
                    .ok_or_else(|| Error::Internal("no preview bind group".into()))?
                    .1;
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("vq preview"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(self.pipeline(Pipe::ToTexture)?);
                pass.set_bind_group(0, bind, &[]);
                pass.dispatch_workgroups(w.div_ceil(8) as u32, h.div_ceil(8) as u32, 1);
            }
            queue.submit([encoder.finish()]);
            self.gpu.wait()
        })
    }

    fn pipeline(&self, pipe: Pipe) -> Result<&wgpu::ComputePipeline> {
        self.pipelines
            .iter()
            .find(|(p, _)| *p == pipe)
            .map(|(_, p)| p)
            .ok_or_else(|| Error::Internal("a pipeline is missing".into()))
    }

    /// Whether `gpu` is the device this decoder computes on.
    pub fn is_on(&self, gpu: &Gpu) -> bool {
        self.gpu.same_device(gpu)
    }

    fn check(&self, tokens: &[u32], rows: usize, cols: usize) -> Result<()> {
        if tokens.len() != rows * cols || rows == 0 || cols == 0 {
            return Err(Error::InvalidRequest(format!(
                "{} tokens do not fill a {rows}x{cols} grid",
                tokens.len()
            )));
        }
        if rows > self.max_tile || cols > self.max_tile {
            return Err(Error::Internal(format!(
                "a {rows}x{cols} tile is above the GPU decoder's {0}x{0}",
                self.max_tile
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.codebook_size) {
            return Err(Error::InvalidRequest(format!(
                "token {t} is outside the codebook (0..{})",
                self.codebook_size
            )));
        }
        Ok(())
    }

    /// A command encoder holding the decode of `tokens` (one compute pass; each dispatch's
    /// parameters written to the queue), its output in the output slot.
    fn record(&self, tokens: &[u32], rows: usize, cols: usize) -> Result<wgpu::CommandEncoder> {
        let queue = &self.gpu.queue;
        queue.write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        let mut encoder = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("vq decode"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("vq decode"),
                timestamp_writes: None,
            });
            for op in &self.ops {
                let Some((params, groups)) = self.params(op.kind, rows, cols) else {
                    continue;
                };
                queue.write_buffer(&op.params, 0, bytemuck::cast_slice(&params));
                pass.set_pipeline(self.pipeline(op.pipe)?);
                pass.set_bind_group(0, &op.bind, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
        }
        Ok(encoder)
    }
}
