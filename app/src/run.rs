//! Generation commands shared by the CLI: model loading, sampler flags, and the
//! generate / inpaint / outpaint / expand / encode / decode pipelines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arpg_core::generator::{Generation, OrderMode, Request, SamplingDefaults, Settings};
use arpg_core::loader::{self, LoadedArpg};
use arpg_core::schedule::{CfgSchedule, Schedule};
use arpg_core::tasks::{self, CanvasJob, TokenCanvas};
use arpg_core::vq::{self, VqModel};
use candle_core::{DType, Tensor};

use crate::document::{self, Metadata, Picture};

/// Which weights to use and where to run them.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// ARPG checkpoint (`arpg_300m.pt`, ... or `.safetensors`); default: the shipped model.
    #[arg(long)]
    pub gpt: Option<PathBuf>,
    /// VQ tokenizer checkpoint (`vq_ds16_c2i.pt` or `.safetensors`); default: the shipped one.
    #[arg(long)]
    pub vq: Option<PathBuf>,
    /// Config JSON for a custom ARPG checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Transformer compute dtype: f32, f16 or bf16 (the tokenizer always runs in f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Steps when `--steps` is not given.
pub const DEFAULT_STEPS: usize = 16;

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
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// random, raster.
    #[arg(long, default_value = "random")]
    pub order: String,
}

/// The sampler defaults of the CLI and the app when a model recommends nothing.
pub fn default_settings() -> Settings {
    Settings {
        steps: DEFAULT_STEPS,
        schedule: Schedule::Arccos,
        cfg_scale: 3.0,
        cfg_schedule: CfgSchedule::Linear,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
        settle: 0,
        polish: 0,
    }
}

impl SamplerArgs {
    /// Settings for a task that generates `unknown` tokens: explicit flags, else the model's
    /// `recommended` settings, else [`default_settings`].
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
        let mut s = explicit.apply(&recommended.apply(&default_settings())?)?;
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

    pub fn order(&self) -> Result<OrderMode> {
        match self.order.as_str() {
            "random" => Ok(OrderMode::Random),
            "raster" => Ok(OrderMode::Raster),
            o => bail!("unknown order `{o}` (expected random or raster)"),
        }
    }
}

/// Parses `f32`, `f16` or `bf16`.
pub fn dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        d => bail!("unknown dtype `{d}` (expected f32, f16 or bf16)"),
    })
}

/// Parses `cpu`, `cuda[:N]` or `metal[:N]`.
pub fn device(name: &str) -> Result<candle_core::Device> {
    use candle_core::Device;
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>()
                .with_context(|| format!("bad device ordinal in `{name}`"))?,
        ),
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(ordinal)
            .with_context(|| "CUDA is not available in this build or on this machine"),
        "metal" => Device::new_metal(ordinal)
            .with_context(|| "Metal is not available in this build or on this machine"),
        _ => bail!("unknown device `{name}` (expected cpu, cuda or metal)"),
    }
}

/// A loaded transformer and tokenizer.
pub struct Models {
    pub arpg: LoadedArpg,
    pub vq: VqModel,
}

impl Models {
    pub fn load(args: &ModelArgs) -> Result<Self> {
        let device = device(&args.device)?;
        let dtype = dtype(&args.dtype)?;
        let gpt = args
            .gpt
            .clone()
            .unwrap_or_else(arpg_core::shipped::arpg_path);
        let vq_path = args.vq.clone().unwrap_or_else(arpg_core::shipped::vq_path);
        for (p, what) in [(&gpt, "--gpt"), (&vq_path, "--vq")] {
            if !p.exists() {
                bail!(
                    "{} does not exist (pass {what} to choose a checkpoint)",
                    p.display()
                );
            }
        }
        let explicit = args
            .config
            .as_deref()
            .map(|p| loader::config_from_json(p, "gpt"))
            .transpose()?;
        let mut arpg = loader::load_arpg(&gpt, explicit, dtype, &device)?;
        if args.gpt.is_none() {
            arpg.name = "shipped model".into();
        }
        let vq = loader::load_vq(&vq_path, None, &device)?;
        if vq.config().codebook_size != arpg.config.vocab_size {
            bail!(
                "the tokenizer has {} codes but the transformer expects {}: they do not belong together",
                vq.config().codebook_size,
                arpg.config.vocab_size
            );
        }
        Ok(Self { arpg, vq })
    }

