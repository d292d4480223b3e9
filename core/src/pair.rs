//! The model pair both front ends work with: an ARPG transformer and the VQ tokenizer whose
//! codebook it predicts, with what the CLI and the app share around them: which checkpoints
//! ([`ModelSpec`]), the import policy (the working size), pictures as token canvases and token
//! canvases as pixels.

use std::path::PathBuf;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Tokenizer, Transformer};
use crate::canvas::TokenCanvas;
use crate::document::{self, Metadata, MetadataState, Picture, Transparency};
use crate::edit::{Edit, EditPlan, MaskOptions, Region};
use crate::error::{Error, Result};
use crate::loader::{self, quant, LoadedArpg};
use crate::pixels::{self, resize};

/// Which checkpoints to load and where to run them (the CLI's model flags, the app's model
/// menu).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// ARPG checkpoint (`arpg_300m.pt`, ... or `.safetensors`); `None`: the shipped model.
    pub gpt: Option<PathBuf>,
    /// VQ tokenizer checkpoint; `None`: the shipped one.
    pub vq: Option<PathBuf>,
    /// Config JSON for a custom ARPG checkpoint.
    pub config: Option<PathBuf>,
    /// `cpu`, `cuda[:N]`, `metal[:N]` or `wgpu[:N]`: the one place the engine is chosen (parsed by
    /// [`ModelSpec::backend`]).
    pub device: String,
    /// Transformer compute dtype: `f32`, `f16` or `bf16` (for the tokenizer see
    /// [`ModelSpec::vq_dtype`]).
    pub dtype: String,
    /// Longer side (px) imported images are scaled down to (see [`ModelPair::working_size`]);
    /// `None`: 4x the model's image side; 0: never.
    pub max_side: Option<usize>,
    /// Quantize the transformer's linear layers on load: `q8_0` or `q4k` (see [`quant`]);
    /// `None`: exact weights.
    #[serde(default)]
    pub quant: Option<String>,
    /// The colour transparent pixels of imported images are composited over (RGB8); `None`:
    /// [`document::DEFAULT_BACKGROUND`] (white).
    #[serde(default)]
    pub background: Option<[u8; 3]>,
    /// The tokenizer's decode dtype on the CPU: `f32` (exact) or `bf16` (AVX512-BF16 CPUs; see
    /// [`crate::vq::VqModel::set_decode_dtype`]); `None`: bf16 where the transformer is bf16
    /// and the CPU has AVX512-BF16, else f32 (see [`decode_dtype`]).
    #[serde(default)]
    pub vq_dtype: Option<String>,
}

impl ModelSpec {
    /// The shipped model on the CPU in f32.
    pub fn shipped() -> Self {
        Self {
            device: "cpu".into(),
            dtype: "f32".into(),
            ..Self::default()
        }
    }

    /// The engine [`ModelSpec::device`] names.
    pub fn backend(&self) -> Result<Backend> {
        Backend::parse(&self.device)
    }
}

/// Parses `f32`, `f16` or `bf16`.
pub fn dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        d => {
            return Err(Error::InvalidRequest(format!(
                "unknown dtype `{d}` (expected f32, f16 or bf16)"
            )))
        }
    })
}

/// The tokenizer's CPU decode dtype for a spec whose transformer computes in `transformer`:
/// [`ModelSpec::vq_dtype`] when given, else (`auto`) bf16 where the transformer is bf16 and the
/// bf16 decoder can run ([`crate::vq::VqModel::bf16_decode_supported`]: the user asked for the
/// fast mode), else f32. Errors: an unknown name, or bf16 asked for where it cannot run.
pub fn decode_dtype(spec: &ModelSpec, transformer: DType) -> Result<DType> {
    let supported = crate::vq::VqModel::bf16_decode_supported();
    match spec
        .vq_dtype
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("auto") => Ok(if transformer == DType::BF16 && supported {
            DType::BF16
        } else {
            DType::F32
        }),
        Some("f32") => Ok(DType::F32),
        Some("bf16") if supported => Ok(DType::BF16),
        Some("bf16") => Err(Error::InvalidRequest(
            "--vq-dtype bf16 needs the avx512-bf16 kernel tier (a CPU with AVX512-BF16, not \
             forced lower by ARPG_KERNEL), which this process lacks: use --vq-dtype f32"
                .into(),
        )),
        Some(d) => Err(Error::InvalidRequest(format!(
            "unknown --vq-dtype `{d}` (expected f32, bf16 or auto)"
        ))),
    }
}

