//! The CLI's generation commands: its flags, and generate / inpaint / outpaint / expand /
//! encode / decode with progress bars. The work itself is the core's: the model pair
//! ([`arpg_core::pair`]), the edit pipeline ([`arpg_core::edit`]) and the PNG format
//! ([`arpg_core::document`]).

use crate::errln;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arpg_core::canvas::TokenCanvas;
use arpg_core::document::{self, Metadata, Picture};
use arpg_core::edit::{self, Edit, EditPlan, Edited, MaskOptions};
use arpg_core::generator::{Generation, KnownCells, Request, SamplingDefaults, Settings};
use arpg_core::order::Order;
use arpg_core::pair::{carries_tokens, ModelPair, ModelSpec};
use arpg_core::pixels::{self, resize};
use arpg_core::provenance::Task;
use arpg_core::provenance::{self, BatchPlace, Provenance};
use arpg_core::sampler;

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
    /// cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Transformer compute dtype: f32, f16 or bf16 (the tokenizer always runs in f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
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
        }
    }

    /// Loads the pair; official names resolve from the hub's cache.
    pub fn load(&self) -> Result<ModelPair> {
        Ok(ModelPair::load(&crate::hub::resolve_names(self.spec())?)?)
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

/// [`document::import_image`] over the pair's background colour, saying on stderr when the
/// image had transparent pixels.
pub fn open_image(models: &ModelPair, path: &Path) -> Result<Picture> {
    let pic = document::import_image_over(path, models.background())?;
    if let Some(t) = &pic.transparency {
        errln!("note: {}: {}", path.display(), t.notice());
    }
    Ok(pic)
}

/// [`open_image`], then scaled down to the working size (see [`ModelPair::working_size`]),
/// saying so on stderr.
pub fn import(models: &ModelPair, path: &Path) -> Result<Picture> {
    to_working_size(models, open_image(models, path)?, path)
}

/// The scaling step of [`import`], saying what it did on stderr.
pub fn to_working_size(models: &ModelPair, pic: Picture, path: &Path) -> Result<Picture> {
    let (pic, note) = models.scaled_to_working_size(pic, &path.display().to_string())?;
    if let Some(note) = note {
        errln!("note: {note} (--max-side 0 keeps the full size)");
    }
    Ok(pic)
}

/// Writes a finished canvas as a PNG with its metadata, decoding it unless its pixels are
/// given, cropped to `size` (`[width, height]`, at most the canvas's pixels) when given.
#[allow(clippy::too_many_arguments)] // one per metadata field
pub fn save(
    models: &ModelPair,
    path: &Path,
    canvas: &TokenCanvas,
    class: Option<usize>,
    settings: Option<&Settings>,
    provenance: Option<Provenance>,
    rgb: Option<Vec<u8>>,
    size: Option<[usize; 2]>,
) -> Result<()> {
    let rgb = match rgb {
        Some(rgb) => rgb,
        None => models.decode(canvas)?,
    };
    let p = models.patch();
    let (pw, ph) = (canvas.cols * p, canvas.rows * p);
    let [w, h] = size.unwrap_or([pw, ph]);
    let rgb = if [w, h] == [pw, ph] {
        rgb
    } else {
        pixels::crop(&rgb, pw, 3, (0, 0), (w, h))
    };
    let mut meta = models.metadata(canvas, class, settings)?;
    meta.provenance = provenance;
    document::write_png(path, w, h, &rgb, Some(&meta))?;
    Ok(())
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

/// `generate`: B images of a class from scratch. Image i is the single image of
/// `image_seed(seed, i)`: its PNG records that seed and its place in the batch.
pub fn generate(
    models: &ModelPair,
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
    let order = sampler.order()?;
    let request = Request {
        classes: vec![Some(class); batch],
        settings: settings.clone(),
        order: order.mode(&TokenCanvas::empty(g, g)),
        known: KnownCells::Nothing,
    };
    let gen = Generation::new(&models.arpg.model, &request)?;
    let tokens = run_generation(gen, quiet)?;
    let mut written = Vec::new();
    for (i, tokens) in tokens.into_iter().enumerate() {
        let path = if batch == 1 {
            out.to_path_buf()
        } else {
            numbered(out, i)
        };
        let mut own = settings.clone();
        own.seed = sampler::image_seed(settings.seed, i as u64);
        let mut prov = Provenance::new(Task::Generate, order);
        if batch > 1 {
            prov.batch = Some(BatchPlace {
                seed: settings.seed,
                index: i,
            });
        }
        let canvas = TokenCanvas::from_tokens(g, g, &tokens)?;
        save(
            models,
            &path,
            &canvas,
            Some(class),
            Some(&own),
            Some(prov),
            None,
            None,
        )?;
        written.push(path);
    }
    Ok(written)
}

/// `generate --from PNG`: the image a PNG's metadata describes, generated again (its class,
/// settings, order and forks; `--class` overrides the class).
pub fn regenerate(
    models: &ModelPair,
    from: &Path,
    class: Option<usize>,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let meta = document::read_metadata(&bytes)
        .map_err(|why| anyhow::anyhow!("{}: {why}", from.display()))?
        .with_context(|| format!("{} has no ARPG metadata to regenerate from", from.display()))?;
    let settings = meta.settings.clone().with_context(|| {
        format!(
            "{} records no sampler settings (an encoded photo, or written by another program)",
            from.display()
        )
    })?;
    let prov = meta
        .provenance
        .clone()
        .unwrap_or_else(|| Provenance::new(Task::Generate, Order::Random));
    let class = class.or(meta.class);
    let gen = provenance::regenerate(&models.arpg.model, class, &settings, &prov)?;
    let g = models.grid();
    let tokens = run_generation(gen, quiet)?;
    let canvas = TokenCanvas::from_tokens(g, g, &tokens[0])?;
    save(
        models,
        out,
        &canvas,
        class,
        Some(&settings),
        Some(prov),
        None,
        None,
    )
}

/// Runs a generation to the end with a progress bar over its steps.
fn run_generation(mut gen: Generation, quiet: bool) -> Result<Vec<Vec<u32>>> {
    let bar = progress(gen.total_steps() as u64, quiet, "generate");
    bar.set_position(gen.steps_done() as u64);
    while gen.step()?.is_some() {
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(gen.finished_tokens()?)
}

/// `out.png` → `out_3.png`. Built from the name's bytes (`OsStr`), never lossily: two names
/// that differ only in bytes that are not UTF-8 (a Latin-1 name) keep differing.
fn numbered(path: &Path, i: usize) -> PathBuf {
    let mut name = path
        .file_stem()
        .map_or_else(|| std::ffi::OsString::from("out"), |s| s.to_os_string());
    name.push(format!("_{i}."));
    name.push(path.extension().unwrap_or(std::ffi::OsStr::new("png")));
    path.with_file_name(name)
}

/// An edit's result with the settings and provenance that made it.
struct Done {
    edited: Edited,
    settings: Settings,
    provenance: Provenance,
}

/// Runs an edit plan: its canvas job with a progress bar over the cells (and the window in
/// the message), then decode and composite.
fn run_edit(
    models: &ModelPair,
    plan: &EditPlan,
    class: Option<usize>,
    sampler: &SamplerArgs,
    quiet: bool,
) -> Result<Done> {
    let settings = sampler.settings(plan.unknown(), &models.arpg.sampling)?;
    let order = sampler.order()?;
    let mut job = plan.job(&models.arpg.model, class, settings.clone(), order)?;
    let total = plan.unknown() as u64;
    let what = format!("{:?}", plan.task).to_lowercase();
    let bar = progress(total, quiet, &what);
    while let Some(step) = job.step()? {
        bar.set_position(total - step.remaining as u64);
        let (first, n) = (step.window_index + 1, step.windows.len());
        let windows = if n == 1 {
            format!("window {first}")
        } else {
            format!("windows {first}-{}", first + n - 1)
        };
        bar.set_message(format!(
            "{windows} step {}/{}",
            step.step + 1,
            step.window_steps
        ));
    }
    bar.finish_and_clear();
    let mut provenance = Provenance::new(plan.task, order);
    provenance.windows = Some(job.windows_done());
    let filled = job.canvas().clone();
    let decoded = models.decode(&filled)?;
    Ok(Done {
        edited: plan.finish(filled, decoded)?,
        settings,
        provenance,
    })
}

/// Writes an edit's result with its settings and provenance.
fn save_edit(models: &ModelPair, out: &Path, class: Option<usize>, done: Done) -> Result<()> {
    save(
        models,
        out,
        &done.edited.canvas,
        class,
        Some(&done.settings),
        Some(done.provenance),
        Some(done.edited.rgb),
        Some(done.edited.size),
    )
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

/// `inpaint`: regenerate the masked part (white, or opaque when the mask's alpha varies), keep
/// everything else. Without a mask, the image's wholly transparent pixels are the mask.
#[allow(clippy::too_many_arguments)] // one argument per CLI flag group; a struct would only rename them
pub fn inpaint(
    models: &ModelPair,
    image: &Path,
    mask: Option<&Path>,
    class: Option<usize>,
    sampler: &SamplerArgs,
    opts: &MaskArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let pic = open_image(models, image)?;
    let mask = match (mask, &pic.transparency) {
        (Some(mask), _) => document::import_mask(mask)?,
        (None, Some(t)) if t.clear_pixels > 0 => document::Mask {
            width: pic.width,
            height: pic.height,
            px: t.clear.clone(),
            from_alpha: true,
        },
        (None, _) => bail!(
            "give --mask: {} has no transparent area to fill",
            image.display()
        ),
    };
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
    let pic = to_working_size(models, pic, image)?;
    let mask_px =
        resize::<image::Luma<u8>>(mask.px, (mask.width, mask.height), (pic.width, pic.height))?;
    let done = inpaint_pixels(models, &pic, mask_px, class, sampler, opts, quiet)?;
    save_edit(models, out, class, done)
}

/// Inpaints `pic` where `mask_px` (one byte per pixel, its size) is set, through the core's
/// edit pipeline.
fn inpaint_pixels(
    models: &ModelPair,
    pic: &Picture,
    mask_px: Vec<u8>,
    class: Option<usize>,
    sampler: &SamplerArgs,
    opts: &MaskArgs,
    quiet: bool,
) -> Result<Done> {
    let imported = models.canvas_of(pic)?;
    warn(imported.warning.as_deref());
    let p = models.patch();
    let canvas = &imported.canvas;
    let (w, h) = (canvas.cols * p, canvas.rows * p);
    let edit = Edit::Inpaint {
        mask: pixels::pad_zero(&mask_px, pic.width, pic.height, w, h),
        options: opts.options(),
    };
    let plan = edit.plan(imported.source(p))?;
    run_edit(models, &plan, class, sampler, quiet)
}

fn warn(warning: Option<&str>) {
    if let Some(w) = warning {
        errln!("warning: {w}");
    }
}

/// Inpainting by region (see [`edit::Region`]): the mask's box plus context at the model's
/// resolution, inpainted there and blended back; every pixel outside the mask keeps its full
/// resolution. The output carries no tokens (they would be those of the whole image).
#[allow(clippy::too_many_arguments)] // the same flag groups as `inpaint`
fn inpaint_region(
    models: &ModelPair,
    pic: &Picture,
    mask: &[u8],
    class: Option<usize>,
    sampler: &SamplerArgs,
    opts: &MaskArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let (w, h) = (pic.width, pic.height);
    let model_side = models.grid() * models.patch();
    let region = edit::Region::around(mask, w, h, model_side, opts.feather)?;
    let [sw, sh] = region.scaled;
    if !quiet {
        errln!(
            "note: inpainting the {}x{} region at ({}, {}) around the mask at {sw}x{sh} (the \
             model's resolution); the rest of the {w}x{h} image is kept",
            region.width,
            region.height,
            region.x,
            region.y
        );
    }
    let (cw, ch) = (region.width, region.height);
    let small = Picture {
        width: sw,
        height: sh,
        rgb: resize::<image::Rgb<u8>>(region.crop(&pic.rgb, w, 3), (cw, ch), (sw, sh))?,
        metadata: None,
        metadata_state: document::MetadataState::Absent,
        transparency: None,
    };
    let small_mask = region.scaled_mask(mask, w);
    let done = inpaint_pixels(models, &small, small_mask, class, sampler, opts, quiet)?;
    let padded_w = done.edited.canvas.cols * models.patch();
    let generated = pixels::crop(&done.edited.rgb, padded_w, 3, (0, 0), (sw, sh));
    let mut rgb = pic.rgb.clone();
    region.composite(&mut rgb, w, mask, generated, opts.feather)?;
    document::write_png(out, w, h, &rgb, None)?;
    Ok(())
}

/// Runs a whole-image edit of the image at `image` and writes the result.
#[allow(clippy::too_many_arguments)] // the same flag groups as the other edits
fn edit_file(
    models: &ModelPair,
    image: &Path,
    edit: impl FnOnce(usize) -> Edit,
    class: Option<usize>,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let pic = import(models, image)?;
    let imported = models.canvas_of(&pic)?;
    warn(imported.warning.as_deref());
    let class = class.or(pic.metadata.as_ref().and_then(|m| m.class));
    let p = models.patch();
    let plan = edit(p).plan(imported.source(p))?;
    let done = run_edit(models, &plan, class, sampler, quiet)?;
    save_edit(models, out, class, done)
}

/// `outpaint`: extend the canvas by whole tokens on any side and fill the new cells.
pub fn outpaint(
    models: &ModelPair,
    image: &Path,
    sides_px: [usize; 4],
    class: Option<usize>,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    if sides_px.iter().all(|&s| s == 0) {
        bail!("nothing to extend: give --left, --right, --top or --bottom in pixels");
    }
    if sides_px.iter().any(|&s| s > 4096) {
        bail!("extensions above 4096 px are not supported");
    }
    // Each side snaps up to whole tokens.
    let edit = |p: usize| Edit::Outpaint {
        cells: sides_px.map(|s| s.div_ceil(p)),
    };
    edit_file(models, image, edit, class, sampler, out, quiet)
}

/// `expand`: twice the cells per side, with the existing tokens as context on the lattice.
pub fn expand(
    models: &ModelPair,
    image: &Path,
    class: Option<usize>,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    edit_file(models, image, |_| Edit::Expand, class, sampler, out, quiet)
}

/// `encode`: an image to its token grid as JSON.
pub fn encode(models: &ModelPair, image: &Path, out: &Path) -> Result<()> {
    let pic = import(models, image)?;
    let imported = models.canvas_of(&pic)?;
    warn(imported.warning.as_deref());
    let mut meta = models.metadata(
        &imported.canvas,
        pic.metadata.as_ref().and_then(|m| m.class),
        None,
    )?;
    let (pad_x, pad_y) = imported.padding(models.patch());
    if pad_x > 0 || pad_y > 0 {
        meta.size = Some([imported.width, imported.height]);
    }
    document::write_atomic(out, serde_json::to_string(&meta)?.as_bytes())?;
    Ok(())
}

/// `decode`: a token JSON (as written by `encode`) to a PNG.
pub fn decode(models: &ModelPair, tokens: &Path, out: &Path) -> Result<()> {
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
    // UTF-8 with or without a byte order mark, or UTF-16 with one (Windows tools).
    let text = arpg_core::text::read(tokens, 256 << 20)?;
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
    save(
        models,
        out,
        &canvas,
        meta.class,
        meta.settings.as_ref(),
        meta.provenance.clone(),
        None,
        meta.size,
    )
}