    pub fn patch(&self) -> usize {
        self.vq.config().downsample()
    }

    pub fn grid(&self) -> usize {
        self.arpg.config.grid_size()
    }

    /// Parses a class as an index or, for the shipped model, a class name.
    pub fn class(&self, s: &str) -> Result<usize> {
        let n = self.arpg.config.num_classes;
        let c = match s.parse::<usize>() {
            Ok(c) => c,
            Err(_) => arpg_core::dataset::CLASS_NAMES
                .iter()
                .position(|name| *name == s)
                .filter(|_| n == arpg_core::dataset::CLASS_NAMES.len())
                .with_context(|| format!("unknown class `{s}` (give an index 0..{})", n - 1))?,
        };
        if c >= n {
            bail!(
                "class {c} is out of range: this model has classes 0..{}",
                n - 1
            );
        }
        Ok(c)
    }

    /// Tokens → RGB8 (`rows*patch x cols*patch`).
    pub fn decode(&self, canvas: &TokenCanvas) -> Result<Vec<u8>> {
        let tokens = Tensor::from_vec(
            canvas.tokens()?,
            (1, canvas.rows * canvas.cols),
            self.vq.device(),
        )?;
        let image = self.vq.decode(&tokens, (canvas.rows, canvas.cols))?;
        Ok(vq::to_rgb8(&image)?.remove(0))
    }

    /// A picture as a token canvas: its own tokens when it carries ARPG metadata of this
    /// tokenizer's patch size, otherwise the VQ encoding of its centre crop to whole tokens.
    /// Returns the canvas and the pixels it stands for.
    pub fn canvas_of(&self, pic: &Picture) -> Result<(TokenCanvas, Vec<u8>)> {
        let p = self.patch();
        if let Some(m) = &pic.metadata {
            if m.patch == p
                && m.grid[0] * p == pic.height
                && m.grid[1] * p == pic.width
                && m.tokens
                    .iter()
                    .all(|&t| (t as usize) < self.arpg.config.vocab_size)
            {
                return Ok((
                    TokenCanvas::from_tokens(m.grid[0], m.grid[1], &m.tokens)?,
                    pic.rgb.clone(),
                ));
            }
        }
        let (rows, cols) = (pic.height / p, pic.width / p);
        if rows == 0 || cols == 0 {
            bail!(
                "the image ({}x{}) is smaller than one {p}px token",
                pic.width,
                pic.height
            );
        }
        let (w, h) = (cols * p, rows * p);
        let rgb = document::crop(
            &pic.rgb,
            pic.width,
            (pic.width - w) / 2,
            (pic.height - h) / 2,
            w,
            h,
        );
        let image = vq::from_rgb8(&rgb, h, w, self.vq.device())?;
        let tokens: Vec<u32> = self.vq.encode(&image)?.flatten_all()?.to_vec1()?;
        Ok((TokenCanvas::from_tokens(rows, cols, &tokens)?, rgb))
    }

    pub fn metadata(
        &self,
        canvas: &TokenCanvas,
        class: Option<usize>,
        settings: &Settings,
    ) -> Result<Metadata> {
        Metadata::new(canvas, class, settings, self.patch(), &self.arpg.name)
    }

    /// Decodes a finished canvas and writes it as a PNG with metadata.
    pub fn save(
        &self,
        path: &Path,
        canvas: &TokenCanvas,
        class: Option<usize>,
        settings: &Settings,
        rgb: Option<Vec<u8>>,
    ) -> Result<()> {
        let rgb = match rgb {
            Some(rgb) => rgb,
            None => self.decode(canvas)?,
        };
        let p = self.patch();
        document::write(
            path,
            canvas.cols * p,
            canvas.rows * p,
            &rgb,
            Some(&self.metadata(canvas, class, settings)?),
        )
    }
}