/// The transformer and the tokenizer on `backend`'s engine, with what the user should know
/// about it. A GPU that cannot be used leaves both on the CPU with a notice (one that cannot
/// hold the transformer leaves only the transformer there); an adapter index this machine does
/// not have, or a quantized transformer on wgpu, is an error (a flag to change, not a fault).
#[cfg_attr(not(feature = "wgpu"), allow(unused_variables))]
fn engines_on(
    backend: Backend,
    arpg: Transformer,
    vq: crate::vq::VqModel,
    shared: Option<&SharedGpu>,
) -> Result<(Transformer, Tokenizer, Vec<String>)> {
    Ok(match backend {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(index) => {
            let opened = match (index, shared) {
                (None, Some(gpu)) => Ok(gpu.clone()),
                _ => crate::gpu::Gpu::open_named(index),
            };
            let gpu = match opened {
                Ok(gpu) => gpu,
                Err(e @ Error::InvalidRequest(_)) => return Err(e),
                Err(e) => {
                    return Ok((
                        arpg,
                        Tokenizer::from(vq),
                        vec![format!("{e}; everything runs on the CPU")],
                    ))
                }
            };
            let a = gpu.adapter().clone();
            let mut notices = Vec::new();
            let transformer = match arpg.candle().cloned() {
                Some(cpu) => match Transformer::on_gpu(cpu, &gpu) {
                    Ok(t) => Some(t),
                    Err(e @ Error::InvalidRequest(_)) => return Err(e),
                    Err(e) => {
                        notices.push(format!("{e}; the transformer runs on the CPU"));
                        None
                    }
                },
                None => None,
            };
            let tokenizer = match Tokenizer::on_gpu(vq.clone(), &gpu) {
                Ok(t) => Some(t),
                Err(e) => {
                    notices.push(format!("{e}; the tokenizer decodes on the CPU"));
                    None
                }
            };
            let on = match (transformer.is_some(), tokenizer.is_some()) {
                (true, true) => "the transformer and the decoder run",
                (true, false) => "the transformer runs",
                (false, true) => "the decoder runs",
                (false, false) => "",
            };
            if !on.is_empty() {
                notices.insert(
                    0,
                    format!(
                        "{on} on {} (wgpu {}); the encoder runs on the CPU",
                        a.name, a.backend
                    ),
                );
                if a.software {
                    notices.push(format!(
                        "{} is a software renderer: it computes correctly, but slower than the \
                         CPU path",
                        a.name
                    ));
                }
            }
            (
                transformer.unwrap_or(arpg),
                tokenizer.unwrap_or_else(|| Tokenizer::from(vq)),
                notices,
            )
        }
        #[cfg(not(feature = "wgpu"))]
        Backend::Wgpu(_) => (
            arpg,
            Tokenizer::from(vq),
            vec!["this build has no wgpu support; everything runs on the CPU".into()],
        ),
        _ => (arpg, Tokenizer::from(vq), Vec::new()),
    })
}

/// A GPU device shared with the engine (see [`ModelPair::load_on`]).
#[cfg(feature = "wgpu")]
pub type SharedGpu = crate::gpu::Gpu;
/// Without the `wgpu` feature there is no GPU to share.
#[cfg(not(feature = "wgpu"))]
pub type SharedGpu = std::convert::Infallible;

/// A loaded transformer and tokenizer.
pub struct ModelPair {
    pub arpg: LoadedArpg,
    pub vq: Tokenizer,
    /// See [`ModelSpec::max_side`].
    pub max_side: Option<usize>,
    /// See [`ModelSpec::background`].
    pub background: [u8; 3],
    /// What the user should know about where the models run (a GPU that could not be used and
    /// the CPU taking over, a software renderer, the transformer staying on the CPU); the CLI
    /// prints them, the app shows them.
    pub notices: Vec<String>,
}

