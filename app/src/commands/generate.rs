//! `generate` (a batch, or again from a PNG's metadata) and writing a finished canvas as a PNG.

use crate::errln;
use anyhow::{bail, Context, Result};
use arpg_core::canvas::TokenCanvas;
use arpg_core::document;
use arpg_core::generator::{Generation, KnownCells, Request, Settings};
use arpg_core::order::Order;
use arpg_core::pair::ModelPair;
use arpg_core::pixels;
use arpg_core::provenance::Task;
use arpg_core::provenance::{self, BatchPlace, Provenance};
use arpg_core::sampler;
use std::path::{Path, PathBuf};

use super::args::SamplerArgs;

/// Writes a finished canvas as a PNG with its metadata, decoding it unless its pixels are
/// given, cropped to `size` (`[width, height]`, at most the canvas's pixels) when given;
/// `transformer`: the identity of the transformer that made its tokens, when one did.
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
    transformer: Option<&str>,
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
    meta.transformer = transformer.map(str::to_string);
    document::write_png(path, w, h, &rgb, Some(&meta))?;
    Ok(())
}

pub(super) fn progress(total: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
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
            Some(&models.arpg.identity),
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
    if let Some(made_by) = meta
        .transformer
        .as_deref()
        .filter(|id| *id != models.arpg.identity)
    {
        errln!(
            "warning: {} was made by another transformer ({made_by}; the loaded one is {}): \
             the same settings make another image",
            from.display(),
            models.arpg.identity
        );
    }
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
        Some(&models.arpg.identity),
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
