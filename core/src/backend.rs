//! The seam between a run and the engine that computes it.
//!
//! The sampler ([`crate::Generation`]), the canvas jobs, the edits and `check-reference` call
//! the transformer only through [`Transformer`] (the parallel step, the causal prefill,
//! `predict` for settling and polishing, the teacher-forced forward) with its [`Cache`], and the
//! tokenizer only through [`Tokenizer`] (encode and decode of RGB8 pixels). Inputs and outputs
//! cross the seam as host arrays ([`Ids`] in, [`Logits`] out): the logits of the query rows come
//! back every step and are sampled on the host with the generation's own streams, so a seed
//! means the same image on every engine up to float ties.
//!
//! Which engine runs is decided in one place: [`Backend`], parsed from
//! [`ModelSpec::device`](crate::pair::ModelSpec::device). With `cpu`, `cuda[:N]` and
//! `metal[:N]` the engine is candle's ([`Transformer::Candle`], [`Cache::Candle`],
//! [`Tokenizer::Candle`]). With `wgpu[:N]` (feature `wgpu`) the transformer's forwards, its KV
//! cache and the tokenizer's decoder are compute shaders on any GPU (`Transformer::Wgpu`,
//! `Cache::Wgpu`, `Tokenizer::Wgpu`); the encoder stays on the CPU. An engine adds a variant
//! here and nothing above this module changes.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::config::{ArpgConfig, VqConfig};
use crate::error::{Error, Result};
use crate::model::{Arpg, KvCache};
use crate::vq::{Tiling, VqModel};

/// Where the engine runs: `cpu`, `cuda[:N]`, `metal[:N]` (N: the device's ordinal) or
/// `wgpu[:N]` (N: the adapter's index in `arpg info --devices`; without it, the first hardware
/// adapter, else the first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda(usize),
    Metal(usize),
    Wgpu(Option<usize>),
}

impl Backend {
    /// Parses `cpu`, `cuda[:N]`, `metal[:N]` or `wgpu[:N]` (the CLI's `--device`, the app's
    /// Model menu).
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |m: String| Error::InvalidRequest(m);
        let (kind, ordinal) = match name.trim().split_once(':') {
            Some((k, n)) => (
                k,
                Some(
                    n.parse::<usize>()
                        .map_err(|_| bad(format!("bad device ordinal in `{name}`")))?,
                ),
            ),
            None => (name.trim(), None),
        };
        match kind.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(ordinal.unwrap_or(0))),
            "metal" => Ok(Self::Metal(ordinal.unwrap_or(0))),
            "wgpu" => Ok(Self::Wgpu(ordinal)),
            _ => Err(bad(format!(
                "unknown device `{name}` (expected cpu, cuda[:N], metal[:N] or wgpu[:N])"
            ))),
        }
    }

    /// Opens the candle device this backend's transformer computes on (the CPU for `wgpu`); an
    /// error says when this build or this machine lacks it.
    pub fn candle_device(&self) -> Result<Device> {
        let unavailable = |what: &str, e: candle_core::Error| {
            Error::InvalidRequest(format!(
                "{what} is not available in this build or on this machine: {e}"
            ))
        };
        match *self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| unavailable("CUDA", e)),
            Self::Metal(n) => Device::new_metal(n).map_err(|e| unavailable("Metal", e)),
            Self::Wgpu(_) => Ok(Device::Cpu),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
            Self::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
            Self::Wgpu(None) => write!(f, "wgpu"),
        }
    }
}

pub use crate::host::{Ids, Logits};

/// The ARPG transformer on one engine: the forwards the sampler, the edits and
/// `check-reference` call (each mirrors the [`Arpg`] method of the same name).
// One per loaded model, moved rather than copied on any hot path: the size of the candle
// variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Transformer {
    /// candle's model on a candle device (our CPU kernels on the CPU).
    Candle(Arpg),
    /// Compute shaders on a wgpu device (any GPU vendor), the candle model kept on the CPU for
    /// after a fault (see [`crate::gpu::engine`]).
    #[cfg(feature = "wgpu")]
    Wgpu(std::sync::Arc<crate::gpu::engine::TransformerOnGpu>),
}