/// Largest mean difference (8-bit levels) in any token cell between an older PNG's pixels and
/// the decode of its stored tokens for the tokens to be trusted. A generated image matches to
/// rounding; a region painted over in another program differs by far more.
pub const LEGACY_TOLERANCE: f64 = 12.0;

impl ModelPair {
    /// Loads the pair a spec names; errors name the flag or file to change.
    pub fn load(spec: &ModelSpec) -> Result<Self> {
        Self::load_on(spec, None)
    }

    /// [`ModelPair::load`] where `wgpu` without an adapter index means `shared`, a device
    /// someone else opened (the desktop app's renderer), when given.
    pub fn load_on(spec: &ModelSpec, shared: Option<&SharedGpu>) -> Result<Self> {
        let backend = spec.backend()?;
        let device = backend.candle_device()?;
        let dtype = dtype(&spec.dtype)?;
        let gpt = spec.gpt.clone().unwrap_or_else(crate::shipped::arpg_path);
        let vq_path = spec.vq.clone().unwrap_or_else(crate::shipped::vq_path);
        for (p, what) in [(&gpt, "--gpt"), (&vq_path, "--vq")] {
            if !p.exists() {
                return Err(Error::InvalidRequest(format!(
                    "{} does not exist (pass {what} to choose a checkpoint)",
                    p.display()
                )));
            }
        }
        let explicit = spec
            .config
            .as_deref()
            .map(|p| loader::config_from_json(p, "gpt"))
            .transpose()?;
        let q = spec.quant.as_deref().map(quant).transpose()?;
        // The decoder's bf16 mode is a CPU mode: on a GPU (and its CPU fallback) the tokenizer
        // decodes in f32, so one canvas never mixes precisions.
        let vq_dtype = if backend == Backend::Cpu {
            decode_dtype(spec, dtype)?
        } else {
            DType::F32
        };
        let mut arpg = loader::load_arpg(&gpt, explicit, dtype, &device)?;
        if spec.gpt.is_none() {
            arpg.name = "shipped model".into();
        }
        if let (Some(q), Some(name)) = (q, spec.quant.as_deref()) {
            arpg.model.quantize(q)?;
            arpg.name = format!("{} ({name})", arpg.name);
            arpg.identity = loader::with_quant(&arpg.identity, &name.to_ascii_lowercase());
        }
        let mut vq = loader::load_vq(&vq_path, None, &device)?;
        vq.set_decode_dtype(vq_dtype)?;
        let mut cpu_only = Vec::new();
        let asked_bf16 = spec
            .vq_dtype
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case("bf16"));
        if backend != Backend::Cpu && asked_bf16 {
            cpu_only.push(format!(
                "--vq-dtype bf16 is a CPU mode: on {backend} the tokenizer decodes in f32"
            ));
        }
        let (model, vq, mut notices) = engines_on(backend, arpg.model, vq, shared)?;
        notices.extend(cpu_only);
        arpg.model = model;
        if vq.config().codebook_size != arpg.config.vocab_size {
            return Err(Error::InvalidRequest(format!(
                "the tokenizer has {} codes but the transformer expects {}: they do not belong \
                 together",
                vq.config().codebook_size,
                arpg.config.vocab_size
            )));
        }
        Ok(Self {
            arpg,
            vq,
            max_side: spec.max_side,
            background: spec.background.unwrap_or(document::DEFAULT_BACKGROUND),
            notices,
        })
    }

    /// The colour transparent pixels of imported images are composited over (RGB8).
    pub fn background(&self) -> [u8; 3] {
        self.background
    }

    /// Pixels per token side.
    pub fn patch(&self) -> usize {
        self.vq.config().downsample()
    }

    /// Cells per side of the model's grid.
    pub fn grid(&self) -> usize {
        self.arpg.config.grid_size()
    }

    /// The longest side (px) an image is worked on whole (0: no limit): `max_side`, by default
    /// 4x the model's image side. Larger images are scaled on import or inpainted by region.
    pub fn working_limit(&self) -> usize {
        self.max_side.unwrap_or(4 * self.grid() * self.patch())
    }

    /// The size an imported `w x h` image is scaled down to, `None` when it is kept: its longer
    /// side is brought to `max_side` (default 4x the model's image side, e.g. 128 px for the
    /// shipped model, 1024 px for the official ones; 0 = never scale).
    pub fn working_size(&self, w: usize, h: usize) -> Option<(usize, usize)> {
        let model_side = self.grid() * self.patch();
        let limit = self.working_limit();
        if limit == 0 || w.max(h) <= limit {
            return None;
        }
        // The shorter side never drops below the model's side (a panorama keeps a canvas the
        // model's windows fit in; its longer side then exceeds the limit).
        let s = (limit as f64 / w.max(h) as f64).max(model_side as f64 / w.min(h) as f64);
        if s >= 1.0 {
            return None;
        }
        let scaled = |v: usize| ((v as f64 * s).round() as usize).max(1);
        Some((scaled(w), scaled(h)))
    }

    /// A picture scaled down to the working size, with a sentence saying so (`None`: kept). A
    /// canvas that carries its tokens is never scaled; a scaled picture keeps only its class.
    pub fn scaled_to_working_size(
        &self,
        pic: Picture,
        name: &str,
    ) -> Result<(Picture, Option<String>)> {
        if carries_tokens(&pic) {
            return Ok((pic, None));
        }
        let Some((w, h)) = self.working_size(pic.width, pic.height) else {
            return Ok((pic, None));
        };
        let note = format!(
            "{name} is {}x{}; scaled down to {w}x{h} to work at the model's resolution",
            pic.width, pic.height
        );
        let class = pic.metadata.as_ref().and_then(|m| m.class);
        let rgb = resize::<image::Rgb<u8>>(pic.rgb, (pic.width, pic.height), (w, h))?;
        let scaled = Picture {
            width: w,
            height: h,
            rgb,
            // Only the class still holds for the scaled pixels.
            metadata: class.map(|c| Metadata {
                class: Some(c),
                ..Metadata::empty()
            }),
            metadata_state: MetadataState::Absent,
            transparency: match pic.transparency {
                Some(t) => Some(Transparency {
                    clear: resize::<image::Luma<u8>>(t.clear, (pic.width, pic.height), (w, h))?
                        .into_iter()
                        // A scaled pixel is wholly transparent when most of its source was.
                        .map(|v| if v > 127 { 255 } else { 0 })
                        .collect(),
                    ..t
                }),
                None => None,
            },
        };
        Ok((scaled, Some(note)))
    }

    /// Parses a class as an index or a class name (the shipped model's, or ImageNet's for a
    /// 1000-class model).
    pub fn class(&self, s: &str) -> Result<usize> {
        let n = self.arpg.config.num_classes;
        let names = crate::dataset::CLASS_NAMES;
        let c = match s.parse::<usize>() {
            Ok(c) => c,
            Err(_) if n == 1000 => crate::imagenet::class_of(s).map_err(Error::InvalidRequest)?,
            Err(_) => names
                .iter()
                .position(|name| *name == s)
                .filter(|_| n == names.len())
                .ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "unknown class `{s}` (give an index 0..{})",
                        n - 1
                    ))
                })?,
        };
        if c >= n {
            return Err(Error::InvalidRequest(format!(
                "class {c} is out of range: this model has classes 0..{}",
                n - 1
            )));
        }
        Ok(c)
    }

    /// Tokens → RGB8 (`cols·patch x rows·patch`); large canvases in tiles (see [`crate::vq::Tiling`]).
    pub fn decode(&self, canvas: &TokenCanvas) -> Result<Vec<u8>> {
        self.vq
            .decode_rgb8(&canvas.tokens()?, canvas.rows, canvas.cols)
    }

    /// The metadata of a finished canvas made by this pair.
    pub fn metadata(
        &self,
        canvas: &TokenCanvas,
        class: Option<usize>,
        settings: Option<&crate::generator::Settings>,
    ) -> Result<Metadata> {
        let mut meta = Metadata::new(canvas, class, settings, self.patch(), &self.arpg.name)?;
        meta.tokenizer = Some(self.vq.identity().to_string());
        Ok(meta)
    }

    /// A picture as a token canvas: its own tokens when its ARPG metadata is trusted for these
    /// pixels, otherwise the VQ encoding of its pixels. A size that is not a whole number of
    /// tokens is padded right and bottom by repeating the edge (the padding's cells are ordinary
    /// known cells; outputs are cropped back), so no pixel is lost.
    pub fn canvas_of(&self, pic: &Picture) -> Result<Imported> {
        let p = self.patch();
        let (w, h) = (pic.width, pic.height);
        let (pw, ph) = (w.div_ceil(p) * p, h.div_ceil(p) * p);
        let rgb = if (pw, ph) == (w, h) {
            pic.rgb.clone()
        } else {
            pixels::pad_edge(&pic.rgb, w, h, 3, pw, ph)
        };
        let (rows, cols) = (ph / p, pw / p);
        let mut warning = pic.metadata_warning();
        if let Some(m) = &pic.metadata {
            let other_tokenizer = m
                .tokenizer
                .as_deref()
                .filter(|id| *id != self.vq.identity());
            let usable = other_tokenizer.is_none()
                && m.patch == p
                && m.grid == [rows, cols]
                && m.tokens
                    .iter()
                    .all(|&t| (t as usize) < self.arpg.config.vocab_size);
            if usable {
                let canvas = TokenCanvas::from_tokens(rows, cols, &m.tokens)?;
                match pic.metadata_state {
                    MetadataState::Verified if m.tokenizer.is_some() => {
                        return Ok(Imported::new(canvas, rgb, w, h, None));
                    }
                    MetadataState::Verified | MetadataState::Unverified => {
                        // Written before pixel digests or tokenizer identities: trust the tokens
                        // only if this tokenizer still decodes them to these pixels (an edit
                        // elsewhere, or another tokenizer's codes, would show).
                        if self.tokens_match_pixels(&canvas, &rgb, w, h)? {
                            return Ok(Imported::new(canvas, rgb, w, h, None));
                        }
                        warning = Some(if pic.metadata_state == MetadataState::Verified {
                            "the image's stored tokens do not decode to its pixels with this \
                             tokenizer (made with another one?): they are encoded again from \
                             the pixels"
                                .into()
                        } else {
                            "the image's pixels no longer match its stored tokens (edited \
                             elsewhere?): the tokens are encoded again from the pixels"
                                .into()
                        });
                    }
                    _ => {}
                }
            } else if let Some(id) = other_tokenizer.filter(|_| carries_tokens(pic)) {
                warning = Some(format!(
                    "the image's stored tokens belong to another tokenizer ({id}; this one is \
                     {}): they are encoded again from the pixels with this one",
                    self.vq.identity()
                ));
            } else if carries_tokens(pic) {
                warning = Some(format!(
                    "the image's stored tokens belong to another tokenizer ({}px tokens, \
                     {}x{} grid): they are encoded again with this one",
                    m.patch, m.grid[0], m.grid[1]
                ));
            }
        }
        let tokens = self.vq.encode_rgb8(&rgb, pw, ph)?;
        Ok(Imported::new(
            TokenCanvas::from_tokens(rows, cols, &tokens)?,
            rgb,
            w,
            h,
            warning,
        ))
    }

    /// Inpainting by region (see [`Region`]), the one recipe of the CLI and the app: the
    /// region around `mask` (one byte per pixel) of the `w x h` image `rgb`, scaled to the
    /// model's resolution, and the plan that inpaints it there. After its run,
    /// [`Region::blend_back`] puts the result into the full image.
    pub fn region_plan(
        &self,
        rgb: &[u8],
        (w, h): (usize, usize),
        mask: &[u8],
        options: MaskOptions,
    ) -> Result<(Region, EditPlan)> {
        let p = self.patch();
        let region = Region::around(mask, w, h, self.grid() * p, options.feather)?;
        let [sw, sh] = region.scaled;
        let (cw, ch) = (region.width, region.height);
        let small = Picture {
            width: sw,
            height: sh,
            rgb: resize::<image::Rgb<u8>>(region.crop(rgb, w, 3), (cw, ch), (sw, sh))?,
            metadata: None,
            metadata_state: MetadataState::Absent,
            transparency: None,
        };
        let small_mask = region.scaled_mask(mask, w);
        let imported = self.canvas_of(&small)?;
        let (pw, ph) = (imported.canvas.cols * p, imported.canvas.rows * p);
        let plan = Edit::Inpaint {
            mask: pixels::pad_zero(&small_mask, sw, sh, pw, ph),
            options,
        }
        .plan(imported.source(p))?;
        Ok((region, plan))
    }

    /// Whether `canvas` decodes to `rgb` (padded to whole tokens; `w x h` of it compared) within
    /// [`LEGACY_TOLERANCE`] in every token cell.
    fn tokens_match_pixels(
        &self,
        canvas: &TokenCanvas,
        rgb: &[u8],
        w: usize,
        h: usize,
    ) -> Result<bool> {
        let decoded = self.decode(canvas)?;
        let p = self.patch();
        let pw = canvas.cols * p;
        for r in 0..canvas.rows {
            for c in 0..canvas.cols {
                let (mut sum, mut n) = (0u64, 0u64);
                for y in r * p..((r + 1) * p).min(h) {
                    for x in c * p..((c + 1) * p).min(w) {
                        for k in 0..3 {
                            let i = (y * pw + x) * 3 + k;
                            sum += decoded[i].abs_diff(rgb[i]) as u64;
                            n += 1;
                        }
                    }
                }
                if n > 0 && sum as f64 / n as f64 > LEGACY_TOLERANCE {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Whether a picture is an ARPG canvas whose stored tokens stand for its pixels (or, written
/// before pixel digests, may): such a canvas is the user's document at its own size, never
/// scaled to the working size nor inpainted by region (its tokens would be lost).
pub fn carries_tokens(pic: &Picture) -> bool {
    matches!(
        pic.metadata_state,
        MetadataState::Verified | MetadataState::Unverified
    )
}

/// An image as a token canvas (see [`ModelPair::canvas_of`]).
#[derive(Debug, Clone)]
pub struct Imported {
    pub canvas: TokenCanvas,
    /// The pixels the canvas stands for, padded to whole tokens (RGB8).
    pub rgb: Vec<u8>,
    /// The image's own size, before padding.
    pub width: usize,
    pub height: usize,
    /// Why the image's stored tokens were not used, when they were not.
    pub warning: Option<String>,
}

impl Imported {
    fn new(
        canvas: TokenCanvas,
        rgb: Vec<u8>,
        width: usize,
        height: usize,
        warning: Option<String>,
    ) -> Self {
        Self {
            canvas,
            rgb,
            width,
            height,
            warning,
        }
    }

    /// Pixels of padding right and bottom.
    pub fn padding(&self, patch: usize) -> (usize, usize) {
        (
            self.canvas.cols * patch - self.width,
            self.canvas.rows * patch - self.height,
        )
    }

    /// The source of an edit of this image (see [`crate::edit::Edit::plan`]).
    pub fn source(&self, patch: usize) -> crate::edit::Source<'_> {
        crate::edit::Source {
            canvas: &self.canvas,
            rgb: Some(&self.rgb),
            size: [self.width, self.height],
            patch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_dtype_follows_the_flag_or_the_transformer() {
        let spec = |d: Option<&str>| ModelSpec {
            vq_dtype: d.map(str::to_string),
            ..ModelSpec::shipped()
        };
        let ok = crate::vq::VqModel::bf16_decode_supported();
        assert_eq!(decode_dtype(&spec(None), DType::F32).ok(), Some(DType::F32));
        assert_eq!(
            decode_dtype(&spec(Some("F32")), DType::BF16).ok(),
            Some(DType::F32)
        );
        let auto = if ok { DType::BF16 } else { DType::F32 };
        assert_eq!(decode_dtype(&spec(None), DType::BF16).ok(), Some(auto));
        assert_eq!(
            decode_dtype(&spec(Some("auto")), DType::BF16).ok(),
            Some(auto)
        );
        match decode_dtype(&spec(Some("bf16")), DType::F32) {
            Ok(d) => assert!(ok && d == DType::BF16),
            Err(e) => assert!(!ok && e.to_string().contains("--vq-dtype"), "{e}"),
        }
        let err = decode_dtype(&spec(Some("f16")), DType::F32).expect_err("no f16 decode");
        assert!(err.to_string().contains("--vq-dtype `f16`"), "{err}");
    }
}
