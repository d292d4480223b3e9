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
use image::imageops::FilterType;

use crate::document::{self, Metadata, MetadataState, Picture};

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
    /// Images with a longer side are scaled down to it on import, keeping the aspect ratio
    /// (ARPG works at its model's resolution) [default: 4x the model's image side; 0 = never].
    #[arg(long, value_name = "PX")]
    pub max_side: Option<usize>,
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
    /// `--max-side`: see [`Models::working_size`].
    pub max_side: Option<usize>,
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
        Ok(Self {
            arpg,
            vq,
            max_side: args.max_side,
        })
    }

    pub fn patch(&self) -> usize {
        self.vq.config().downsample()
    }

    /// The size an imported `w x h` image is scaled down to, `None` when it is kept: its longer
    /// side is brought to `--max-side` (default 4x the model's image side, e.g. 128 px for the
    /// shipped model, 1024 px for the official ones; 0 = never scale).
    pub fn working_size(&self, w: usize, h: usize) -> Option<(usize, usize)> {
        let model_side = self.grid() * self.patch();
        let limit = self.max_side.unwrap_or(4 * model_side);
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

    /// [`document::import_image`], then scaled down to the working size (see
    /// [`Models::working_size`]), saying so on stderr. A scaled image's metadata is dropped:
    /// its tokens describe other pixels.
    pub fn import(&self, path: &Path) -> Result<Picture> {
        self.to_working_size(document::import_image(path)?, path)
    }

    /// The scaling step of [`Models::import`], saying what it did on stderr.
    pub fn to_working_size(&self, pic: Picture, path: &Path) -> Result<Picture> {
        let (pic, note) = self.scaled_to_working_size(pic, path)?;
        if let Some(note) = note {
            eprintln!("note: {note} (--max-side 0 keeps the full size)");
        }
        Ok(pic)
    }

    /// A picture scaled down to the working size, with a sentence saying so (`None`: kept).
    pub fn scaled_to_working_size(
        &self,
        pic: Picture,
        path: &Path,
    ) -> Result<(Picture, Option<String>)> {
        if carries_tokens(&pic) {
            return Ok((pic, None));
        }
        let Some((w, h)) = self.working_size(pic.width, pic.height) else {
            return Ok((pic, None));
        };
        let note = format!(
            "{} is {}x{}; scaled down to {w}x{h} to work at the model's resolution",
            path.display(),
            pic.width,
            pic.height
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
        };
        Ok((scaled, Some(note)))
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
            document::pad_edge(&pic.rgb, w, h, 3, pw, ph)
        };
        let (rows, cols) = (ph / p, pw / p);
        let mut warning = pic.metadata_warning();
        if let Some(m) = &pic.metadata {
            let usable = m.patch == p
                && m.grid == [rows, cols]
                && m.tokens
                    .iter()
                    .all(|&t| (t as usize) < self.arpg.config.vocab_size);
            if usable {
                let canvas = TokenCanvas::from_tokens(rows, cols, &m.tokens)?;
                match pic.metadata_state {
                    MetadataState::Verified => {
                        return Ok(Imported::new(canvas, rgb, w, h, None));
                    }
                    MetadataState::Unverified => {
                        // Written before pixel digests: trust the tokens only if they still
                        // decode to these pixels (an edit elsewhere would show).
                        if self.tokens_match_pixels(&canvas, &rgb, w, h)? {
                            return Ok(Imported::new(canvas, rgb, w, h, None));
                        }
                        warning = Some(
                            "the image's pixels no longer match its stored tokens (edited \
                             elsewhere?): the tokens are encoded again from the pixels"
                                .into(),
                        );
                    }
                    _ => {}
                }
            } else if carries_tokens(pic) {
                warning = Some(format!(
                    "the image's stored tokens belong to another tokenizer ({}px tokens, \
                     {}x{} grid): they are encoded again with this one",
                    m.patch, m.grid[0], m.grid[1]
                ));
            }
        }
        let image = vq::from_rgb8(&rgb, ph, pw, self.vq.device())?;
        let tokens: Vec<u32> = self.vq.encode(&image)?.flatten_all()?.to_vec1()?;
        Ok(Imported::new(
            TokenCanvas::from_tokens(rows, cols, &tokens)?,
            rgb,
            w,
            h,
            warning,
        ))
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

    pub fn metadata(
        &self,
        canvas: &TokenCanvas,
        class: Option<usize>,
        settings: &Settings,
    ) -> Result<Metadata> {
        Ok(Metadata::new(
            canvas,
            class,
            settings,
            self.patch(),
            &self.arpg.name,
        )?)
    }

    /// Decodes a finished canvas (unless its pixels are given) and writes it as a PNG with
    /// metadata, cropped to `size` (`[width, height]`, at most the canvas's pixels) when given.
    pub fn save(
        &self,
        path: &Path,
        canvas: &TokenCanvas,
        class: Option<usize>,
        settings: &Settings,
        rgb: Option<Vec<u8>>,
        size: Option<[usize; 2]>,
    ) -> Result<()> {
        let rgb = match rgb {
            Some(rgb) => rgb,
            None => self.decode(canvas)?,
        };
        let p = self.patch();
        let (pw, ph) = (canvas.cols * p, canvas.rows * p);
        let [w, h] = size.unwrap_or([pw, ph]);
        let rgb = if [w, h] == [pw, ph] {
            rgb
        } else {
            document::crop(&rgb, pw, 3, (0, 0), (w, h))
        };
        document::write_png(
            path,
            w,
            h,
            &rgb,
            Some(&self.metadata(canvas, class, settings)?),
        )?;
        Ok(())
    }
}