impl From<Arpg> for Transformer {
    fn from(m: Arpg) -> Self {
        Self::Candle(m)
    }
}

impl From<&Arpg> for Transformer {
    fn from(m: &Arpg) -> Self {
        Self::Candle(m.clone())
    }
}

impl From<&Transformer> for Transformer {
    fn from(m: &Transformer) -> Self {
        m.clone()
    }
}

impl Transformer {
    /// `model` computing on `gpu` (weights uploaded, pipelines built now). Errors: a quantized
    /// model, a device whose limits cannot hold it, a device fault.
    #[cfg(feature = "wgpu")]
    pub fn on_gpu(model: Arpg, gpu: &crate::gpu::Gpu) -> Result<Self> {
        Ok(Self::Wgpu(std::sync::Arc::new(
            crate::gpu::engine::TransformerOnGpu::new(model, gpu)?,
        )))
    }

    /// The candle model this engine holds (on the CPU for `Wgpu`).
    fn cpu_model(&self) -> &Arpg {
        match self {
            Self::Candle(m) => m,
            #[cfg(feature = "wgpu")]
            Self::Wgpu(t) => t.cpu(),
        }
    }

    /// The GPU engine while it is up.
    #[cfg(feature = "wgpu")]
    fn gpu_up(&self) -> Option<&crate::gpu::engine::TransformerOnGpu> {
        match self {
            Self::Wgpu(t) if !t.is_down() => Some(t),
            _ => None,
        }
    }

    pub fn config(&self) -> &ArpgConfig {
        self.cpu_model().config()
    }

    /// The compute dtype of activations (f32 on the CPU and on wgpu).
    pub fn dtype(&self) -> DType {
        self.cpu_model().dtype()
    }