fn progress(total: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// `generate`: B images of a class from scratch.
pub fn generate(
    models: &Models,
    class: usize,
    batch: usize,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<Vec<PathBuf>> {
    if batch == 0 || batch > 64 {
        bail!("--batch {batch} must be within 1..=64");
    }
    let g = models.grid();
    let settings = sampler.settings(g * g, &models.arpg.sampling)?;
    let request = Request {
        classes: vec![Some(class); batch],
        settings: settings.clone(),
        order: sampler.order()?,
        known: None,
    };
    let mut gen = Generation::new(&models.arpg.model, &request)?;
    let bar = progress(gen.total_steps() as u64, quiet, "generate");
    while gen.step()?.is_some() {
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut written = Vec::new();
    for (i, tokens) in gen.finished_tokens()?.into_iter().enumerate() {
        let path = if batch == 1 {
            out.to_path_buf()
        } else {
            numbered(out, i)
        };
        let canvas = TokenCanvas::from_tokens(g, g, &tokens)?;
        models.save(&path, &canvas, Some(class), &settings, None)?;
        written.push(path);
    }
    Ok(written)
}

/// `out.png` → `out_3.png`.
fn numbered(path: &Path, i: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    path.with_file_name(format!("{stem}_{i}.{ext}"))
}

/// Runs a canvas job to the end with a progress bar over the cells.
fn fill(
    models: &Models,
    canvas: TokenCanvas,
    class: Option<usize>,
    settings: &Settings,
    sampler: &SamplerArgs,
    quiet: bool,
    what: &str,
) -> Result<TokenCanvas> {
    let total = canvas.unknown_count() as u64;
    let mut job = CanvasJob::new(
        &models.arpg.model,
        canvas,
        class,
        settings.clone(),
        sampler.order()?,
    )?;
    let bar = progress(total, quiet, what);
    while let Some(step) = job.step()? {
        bar.set_position(total - step.remaining as u64);
        bar.set_message(format!(
            "window {} step {}/{}",
            step.window_index + 1,
            step.step + 1,
            step.window_steps
        ));
    }
    bar.finish_and_clear();
    Ok(job.canvas().clone())
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
}

/// `inpaint`: regenerate the white part of a mask, keep everything else.
#[allow(clippy::too_many_arguments)] // one argument per CLI flag group; a struct would only rename them
pub fn inpaint(
    models: &Models,
    image: &Path,
    mask: &Path,
    class: Option<usize>,
    sampler: &SamplerArgs,
    opts: &MaskArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let pic = document::read(image)?;
    let (mw, mh, mask_px) = document::read_mask(mask)?;
    if (mw, mh) != (pic.width, pic.height) {
        bail!(
            "the mask is {mw}x{mh} but the image is {}x{}: they must be the same size",
            pic.width,
            pic.height
        );
    }
    if !(0.0..1.0).contains(&opts.threshold) {
        bail!("--threshold {} must be within [0, 1)", opts.threshold);
    }
    let (canvas, original) = models.canvas_of(&pic)?;
    let p = models.patch();
    let (w, h) = (canvas.cols * p, canvas.rows * p);
    let mask_px = crop_luma(&mask_px, mw, (mw - w) / 2, (mh - h) / 2, w, h);
    let cells = tasks::token_mask(&mask_px, w, h, p, opts.threshold, opts.dilate)?;
    if !cells.iter().any(|&c| c) {
        bail!("the mask covers no token: paint the area to regenerate in white");
    }
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    let unknown = canvas.with_unknown(&cells)?;
    let settings = sampler.settings(unknown.unknown_count(), &models.arpg.sampling)?;
    let filled = fill(models, unknown, class, &settings, sampler, quiet, "inpaint")?;
    let generated = models.decode(&filled)?;
    // Blend only where the mask says; the token mask may be wider than the painted pixels.
    let rgb = tasks::feathered_blend(&original, &generated, &mask_px, w, h, opts.feather)?;
    models.save(out, &filled, class, &settings, Some(rgb))
}

fn crop_luma(px: &[u8], width: usize, x0: usize, y0: usize, w: usize, h: usize) -> Vec<u8> {
    (y0..y0 + h)
        .flat_map(|y| px[y * width + x0..y * width + x0 + w].iter().copied())
        .collect()
}

/// `outpaint`: extend the canvas by whole tokens on any side and fill the new cells.
pub fn outpaint(
    models: &Models,
    image: &Path,
    sides_px: [usize; 4],
    class: Option<usize>,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let pic = document::read(image)?;
    let p = models.patch();
    if sides_px.iter().all(|&s| s == 0) {
        bail!("nothing to extend: give --left, --right, --top or --bottom in pixels");
    }
    if sides_px.iter().any(|&s| s > 4096) {
        bail!("extensions above 4096 px are not supported");
    }
    // Snap each side up to whole tokens.
    let [l, r, t, b] = sides_px.map(|s| s.div_ceil(p));
    let (canvas, original) = models.canvas_of(&pic)?;
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    let (rows0, cols0) = (canvas.rows, canvas.cols);
    let mut extended = canvas.extended(l, r, t, b);
    let g = models.grid();
    // A canvas smaller than the model grid is padded by growing the extension where needed.
    if extended.rows < g || extended.cols < g {
        bail!("the extended canvas ({}x{} tokens) is smaller than the model's {g}x{g} grid: extend further", extended.rows, extended.cols);
    }
    let settings = sampler.settings(extended.unknown_count(), &models.arpg.sampling)?;
    extended = fill(
        models, extended, class, &settings, sampler, quiet, "outpaint",
    )?;
    let mut rgb = models.decode(&extended)?;
    // The original region keeps its exact pixels.
    let (w0, h0) = (cols0 * p, rows0 * p);
    document::paste(&mut rgb, extended.cols * p, &original, w0, h0, l * p, t * p);
    models.save(out, &extended, class, &settings, Some(rgb))
}

/// `expand`: twice the cells per side, with the existing tokens as context on the lattice.
pub fn expand(
    models: &Models,
    image: &Path,
    class: Option<usize>,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let pic = document::read(image)?;
    let (canvas, _) = models.canvas_of(&pic)?;
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    let spread = canvas.spread(2);
    let settings = sampler.settings(spread.unknown_count(), &models.arpg.sampling)?;
    let expanded = fill(models, spread, class, &settings, sampler, quiet, "expand")?;
    models.save(out, &expanded, class, &settings, None)
}

/// `encode`: an image to its token grid as JSON.
pub fn encode(models: &Models, image: &Path, out: &Path) -> Result<()> {
    let pic = document::read(image)?;
    let (canvas, _) = models.canvas_of(&pic)?;
    let meta = models.metadata(
        &canvas,
        pic.metadata.as_ref().and_then(|m| m.class),
        &Settings::default(),
    )?;
    std::fs::write(out, serde_json::to_string(&meta)?)
        .with_context(|| format!("cannot write {}", out.display()))
}

/// `decode`: a token JSON (as written by `encode`, or a PNG with metadata) to a PNG.
pub fn decode(models: &Models, tokens: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(tokens)
        .with_context(|| format!("cannot read {}", tokens.display()))?;
    let meta: Metadata = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a token JSON (grid, tokens)", tokens.display()))?;
    if let Some(t) = meta
        .tokens
        .iter()
        .find(|&&t| t as usize >= models.vq.config().codebook_size)
    {
        bail!(
            "token {t} is outside the codebook (size {})",
            models.vq.config().codebook_size
        );
    }
    let canvas = TokenCanvas::from_tokens(meta.grid[0], meta.grid[1], &meta.tokens)?;
    models.save(out, &canvas, meta.class, &Settings::default(), None)
}
