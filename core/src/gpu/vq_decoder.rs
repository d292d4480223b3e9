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

use wgpu::util::DeviceExt;

use super::vq_plan::{Buf, Kind, Pipe, Planner, PIPES, SLOTS};
use super::{Gpu, SHADERS};
use crate::config::{VQ_GROUPNORM_EPS, VQ_GROUPS};
use crate::error::{Error, Result};
use crate::vq::VqModel;

/// Largest activation buffer asked of a device, whatever its limits (bytes).
const MAX_SLOT_BYTES: u64 = 256 << 20;
/// Floats of one block of attention scores.
const SCORE_FLOATS: usize = 4 << 20;
/// Widest tile decoded in one pass (cells per side).
const MAX_TILE: usize = 64;

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
        let per_cell = Planner::decoder(vq, 1, false)?.per_cell;
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
        let planner = Planner::decoder(vq, blocks, true)?;

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