/// Whether a picture is an ARPG canvas whose stored tokens stand for its pixels (or, written
/// before pixel digests, may): such a canvas is the user's document at its own size, never
/// scaled to the working size nor inpainted by region (its tokens would be lost).
fn carries_tokens(pic: &Picture) -> bool {
    matches!(
        pic.metadata_state,
        MetadataState::Verified | MetadataState::Unverified
    )
}

/// Largest mean difference (8-bit levels) in any token cell between an older PNG's pixels and
/// the decode of its stored tokens for the tokens to be trusted. A generated image matches to
/// rounding; a region painted over in another program differs by far more.
pub const LEGACY_TOLERANCE: f64 = 12.0;

/// An image as a token canvas (see [`Models::canvas_of`]).
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

    /// Prints the warning, if any, on stderr.
    pub fn warn(&self) {
        if let Some(w) = &self.warning {
            eprintln!("warning: {w}");
        }
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
        models.save(&path, &canvas, Some(class), &settings, None, None)?;
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
    /// auto: an image larger than the working size (--max-side) is inpainted by region: the
    /// mask's bounding box plus a context margin is scaled to the model's resolution, inpainted,
    /// scaled back and blended in, and every other pixel keeps its full resolution.
    /// full: the whole image is inpainted, scaled down to the working size first.
    #[arg(long, value_enum, default_value_t = Region::Auto)]
    pub region: Region,
}

/// How much of the image an inpainting reads (see [`MaskArgs::region`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Auto,
    Full,
}

/// `inpaint`: regenerate the masked part (white, or opaque when the mask's alpha varies), keep
/// everything else.
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
    let pic = document::import_image(image)?;
    let mask = document::import_mask(mask)?;
    if (mask.width, mask.height) != (pic.width, pic.height) {
        bail!(
            "the mask is {}x{} but the image is {}x{}: they must be the same size (as \
             displayed, EXIF orientation applied)",
            mask.width,
            mask.height,
            pic.width,
            pic.height
        );
    }
    if !(0.0..1.0).contains(&opts.threshold) {
        bail!("--threshold {} must be within [0, 1)", opts.threshold);
    }
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    if opts.region == Region::Auto
        && !carries_tokens(&pic)
        && models.working_size(pic.width, pic.height).is_some()
    {
        return inpaint_region(models, &pic, &mask.px, class, sampler, opts, out, quiet);
    }
    let pic = models.to_working_size(pic, image)?;
    let mask_px =
        resize::<image::Luma<u8>>(mask.px, (mask.width, mask.height), (pic.width, pic.height))?;
    let done = inpaint_pixels(models, &pic, &mask_px, class, sampler, opts, quiet)?;
    let size = [pic.width, pic.height];
    models.save(
        out,
        &done.canvas,
        class,
        &done.settings,
        Some(done.rgb),
        Some(size),
    )
}

