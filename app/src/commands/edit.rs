//! The edits (`inpaint`, `outpaint`, `expand`) and `encode` / `decode`, through the core's edit
//! pipeline, with progress bars.

use crate::errln;
use anyhow::{bail, Context, Result};
use arpg_core::canvas::TokenCanvas;
use arpg_core::document::{self, Metadata, Picture};
use arpg_core::edit::{Edit, EditPlan};
use arpg_core::pair::{carries_tokens, ModelPair};
use arpg_core::pixels::{self, resize};
use std::path::Path;

use super::args::{MaskArgs, Region, SamplerArgs};
use super::generate::{run_to_end, save};
use arpg_core::run::{Made, Run};

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

/// Runs an edit plan through the CLI's loop: its canvas job with a progress bar, then decode
/// and composite; the one image it makes.
fn run_edit(
    models: &ModelPair,
    plan: EditPlan,
    class: Option<usize>,
    sampler: &SamplerArgs,
    quiet: bool,
) -> Result<Made> {
    let settings = sampler.settings(plan.unknown(), &models.arpg.sampling)?;
    let what = format!("{:?}", plan.task).to_lowercase();
    let run = Run::edit(models, plan, class, settings, sampler.order()?, None)?;
    run_to_end(models, run, quiet, &what)?
        .pop()
        .context("the edit made no image")
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
    let made = inpaint_pixels(models, &pic, mask_px, class, sampler, opts, quiet)?;
    made.write_png(models, out)?;
    Ok(())
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
) -> Result<Made> {
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
    run_edit(models, plan, class, sampler, quiet)
}

fn warn(warning: Option<&str>) {
    if let Some(w) = warning {
        errln!("warning: {w}");
    }
}

/// Inpainting by region (see [`ModelPair::region_plan`]): the mask's box plus context at the
/// model's resolution, inpainted there and blended back; every pixel outside the mask keeps its
/// full resolution. The output carries no tokens (they would be those of the whole image).
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
    let (region, plan) = models.region_plan(&pic.rgb, (w, h), mask, opts.options())?;
    if !quiet {
        let [sw, sh] = region.scaled;
        errln!(
            "note: inpainting the {}x{} region at ({}, {}) around the mask at {sw}x{sh} (the \
             model's resolution); the rest of the {w}x{h} image is kept",
            region.width,
            region.height,
            region.x,
            region.y
        );
    }
    let made = run_edit(models, plan, class, sampler, quiet)?;
    let mut rgb = pic.rgb.clone();
    let made_w = made.canvas.cols * models.patch();
    region.blend_back(&mut rgb, w, mask, &made.rgb, made_w, opts.feather)?;
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
    let made = run_edit(models, plan, class, sampler, quiet)?;
    made.write_png(models, out)?;
    Ok(())
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
    if let Some(id) = meta
        .tokenizer
        .as_deref()
        .filter(|id| *id != models.vq.identity())
    {
        bail!(
            "{}: these tokens are codes of another tokenizer ({id}; the loaded one is {}): \
             decode them with that tokenizer (--vq)",
            tokens.display(),
            models.vq.identity()
        );
    }
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
        meta.transformer.as_deref(),
    )
}