    /// The KV cache's dtype: [`Arpg::kv_dtype`] on candle's engine; on wgpu the weights'
    /// format.
    pub fn kv_dtype(&self) -> DType {
        match self {
            Self::Candle(m) => m.kv_dtype(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(_) => self.cpu_model().weights_dtype(),
        }
    }

    /// Where the transformer computes, for status lines: `CPU`, or the GPU's name.
    pub fn device_name(&self) -> String {
        match self {
            Self::Candle(m) if m.device().is_cpu() => "CPU".into(),
            Self::Candle(m) => format!("{:?}", m.device().location()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(t) => t.device(),
        }
    }

    /// Why the GPU engine stopped (then the transformer runs on the CPU), once.
    pub fn take_fault(&self) -> Option<String> {
        match self {
            Self::Candle(_) => None,
            #[cfg(feature = "wgpu")]
            Self::Wgpu(t) => t.take_fault(),
        }
    }

    /// The candle model, where this engine is candle's (training, benchmarks of its layers).
    pub fn candle(&self) -> Option<&Arpg> {
        match self {
            Self::Candle(m) => Some(m),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(_) => None,
        }
    }

    /// Quantizes the linear layers (see [`Arpg::quantize`]); `(quantized, total)` layers. The
    /// wgpu engine multiplies f32, f16 and bf16 weights only: an error there.
    pub fn quantize(&mut self, dtype: candle_core::quantized::GgmlDType) -> Result<(usize, usize)> {
        match self {
            Self::Candle(m) => Ok(m.quantize(dtype)?),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(_) => Err(Error::InvalidRequest(
                "quantized weights (--quant) do not run on wgpu: use --dtype f16 or bf16 there, \
                 or --quant on the CPU"
                    .into(),
            )),
        }
    }

    /// A KV cache for `batch` rows and `capacity` fed tokens (class slot included), on this
    /// engine.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<Cache> {
        #[cfg(feature = "wgpu")]
        if let Some(t) = self.gpu_up() {
            return Ok(Cache::Wgpu(Box::new(
                t.with(|g| g.new_cache(batch, capacity))?,
            )));
        }
        Ok(Cache::Candle(self.cpu_model().new_cache(batch, capacity)?))
    }

    /// One parallel step (see [`Arpg::step`]): feeds `ids` at RoPE rows `rows` (both
    /// `(B, m)`) into `cache` and returns the logits `(B, n, V)` of the cells at `query_rows`
    /// `(B, n)`, `n ≥ 1`.
    pub fn step(
        &self,
        cache: &mut Cache,
        ids: &Ids,
        rows: &Ids,
        query_rows: &Ids,
    ) -> Result<Logits> {
        if query_rows.len == 0 {
            return Err(Error::Internal("a parallel step with no query".into()));
        }
        match cache {
            Cache::Candle(c) => {
                let m = self.cpu_model();
                let dev = m.device();
                let logits = m
                    .step(
                        c,
                        &ids.to_tensor(dev)?,
                        &rows.to_tensor(dev)?,
                        &query_rows.to_tensor(dev)?,
                    )?
                    .ok_or_else(|| Error::Internal("a parallel step with no query".into()))?;
                Logits::from_tensor(&logits)
            }
            #[cfg(feature = "wgpu")]
            Cache::Wgpu(c) => self
                .gpu_engine()?
                .with(|g| g.step(c, ids, rows, query_rows)),
        }
    }

    /// The GPU engine a GPU cache belongs to.
    #[cfg(feature = "wgpu")]
    fn gpu_engine(&self) -> Result<&crate::gpu::engine::TransformerOnGpu> {
        match self {
            Self::Wgpu(t) => Ok(t),
            Self::Candle(_) => Err(Error::Internal(
                "a GPU KV cache given to a CPU transformer".into(),
            )),
        }
    }

    /// Feeds `ids` at `rows` (both `(B, m)`) into `cache` causally, as training reads a
    /// sequence (see [`Arpg::prefill`]).
    pub fn prefill(&self, cache: &mut Cache, ids: &Ids, rows: &Ids) -> Result<()> {
        match cache {
            Cache::Candle(c) => {
                let m = self.cpu_model();
                let dev = m.device();
                Ok(m.prefill(c, &ids.to_tensor(dev)?, &rows.to_tensor(dev)?)?)
            }
            #[cfg(feature = "wgpu")]
            Cache::Wgpu(c) => self.gpu_engine()?.with(|g| g.prefill(c, ids, rows)),
        }
    }

    /// What the model predicts at `query_rows` `(B, n)` after reading `ids` at `ctx_rows`
    /// `(B, T)` causally, every query seeing the whole context (see [`Arpg::predict`]).
    pub fn predict(&self, ids: &Ids, ctx_rows: &Ids, query_rows: &Ids) -> Result<Logits> {
        #[cfg(feature = "wgpu")]
        if let Some(t) = self.gpu_up() {
            return t.with(|g| g.predict(ids, ctx_rows, query_rows));
        }
        let m = self.cpu_model();
        let dev = m.device();
        Logits::from_tensor(&m.predict(
            &ids.to_tensor(dev)?,
            &ctx_rows.to_tensor(dev)?,
            &query_rows.to_tensor(dev)?,
        )?)
    }

    /// The reference's teacher-forced forward (see [`Arpg::forward_teacher`]): `ids` `(B, N)`
    /// raster tokens, `class_ids` the `B` embedding ids of the condition, `orders` `(B, N)`;
    /// logits `(B, N, V)` in shuffled order.
    pub fn forward_teacher(
        &self,
        ids: &Ids,
        class_ids: &[u32],
        orders: &Ids,
        causal: bool,
    ) -> Result<Logits> {
        #[cfg(feature = "wgpu")]
        if let Some(t) = self.gpu_up() {
            return t.with(|g| g.forward_teacher(ids, class_ids, orders, causal));
        }
        let m = self.cpu_model();
        let dev = m.device();
        let class_ids = Tensor::from_vec(class_ids.to_vec(), class_ids.len(), dev)?;
        Logits::from_tensor(&m.forward_teacher(
            &ids.to_tensor(dev)?,
            &class_ids,
            &orders.to_tensor(dev)?,
            causal,
        )?)
    }
}

/// The KV cache of a [`Transformer`], living on its engine. Not `Clone`: use
/// [`Cache::deep_clone`].
#[derive(Debug)]
pub enum Cache {
    Candle(KvCache),
    /// On the GPU of a [`Transformer::Wgpu`].
    #[cfg(feature = "wgpu")]
    Wgpu(Box<crate::gpu::arpg::GpuCache>),
}

impl Cache {
    /// Filled slots.
    pub fn len(&self) -> usize {
        match self {
            Self::Candle(c) => c.len(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An independent copy (forking a generation).
    pub fn deep_clone(&self) -> Result<Self> {
        match self {
            Self::Candle(c) => Ok(Self::Candle(c.deep_clone()?)),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(c) => Ok(Self::Wgpu(Box::new(c.deep_clone()?))),
        }
    }
}

/// The VQ tokenizer on one engine: RGB8 pixels ↔ tokens. The candle model is always there
/// ([`Tokenizer::model`]): its identity, its codebook (preview palettes), encoding and training
/// use it.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    Candle(VqModel),
    /// Decoding on a GPU through wgpu; encoding on the candle model. After a GPU fault (device
    /// lost, out of memory) every decode runs on the CPU and [`Tokenizer::take_fault`] says why.
    #[cfg(feature = "wgpu")]
    Wgpu {
        cpu: VqModel,
        gpu: std::sync::Arc<std::sync::Mutex<GpuDecode>>,
    },
}

/// The GPU decoder of a [`Tokenizer::Wgpu`], or why it stopped.
#[cfg(feature = "wgpu")]
#[derive(Debug)]
pub struct GpuDecode {
    decoder: Option<crate::gpu::vq_decoder::VqDecoder>,
    adapter: String,
    fault: Option<String>,
}

impl From<VqModel> for Tokenizer {
    fn from(m: VqModel) -> Self {
        Self::Candle(m)
    }
}

impl Tokenizer {
    /// The candle model (see the type's docs).
    pub fn model(&self) -> &VqModel {
        match self {
            Self::Candle(m) => m,
            #[cfg(feature = "wgpu")]
            Self::Wgpu { cpu, .. } => cpu,
        }
    }

    /// `vq` decoding on `gpu` (weights uploaded, pipelines built now). Errors: the device
    /// fails or its limits cannot hold the decoder.
    #[cfg(feature = "wgpu")]
    pub fn on_gpu(vq: VqModel, gpu: &crate::gpu::Gpu) -> Result<Self> {
        let decoder = crate::gpu::vq_decoder::VqDecoder::new(&vq, gpu)?;
        Ok(Self::Wgpu {
            cpu: vq,
            gpu: std::sync::Arc::new(std::sync::Mutex::new(GpuDecode {
                decoder: Some(decoder),
                adapter: gpu.adapter().name.clone(),
                fault: None,
            })),
        })
    }

    /// Whether this tokenizer decodes on `on` (and has not fallen back to the CPU).
    #[cfg(feature = "wgpu")]
    pub fn decodes_on(&self, on: &crate::gpu::Gpu) -> bool {
        match self {
            Self::Wgpu { .. } => self
                .gpu_state()
                .decoder
                .as_ref()
                .is_some_and(|d| d.is_on(on)),
            _ => false,
        }
    }

    /// Where decoding runs, for status lines: `CPU` or the GPU adapter's name.
    pub fn decoder_device(&self) -> String {
        match self {
            Self::Candle(_) => "CPU".into(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu { .. } => {
                let g = self.gpu_state();
                match g.decoder {
                    Some(_) => g.adapter.clone(),
                    None => "CPU (after a GPU fault)".into(),
                }
            }
        }
    }

    /// Why the GPU decoder stopped, once (then decoding runs on the CPU).
    pub fn take_fault(&self) -> Option<String> {
        match self {
            Self::Candle(_) => None,
            #[cfg(feature = "wgpu")]
            Self::Wgpu { .. } => self.gpu_state().fault.take(),
        }
    }

    /// The GPU decoder's state. A panic while it was held (caught by the app's worker) leaves
    /// no usable decoder: the lock is recovered, the decoder dropped and the fault recorded, so
    /// decoding goes on on the CPU.
    #[cfg(feature = "wgpu")]
    fn gpu_state(&self) -> std::sync::MutexGuard<'_, GpuDecode> {
        static NONE: std::sync::Mutex<GpuDecode> = std::sync::Mutex::new(GpuDecode {
            decoder: None,
            adapter: String::new(),
            fault: None,
        });
        let Self::Wgpu { gpu, .. } = self else {
            return NONE.lock().unwrap_or_else(|e| e.into_inner());
        };
        gpu.lock().unwrap_or_else(|poisoned| {
            let mut g = poisoned.into_inner();
            if g.decoder.take().is_some() {
                g.fault = Some(
                    "the GPU decoder stopped after an internal error; decoding on the CPU from \
                     now on"
                        .into(),
                );
            }
            gpu.clear_poison();
            g
        })
    }

    /// Runs `f` on the GPU decoder; `None` when there is none (any more). A GPU fault drops the
    /// decoder and records why; other errors are returned.
    #[cfg(feature = "wgpu")]
    fn with_gpu<T>(
        &self,
        f: impl FnOnce(&crate::gpu::vq_decoder::VqDecoder) -> Result<T>,
    ) -> Result<Option<T>> {
        if !matches!(self, Self::Wgpu { .. }) {
            return Ok(None);
        }
        let mut g = self.gpu_state();
        let Some(decoder) = g.decoder.as_ref() else {
            return Ok(None);
        };
        match f(decoder) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Gpu(msg)) => {
                g.decoder = None;
                g.fault = Some(format!("{msg}; decoding on the CPU from now on"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn config(&self) -> &VqConfig {
        self.model().config()
    }

    /// See [`VqModel::identity`].
    pub fn identity(&self) -> &str {
        self.model().identity()
    }

    /// Tokens `(B, rows·cols)` (raster order) → images `(B, 3, rows·p, cols·p)` on the CPU, f32,
    /// about `[-1, 1]`: the decoder's raw output. Mirrors `VQModel.decode_code`.
    pub fn decode(&self, tokens: &Ids, grid: (usize, usize)) -> Result<Tensor> {
        #[cfg(feature = "wgpu")]
        {
            let (rows, cols) = grid;
            let gpu = self.with_gpu(|d| {
                if rows > d.max_tile() || cols > d.max_tile() {
                    return Ok(None);
                }
                let mut planes = Vec::new();
                for b in 0..tokens.batch {
                    let row = &tokens.data[b * tokens.len..(b + 1) * tokens.len];
                    planes.extend(d.decode_planes(row, rows, cols)?);
                }
                Ok(Some(planes))
            })?;
            if let Some(Some(planes)) = gpu {
                let p = self.config().downsample();
                return Ok(Tensor::from_vec(
                    planes,
                    (tokens.batch, 3, rows * p, cols * p),
                    &Device::Cpu,
                )?);
            }
        }
        let m = self.model();
        Ok(m.decode(&tokens.to_tensor(m.device())?, grid)?
            .to_device(&Device::Cpu)?)
    }

    /// Tokens `rows x cols` (raster order) → RGB8 pixels `cols·p x rows·p`; large canvases in
    /// tiles (see [`Tiling`]). Mirrors `VQModel.decode_code`. The same tokens make the same image
    /// on every engine (within a level): a GPU decodes a canvas whole when it fits one pass, in
    /// the CPU's tiles when the CPU tiles it too and those fit, and otherwise leaves it to the
    /// CPU (a GPU with smaller tiles would blend another image).
    pub fn decode_rgb8(&self, tokens: &[u32], rows: usize, cols: usize) -> Result<Vec<u8>> {
        self.decode_rgb8_tiled(tokens, rows, cols, false)
    }

    /// [`Tokenizer::decode_rgb8`] for a live preview: a GPU also decodes a canvas wider than one
    /// pass, in tiles of its own size (a preview may differ from the final decode by a few
    /// levels; it is never saved).
    pub fn preview_rgb8(&self, tokens: &[u32], rows: usize, cols: usize) -> Result<Vec<u8>> {
        self.decode_rgb8_tiled(tokens, rows, cols, true)
    }

    #[cfg_attr(not(feature = "wgpu"), allow(unused_variables))]
    fn decode_rgb8_tiled(
        &self,
        tokens: &[u32],
        rows: usize,
        cols: usize,
        own_tiles: bool,
    ) -> Result<Vec<u8>> {
        let cpu = Tiling::default();
        #[cfg(feature = "wgpu")]
        {
            let p = self.config().downsample();
            let gpu = self.with_gpu(|d| {
                let t = d.max_tile();
                // Whole when it fits one pass, or in the CPU's own tiles when those fit.
                let fits = rows <= t && cols <= t;
                let tiling = if fits || (cpu.applies(rows, cols) && cpu.tile <= t) {
                    cpu
                } else if own_tiles {
                    Tiling {
                        tile: t,
                        overlap: (t / 4).max(1),
                        threshold: 0,
                    }
                } else {
                    return Ok(None);
                };
                crate::vq::decode_tiled(tokens, rows, cols, p, tiling, |sub, r, c| {
                    d.decode_rgb8(&sub, r, c)
                })
                .map(Some)
            })?;
            if let Some(Some(rgb)) = gpu {
                return Ok(rgb);
            }
        }
        Ok(self.model().decode_rgb8(tokens, rows, cols, cpu)?)
    }

    /// Decodes `tokens` (`rows x cols`) on the GPU straight into the cells `cells` marks of
    /// `texture` (see [`crate::gpu::vq_decoder::VqDecoder::decode_to_texture`]), when this
    /// tokenizer decodes on `gpu` and the canvas fits one pass. `Ok(false)`: not done (decode
    /// on the host instead). A GPU fault stops the GPU decoder as in
    /// [`Tokenizer::decode_rgb8`].
    #[cfg(feature = "wgpu")]
    pub fn decode_to_texture(
        &self,
        tokens: &[u32],
        rows: usize,
        cols: usize,
        cells: &[bool],
        texture: &wgpu::Texture,
        gpu: &crate::gpu::Gpu,
    ) -> Result<bool> {
        let done = self.with_gpu(|d| {
            if !d.is_on(gpu) || rows > d.max_tile() || cols > d.max_tile() {
                return Ok(false);
            }
            d.decode_to_texture(tokens, rows, cols, cells, texture)?;
            Ok(true)
        })?;
        Ok(done == Some(true))
    }

    /// RGB8 pixels `width x height` (whole tokens) → tokens in raster order; large images in
    /// tiles. Mirrors `VQModel.encode` and the codebook's nearest-code lookup.
    pub fn encode_rgb8(&self, rgb: &[u8], width: usize, height: usize) -> Result<Vec<u32>> {
        Ok(self
            .model()
            .encode_rgb8(rgb, width, height, Tiling::default())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (name, want) in [
            ("cpu", Backend::Cpu),
            ("CUDA", Backend::Cuda(0)),
            ("cuda:1", Backend::Cuda(1)),
            ("metal:0", Backend::Metal(0)),
        ] {
            let b = Backend::parse(name).expect(name);
            assert_eq!(b, want);
            assert_eq!(Backend::parse(&b.to_string()).expect("round trip"), b);
        }
        for bad in ["gpu", "cuda:x", "", "cpu:-1"] {
            assert!(Backend::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