/// An 8-bit image of pixel type `P` (`Luma<u8>`, `Rgb<u8>`) resized with a triangle filter;
/// unchanged when the sizes agree.
fn resize<P: image::Pixel<Subpixel = u8> + 'static>(
    px: Vec<u8>,
    from: (usize, usize),
    to: (usize, usize),
) -> Result<Vec<u8>> {
    if from == to {
        return Ok(px);
    }
    let m = image::ImageBuffer::<P, Vec<u8>>::from_raw(from.0 as u32, from.1 as u32, px)
        .context("internal: image buffer size")?;
    Ok(image::imageops::resize(&m, to.0 as u32, to.1 as u32, FilterType::Triangle).into_raw())
}

/// An inpainted picture: its tokens and pixels (both padded to whole tokens), and the settings
/// used.
struct Inpainted {
    canvas: TokenCanvas,
    rgb: Vec<u8>,
    settings: Settings,
}

/// Inpaints `pic` where `mask_px` (one byte per pixel, its size) is set: token mask, canvas
/// job, decode, feathered blend with the original pixels.
fn inpaint_pixels(
    models: &Models,
    pic: &Picture,
    mask_px: &[u8],
    class: Option<usize>,
    sampler: &SamplerArgs,
    opts: &MaskArgs,
    quiet: bool,
) -> Result<Inpainted> {
    let imported = models.canvas_of(pic)?;
    imported.warn();
    let p = models.patch();
    let canvas = &imported.canvas;
    let (w, h) = (canvas.cols * p, canvas.rows * p);
    // The padding is kept, never regenerated.
    let mask_px = pad_zero(mask_px, pic.width, pic.height, w, h);
    let cells = tasks::token_mask(&mask_px, w, h, p, opts.threshold, opts.dilate)?;
    if !cells.iter().any(|&c| c) {
        bail!(
            "the mask covers no token: paint the area to regenerate in white (or opaque, when \
             the mask has transparency)"
        );
    }
    let unknown = canvas.with_unknown(&cells)?;
    let settings = sampler.settings(unknown.unknown_count(), &models.arpg.sampling)?;
    let filled = fill(models, unknown, class, &settings, sampler, quiet, "inpaint")?;
    let generated = models.decode(&filled)?;
    // Blend only where the mask says; the token mask may be wider than the painted pixels.
    let rgb = tasks::feathered_blend(&imported.rgb, &generated, &mask_px, w, h, opts.feather)?;
    Ok(Inpainted {
        canvas: filled,
        rgb,
        settings,
    })
}

