//! The CLI's flag groups: which weights and where to run them ([`ModelArgs`]), the sampler
//! ([`SamplerArgs`]) and inpainting ([`MaskArgs`]).

use anyhow::{bail, Result};
use arpg_core::document;
use arpg_core::edit::MaskOptions;
use arpg_core::generator::{SamplingDefaults, Settings};
use arpg_core::order::Order;
use arpg_core::pair::{ModelPair, ModelSpec};
use std::path::PathBuf;

/// Which weights to use and where to run them.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// ARPG checkpoint (`arpg_300m.pt`, ... or `.safetensors`), or an official one by name
    /// (arpg-l, arpg-xl, arpg-xxl: from the hub's cache, see `arpg fetch`, with the official
    /// tokenizer unless --vq is given); default: the shipped model.
    #[arg(long)]
    pub gpt: Option<PathBuf>,
    /// VQ tokenizer checkpoint (`vq_ds16_c2i.pt` or `.safetensors`, or vq-16 by name); default:
    /// the shipped one.
    #[arg(long)]
    pub vq: Option<PathBuf>,
    /// Config JSON for a custom ARPG checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// cpu, cuda[:N], metal[:N] or wgpu[:N] (the transformer and the tokenizer's decoder as
    /// compute shaders on any GPU; N from `arpg info --devices`, default the first hardware
    /// adapter; the encoder stays on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Transformer compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// The tokenizer's decode dtype on the CPU: f32 (exact), bf16 (CPUs with AVX512-BF16:
    /// about 4x faster, within a fraction of a level of f32) or auto [default: auto, bf16 with
    /// --dtype bf16 where the CPU has AVX512-BF16, else f32].
    #[arg(long, value_name = "DTYPE")]
    pub vq_dtype: Option<String>,
    /// Quantize the transformer's linear layers on load: q8_0 or q4k (faster and smaller on the
    /// CPU, slightly different images; default: exact weights).
    #[arg(long, value_name = "FORMAT")]
    pub quant: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The colour transparent pixels of an imported image are shown over: RRGGBB in hex,
    /// white or black [default: white].
    #[arg(long, value_name = "COLOR", value_parser = parse_background)]
    pub background: Option<[u8; 3]>,
    /// Images with a longer side are scaled down to it on import, keeping the aspect ratio
    /// (ARPG works at its model's resolution) [default: 4x the model's image side; 0 = never].
    #[arg(long, value_name = "PX")]
    pub max_side: Option<usize>,
}

impl ModelArgs {
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            gpt: self.gpt.clone(),
            vq: self.vq.clone(),
            config: self.config.clone(),
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            max_side: self.max_side,
            quant: self.quant.clone(),
            background: self.background,
            vq_dtype: self.vq_dtype.clone(),
        }
    }

    /// Loads the pair; official names resolve from the hub's cache.
    /// Loads the pair and says where it runs when that is not what was asked (notes on
    /// standard error).
    pub fn load(&self) -> Result<ModelPair> {
        let models = ModelPair::load(&crate::hub::resolve_names(self.spec())?)?;
        for notice in &models.notices {
            crate::errln!("note: {notice}");
        }
        Ok(models)
    }
}

/// Sampler flags. Unset flags take the model's recommended sampling (a `"sampling"` object in
/// its JSON config, see [`SamplingDefaults`]) and otherwise the defaults shown.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SamplerArgs {
    /// Parallel steps; at most the number of tokens to generate [default: the model's
    /// recommendation, else 16; fewer when fewer tokens are unknown].
    #[arg(long)]
    pub steps: Option<usize>,
    /// arccos or cosine [default: the model's recommendation, else arccos].
    #[arg(long)]
    pub schedule: Option<String>,
    /// Classifier-free guidance scale, 1 = off [default: the model's recommendation, else 3].
    #[arg(long)]
    pub cfg: Option<f64>,
    /// linear or constant [default: the model's recommendation, else linear].
    #[arg(long)]
    pub cfg_schedule: Option<String>,
    /// [default: the model's recommendation, else 1]
    #[arg(long)]
    pub temperature: Option<f64>,
    /// 0 = off [default: the model's recommendation, else 0].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// 1 = off [default: the model's recommendation, else 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Once this many cells are decided, draw each again given the others, so the first,
    /// context-free tokens agree with their positions; 0 = off, as in the reference [default:
    /// the model's recommendation, else 0].
    #[arg(long)]
    pub settle: Option<usize>,
    /// Polishing passes after the last step: tokens that have become improbable given the
    /// finished image are drawn again; 0 = off [default: the model's recommendation, else 0].
    #[arg(long)]
    pub polish: Option<usize>,
    /// The seed. Image i of a batch is the single image of seed image_seed(SEED, i) (the seed
    /// its PNG records); image 0 is the single image of SEED.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// random, raster or near-known (cells nearest the known content first; for edits).
    #[arg(long, default_value = "random")]
    pub order: String,
}

impl SamplerArgs {
    /// Settings for a task that generates `unknown` tokens: explicit flags, else the model's
    /// `recommended` settings, else [`Settings::default`].
    pub fn settings(&self, unknown: usize, recommended: &SamplingDefaults) -> Result<Settings> {
        let explicit = SamplingDefaults {
            steps: None,
            schedule: self.schedule.clone(),
            cfg_scale: self.cfg,
            cfg_schedule: self.cfg_schedule.clone(),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            settle: self.settle,
            polish: self.polish,
        };
        let mut s = explicit.apply(&recommended.apply(&Settings::default())?)?;
        s.steps = match self.steps {
            Some(0) => bail!("--steps must be at least 1"),
            Some(st) if st > unknown => bail!("--steps {st} exceeds the {unknown} tokens to generate: each step decides at least one token"),
            Some(st) => st,
            None => s.steps.min(unknown.max(1)),
        };
        s.seed = self.seed;
        s.validate()?;
        Ok(s)
    }

    pub fn order(&self) -> Result<Order> {
        Ok(self.order.parse()?)
    }
}

fn parse_background(text: &str) -> std::result::Result<[u8; 3], String> {
    document::parse_color(text)
}

/// Inpainting options.
#[derive(clap::Args, Debug, Clone)]
pub struct MaskArgs {
    /// Share of a token's pixels that must be masked for it to be regenerated (0 = any).
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f32,
    /// Grow the token mask by this many cells.
    #[arg(long, default_value_t = 0)]
    pub dilate: usize,
    /// Width in pixels of the blended band inside the mask edge.
    #[arg(long, default_value_t = 2)]
    pub feather: usize,
    /// auto: an image larger than the working size (--max-side) is inpainted by region: the
    /// mask's bounding box plus a context margin is scaled to the model's resolution, inpainted,
    /// scaled back and blended in, and every other pixel keeps its full resolution.
    /// full: the whole image is inpainted, scaled down to the working size first.
    #[arg(long, value_enum, default_value_t = Region::Auto)]
    pub region: Region,
}

impl MaskArgs {
    pub fn options(&self) -> MaskOptions {
        MaskOptions {
            threshold: self.threshold,
            dilate: self.dilate,
            feather: self.feather,
        }
    }
}

/// How much of the image an inpainting reads (see [`MaskArgs::region`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Auto,
    Full,
}