/// Inpainting by region (as canvas apps do for large images): the mask's bounding box plus a
/// context margin, squared up where the image allows, is scaled so its shorter side is the
/// model's image side, inpainted there, scaled back and blended into the full-resolution image
/// with the feathered mask. Pixels outside the mask are never touched. The output carries no
/// tokens (they would be those of the whole image), only pixels.
#[allow(clippy::too_many_arguments)] // the same flag groups as `inpaint`
fn inpaint_region(
    models: &Models,
    pic: &Picture,
    mask: &[u8],
    class: Option<usize>,
    sampler: &SamplerArgs,
    opts: &MaskArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let (w, h) = (pic.width, pic.height);
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m > 127) {
        let (x, y) = (i % w, i / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
    }
    if x1 <= x0 {
        bail!(
            "the mask covers no pixel: paint the area to regenerate in white (or opaque, when \
             the mask has transparency)"
        );
    }
    let model_side = models.grid() * models.patch();
    let (bw, bh) = (x1 - x0, y1 - y0);
    let margin = (bw.max(bh) / 4).max(model_side / 8).max(opts.feather);
    let side = (bw.max(bh) + 2 * margin).max(model_side);
    let (cw, ch) = (side.min(w), side.min(h));
    let centred = |lo: usize, hi: usize, len: usize, total: usize| {
        ((lo + hi) / 2).saturating_sub(len / 2).min(total - len)
    };
    let (cx, cy) = (centred(x0, x1, cw, w), centred(y0, y1, ch, h));
    let crop_rgb = document::crop(&pic.rgb, w, 3, (cx, cy), (cw, ch));
    let crop_mask = document::crop(mask, w, 1, (cx, cy), (cw, ch));
    // The crop at the model's resolution: its shorter side is the model's image side.
    let s = model_side as f64 / cw.min(ch) as f64;
    let scaled = |v: usize| ((v as f64 * s).round() as usize).max(model_side);
    let (sw, sh) = (scaled(cw), scaled(ch));
    if !quiet {
        eprintln!(
            "note: inpainting the {cw}x{ch} region at ({cx}, {cy}) around the mask at {sw}x{sh} \
             (the model's resolution); the rest of the {w}x{h} image is kept"
        );
    }
    let small = Picture {
        width: sw,
        height: sh,
        rgb: resize::<image::Rgb<u8>>(crop_rgb.clone(), (cw, ch), (sw, sh))?,
        metadata: None,
        metadata_state: document::MetadataState::Absent,
    };
    let small_mask = resize::<image::Luma<u8>>(crop_mask.clone(), (cw, ch), (sw, sh))?;
    let done = inpaint_pixels(models, &small, &small_mask, class, sampler, opts, quiet)?;
    let padded_w = done.canvas.cols * models.patch();
    let generated = document::crop(&done.rgb, padded_w, 3, (0, 0), (sw, sh));
    let generated = resize::<image::Rgb<u8>>(generated, (sw, sh), (cw, ch))?;
    let feather = ((opts.feather as f64 / s).round() as usize).max(opts.feather);
    let blended = tasks::feathered_blend(&crop_rgb, &generated, &crop_mask, cw, ch, feather)?;
    let mut rgb = pic.rgb.clone();
    document::paste(&mut rgb, w, &blended, cw, ch, cx, cy);
    document::write_png(out, w, h, &rgb, None)?;
    Ok(())
}

/// A one-byte-per-pixel mask padded right and bottom with zeros (keep) to `new_w x new_h`.
fn pad_zero(px: &[u8], width: usize, height: usize, new_w: usize, new_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; new_w * new_h];
    for y in 0..height {
        out[y * new_w..y * new_w + width].copy_from_slice(&px[y * width..(y + 1) * width]);
    }
    out
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
    let pic = models.import(image)?;
    let p = models.patch();
    if sides_px.iter().all(|&s| s == 0) {
        bail!("nothing to extend: give --left, --right, --top or --bottom in pixels");
    }
    if sides_px.iter().any(|&s| s > 4096) {
        bail!("extensions above 4096 px are not supported");
    }
    // Snap each side up to whole tokens.
    let [l, r, t, b] = sides_px.map(|s| s.div_ceil(p));
    let imported = models.canvas_of(&pic)?;
    imported.warn();
    let (pad_x, pad_y) = imported.padding(p);
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    let (rows0, cols0) = (imported.canvas.rows, imported.canvas.cols);
    let mut extended = imported.canvas.extended(l, r, t, b);
    // A partly padded edge cell on a side being extended is generated with the extension (the
    // image's own pixels in it are pasted back); on other sides the padding is cropped away.
    for (i, cell) in extended.cells.iter_mut().enumerate() {
        let (row, col) = (i / (cols0 + l + r), i % (cols0 + l + r));
        let in_original = row >= t && row < t + rows0 && col >= l && col < l + cols0;
        let last_col = col + 1 == l + cols0;
        let last_row = row + 1 == t + rows0;
        if in_original && ((pad_x > 0 && r > 0 && last_col) || (pad_y > 0 && b > 0 && last_row)) {
            *cell = None;
        }
    }
    let g = models.grid();
    if extended.rows < g || extended.cols < g {
        bail!("the extended canvas ({}x{} tokens) is smaller than the model's {g}x{g} grid: extend further", extended.rows, extended.cols);
    }
    let settings = sampler.settings(extended.unknown_count(), &models.arpg.sampling)?;
    extended = fill(
        models, extended, class, &settings, sampler, quiet, "outpaint",
    )?;
    let mut rgb = models.decode(&extended)?;
    // The original region keeps its exact pixels.
    let (w0, h0) = (pic.width, pic.height);
    document::paste(&mut rgb, extended.cols * p, &pic.rgb, w0, h0, l * p, t * p);
    let width = extended.cols * p - if r == 0 { pad_x } else { 0 };
    let height = extended.rows * p - if b == 0 { pad_y } else { 0 };
    models.save(
        out,
        &extended,
        class,
        &settings,
        Some(rgb),
        Some([width, height]),
    )
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
    let pic = models.import(image)?;
    let imported = models.canvas_of(&pic)?;
    imported.warn();
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    let spread = imported.canvas.spread(2);
    let settings = sampler.settings(spread.unknown_count(), &models.arpg.sampling)?;
    let expanded = fill(models, spread, class, &settings, sampler, quiet, "expand")?;
    // Twice the image's own size; token columns and rows wholly in the padding are dropped.
    let p = models.patch();
    let (w, h) = (2 * imported.width, 2 * imported.height);
    let rgb = models.decode(&expanded)?;
    let rgb = document::crop(&rgb, expanded.cols * p, 3, (0, 0), (w, h));
    let kept = crop_cells(&expanded, h.div_ceil(p), w.div_ceil(p));
    let rgb = document::pad_edge(&rgb, w, h, 3, kept.cols * p, kept.rows * p);
    models.save(out, &kept, class, &settings, Some(rgb), Some([w, h]))
}

/// The top-left `rows x cols` cells of a canvas.
fn crop_cells(canvas: &TokenCanvas, rows: usize, cols: usize) -> TokenCanvas {
    let mut out = TokenCanvas::empty(rows, cols);
    for r in 0..rows {
        for c in 0..cols {
            out.cells[r * cols + c] = canvas.get(r, c);
        }
    }
    out
}

/// `encode`: an image to its token grid as JSON.
pub fn encode(models: &Models, image: &Path, out: &Path) -> Result<()> {
    let pic = models.import(image)?;
    let imported = models.canvas_of(&pic)?;
    imported.warn();
    let mut meta = models.metadata(
        &imported.canvas,
        pic.metadata.as_ref().and_then(|m| m.class),
        &Settings::default(),
    )?;
    let (pad_x, pad_y) = imported.padding(models.patch());
    if pad_x > 0 || pad_y > 0 {
        meta.size = Some([imported.width, imported.height]);
    }
    document::write_atomic(out, serde_json::to_string(&meta)?.as_bytes())?;
    Ok(())
}

/// `decode`: a token JSON (as written by `encode`) to a PNG.
pub fn decode(models: &Models, tokens: &Path, out: &Path) -> Result<()> {
    let len = std::fs::metadata(tokens)
        .with_context(|| format!("cannot read {}", tokens.display()))?
        .len();
    if len > 256 << 20 {
        bail!(
            "{} is {} MiB: not a token JSON",
            tokens.display(),
            len >> 20
        );
    }
    let text = std::fs::read_to_string(tokens)
        .with_context(|| format!("cannot read {}", tokens.display()))?;
    let mut meta: Metadata = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a token JSON (grid, tokens)", tokens.display()))?;
    let p = models.patch();
    if meta.patch == 0 {
        // Token JSON written by hand: the tokens are this tokenizer's.
        meta.patch = p;
    }
    meta.validate()
        .map_err(|why| anyhow::anyhow!("{}: {why}", tokens.display()))?;
    if meta.patch != p {
        bail!(
            "{}: the tokens are for a tokenizer with {}px tokens; this one has {p}px tokens",
            tokens.display(),
            meta.patch
        );
    }
    let [rows, cols] = meta.grid;
    let (w, h) = (cols.saturating_mul(p), rows.saturating_mul(p));
    document::check_size(w, h).map_err(|why| {
        anyhow::anyhow!(
            "{}: the {rows}x{cols} token grid decodes to an image too large: {why}",
            tokens.display()
        )
    })?;
    if let Some(t) = meta
        .tokens
        .iter()
        .find(|&&t| t as usize >= models.vq.config().codebook_size)
    {
        bail!(
            "{}: token {t} is outside the codebook (size {})",
            tokens.display(),
            models.vq.config().codebook_size
        );
    }
    let canvas = TokenCanvas::from_tokens(rows, cols, &meta.tokens)?;
    models.save(
        out,
        &canvas,
        meta.class,
        &Settings::default(),
        None,
        meta.size,
    )
}
